"""Plan digest and Ed25519 signatures: round trips, tampering, wrong keys, malformed entries, key files, env."""
from __future__ import annotations

import dataclasses
import os

import msgpack
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from opara_plan import Fusion, Plan, PlanFormatError, cut_segments, load_plan, plan_from_bytes, plan_to_bytes, save_plan
from opara_plan.decoding import decode_value
from opara_plan.digest import plan_digest
from opara_plan.errors import OparaError, SigningError
from opara_plan.schema import Signature
from opara_plan.signing import (TRUSTED_KEYS_ENV, SIGNING_KEY_ENV, Verdict, check_signature, generate_key, key_id,
                                load_private_key, load_public_key, sign_plan, signing_key_from_env,
                                trusted_keys_from_env)

from helpers.plans import make_tiny_plan


def _fused(plan: Plan) -> Plan:
    """The tiny plan with stored programs, as a fused plan carries them."""
    segments = tuple(dataclasses.replace(seg, program=k % 2) for k, seg in enumerate(cut_segments(plan.schedule)))
    return dataclasses.replace(plan, fusion=Fusion(backend="inductor", segments=segments, cache_key="torch+gpu",
                                                   programs=(b"program zero: " + bytes(range(64)), b"program one")))


@pytest.fixture(scope="module")
def key():
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def other_key():
    return ed25519.Ed25519PrivateKey.generate()


def test_digest_covers_the_whole_plan_but_not_the_signature(tiny_plan, key):
    fused = _fused(tiny_plan)
    d = plan_digest(fused)
    assert d.startswith("sha256:") and len(d) == 7 + 64
    assert plan_digest(_fused(make_tiny_plan())) == d
    assert plan_digest(sign_plan(fused, key)) == d
    changed_program = dataclasses.replace(fused, fusion=dataclasses.replace(fused.fusion, programs=(
        fused.fusion.programs[0], b"program onE")))
    assert plan_digest(changed_program) != d
    assert plan_digest(dataclasses.replace(fused, profile=dataclasses.replace(fused.profile, sequential_ms=0.05))) != d
    assert plan_digest(tiny_plan) != d


def test_sign_and_check_round_trip_through_a_file(tiny_plan, key, tmp_path):
    signed = sign_plan(_fused(tiny_plan), key)
    save_plan(signed, tmp_path / "m.plan")
    loaded = load_plan(tmp_path / "m.plan")
    assert loaded == signed
    verdict = check_signature(loaded, [key.public_key()])
    assert verdict == Verdict(True, f"valid signature by key {key_id(key.public_key())}", key_id(key.public_key()))
    assert len(loaded.signature) == 1 and loaded.signature[0].algorithm == "ed25519"
    assert len(loaded.signature[0].value) == 64


def test_signing_again_replaces_the_signature(tiny_plan, key, other_key):
    twice = sign_plan(sign_plan(tiny_plan, other_key), key)
    assert [s.key_id for s in twice.signature] == [key_id(key.public_key())]
    assert check_signature(twice, [key.public_key()]).trusted
    assert not check_signature(twice, [other_key.public_key()]).trusted


def test_an_unsigned_plan_is_not_trusted(tiny_plan, key):
    assert check_signature(tiny_plan, [key.public_key()]) == Verdict(False, "no signature", "")


def test_a_plan_signed_by_another_key_is_not_trusted(tiny_plan, key, other_key):
    v = check_signature(sign_plan(tiny_plan, other_key), [key.public_key()])
    assert not v.trusted
    assert v.key_id == key_id(other_key.public_key())
    assert v.reason == f"signed by key {v.key_id}, which is not among the trusted keys"
    assert check_signature(sign_plan(tiny_plan, other_key), [key.public_key(), other_key.public_key()]).trusted
    assert not check_signature(sign_plan(tiny_plan, key), []).trusted


def _positions(data: bytes, needle: bytes) -> range:
    start = data.index(needle)
    return range(start, start + len(needle))


