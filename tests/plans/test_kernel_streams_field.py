"""Schema 1.4's kernel-level fields and 1.6's stream priorities: written only for such a plan, read back equal, and
refused when malformed."""
from __future__ import annotations

import dataclasses

import pytest

from opara_plan import KernelStreams, PlanFormatError, plan_from_bytes, plan_to_bytes, validate
from oparac.search.kernels import whole_graph


def _kernel_plan(plan, n: int = 5) -> object:
    one = whole_graph(plan, "inductor")
    ks = KernelStreams(call_digest="ab" * 32, stream=(0, 1, 0, 2, 1)[:n], launch_order=tuple(range(n)),
                       ms=(0.01,) * n, algorithm="opara/opara", critical_path_ms=0.03, predicted_ms=0.04)
    return dataclasses.replace(one, fusion=dataclasses.replace(one.fusion, kernels=ks))


def test_a_kernel_plan_round_trips_and_validates(tiny_plan):
    plan = _kernel_plan(tiny_plan)
    validate(plan)
    assert plan.fusion.mode == "kernels" and len(plan.fusion.segments) == 1
    assert plan_from_bytes(plan_to_bytes(plan)) == plan


def test_stream_priorities_round_trip_and_are_written_only_where_a_stream_is_raised(tiny_plan):
    from opara_plan.canonical import canonical_value

    plan = _kernel_plan(tiny_plan)
    assert "priority" not in canonical_value(plan)["fusion"]["kernels"]
    raised = dataclasses.replace(plan, fusion=dataclasses.replace(
        plan.fusion, kernels=dataclasses.replace(plan.fusion.kernels, priority=(0, -1, 0))))
    validate(raised)
    assert plan_from_bytes(plan_to_bytes(raised)).fusion.kernels.priority == (0, -1, 0)


def test_a_segments_plan_writes_neither_field(tiny_plan):
    from oparac.fuse.segments import fuse_plan

    from opara_plan.canonical import canonical_value

    fusion = canonical_value(fuse_plan(tiny_plan, "inductor"))["fusion"]
    assert "kernels" not in fusion and "mode" not in fusion


@pytest.mark.parametrize("change, message", [
    (dict(stream=(0, 99, 0, 0, 0)), "streams 0..63"),
    (dict(launch_order=(0, 0, 1, 2, 3)), "permutation"),
    (dict(launch_order=(0, 1, 2)), "permutation"),
    (dict(ms=(0.1,)), "one time per kernel"),
    (dict(ms=(float("nan"),) * 5), "finite, non-negative"),
    (dict(critical_path_ms=float("inf")), "finite number"),
    (dict(call_digest="not a digest"), "sha256 hex digest"),
    (dict(priority=(0, -1)), r"one priority per stream \(3\), found 2"),
    (dict(priority=(0, -1, -7)), "expected 0 or -1, found -7"),
    (dict(priority=(0, 1, 0)), "expected 0 or -1, found 1"),
    (dict(priority=(-1, 0, 0)), r"priority\[0\]: expected 0 \(stream 0 is the caller's stream\)"),
])
def test_malformed_kernel_streams_are_refused(tiny_plan, change, message):
    plan = _kernel_plan(tiny_plan)
    bad = dataclasses.replace(plan, fusion=dataclasses.replace(
        plan.fusion, kernels=dataclasses.replace(plan.fusion.kernels, **change)))
    with pytest.raises(PlanFormatError, match=message):
        validate(bad)
    with pytest.raises(PlanFormatError, match=message):
        validate(plan_from_bytes(plan_to_bytes(bad)))


def test_a_mode_outside_the_schema_or_kernels_on_a_segments_plan_are_refused(tiny_plan):
    plan = _kernel_plan(tiny_plan)
    with pytest.raises(PlanFormatError, match="fusion.mode"):
        validate(dataclasses.replace(plan, fusion=dataclasses.replace(plan.fusion, mode="threads")))
    with pytest.raises(PlanFormatError, match="only a plan of fusion.mode 'kernels'"):
        validate(dataclasses.replace(plan, fusion=dataclasses.replace(plan.fusion, mode="segments")))


def test_a_kernel_plan_has_one_segment(two_device_plan, tiny_plan):
    from opara_plan import Segment

    plan = _kernel_plan(tiny_plan)
    seg = plan.fusion.segments[0]
    split = (Segment(0, seg.ops[:1]), Segment(0, seg.ops[1:], (0,)))
    with pytest.raises(PlanFormatError, match="one segment"):
        validate(dataclasses.replace(plan, fusion=dataclasses.replace(plan.fusion, segments=split)))


def test_inspect_shows_the_kernel_schedule(tiny_plan):
    from oparac.observe.summary import summarize

    fusion = summarize(_kernel_plan(tiny_plan))["fusion"]
    assert fusion["mode"] == "kernels" and fusion["kernels"] == 5 and fusion["kernel_streams"] == 3
    assert fusion["kernel_schedule"] == "opara/opara" and fusion["critical_path_ms"] == 0.03
    assert fusion["raised_streams"] == []


def test_inspect_says_which_streams_a_kernel_schedule_raises(tiny_plan):
    import io

    from rich.console import Console

    from oparac.observe.report import print_summary
    from oparac.observe.summary import summarize

    plan = _kernel_plan(tiny_plan)
    raised = dataclasses.replace(plan, fusion=dataclasses.replace(
        plan.fusion, kernels=dataclasses.replace(plan.fusion.kernels, priority=(0, -1, -1))))
    info = summarize(raised)
    assert info["fusion"]["raised_streams"] == [1, 2]
    out = io.StringIO()
    print_summary(info, Console(file=out, width=400))
    assert "5 kernels on 3 streams, 2 at high priority (opara/opara;" in out.getvalue()
