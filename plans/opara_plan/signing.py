"""Plan signatures: Ed25519 over the plan digest, keys in PEM files, and the verdict on a loaded plan.

Ed25519 rather than HMAC: deploy machines then hold only public keys, so a stolen deploy machine cannot mint
plans; an HMAC key would have to live on every host that verifies, and each of them could sign.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from opara_plan.atomic import atomic_write
from opara_plan.digest import plan_digest
from opara_plan.errors import SigningError
from opara_plan.schema import Plan, Signature

ALGORITHM = "ed25519"
SIGNING_KEY_ENV = "OPARA_SIGNING_KEY"  # path to a private key: oparac signs what it writes
TRUSTED_KEYS_ENV = "OPARA_TRUSTED_KEYS"  # os.pathsep-separated paths to public keys: loads trust these
# What is signed: the digest behind a fixed context, so an Opara signature means nothing anywhere else.
_CONTEXT = b"opara-plan-signature-v1\n"


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a plan's signature is trusted, why in words, and by which key (empty when none is named)."""

    trusted: bool
    reason: str
    key_id: str = ""


def key_id(public_key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of sha256 over the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key(private_path, public_path, *, overwrite: bool = False) -> str:
    """Write a new key pair as PEM (the private file 0600) and return its key id. An existing key is kept
    unless overwrite: replacing a private key makes every plan it signed untrusted wherever it is checked."""
    private_path, public_path = Path(private_path), Path(public_path)
    if not overwrite:
        for p in (private_path, public_path):
            if p.exists():
                raise SigningError(f"key file {p} exists; pass overwrite=True to replace it")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        atomic_write(private_path, private_pem, mode=0o600)
        atomic_write(public_path, public_pem)
    except OSError as e:
        raise SigningError(f"cannot write key file {e.filename or private_path}: {e.strerror}") from None
    return key_id(key.public_key())


def _read_pem(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise SigningError(f"cannot read {what} {path}: {e.strerror}") from None


def load_private_key(path) -> Ed25519PrivateKey:
    """The Ed25519 private key in a PEM file (PKCS8, unencrypted)."""
    path = Path(path)
    data = _read_pem(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnicodeError) as e:
        hint = " (is it the public key?)" if b"PUBLIC KEY" in data else ""
        raise SigningError(f"signing key {path}: not an unencrypted PEM private key{hint}: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"signing key {path}: expected an Ed25519 key, found {_kind(key)}")
    return key


def load_public_key(path) -> Ed25519PublicKey:
    """The Ed25519 public key in a PEM file (SubjectPublicKeyInfo)."""
    path = Path(path)
    data = _read_pem(path, "trusted key")
    if b"PRIVATE KEY" in data:
        raise SigningError(f"trusted key {path}: holds a private key; give the public key (deploy machines "
                           f"must never hold the private one)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnicodeError) as e:
        raise SigningError(f"trusted key {path}: not a PEM public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"trusted key {path}: expected an Ed25519 key, found {_kind(key)}")
    return key


def _kind(key) -> str:
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa, x448, x25519

    for name, kinds in (("an RSA", (rsa.RSAPrivateKey, rsa.RSAPublicKey)),
                        ("an ECDSA", (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)),
                        ("a DSA", (dsa.DSAPrivateKey, dsa.DSAPublicKey)),
                        ("an Ed448", (ed448.Ed448PrivateKey, ed448.Ed448PublicKey)),
                        ("an X25519", (x25519.X25519PrivateKey, x25519.X25519PublicKey)),
                        ("an X448", (x448.X448PrivateKey, x448.X448PublicKey))):
        if isinstance(key, kinds):
            return f"{name} key"
    return f"a {type(key).__name__}"


def signing_key_from_env() -> Ed25519PrivateKey | None:
    """The key named by $OPARA_SIGNING_KEY, or None when it is unset or empty."""
    where = os.environ.get(SIGNING_KEY_ENV, "")
    if not where:
        return None
    try:
        return load_private_key(where)
    except SigningError as e:
        raise SigningError(f"${SIGNING_KEY_ENV}: {e}") from None


def trusted_keys_from_env() -> tuple[Ed25519PublicKey, ...]:
    """The keys named by $OPARA_TRUSTED_KEYS (empty entries ignored); () when it is unset."""
    keys = []
    for where in os.environ.get(TRUSTED_KEYS_ENV, "").split(os.pathsep):
        if not where:
            continue
        try:
            keys.append(load_public_key(where))
        except SigningError as e:
            raise SigningError(f"${TRUSTED_KEYS_ENV}: {e}") from None
    return tuple(keys)


def _message(plan: Plan) -> bytes:
    return _CONTEXT + plan_digest(plan).encode()


def sign_plan(plan: Plan, private_key: Ed25519PrivateKey) -> Plan:
    """The plan with one signature by private_key, replacing any it had."""
    if not isinstance(private_key, Ed25519PrivateKey):
        raise TypeError(f"sign_plan: expected an Ed25519PrivateKey, found {type(private_key).__name__}")
    value = private_key.sign(_message(plan))
    return dataclasses.replace(plan, signature=(Signature(key_id(private_key.public_key()), ALGORITHM, value),))


def check_signature(plan: Plan, public_keys) -> Verdict:
    """Trusted when some signature is a valid Ed25519 signature of this plan by one of public_keys.

    Never raises for what a plan file holds: a malformed signature is simply not trusted.
    """
    keys = {}
    for k in public_keys:
        if not isinstance(k, Ed25519PublicKey):
            raise TypeError(f"check_signature: expected Ed25519PublicKey keys, found {type(k).__name__}")
        keys[key_id(k)] = k
    if not plan.signature:
        return Verdict(False, "no signature")
    message = _message(plan)
    # Best first: a valid signature, then an altered plan (says most), an unknown key, a malformed entry.
    return min((_check_one(sig, keys, message) for sig in plan.signature), key=lambda ranked: ranked[0])[1]


def _check_one(sig: Signature, keys: dict, message: bytes) -> tuple[int, Verdict]:
    kid = sig.key_id if isinstance(sig.key_id, str) else ""
    shown = kid[:16] if kid.isascii() and kid.isprintable() else repr(kid[:16])
    if sig.algorithm != ALGORITHM:
        return 3, Verdict(False, f"signature by key {shown} uses algorithm {str(sig.algorithm)[:32]!r}; only "
                                 f"{ALGORITHM} signatures are trusted", kid)
    key = keys.get(kid)
    if key is None:
        return 2, Verdict(False, f"signed by key {shown}, which is not among the trusted keys", kid)
    try:
        key.verify(bytes(sig.value), message)
    except (InvalidSignature, ValueError, TypeError):
        return 1, Verdict(False, "signature does not match the plan's contents: the plan was altered after "
                                 "signing", kid)
    return 0, Verdict(True, f"valid signature by key {kid}", kid)
