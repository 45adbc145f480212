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
    """Fake measure_rounds: times[label] for 'chosen' and 'single'; returns the list of measured plans."""
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


def test_fused_plan_whose_streams_clearly_pay_compiles_nothing_more(monkeypatch, timings, tiny_plan):
    seen = timings({})
    monkeypatch.setattr(guard, "measure_fused", lambda *a: pytest.fail("the one-segment plan was compiled"))
    fused = measured_fused(tiny_plan, 0.5)
    assert len(fused.fusion.segments) == 4
    out = guard.guard_fused(fused, 1.0, {}, CPU, "inductor")  # 1.0 <= 0.85 * 2.0
    assert out.fusion == fused.fusion and not seen and "clearly pay" in out.profile.guard


@pytest.mark.parametrize("one_ms, kept_streams", [(0.9, 1), (1.2, 2)])
def test_fused_plan_close_to_serial_is_measured_against_one_segment(monkeypatch, timings, tiny_plan, one_ms,
                                                                    kept_streams):
    compiled = []

    def measure_fused(plan, weights, device):
        compiled.append(plan)
        return plan, one_ms
    monkeypatch.setattr(guard, "measure_fused", measure_fused)
    timings({"chosen": 1.0, "single": one_ms})
    fused = measured_fused(tiny_plan, 0.25)  # 1.0 > 0.85 * 4 * 0.25: close, so measured
    out = guard.guard_fused(fused, 1.0, {}, CPU, "inductor")
    [one] = compiled
    assert len(one.fusion.segments) == 1 and one.schedule.num_streams == 1
    assert out.schedule.num_streams == kept_streams and out.fusion.backend == "inductor"
    validate(out)
