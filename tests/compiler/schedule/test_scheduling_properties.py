"""Property tests over random DAGs: every schedule the compiler can emit is valid."""
from __future__ import annotations

import itertools

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oparac.dag import Dag
from oparac.schedule import Costs, assign_streams, critical_path, order_launches, reduce_waits, simulate

ALGOS = ("opara", "nimble", "critical", "single")
ORDERS = ("topo", "opara", "critical")


@st.composite
def dags(draw):
    n = draw(st.integers(1, 30))
    edges = set()
    for c in range(1, n):
        for p in draw(st.lists(st.integers(0, c - 1), max_size=3)):
            edges.add((p, c))
    free = draw(st.sets(st.integers(0, n - 1), max_size=n // 4))
    ms = draw(st.lists(st.floats(0.01, 5.0), min_size=n, max_size=n))
    kinds = draw(st.lists(st.sampled_from(["compute", "memory"]), min_size=n, max_size=n))
    dag = Dag.from_edges(n, sorted(edges), free)
    costs = Costs(ms={i: 0.0 if i in dag.free else ms[i] for i in range(n)},
                  intensity={i: "free" if i in dag.free else kinds[i] for i in range(n)},
                  demand={i: 0.0 if i in dag.free else ms[i] / 5 for i in range(n)})
    return dag, costs


def _covered(dag, stream, launch, waits):
    """Independent check: every dependency is ordered by same-stream order or a chain of waits."""
    hb = nx.DiGraph()
    hb.add_nodes_from(dag.ops)
    last = {}
    for i in launch:
        if stream[i] in last:
            hb.add_edge(last[stream[i]], i)
        last[stream[i]] = i
    hb.add_edges_from((p, c) for c, p in waits)
    closure = nx.transitive_closure_dag(hb)
    return all(closure.has_edge(p, c) for c in dag.ops for p in dag.preds[c])


def _width(dag) -> int:
    """The largest antichain of kernels (Dilworth), by brute force on small DAGs."""
    kernels = [i for i in dag.ops if i not in dag.free]
    g = nx.DiGraph()
    g.add_nodes_from(dag.ops)
    g.add_edges_from((p, c) for c in dag.ops for p in dag.preds[c])
    closure = nx.transitive_closure_dag(g)
    for size in range(len(kernels), 0, -1):
        for combo in itertools.combinations(kernels, size):
            if all(not closure.has_edge(a, b) and not closure.has_edge(b, a)
                   for a, b in itertools.combinations(combo, 2)):
                return size
    return 0


@settings(max_examples=150, deadline=None)
@given(dags(), st.sampled_from(ALGOS), st.sampled_from(ORDERS), st.sampled_from([0, 1, 2, 3, 5]))
def test_every_schedule_is_valid(case, algo, order, cap):
    dag, costs = case
    a = assign_streams(dag, costs, algorithm=algo, max_streams=cap)
    assert set(a.stream) == set(dag.ops)
    assert sorted(set(a.stream.values())) == list(range(a.num_streams))
    if cap:
        assert a.num_streams <= cap
    launch = order_launches(dag, a, costs, algorithm=order)
    assert sorted(launch) == sorted(dag.ops)
    pos = {i: k for k, i in enumerate(launch)}
    assert all(pos[p] < pos[c] for c in dag.ops for p in dag.preds[c])
    waits = reduce_waits(dag, a.stream, launch)
    assert all(a.stream[c] != a.stream[p] and pos[p] < pos[c] for c, p in waits)
    assert _covered(dag, a.stream, launch, waits)
    sim = simulate(dag, a.stream, launch, waits, costs)
    total = sum(costs.ms.values())
    assert critical_path(dag, costs)[1] - 1e-9 <= sim.makespan_ms <= total + 1e-9
    if a.num_streams == 1:
        assert sim.makespan_ms == pytest.approx(total)


@settings(max_examples=100, deadline=None)
@given(dags())
def test_nimble_uses_exactly_the_width(case):
    dag, costs = case
    kernels = [i for i in dag.ops if i not in dag.free]
    if len(kernels) > 14:
        return  # brute-force width is exponential
    a = assign_streams(dag, costs, algorithm="nimble")
    used = {a.stream[i] for i in kernels}
    assert len(used) == max(1, _width(dag))


@settings(max_examples=60, deadline=None)
@given(dags(), st.sampled_from(ALGOS))
def test_waits_are_minimal(case, algo):
    """Dropping any chosen wait leaves some dependency uncovered."""
    dag, costs = case
    a = assign_streams(dag, costs, algorithm=algo)
    launch = order_launches(dag, a, costs, algorithm="topo")
    waits = reduce_waits(dag, a.stream, launch)
    for k in range(len(waits)):
        assert not _covered(dag, a.stream, launch, waits[:k] + waits[k + 1:])


def test_scheduling_is_deterministic():
    dag = Dag.from_edges(8, [(0, 1), (0, 2), (0, 3), (1, 4), (2, 4), (3, 5), (4, 6), (5, 6), (6, 7)])
    costs = Costs.uniform(dag)
    for algo in ALGOS:
        runs = {tuple(sorted(assign_streams(dag, costs, algorithm=algo).stream.items())) for _ in range(3)}
        assert len(runs) == 1
