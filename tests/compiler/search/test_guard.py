"""The never-lose guard without a GPU: timing and compiling are faked; what is tested is which plan is kept, when
the one-segment fused plan is compiled at all, and what the plan records."""
from __future__ import annotations

import pytest
import torch

from helpers.fused import measured_fused
from opara_plan import validate
from oparac.search import guard

CPU = torch.device("cpu")


@pytest.fixture
def timings(monkeypatch):
    """Fake measure_rounds: times[label] for each entry (a plan, or a runner); returns the list of entries."""
    seen = []

    def install(times):
        def measure_rounds(plans, weights, devices, *, rounds, repeats, replays):
            seen.append(plans)
            return {k: times[k] for k in plans}
        monkeypatch.setattr(guard, "measure_rounds", measure_rounds)
        return seen
    return install


def _chosen(plan):
    [c] = [c for c in plan.profile.candidates if c.chosen]
    return c


def test_unfused_plan_is_kept_when_it_is_faster(timings, tiny_plan):
    seen = timings({"chosen": 1.0, "single": 1.3})
    out = guard.guard_unfused(tiny_plan, {}, CPU)
    assert out.schedule == tiny_plan.schedule and tiny_plan.schedule.num_streams == 2
    assert _chosen(out).measured_ms == 1.0 and "kept" in out.profile.guard
    assert [c.measured_ms for c in out.profile.candidates] == [1.0, 1.3]
    assert seen[0]["single"].schedule.num_streams == 1
    validate(out)


def test_single_stream_wins_when_streams_are_slower(timings, tiny_plan):
    timings({"chosen": 1.4, "single": 1.1})
    out = guard.guard_unfused(tiny_plan, {}, CPU)
    assert out.schedule.num_streams == 1 and out.schedule.stream_algorithm == "single"
    assert _chosen(out).streams == "single" and "one stream is faster" in out.profile.guard
    assert out.model.fingerprint == tiny_plan.model.fingerprint  # same graph, other schedule
    validate(out)


def test_a_tie_keeps_the_chosen_plan(timings, tiny_plan):
    timings({"chosen": 1.0, "single": 1.0})
    assert guard.guard_unfused(tiny_plan, {}, CPU).schedule == tiny_plan.schedule


def test_a_single_stream_plan_is_not_measured(timings, tiny_plan):
    seen = timings({})
    single = guard.single_stream(tiny_plan)
    out = guard.guard_unfused(single, {}, CPU)
    assert not seen and out.schedule == single.schedule and "already is one stream" in out.profile.guard


@pytest.fixture
def pair(timings):
    """measure_rounds faked for the fused plan (or its runner) against the unfused plan on one stream."""
    return lambda chosen_ms, unfused_ms: timings({"chosen": chosen_ms, guard.UNFUSED: unfused_ms})


def test_fused_plan_whose_streams_clearly_pay_compiles_nothing_more(monkeypatch, pair, tiny_plan):
    timed = pair(1.0, 1.6)
    monkeypatch.setattr(guard, "measure_fused", lambda *a: pytest.fail("the one-segment plan was compiled"))
    fused = measured_fused(tiny_plan, 0.5)
    assert len(fused.fusion.segments) == 4
    out = guard.guard_fused(fused, 1.0, {}, CPU, "inductor")  # 1.0 <= 0.85 * 2.0
    assert out.fusion == fused.fusion and "clearly pay" in out.profile.guard
    [entries] = timed  # only timed against the unfused plan on one stream
    given, unfused = entries["chosen"], entries[guard.UNFUSED]
    assert set(entries) == {"chosen", guard.UNFUSED} and given is fused
    assert not unfused.fusion.backend and unfused.schedule.num_streams == 1
    assert out.profile.guard.endswith("the unfused plan on one stream: 1.6000 ms")
    assert [(c.measured_ms, c.chosen) for c in out.profile.candidates[-2:]] == [(1.0, True), (1.6, False)]
    validate(out)


def test_the_unfused_plan_on_one_stream_is_written_where_the_fused_plan_is_slower(pair, tiny_plan):
    # inductor's program can be slower than the eager kernels (ViT-B/16 fp16 at batch 8 on an H200)
    pair(1.7, 1.1)
    fused = measured_fused(tiny_plan, 0.5)
    runner = object()
    out = guard.guard_fused(fused, 1.0, {}, CPU, "inductor", runner=runner)
    assert not out.fusion.backend and out.schedule.num_streams == 1
    assert out.profile.guard.startswith("guard: the unfused plan on one stream is faster: 1.1000 ms against "
                                        "1.7000 ms for the fused plan (streams clearly pay")
    assert [c.chosen for c in out.profile.candidates].count(True) == 1 and _chosen(out).measured_ms == 1.1
    validate(out)


def test_a_tie_with_the_unfused_plan_keeps_the_fused_one(pair, tiny_plan):
    pair(1.0, 1.0)
    fused = measured_fused(tiny_plan, 0.5)
    assert guard.guard_fused(fused, 1.0, {}, CPU, "inductor").fusion == fused.fusion


@pytest.mark.parametrize("one_ms, kept_streams", [(0.9, 1), (1.2, 2)])
def test_fused_plan_close_to_serial_is_measured_against_one_segment(monkeypatch, timings, tiny_plan, one_ms,
                                                                    kept_streams):
    compiled = []

    def measure_fused(plan, weights, device):
        compiled.append(plan)
        return plan, one_ms
    monkeypatch.setattr(guard, "measure_fused", measure_fused)
    seen = timings({"chosen": 1.0, "single": one_ms, guard.UNFUSED: 2.0})
    fused = measured_fused(tiny_plan, 0.25)  # 1.0 > 0.85 * 4 * 0.25: close, so measured
    out = guard.guard_fused(fused, 1.0, {}, CPU, "inductor")
    [one] = compiled
    assert len(one.fusion.segments) == 1 and one.schedule.num_streams == 1
    assert out.schedule.num_streams == kept_streams and out.fusion.backend == "inductor"
    # the unfused plan on one stream is timed in the same rounds, and loses here
    assert not seen[0][guard.UNFUSED].fusion.backend and "unfused plan on one stream: 2.0000" in out.profile.guard
    validate(out)


def test_the_segment_fallback_times_the_runner_the_fused_plan_was_measured_on(monkeypatch, timings, tiny_plan):
    monkeypatch.setattr(guard, "measure_fused", lambda plan, weights, device: (plan, 1.1))
    seen = timings({"chosen": 1.0, "single": 1.1, guard.UNFUSED: 2.0})
    runner = object()
    fused = measured_fused(tiny_plan, 0.25)
    out = guard.guard_fused(fused, 1.0, {}, CPU, "inductor", runner=runner)
    assert seen[0]["chosen"] is runner  # not captured again
    assert out.fusion == fused.fusion
