"""Fused segments: cut where cross-stream dependencies enter or leave, validated as a DAG of segments."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import opara_runtime
import oparac
from opara_plan import Fusion, PlanFormatError, Segment, cut_segments, validate


def _fused(plan, segments):
    return dataclasses.replace(plan, fusion=Fusion(backend="inductor", segments=tuple(segments)))


def test_tiny_fork_join_cuts_at_every_wait(tiny_plan):
    # mm (s0) is waited on by relu (s1), so it ends a segment; add (s0) waits on relu, so it starts one
    segs = cut_segments(tiny_plan.schedule)
    assert [(s.stream, s.ops, s.waits) for s in segs] == [(0, (2,), ()), (1, (3,), (0,)), (0, (4,), ()),
                                                           (0, (5,), (1,))]
    validate(_fused(tiny_plan, segs))


def test_single_stream_is_one_segment(tiny_plan):
    s = dataclasses.replace(tiny_plan.schedule, stream=(-1, -1, 0, 0, 0, 0, -1), num_streams=1, waits=())
    segs = cut_segments(s)
    assert len(segs) == 1 and segs[0].ops == (2, 3, 4, 5)
    assert [len(x.ops) for x in cut_segments(s, max_ops=3)] == [3, 1]


S0, S1, S2, S3 = Segment(0, (2,)), Segment(1, (3,), (0,)), Segment(0, (4,)), Segment(0, (5,), (1,))


@pytest.mark.parametrize("segments, message", [
    ([S0, S1, S3], r"node 4 .* is in no fusion segment"),
    ([Segment(0, (2, 4)), S1, S3], "waited on inside fusion segment 0"),
    ([S0, S1, Segment(1, (4,)), S3], "runs on stream 0, the segment on 1"),
    ([S0, Segment(1, (3,), ()), S2, S3], "waits must include segment 0"),
    ([S0, S1, S2, Segment(0, (5,), (1, 3))], "expected an earlier one"),
    ([S0, S1, Segment(0, (4, 5), (1,))], "must start a segment"),
])
def test_bad_segments_are_refused(tiny_plan, segments, message):
    with pytest.raises(PlanFormatError, match=message):
        validate(_fused(tiny_plan, segments))


def _stored(plan, programs, indexes, cache_key="torch 9.9 | some GPU"):
    segs = [dataclasses.replace(x, program=k) for x, k in zip(cut_segments(plan.schedule), indexes)]
    return dataclasses.replace(plan, fusion=Fusion(backend="inductor", segments=tuple(segs), programs=programs,
                                                   cache_key=cache_key))


def test_segments_may_share_stored_programs(tiny_plan):
    validate(_stored(tiny_plan, (b"a", b"b"), [0, 1, 1, 0]))


@pytest.mark.parametrize("programs, indexes, cache_key, message", [
    ((b"a",), [0, 0, 1, 0], "k", r"segments\[2\].program: expected an index into fusion.programs \(0..0\), found 1"),
    ((b"a",), [0, -1, 0, 0], "k", r"segments\[1\].program: expected an index"),
    ((), [0, -1, -1, -1], "k", r"segments\[0\].program: expected -1 \(the plan stores no compiled programs\)"),
    ((b"a", b"b"), [0, 0, 0, 0], "k", r"fusion.programs\[1\]: no segment uses it"),
    ((b"a",), [0, 0, 0, 0], "", "fusion.cache_key: missing"),
])
def test_bad_program_references_are_refused(tiny_plan, programs, indexes, cache_key, message):
    with pytest.raises(PlanFormatError, match=message):
        validate(_stored(tiny_plan, programs, indexes, cache_key))


def test_unknown_backend_is_refused(tiny_plan):
    plan = dataclasses.replace(tiny_plan, fusion=Fusion(backend="tensorrt", segments=cut_segments(tiny_plan.schedule)))
    with pytest.raises(PlanFormatError, match="fusion.backend"):
        validate(plan)


def test_fused_plan_round_trips_and_runs_unfused_on_cpu(tmp_path):
    from oparac.models import zoo
    model, inputs = zoo.squeezenet()
    plan = oparac.compile(model, inputs, device="cpu", fuse="inductor")
    assert plan.fusion.backend == "inductor" and len(plan.fusion.segments) > 1
    plan.save(tmp_path / "f.plan")
    runner = opara_runtime.load(tmp_path / "f.plan", model)
    torch.testing.assert_close(runner(*inputs), model(*inputs))