@pytest.mark.parametrize("part", ["program", "graph"])
def test_changing_any_byte_of_a_signed_plan_makes_it_untrusted(tiny_plan, key, part):
    """Every byte of a stored program, and of the graph's node names and targets, flipped in turn: each flip
    that still decodes is reported as altered after signing; none is trusted."""
    signed = sign_plan(_fused(tiny_plan), key)
    data = plan_to_bytes(signed)
    if part == "program":
        where = list(_positions(data, signed.fusion.programs[0])) + list(_positions(data, b"program one"))
    else:
        where = [i for n in (b"aten.relu.default", b"sigmoid", b"aten.mm.default") for i in _positions(data, n)]
    altered = 0
    for i in where:
        buf = bytearray(data)
        buf[i] ^= 0x01
        try:
            plan = plan_from_bytes(bytes(buf))
        except PlanFormatError:
            continue  # e.g. a flip that makes a name invalid UTF-8
        v = check_signature(plan, [key.public_key()])
        assert not v.trusted, i
        assert v.reason == "signature does not match the plan's contents: the plan was altered after signing"
        altered += 1
    assert altered >= len(where) - 2


def test_a_resigned_tampered_plan_is_signed_by_an_unknown_key(tiny_plan, key, other_key):
    signed = sign_plan(_fused(tiny_plan), key)
    evil = dataclasses.replace(signed, fusion=dataclasses.replace(signed.fusion, programs=(b"evil", b"evil")))
    v = check_signature(sign_plan(evil, other_key), [key.public_key()])
    assert not v.trusted and "not among the trusted keys" in v.reason
    # ...and keeping the trusted key's id with the attacker's signature value is caught as altered.
    forged = dataclasses.replace(evil, signature=(dataclasses.replace(
        sign_plan(evil, other_key).signature[0], key_id=key_id(key.public_key())),))
    assert "altered after signing" in check_signature(forged, [key.public_key()]).reason


@pytest.mark.parametrize("sig", [
    Signature("", "ed25519", b""),
    Signature("0" * 16, "ed25519", b"short"),
    Signature("zz\x00\n", "rsa", b"x" * 64),
    Signature("k" * 64, "ED25519", b"\xff" * 64),
])
def test_malformed_signatures_are_untrusted_never_an_error(tiny_plan, key, sig):
    plan = dataclasses.replace(tiny_plan, signature=(sig,))
    v = check_signature(plan, [key.public_key()])
    assert not v.trusted and v.reason
    v = check_signature(dataclasses.replace(plan, signature=(sig, Signature(key_id(key.public_key()), "ed25519",
                                                                            b"\x00" * 64))), [key.public_key()])
    assert not v.trusted and "altered" in v.reason  # the entry naming a trusted key says most


def test_a_malformed_signature_with_a_valid_one_is_trusted(tiny_plan, key):
    good = sign_plan(tiny_plan, key).signature[0]
    plan = dataclasses.replace(tiny_plan, signature=(Signature("junk", "ed25519", b"x"), good))
    assert check_signature(plan, [key.public_key()]).trusted


def test_unsigned_plans_keep_their_bytes_and_signed_ones_round_trip(tiny_plan, key):
    assert b"signature" not in plan_to_bytes(tiny_plan)
    signed = sign_plan(tiny_plan, key)
    assert b"signature" in plan_to_bytes(signed)
    assert plan_from_bytes(plan_to_bytes(signed)) == signed


def test_a_1_2_reader_ignores_the_signature(tiny_plan, key):
    """A reader whose Plan has no signature field (1.2) reads a signed plan as the unsigned plan."""
    fields = [(f.name, f.type, f) for f in dataclasses.fields(Plan) if f.name != "signature"]
    plan12 = dataclasses.make_dataclass("Plan", fields, frozen=True, namespace={"__module__": "opara_plan.schema"})
    signed = sign_plan(tiny_plan, key)
    old = decode_value(plan_to_bytes(signed), plan12, what="plan")
    assert [getattr(old, f.name) for f in dataclasses.fields(plan12)] == [
        getattr(tiny_plan, f.name) for f in dataclasses.fields(plan12)]


