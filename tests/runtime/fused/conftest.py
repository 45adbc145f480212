"""Fixtures of the fused-segment tests: one small fused plan compiled with its programs stored, and a shared
inductor cache for the session (so falling back to compiling is warm, and the user's own cache is untouched)."""
from __future__ import annotations

import dataclasses
import os

import pytest


@pytest.fixture(scope="session")
def session_inductor_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("inductor"))


@pytest.fixture(autouse=True)
def _inductor_cache(session_inductor_cache, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", session_inductor_cache)


@pytest.fixture(scope="session")
def stored_branches(session_inductor_cache):
    """(the fused TwoBranches plan with its programs stored, its base values, the model's output)."""
    from helpers.fused import CPU, two_branches
    from opara_runtime import fused
    from oparac.fuse.segments import stored_programs

    saved = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = session_inductor_cache
    try:
        plan, base, expected = two_branches()
        programs = fused.segment_programs(plan, CPU)
        fused.compile_segments(programs, base, workers=1)
        blobs, index = stored_programs(programs)
    finally:
        if saved is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved
    segments = tuple(dataclasses.replace(s, program=k) for s, k in zip(plan.fusion.segments, index))
    plan = dataclasses.replace(plan, fusion=dataclasses.replace(plan.fusion, segments=segments, programs=blobs,
                                                                cache_key=fused.cache_key(CPU)))
    return plan, base, expected
