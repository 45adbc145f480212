"""Stored programs run only when trusted: a valid signature by a trusted key, or trust_compiled_code=True.
Otherwise they are ignored (tampered or not) and every segment is compiled at load, with a warning."""
from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

import opara_runtime
from opara_plan.signing import generate_key, load_private_key, load_public_key, sign_plan
from opara_runtime import fused
from oparac.fuse.segments import fuse_plan

from helpers.fused import CPU, run_segments
from helpers.fused_tamper import tamper_pickle, tamper_source

TAMPERINGS = pytest.mark.parametrize("tamper", [tamper_source, tamper_pickle], ids=["source", "pickle"])


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two key pairs: 'deploy' (trusted where a test says so) and 'other'."""
    d = tmp_path_factory.mktemp("keys")
    for name in ("deploy", "other"):
        generate_key(d / name, d / f"{name}.pub")
    return d


@pytest.fixture(autouse=True)
def _no_trusted_keys(monkeypatch):
    monkeypatch.delenv("OPARA_TRUSTED_KEYS", raising=False)


def _no_compile(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("trusted stored programs must load without compiling")

    monkeypatch.setattr(torch._inductor, "standalone_compile", refuse)


def _quietly(fn, *args, **kwargs):
    """fn(...), failing on a warning that the stored programs were not used."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="the plan's compiled segments")
        return fn(*args, **kwargs)


@pytest.mark.slow
@TAMPERINGS
def test_tampered_programs_are_ignored_without_a_signature_or_trust(stored_branches, tamper, tmp_path):
    plan, base, expected = stored_branches
    marker = tmp_path / "tampered-code-ran"
    bad = tamper(plan, marker)
    with pytest.warns(UserWarning, match=r"the plan's compiled segments were not run \(no signature[^;]*; stored "
                                         r"programs run only from a plan signed by a trusted key .*"
                                         r"trust_compiled_code=True .*\): compiling them afresh"):
        programs = fused.prepare_fused(bad, CPU, base)
    assert all(p.blob is None for p in programs)  # compiled here, not loaded from the plan
    torch.testing.assert_close(run_segments(bad, programs, base), expected)
    assert not marker.exists()


@pytest.mark.slow
@TAMPERINGS
def test_with_trust_the_stored_programs_run_as_they_are(stored_branches, tamper, tmp_path, monkeypatch):
    plan, base, expected = stored_branches
    marker = tmp_path / "tampered-code-ran"
    _no_compile(monkeypatch)
    programs = _quietly(fused.prepare_fused, tamper(plan, marker), CPU, base, trust_compiled_code=True)
    assert marker.exists()  # the proof that the tests above would have seen the tampered code run
    assert all(p.blob is not None for p in programs)
    torch.testing.assert_close(run_segments(plan, programs, base), expected)


@pytest.mark.slow
def test_a_plan_signed_by_a_trusted_key_runs_its_stored_programs(stored_branches, keys, monkeypatch):
    plan, base, expected = stored_branches
    signed = sign_plan(plan, load_private_key(keys / "deploy"))
    _no_compile(monkeypatch)
    trusted = [{"trusted_keys": [keys / "deploy.pub"]}, {"trusted_keys": [str(keys / "deploy.pub")]},
               {"trusted_keys": [load_public_key(keys / "other.pub"), load_public_key(keys / "deploy.pub")]},
               {}]  # the last: OPARA_TRUSTED_KEYS
    monkeypatch.setenv("OPARA_TRUSTED_KEYS", str(keys / "deploy.pub"))
    for trust in trusted:
        programs = _quietly(fused.prepare_fused, signed, CPU, base, **trust)
        assert all(p.blob is not None for p in programs), trust
        torch.testing.assert_close(run_segments(plan, programs, base), expected)


@pytest.mark.slow
@TAMPERINGS
def test_a_signed_plan_tampered_afterwards_is_compiled(stored_branches, keys, tamper, tmp_path):
    plan, base, expected = stored_branches
    marker = tmp_path / "tampered-code-ran"
    bad = tamper(sign_plan(plan, load_private_key(keys / "deploy")), marker)
    assert bad.signature  # the signature travels with the tampered plan
    with pytest.warns(UserWarning, match=r"compiled segments were not run \(signature does not match"):
        programs = fused.prepare_fused(bad, CPU, base, trusted_keys=[keys / "deploy.pub"])
    assert all(p.blob is None for p in programs)
    torch.testing.assert_close(run_segments(bad, programs, base), expected)
    assert not marker.exists()


@pytest.mark.slow
def test_a_plan_signed_by_an_untrusted_key_is_compiled(stored_branches, keys):
    plan, base, expected = stored_branches
    signed = sign_plan(plan, load_private_key(keys / "other"))
    with pytest.warns(UserWarning, match=r"compiled segments were not run \(signed by key [0-9a-f]+.*not among "
                                         r"the trusted keys"):
        programs = fused.prepare_fused(signed, CPU, base, trusted_keys=[keys / "deploy.pub"])
    assert all(p.blob is None for p in programs)
    torch.testing.assert_close(run_segments(plan, programs, base), expected)


def test_load_hands_the_trust_options_to_the_segments(tiny_plan, monkeypatch, tmp_path):
    """load() -> Runner -> prepare_fused (on the CPU a fused plan runs unfused, so this stops short of capture)."""
    seen = {}

    class Stop(Exception):
        pass

    def record(plan, device, base, **options):
        seen.update(options)
        raise Stop

    monkeypatch.setattr(fused, "prepare_fused", record)
    plan = fuse_plan(tiny_plan, "inductor")
    key = tmp_path / "deploy.pub"
    with pytest.raises(Stop):
        opara_runtime.load(plan, {"w": torch.randn(3, 3)}, device="cpu", capture=True, trust_compiled_code=True,
                           trusted_keys=[key])
    # load() never hands in-process programs: a loaded plan's programs come from the file, under its trust rules
    assert seen == {"use_artifacts": True, "trust_compiled_code": True, "trusted_keys": [key], "compiled": None}
    with pytest.raises(Stop):
        opara_runtime.load(plan, {"w": torch.randn(3, 3)}, device="cpu", capture=True)
    assert seen == {"use_artifacts": True, "trust_compiled_code": False, "trusted_keys": None, "compiled": None}


@pytest.mark.slow
def test_a_plan_without_stored_programs_checks_no_signature(stored_branches, monkeypatch):
    """Nothing stored, nothing to trust: no warning and no key is read (a bad OPARA_TRUSTED_KEYS is not touched)."""
    plan, base, expected = stored_branches
    monkeypatch.setenv("OPARA_TRUSTED_KEYS", "/nonexistent/key.pub")
    bare = dataclasses.replace(plan, fusion=dataclasses.replace(
        plan.fusion, programs=(), segments=tuple(dataclasses.replace(s, program=-1) for s in plan.fusion.segments)))
    programs = _quietly(fused.prepare_fused, bare, CPU, base)
    torch.testing.assert_close(run_segments(plan, programs, base), expected)
