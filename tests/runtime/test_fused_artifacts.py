"""Compiled segments as plan artifacts: compiled once, saved into the plan, loaded without compiling (CPU inductor)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from opara_plan import plan_from_bytes
from opara_runtime import fused
from opara_runtime.execute import run_sequential
from opara_runtime.runner import Runner
from oparac.fuse import fuse_plan, segment_artifacts

pytestmark = pytest.mark.slow  # inductor compiles C++ for every segment on the CPU
CPU = torch.device("cpu")


def _weights():
    return {"w": torch.randn(3, 3)}


def _run_segments(plan, programs, base) -> torch.Tensor:
    values = list(base)
    with torch.no_grad():
        for prog in programs:
            prog(values)
    out = plan.graph.nodes[-1].args[0]
    return values[out.node]


def _reference(plan, base) -> torch.Tensor:
    values = list(base)
    run_sequential(plan, values, [CPU])
    return values[plan.graph.nodes[-1].args[0].node]


@pytest.fixture
def compiled(tiny_plan, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    plan = fuse_plan(tiny_plan, "inductor")
    base = list(Runner(plan, _weights(), CPU, capture=False)._base)
    base[0] = torch.randn(2, 3)
    programs = fused.segment_programs(plan, CPU)
    fused.compile_segments(programs, base)
    return plan, base, programs


def test_compiled_segments_match_sequential_execution(compiled):
    plan, base, programs = compiled
    assert len(programs) == len(plan.fusion.segments) > 1
    torch.testing.assert_close(_run_segments(plan, programs, base), _reference(plan, base))


def test_plan_with_artifacts_loads_without_compiling(compiled, monkeypatch):
    plan, base, programs = compiled
    segments = tuple(dataclasses.replace(s, artifact=a)
                     for s, a in zip(plan.fusion.segments, segment_artifacts(programs)))
    assert all(s.artifact for s in segments)
    stored = dataclasses.replace(plan, fusion=dataclasses.replace(plan.fusion, segments=segments,
                                                                  cache_key=fused.cache_key(CPU)))
    stored = plan_from_bytes(stored.to_bytes())  # artifacts survive the plan file

    def no_compile(*args, **kwargs):
        raise AssertionError("a plan with matching artifacts must not compile")

    monkeypatch.setattr(torch._inductor, "standalone_compile", no_compile)
    loaded = fused.prepare_fused(stored, CPU, base)
    torch.testing.assert_close(_run_segments(stored, loaded, base), _reference(stored, base))
    with pytest.raises(AssertionError, match="must not compile"):  # the caller may refuse the stored code
        fused.prepare_fused(stored, CPU, base, use_artifacts=False)


def test_foreign_or_corrupt_artifacts_are_compiled_afresh_with_a_warning(compiled):
    plan, base, programs = compiled
    foreign = dataclasses.replace(plan, fusion=dataclasses.replace(
        plan.fusion, cache_key="torch 0.0 | another GPU",
        segments=tuple(dataclasses.replace(s, artifact=b"x") for s in plan.fusion.segments)))
    with pytest.warns(UserWarning, match="were made with torch 0.0"):
        again = fused.prepare_fused(foreign, CPU, base)
    torch.testing.assert_close(_run_segments(plan, again, base), _reference(plan, base))
    corrupt = dataclasses.replace(foreign, fusion=dataclasses.replace(foreign.fusion, cache_key=fused.cache_key(CPU)))
    with pytest.warns(UserWarning, match="could not be loaded"):
        again = fused.prepare_fused(corrupt, CPU, base)
    torch.testing.assert_close(_run_segments(plan, again, base), _reference(plan, base))
