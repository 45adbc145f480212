"""Property tests over random DAGs: every schedule the compiler can emit is valid, capped and deterministic."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oparac.schedule import assign_streams, critical_path, order_launches, reduce_waits, simulate

from helpers.schedules import (ORDERS, STREAM_ALGOS, brute_force_width, covered, dags, kernel_width, relabel,
                               relabel_costs)

CAPS = (0, 1, 2, 3, 5)


def _simulate_waits_only(dag, stream, order, waits, costs) -> float:
    """The simulator's model with nothing but stream order and waits: what the GPU enforces."""
    waits_of: dict[int, list[int]] = {}
    for c, p in waits:
        waits_of.setdefault(c, []).append(p)
    free_at: dict[int, float] = {}
    finish: dict[int, float] = {}
    for i in order:
        start = max([free_at.get(stream[i], 0.0)] + [finish[p] for p in waits_of.get(i, ())])
        finish[i] = free_at[stream[i]] = start + costs.ms[i]
    return max(finish.values(), default=0.0)


@settings(max_examples=200, deadline=None)
@given(dags(), st.sampled_from(STREAM_ALGOS), st.sampled_from(CAPS))
def test_assignments_are_dense_capped_and_start_on_stream_0(case, algo, cap):
    dag, costs = case
    a = assign_streams(dag, costs, algorithm=algo, max_streams=cap)
    assert set(a.stream) == set(dag.ops)
    assert sorted(set(a.stream.values())) == list(range(a.num_streams))
    assert a.stream[dag.ops[0]] == 0
    if cap:
        assert a.num_streams <= cap
    kernels = [i for i in dag.ops if i not in dag.free]
    if kernels:  # free ops never open a stream
        assert {a.stream[i] for i in kernels} == set(range(a.num_streams))
    for i in dag.free:  # a view rides on a producer's stream, a view of an input on a consumer's
        neighbours = dag.preds[i] or dag.succs[i]
        assert not neighbours or a.stream[i] in {a.stream[j] for j in neighbours}


@settings(max_examples=200, deadline=None)
@given(dags(), st.sampled_from(STREAM_ALGOS), st.sampled_from(ORDERS), st.sampled_from(CAPS))
def test_every_schedule_is_topological_covered_and_timed_within_bounds(case, algo, order, cap):
    dag, costs = case
    a = assign_streams(dag, costs, algorithm=algo, max_streams=cap)
    launch = order_launches(dag, a, costs, algorithm=order)
    assert sorted(launch) == sorted(dag.ops)
    position = {i: k for k, i in enumerate(launch)}
    assert all(position[p] < position[c] for c in dag.ops for p in dag.preds[c])

    waits = reduce_waits(dag, a.stream, launch)
    assert list(waits) == sorted(set(waits))
    assert all(a.stream[c] != a.stream[p] and position[p] < position[c] for c, p in waits)
    assert covered(dag, a.stream, launch, waits)

    sim = simulate(dag, a.stream, launch, waits, costs)
    total = sum(costs.ms.values())
    assert critical_path(dag, costs)[1] - 1e-9 <= sim.makespan_ms <= total + 1e-9
    assert sim.makespan_ms == pytest.approx(_simulate_waits_only(dag, a.stream, launch, waits, costs))
    if a.num_streams == 1:
        assert sim.makespan_ms == pytest.approx(total)


@settings(max_examples=60, deadline=None)
@given(dags(max_ops=25), st.sampled_from(STREAM_ALGOS), st.sampled_from(ORDERS))
def test_waits_are_minimal(case, algo, order):
    """Dropping any chosen wait leaves some dependency uncovered."""
    dag, costs = case
    a = assign_streams(dag, costs, algorithm=algo)
    launch = order_launches(dag, a, costs, algorithm=order)
    waits = reduce_waits(dag, a.stream, launch)
    for k in range(len(waits)):
        assert not covered(dag, a.stream, launch, waits[:k] + waits[k + 1:])


@settings(max_examples=150, deadline=None)
@given(dags())
def test_nimble_uses_exactly_the_width(case):
    """Streams == width of the kernels' partial order (free ops left out; kernels ordered through them)."""
    dag, costs = case
    a = assign_streams(dag, costs, algorithm="nimble")
    assert a.num_streams == max(1, kernel_width(dag))


@settings(max_examples=100, deadline=None)
@given(dags(max_ops=10))
def test_the_width_check_agrees_with_brute_force(case):
    dag, _ = case
    assert kernel_width(dag) == brute_force_width(dag)


@settings(max_examples=100, deadline=None)
@given(dags(), st.sampled_from(STREAM_ALGOS), st.sampled_from(ORDERS), st.sampled_from(CAPS))
def test_scheduling_is_deterministic_and_independent_of_id_values(case, algo, order, cap):
    """Same input, same schedule; renaming ops (order kept) renames the schedule and changes nothing else."""
    dag, costs = case
    dense = {i: k for k, i in enumerate(dag.ops)}
    back = {k: i for i, k in dense.items()}
    runs = [_schedule(dag, costs, algo, order, cap) for _ in range(2)]
    assert runs[0] == runs[1]
    stream, launch, waits, makespan = _schedule(relabel(dag, dense), relabel_costs(costs, dense), algo, order, cap)
    assert runs[0] == ({back[k]: s for k, s in stream.items()}, tuple(back[k] for k in launch),
                       tuple(sorted((back[c], back[p]) for c, p in waits)), makespan)


def _schedule(dag, costs, algo, order, cap) -> tuple[dict, tuple, tuple, float]:
    a = assign_streams(dag, costs, algorithm=algo, max_streams=cap)
    launch = order_launches(dag, a, costs, algorithm=order)
    waits = reduce_waits(dag, a.stream, launch)
    return a.stream, launch, waits, simulate(dag, a.stream, launch, waits, costs).makespan_ms
