"""The makespan simulator and the longest-path helpers on tiny named graphs."""
from __future__ import annotations

import pytest

from oparac.schedule.dag import Dag
from oparac.schedule import Costs, Simulation, bottom_levels, critical_path, simulate

from helpers.schedules import CHAIN, DIAMOND, FORK_JOIN, PARALLEL_ALGOS, TWO_BRANCHES, WIDTH_THREE, schedule


def _costs(ms: dict[int, float], free=()) -> Costs:
    return Costs(ms=ms, intensity={i: "free" if i in free else "compute" for i in ms},
                 demand={i: 0.0 if i in free else 0.5 for i in ms})


def test_a_chain_runs_back_to_back():
    sim = simulate(CHAIN, dict.fromkeys(CHAIN.ops, 0), CHAIN.ops, (), Costs.uniform(CHAIN))
    assert sim == Simulation(4.0, {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}, {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0})


@pytest.mark.parametrize("algo, dag, makespan", [
    (algo, dag, ms) for algo in PARALLEL_ALGOS
    for dag, ms in ((DIAMOND, 3.0), (FORK_JOIN, 3.0), (TWO_BRANCHES, 3.0), (WIDTH_THREE, 3.0))])
def test_parallel_schedules_reach_the_critical_path(algo, dag, makespan):
    _, _, _, sim = schedule(dag, algo)
    assert sim.makespan_ms == pytest.approx(makespan)
    assert sim.makespan_ms == pytest.approx(critical_path(dag, Costs.uniform(dag))[1])


@pytest.mark.parametrize("dag", [DIAMOND, FORK_JOIN, WIDTH_THREE])
def test_one_stream_takes_the_sum_of_the_costs(dag):
    _, _, _, sim = schedule(dag, "single")
    assert sim.makespan_ms == pytest.approx(len(dag.ops))


def test_a_wait_delays_the_consumer_until_the_producer_finishes():
    dag = Dag.from_edges(3, [(0, 2)])
    costs = _costs({0: 2.0, 1: 1.0, 2: 1.0})
    sim = simulate(dag, {0: 0, 1: 1, 2: 1}, (0, 1, 2), ((2, 0),), costs)
    assert sim.start == {0: 0.0, 1: 0.0, 2: 2.0} and sim.makespan_ms == 3.0


def test_ops_of_one_stream_run_one_at_a_time_in_launch_order():
    dag = Dag.from_edges(2, [])
    sim = simulate(dag, {0: 0, 1: 0}, (1, 0), (), _costs({0: 1.0, 1: 2.0}))
    assert sim.start == {1: 0.0, 0: 2.0}


def test_launch_overhead_delays_later_kernels_but_not_free_ops():
    dag = Dag.from_edges(4, [], free=(1,))
    costs = _costs({0: 1.0, 1: 0.0, 2: 1.0, 3: 1.0}, free=(1,))
    sim = simulate(dag, {0: 0, 1: 1, 2: 2, 3: 3}, (0, 1, 2, 3), (), costs, launch_overhead_ms=0.5)
    assert sim.start == {0: 0.5, 1: 0.5, 2: 1.0, 3: 1.5} and sim.makespan_ms == 2.5


def test_free_ops_take_no_time():
    dag = Dag.from_edges(3, [(0, 1), (1, 2)], free=(1,))
    _, _, _, sim = schedule(dag, "opara")
    assert sim.makespan_ms == pytest.approx(2.0) and sim.start[1] == sim.finish[1] == 1.0


def test_bottom_levels_are_the_longest_remaining_time():
    costs = _costs({i: float(i + 1) for i in range(7)})
    assert bottom_levels(WIDTH_THREE, costs) == {4: 5.0, 5: 6.0, 6: 7.0, 1: 8.0, 2: 9.0, 3: 11.0, 0: 12.0}


def test_critical_path_follows_the_longest_branch():
    dag = Dag.from_edges(5, [(0, 1), (0, 2), (2, 3), (3, 4)])
    assert critical_path(dag, Costs.uniform(dag)) == ((0, 2, 3, 4), 4.0)
    assert critical_path(WIDTH_THREE, _costs({i: float(i + 1) for i in range(7)})) == ((0, 3, 6), 12.0)


def test_critical_path_ties_go_to_the_lowest_id():
    assert critical_path(FORK_JOIN, Costs.uniform(FORK_JOIN)) == ((0, 1, 5), 3.0)
    assert critical_path(TWO_BRANCHES, Costs.uniform(TWO_BRANCHES)) == ((0, 1, 2), 3.0)


def test_empty_dag():
    empty = Dag((), {}, {})
    assert critical_path(empty, Costs.uniform(empty)) == ((), 0.0)
    assert simulate(empty, {}, (), (), Costs.uniform(empty)).makespan_ms == 0.0
