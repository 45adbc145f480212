"""The coarse cut strategy: move small side branches onto a neighbouring stream before cutting segments.

Fused plans compile each segment (plans/opara_plan/segments.py) with inductor. Every cross-stream
dependency cuts a segment, costs an event wait and stops inductor from fusing across it. A branch that
is short next to the model's big segments gains little from running beside them, so here it joins the
stream it talks to: segments grow, cuts and waits go away, and the big parallel branches keep their
own streams. Whether that pays is decided by measuring (the fused tuner), not here.
"""
from __future__ import annotations

import dataclasses

from opara_plan import Graph, OpProfile, Schedule, Segment, cut_segments
from oparac.schedule.dag import Dag
from oparac.schedule import Costs, StreamAssignment, order_launches, reduce_waits
from oparac.schedule.build import costs_of, dag_of, finish_schedule

# A segment is small below max(MIN_MS, FRACTION x the largest segment's time), both taken from the
# schedule as given. The figures are judgement, not measurement: MIN_MS is about what a cross-stream
# event wait and a separate launch cost inside a CUDA graph (a few microseconds), so a branch shorter
# than that cannot win by running alone; FRACTION keeps branches comparable to the model's big
# segments parallel. The limit is fixed before merging: measured against the growing merged segments
# it would rise with every merge and end up swallowing the big branches too.
MIN_MS = 0.005
FRACTION = 0.2


def coarsen_streams(schedule: Schedule, graph: Graph, ops: tuple[OpProfile, ...], *, fraction: float = FRACTION,
                    min_ms: float = MIN_MS) -> Schedule:
    """A new schedule whose small side-branch segments run on a neighbouring stream. Does not mutate its input.

    Repeatedly, smallest segment first: a small segment moves to the one other stream its producers sit
    on, or failing that the one its consumers sit on, where that leaves fewer segments. Launch order,
    waits and prediction are then rebuilt as make_schedule builds them, so the result is a valid,
    race-free schedule with no more segments than the given one, on at most as many streams (dense
    ids); its stream_algorithm gets a '+coarse' suffix.
    """
    if schedule.num_devices > 1:
        raise ValueError("coarse cut: fused plans run on one GPU; this schedule spans "
                         f"{schedule.num_devices} devices")
    if fraction < 0 or min_ms < 0:
        raise ValueError(f"coarse cut: expected fraction and min_ms >= 0, found {fraction} and {min_ms}")
    dag = dag_of(graph, ops)
    costs = costs_of(graph, dag, ops)
    # No launch order reads the stream assignment (order.py), so one order serves every trial below.
    launch = order_launches(dag, None, costs, algorithm=schedule.order_algorithm)
    stream = {i: schedule.stream[i] for i in dag.ops}
    segments = _segments(schedule, dag, stream, launch)
    limit = max(min_ms, fraction * max((_ms(costs, s) for s in segments), default=0.0))
    tried: set[tuple[tuple[int, ...], int]] = set()
    moved = True
    while moved:
        moved = False
        for ops_, target in _proposals(dag, costs, segments, limit):
            if (ops_, target) in tried:
                continue
            tried.add((ops_, target))
            trial = stream | dict.fromkeys(ops_, target)
            cut = _segments(schedule, dag, trial, launch)
            # Only moves that cut fewer segments are kept: the result never has more segments than the
            # given schedule, and since every kept move removes one and no move is tried twice, it ends.
            if len(cut) < len(segments):
                stream, segments, moved = trial, cut, True
                break
    dense = _dense(dag, stream)
    return finish_schedule(graph, dag, costs, StreamAssignment(dense, len(set(dense.values()))),
                           streams=f"{schedule.stream_algorithm}+coarse", order=schedule.order_algorithm,
                           max_streams=schedule.max_streams)


def _segments(schedule: Schedule, dag: Dag, stream: dict[int, int], launch) -> tuple[Segment, ...]:
    """The maximal cut of `stream`, with the waits the real schedule would have."""
    table = list(schedule.stream)
    for i, s in stream.items():
        table[i] = s
    waits = reduce_waits(dag, stream, launch)
    return cut_segments(dataclasses.replace(schedule, stream=tuple(table), launch_order=launch, waits=waits))


def _ms(costs: Costs, segment: Segment) -> float:
    return sum(costs.ms[i] for i in segment.ops)


def _proposals(dag: Dag, costs: Costs, segments: tuple[Segment, ...], limit: float):
    """(ops, target stream) for each small segment, smallest first (it gives up the least overlap).

    The rule counts neighbouring streams, not segments: a branch fed by two segments of one stream still
    has one stream to join. Producers come first: joining the stream a branch forks from keeps it right
    behind its input."""
    owner = {i: k for k, seg in enumerate(segments) for i in seg.ops}
    small = sorted((k for k, seg in enumerate(segments) if _ms(costs, seg) < limit),
                   key=lambda k: (_ms(costs, segments[k]), k))
    for k in small:
        seg = segments[k]
        for edges in (dag.preds, dag.succs):
            others = {segments[owner[j]].stream for i in seg.ops for j in edges[i]} - {seg.stream}
            if len(others) == 1:
                yield seg.ops, others.pop()


def _dense(dag: Dag, stream: dict[int, int]) -> dict[int, int]:
    """Stream ids 0..n-1 by first use in graph order, as assign_streams numbers them; moves leave gaps."""
    first_use = {s: k for k, s in enumerate(dict.fromkeys(stream[i] for i in dag.ops))}
    return {i: first_use[s] for i, s in stream.items()}