def test_a_1_2_plan_still_loads(tiny_plan):
    obj = msgpack.unpackb(plan_to_bytes(tiny_plan), raw=False)
    obj["schema_version"] = [1, 2]
    plan = plan_from_bytes(msgpack.packb(obj, use_bin_type=True))
    assert plan.schema_version == (1, 2) and plan.signature == ()
    assert check_signature(plan, []).reason == "no signature"


# ------------------------------------------------------------------ key files and environment

def test_generate_and_load_keys(tmp_path):
    kid = generate_key(tmp_path / "k.pem", tmp_path / "k.pub")
    assert os.stat(tmp_path / "k.pem").st_mode & 0o777 == 0o600
    private, public = load_private_key(tmp_path / "k.pem"), load_public_key(tmp_path / "k.pub")
    assert key_id(public) == key_id(private.public_key()) == kid
    assert len(kid) == 16 and int(kid, 16) >= 0
    with pytest.raises(SigningError, match="exists"):
        generate_key(tmp_path / "k.pem", tmp_path / "k2.pub")
    assert generate_key(tmp_path / "k.pem", tmp_path / "k.pub", overwrite=True) != kid


def test_key_id_is_sha256_of_the_raw_public_key(key):
    import hashlib

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id(key.public_key()) == hashlib.sha256(raw).hexdigest()[:16]


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_bad_key_files_are_signing_errors_naming_the_file(tmp_path):
    generate_key(tmp_path / "k.pem", tmp_path / "k.pub")
    ecdsa = ec.generate_private_key(ec.SECP256R1())
    ec_pem = ecdsa.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    ec_pub = ecdsa.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    cases = [
        (load_private_key, tmp_path / "missing.pem", "cannot read signing key .*missing.pem"),
        (load_private_key, _write(tmp_path / "junk.pem", b"not a key"), "junk.pem: not an unencrypted PEM"),
        (load_private_key, tmp_path / "k.pub", "k.pub: .*is it the public key"),
        (load_private_key, _write(tmp_path / "ec.pem", ec_pem), "ec.pem: expected an Ed25519 key, found an ECDSA key"),
        (load_public_key, tmp_path / "missing.pub", "cannot read trusted key .*missing.pub"),
        (load_public_key, _write(tmp_path / "junk.pub", b"\x00\xff"), "junk.pub: not a PEM public key"),
        (load_public_key, tmp_path / "k.pem", "k.pem: holds a private key"),
        (load_public_key, _write(tmp_path / "ec.pub", ec_pub), "ec.pub: expected an Ed25519 key"),
    ]
    for load, path, match in cases:
        with pytest.raises(SigningError, match=match):
            load(path)
    assert issubclass(SigningError, OparaError)


def test_keys_from_the_environment(tmp_path, monkeypatch, tiny_plan):
    generate_key(tmp_path / "a.pem", tmp_path / "a.pub")
    generate_key(tmp_path / "b.pem", tmp_path / "b.pub")
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    monkeypatch.delenv(TRUSTED_KEYS_ENV, raising=False)
    assert signing_key_from_env() is None and trusted_keys_from_env() == ()
    monkeypatch.setenv(SIGNING_KEY_ENV, str(tmp_path / "a.pem"))
    monkeypatch.setenv(TRUSTED_KEYS_ENV, os.pathsep.join([str(tmp_path / "b.pub"), "", str(tmp_path / "a.pub")]))
    signed = sign_plan(tiny_plan, signing_key_from_env())
    keys = trusted_keys_from_env()
    assert len(keys) == 2 and check_signature(signed, keys).trusted
    monkeypatch.setenv(TRUSTED_KEYS_ENV, str(tmp_path / "nope.pub"))
    with pytest.raises(SigningError, match=f"{TRUSTED_KEYS_ENV}: cannot read trusted key .*nope.pub"):
        trusted_keys_from_env()
    monkeypatch.setenv(SIGNING_KEY_ENV, str(tmp_path / "a.pub"))
    with pytest.raises(SigningError, match=f"{SIGNING_KEY_ENV}: signing key .*a.pub"):
        signing_key_from_env()
