"""The never-lose guard on the GPU: an untuned plan records what it was measured against, and the plan kept is
the faster of the two by the guard's own measurements."""
from __future__ import annotations

import pytest
import torch

import oparac
from oparac.models import zoo

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("no_tf32")]


def _guard_candidates(plan):
    """The guard's own two records (the last candidates; earlier ones come from other measuring rounds, such as
    the kernel-level search's, and are not comparable): (the kept one, [the other])."""
    assert sum(c.chosen for c in plan.profile.candidates) == 1
    pair = plan.profile.candidates[-2:]
    chosen = [c for c in pair if c.chosen]
    assert len(chosen) == 1, "the guard's kept plan is one of its two records"
    return chosen[0], [c for c in pair if not c.chosen]


def test_unfused_default_plan_is_guarded_against_one_stream():
    model, inputs = zoo.googlenet()
    model, inputs = model.cuda().eval(), tuple(x.cuda() for x in inputs)
    plan = oparac.compile(model, inputs, device="cuda")
    assert plan.profile.guard.startswith("guard: ")
    chosen, others = _guard_candidates(plan)
    assert others and all(chosen.measured_ms <= c.measured_ms for c in others)
    assert plan.schedule.num_streams > 1, "GoogLeNet's branches are worth streams"
    unguarded = oparac.compile(model, inputs, device="cuda", guard=False)
    assert not unguarded.profile.guard and not unguarded.profile.candidates


def test_fused_default_plan_is_guarded():
    model, inputs = zoo.resnet50()
    model, inputs = model.cuda().eval(), tuple(x.cuda() for x in inputs)
    plan = oparac.compile(model, inputs, device="cuda", fuse="inductor")
    assert plan.profile.guard.startswith("guard: ")
    assert plan.fusion.backend == "inductor" and plan.fusion.programs
    unfused = plan.profile.candidates[-1]  # last, the fused plan timed against the unfused one on one stream
    assert unfused.streams == "single" and unfused.measured_ms > 0 and not unfused.chosen
    assert "the unfused plan on one stream" in plan.profile.guard
    if "segments not compiled" in plan.profile.guard:  # ruled out by the profile: the kernel search's pick
        assert plan.fusion.mode == "kernels"
        measured = [c for c in plan.profile.candidates if "+kernels" in c.streams]
        [chosen] = [c for c in measured if c.chosen]
        assert any(c.streams == "single+kernels" for c in measured)
        assert chosen.measured_ms == min(c.measured_ms for c in measured)
    elif "one segment" not in plan.profile.guard and "clearly pay" not in plan.profile.guard:
        chosen, others = _guard_candidates(plan)
        assert all(chosen.measured_ms <= c.measured_ms for c in others)
    torch.cuda.synchronize()


def test_fused_default_plan_of_a_branchy_cnn_compiles_the_whole_graph_first():
    # GoogLeNet's profile predicts its streams well above one stream, so segments are not ruled out up front:
    # the whole graph's kernels are measured first, and segments are compiled only where they could beat them
    model, inputs = zoo.googlenet()
    model, inputs = model.cuda().eval(), tuple(x.cuda() for x in inputs)
    notes = []
    plan = oparac.compile(model, inputs, device="cuda", fuse="inductor", progress=notes.append)
    assert any(n.startswith("guard: compiling the whole graph first") for n in notes)
    measured = [c for c in plan.profile.candidates if "+kernels" in c.streams]
    assert any(c.streams == "single+kernels" for c in measured), "the kernel search ran"
    chosen = [c for c in plan.profile.candidates if c.chosen]
    assert len(chosen) == 1
    if "segments not compiled" in plan.profile.guard:
        assert "clearly needs" in plan.profile.guard
    else:
        assert any(n.startswith("guard: compiling the segments too") for n in notes)
        final = plan.profile.candidates[-3:]  # segments, kernels and unfused, timed in the same rounds
        assert [c.chosen for c in final].count(True) == 1
        assert min(final, key=lambda c: c.measured_ms).chosen
    torch.cuda.synchronize()
