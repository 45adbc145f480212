"""The schedulers on tiny named graphs, including the cases where nothing should change."""
from __future__ import annotations

import pytest

from oparac.dag import Dag
from oparac.schedule import (Costs, assign_streams, critical_path, order_launches, reduce_waits, simulate)

ALGOS = ("opara", "nimble", "critical", "single")
ORDERS = ("topo", "opara", "critical")

CHAIN = Dag.from_edges(4, [(0, 1), (1, 2), (2, 3)])
DIAMOND = Dag.from_edges(4, [(0, 1), (0, 2), (1, 3), (2, 3)])
FORK_JOIN = Dag.from_edges(6, [(0, 1), (0, 2), (0, 3), (0, 4), (1, 5), (2, 5), (3, 5), (4, 5)])
TWO_BRANCHES = Dag.from_edges(6, [(0, 1), (1, 2), (3, 4), (4, 5)])
WIDTH_THREE = Dag.from_edges(7, [(0, 1), (0, 2), (0, 3), (1, 4), (2, 5), (3, 6), (1, 5)])


def _schedule(dag, algo, order="topo", cap=0, costs=None):
    costs = costs or Costs.uniform(dag)
    a = assign_streams(dag, costs, algorithm=algo, max_streams=cap)
    launch = order_launches(dag, a, costs, algorithm=order)
    waits = reduce_waits(dag, a.stream, launch)
    return a, launch, waits, simulate(dag, a.stream, launch, waits, costs)


@pytest.mark.parametrize("algo", ALGOS)
def test_a_chain_uses_one_stream_and_no_waits(algo):
    a, launch, waits, sim = _schedule(CHAIN, algo)
    assert a.num_streams == 1 and set(a.stream.values()) == {0}
    assert launch == (0, 1, 2, 3) and waits == ()
    assert sim.makespan_ms == pytest.approx(4.0)


@pytest.mark.parametrize("algo", ("opara", "nimble", "critical"))
def test_diamond_runs_its_middle_in_parallel(algo):
    a, _, waits, sim = _schedule(DIAMOND, algo)
    assert a.num_streams == 2 and a.stream[1] != a.stream[2]
    assert a.stream[0] == 0
    assert sim.makespan_ms == pytest.approx(3.0)
    assert len(waits) == 2  # fork and join, nothing redundant


@pytest.mark.parametrize("algo", ("opara", "nimble", "critical"))
def test_fork_join_opens_one_stream_per_branch(algo):
    a, _, waits, sim = _schedule(FORK_JOIN, algo)
    assert a.num_streams == 4
    assert sim.makespan_ms == pytest.approx(3.0)
    assert len(waits) == 6  # three forks, three joins


@pytest.mark.parametrize("algo", ("opara", "nimble", "critical"))
def test_independent_branches(algo):
    a, _, waits, sim = _schedule(TWO_BRANCHES, algo)
    assert a.num_streams == 2 and waits == ()
    assert sim.makespan_ms == pytest.approx(3.0)


def test_nimble_uses_the_width():
    a, *_ = _schedule(WIDTH_THREE, "nimble")
    assert a.num_streams == 3


@pytest.mark.parametrize("algo", ("opara", "nimble", "critical"))
@pytest.mark.parametrize("cap", (1, 2, 3))
def test_cap_is_honoured(algo, cap):
    a, *_ = _schedule(FORK_JOIN, algo, cap=cap)
    assert a.num_streams <= cap


def test_free_ops_follow_their_producer_and_cost_nothing():
    dag = Dag.from_edges(4, [(0, 1), (1, 2), (0, 3)], free=(1,))
    costs = Costs.uniform(dag)
    for algo in ("opara", "nimble", "critical"):
        a = assign_streams(dag, costs, algorithm=algo)
        assert a.stream[1] == a.stream[0]
    assert costs.ms[1] == 0.0


def test_opara_order_alternates_memory_and_compute():
    dag = Dag.from_edges(5, [(0, 1), (0, 2), (0, 3), (0, 4)])
    costs = Costs(ms={i: 1.0 for i in range(5)},
                  intensity={0: "memory", 1: "compute", 2: "compute", 3: "memory", 4: "memory"},
                  demand={0: 0.1, 1: 0.9, 2: 0.2, 3: 0.5, 4: 0.3})
    a = assign_streams(dag, costs, algorithm="opara")
    # after 0 (memory): compute with the smallest demand (2), memory (4), compute (1), memory (3)
    assert order_launches(dag, a, costs, algorithm="opara") == (0, 2, 4, 1, 3)


def test_critical_order_launches_the_long_branch_first():
    dag = Dag.from_edges(5, [(0, 1), (0, 2), (2, 3), (3, 4)])
    costs = Costs.uniform(dag)
    a = assign_streams(dag, costs, algorithm="critical")
    assert order_launches(dag, a, costs, algorithm="critical")[:2] == (0, 2)
    path, length = critical_path(dag, costs)
    assert path == (0, 2, 3, 4) and length == pytest.approx(4.0)


def test_unknown_algorithms_are_refused():
    with pytest.raises(ValueError, match="stream algorithm"):
        assign_streams(CHAIN, Costs.uniform(CHAIN), algorithm="magic")
    a = assign_streams(CHAIN, Costs.uniform(CHAIN), algorithm="single")
    with pytest.raises(ValueError, match="launch order"):
        order_launches(CHAIN, a, Costs.uniform(CHAIN), algorithm="magic")
