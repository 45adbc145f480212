"""The coarse cut: small side branches join a neighbouring stream; the result is a valid, race-free schedule
with no more segments than cutting the given schedule as it is."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from opara_plan import (Fusion, Graph, ModelInfo, Node, OpProfile, OutTree, Plan, Profile, Ref, Target, TensorMeta,
                        TensorSpec, Tool, cut_segments, graph_fingerprint, validate)
from oparac.schedule.coarsen import coarsen_streams
from oparac.schedule.dag import Dag
from oparac.schedule import Costs
from oparac.schedule.build import dag_of, make_schedule

from helpers.schedules import FORK_JOIN, ORDERS, STREAM_ALGOS, covered, dags

F32 = "float32"


def plan_of(dag: Dag, costs: Costs, *, streams: str = "opara", order: str = "topo", cap: int = 0) -> Plan:
    """A plan whose op nodes have `dag`'s edges and `costs`' times (node 0 is the input, ops follow in
    dag order). The ops are only scheduled and validated here, never run."""
    node = {i: k + 1 for k, i in enumerate(dag.ops)}
    meta = TensorMeta((1,), F32)
    nodes = [Node(kind="input", name="x", outputs=(meta,))]
    for i in dag.ops:
        reads = tuple(Ref(node[p]) for p in dag.preds[i]) or (Ref(0),)
        nodes.append(Node(kind="op", name=f"op{i}", target="aten.cat.default", args=(reads, 0), outputs=(meta,)))
    sinks = [node[i] for i in dag.ops if not dag.succs[i]]
    nodes.append(Node(kind="output", name="output", args=tuple(Ref(k) for k in sinks)))
    graph = Graph(tuple(nodes))
    free = OpProfile(ms=0.0, flops=0.0, bytes=0.0, intensity="free")
    ops = (free,) + tuple(OpProfile(ms=costs.ms[i], flops=0.0, bytes=0.0, intensity=costs.intensity[i])
                          for i in dag.ops) + (free,)
    model = ModelInfo(source="fx", fingerprint=graph_fingerprint(graph), inputs=(TensorSpec("x", (1,), F32),),
                      outputs=tuple(TensorSpec(f"output_{k}", (1,), F32) for k in range(len(sinks))),
                      output_tree=OutTree("tuple", children=tuple(OutTree("tensor", k) for k in range(len(sinks)))),
                      precision=F32)
    schedule = make_schedule(graph, ops, streams=streams, order=order, max_streams=cap)
    return Plan(tool=Tool("oparac", "0.1.0"), model=model, target=Target(device_type="cpu", torch=torch.__version__),
                graph=graph, schedule=schedule, profile=Profile(method="cost-model", ops=ops,
                                                                sequential_ms=sum(o.ms for o in ops)))


def coarse_plan(plan: Plan, **limits) -> Plan:
    """The plan with the coarse schedule and its segments, validated as the compiler validates it."""
    schedule = coarsen_streams(plan.schedule, plan.graph, plan.profile.ops, **limits)
    fused = dataclasses.replace(plan, schedule=schedule, fusion=Fusion("inductor", cut_segments(schedule)))
    validate(fused)
    return fused


def _streams(plan: Plan, ops) -> list[int]:
    return [plan.schedule.stream[k + 1] for k in ops]  # dag op k is plan node k + 1


def test_small_branches_join_a_neighbour_and_the_big_ones_keep_their_streams():
    # 0 forks into two big branches (1, 2) and two small ones (3, 4), all joined by 5.
    ms = {0: 1.0, 1: 1.0, 2: 1.0, 3: 0.01, 4: 0.01, 5: 1.0}
    costs = Costs(ms=ms, intensity=dict.fromkeys(ms, "compute"), demand=dict.fromkeys(ms, 0.5))
    plan = plan_of(FORK_JOIN, costs)
    assert plan.schedule.num_streams == 4
    out = coarse_plan(plan)
    big_0, big_1, small_0, small_1 = _streams(out, (1, 2, 3, 4))
    assert big_0 != big_1 and {small_0, small_1} <= {big_0, big_1}
    assert out.schedule.num_streams == 2 and out.schedule.stream_algorithm == "opara+coarse"
    assert len(out.fusion.segments) < len(cut_segments(plan.schedule))
    assert len(out.schedule.waits) < len(plan.schedule.waits)


def test_when_every_branch_is_small_the_plan_becomes_one_stream(tiny_plan):
    out = coarse_plan(tiny_plan, min_ms=1.0)
    assert out.schedule.num_streams == 1 and not out.schedule.waits and len(out.fusion.segments) == 1


def test_when_no_branch_is_small_only_the_name_changes(tiny_plan):
    out = coarse_plan(tiny_plan, fraction=0.0, min_ms=0.0)
    s, given = out.schedule, tiny_plan.schedule
    assert (s.stream, s.launch_order, s.waits, s.num_streams) == (given.stream, given.launch_order, given.waits,
                                                                   given.num_streams)
    assert s.stream_algorithm == "opara+coarse"


def test_one_stream_stays_one_stream(tiny_plan):
    single = make_schedule(tiny_plan.graph, tiny_plan.profile.ops, streams="single", order="topo", max_streams=0)
    out = coarse_plan(dataclasses.replace(tiny_plan, schedule=single), min_ms=1.0)
    assert out.schedule.stream == single.stream and out.schedule.stream_algorithm == "single+coarse"


def test_multi_device_schedules_are_refused(two_device_plan):
    with pytest.raises(ValueError, match="coarse cut: fused plans run on one GPU; this schedule spans 2 devices"):
        coarsen_streams(two_device_plan.schedule, two_device_plan.graph, two_device_plan.profile.ops)


@settings(max_examples=150, deadline=None)
@given(dags(), st.sampled_from(STREAM_ALGOS), st.sampled_from(ORDERS), st.sampled_from((0, 2, 4)),
       st.sampled_from((0.2, 0.5, 1.0)))
def test_coarse_schedules_are_valid_covered_dense_and_cut_no_more_segments(case, algo, order, cap, fraction):
    plan = plan_of(*case, streams=algo, order=order, cap=cap)
    out = coarse_plan(plan, fraction=fraction)  # validates: topological, every dependency waited for
    s = out.schedule
    dag = dag_of(out.graph, out.profile.ops)
    stream = {i: s.stream[i] for i in dag.ops}
    assert covered(dag, stream, s.launch_order, s.waits)  # independently of validate
    assert sorted(set(stream.values())) == list(range(s.num_streams)) and stream[dag.ops[0]] == 0
    assert s.num_streams <= plan.schedule.num_streams and s.max_streams == cap
    assert len(out.fusion.segments) <= len(cut_segments(plan.schedule))
    assert coarsen_streams(plan.schedule, plan.graph, plan.profile.ops, fraction=fraction) == s  # deterministic
