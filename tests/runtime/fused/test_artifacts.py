"""Compiled segments as plan artifacts: compiled once, saved into the plan, loaded without compiling when trusted
(CPU inductor; trust itself: test_fused_trust.py)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from opara_plan import plan_from_bytes
from opara_runtime import fused
from opara_runtime.execute import run_sequential
from opara_runtime.runner import Runner
from oparac.fuse.segments import fuse_plan, stored_programs

from helpers.fused import CPU, run_segments, two_branches

pytestmark = pytest.mark.slow  # inductor compiles C++ for every segment on the CPU

def _weights():
    return {"w": torch.randn(3, 3)}

def _reference(plan, base) -> torch.Tensor:
    values = list(base)
    run_sequential(plan, values, [CPU])
    return values[plan.graph.nodes[-1].args[0].node]

@pytest.fixture
def compiled(tiny_plan):
    plan = fuse_plan(tiny_plan, "inductor")
    base = list(Runner(plan, _weights(), CPU, capture=False)._base)
    base[0] = torch.randn(2, 3)
    programs = fused.segment_programs(plan, CPU)
    fused.compile_segments(programs, base)
    return plan, base, programs

def test_compiled_segments_match_sequential_execution(compiled):
    plan, base, programs = compiled
    assert len(programs) == len(plan.fusion.segments) > 1
    torch.testing.assert_close(run_segments(plan, programs, base), _reference(plan, base))

def test_plan_with_artifacts_loads_without_compiling(compiled, monkeypatch):
    plan, base, programs = compiled
    stored = _with_programs(plan, programs)
    assert len(stored.fusion.programs) == len(programs)  # the tiny plan's segments all differ
    stored = plan_from_bytes(stored.to_bytes())  # artifacts survive the plan file

    def no_compile(*args, **kwargs):
        raise AssertionError("a plan with matching artifacts must not compile")

    monkeypatch.setattr(torch._inductor, "standalone_compile", no_compile)
    loaded = fused.prepare_fused(stored, CPU, base, trust_compiled_code=True)
    torch.testing.assert_close(run_segments(stored, loaded, base), _reference(stored, base))
    with pytest.raises(AssertionError, match="must not compile"):  # the caller may refuse the stored code
        fused.prepare_fused(stored, CPU, base, use_artifacts=False, trust_compiled_code=True)

def test_programs_held_in_process_run_as_they_are(compiled, monkeypatch):
    # the compiler's timing runners: neither a load nor a compile, and no trust asked (nothing came from a file)
    plan, base, programs = compiled
    stored = _with_programs(plan, programs)
    monkeypatch.setattr(torch._inductor, "standalone_compile", lambda *a, **k: pytest.fail("compiled"))
    monkeypatch.setattr(fused.prepare, "load_artifact", lambda blob: pytest.fail("loaded"))
    held = [programs[k].fn for k in range(len(programs))]
    got = fused.prepare_fused(stored, CPU, base, compiled=held)
    assert [p.fn for p in got] == [held[s.program] for s in stored.fusion.segments]
    torch.testing.assert_close(run_segments(stored, got, base), _reference(stored, base))
    with pytest.raises(ValueError, match=f"segment program {len(held) - 1}: {len(held) - 1} compiled programs"):
        fused.prepare_fused(stored, CPU, base, compiled=held[:-1])

def _with_programs(plan, programs):
    blobs, index = stored_programs(programs)
    segments = tuple(dataclasses.replace(s, program=k) for s, k in zip(plan.fusion.segments, index))
    return dataclasses.replace(plan, fusion=dataclasses.replace(plan.fusion, segments=segments, programs=blobs,
                                                                cache_key=fused.cache_key(CPU)))

def test_foreign_or_corrupt_artifacts_are_compiled_afresh_with_a_warning(compiled):
    plan, base, programs = compiled
    foreign = dataclasses.replace(plan, fusion=dataclasses.replace(
        plan.fusion, cache_key="torch 0.0 | another GPU", programs=(b"x",) * len(plan.fusion.segments),
        segments=tuple(dataclasses.replace(s, program=k) for k, s in enumerate(plan.fusion.segments))))
    with pytest.warns(UserWarning, match="were made with torch 0.0"):
        again = fused.prepare_fused(foreign, CPU, base)  # checked before any signature: nothing to trust
    torch.testing.assert_close(run_segments(plan, again, base), _reference(plan, base))
    corrupt = dataclasses.replace(foreign, fusion=dataclasses.replace(foreign.fusion, cache_key=fused.cache_key(CPU)))
    with pytest.warns(UserWarning, match=r"could not be loaded \(program 0: "):
        again = fused.prepare_fused(corrupt, CPU, base, trust_compiled_code=True)
    torch.testing.assert_close(run_segments(plan, again, base), _reference(plan, base))

@pytest.fixture
def branches():
    return two_branches()

def _ops(plan, seg):
    return [plan.graph.nodes[i].target for i in seg.ops]

def test_equal_segments_share_one_compiled_program(branches):
    plan, base, expected = branches
    a, b = plan.fusion.segments[:2]
    assert a.stream != b.stream and _ops(plan, a) == _ops(plan, b)  # the premise: two equal branches
    programs = fused.segment_programs(plan, CPU)
    fused.compile_segments(programs, base, workers=1)
    assert programs[0].program == programs[1].program != programs[2].program
    assert programs[0].fn is programs[1].fn
    stored = plan_from_bytes(_with_programs(plan, programs).to_bytes())
    assert len(stored.fusion.programs) == 2 and [s.program for s in stored.fusion.segments] == [0, 0, 1]
    loaded = fused.prepare_fused(stored, CPU, base, trust_compiled_code=True)
    torch.testing.assert_close(run_segments(stored, loaded, base), expected)

def test_a_partly_corrupt_plan_is_compiled_afresh_and_keeps_nothing_it_loaded(compiled):
    plan, base, programs = compiled
    stored = _with_programs(plan, programs)
    corrupt = dataclasses.replace(stored, fusion=dataclasses.replace(
        stored.fusion, programs=stored.fusion.programs[:-1] + (b"x",)))  # the first programs load, the last not
    with pytest.warns(UserWarning, match="could not be loaded"):
        again = fused.prepare_fused(corrupt, CPU, base, trust_compiled_code=True)
    assert all(p.blob is None for p in again)  # re-saving serialises the fresh compile, not the loaded bytes
    torch.testing.assert_close(run_segments(plan, again, base), _reference(plan, base))
