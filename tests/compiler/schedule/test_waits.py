"""Wait reduction: cross-stream dependencies get a wait unless stream order and other waits imply it."""
from __future__ import annotations

import pytest

from opara_plan.clocks import vector_clocks
from oparac.schedule.dag import Dag
from oparac.schedule import reduce_waits

from helpers.schedules import CHAIN, DIAMOND, FORK_JOIN, NO_PARALLELISM, PARALLEL_ALGOS, WIDTH_THREE, covered, schedule


def _plan_checker_accepts(dag, stream, order, waits) -> bool:
    """The plan validator's rule (opara_plan.validate._check_coverage), on the same vector clocks."""
    seq, start = vector_clocks(order, stream, max(stream.values()) + 1, waits)
    return all(stream[p] == stream[i] or start[i][stream[p]] >= seq[p] for i in order for p in dag.preds[i])


@pytest.mark.parametrize("dag", [CHAIN, NO_PARALLELISM], ids=["chain", "no_parallelism"])
def test_one_stream_needs_no_waits(dag):
    assert reduce_waits(dag, dict.fromkeys(dag.ops, 0), dag.ops) == ()


def test_diamond_waits_at_the_fork_and_the_join():
    stream = {0: 0, 1: 0, 2: 1, 3: 0}
    assert reduce_waits(DIAMOND, stream, (0, 1, 2, 3)) == ((2, 0), (3, 2))


@pytest.mark.parametrize("algo", PARALLEL_ALGOS)
def test_fork_join_waits_once_per_branch_each_way(algo):
    _, _, waits, _ = schedule(FORK_JOIN, algo)
    assert len(waits) == 6  # three forks and three joins; the fourth branch shares 0's stream


def test_a_wait_implied_by_an_earlier_wait_is_dropped():
    # 1 on stream 1 waited for 0; 2 follows 1 on stream 1 and so needs no wait for 0.
    dag = Dag.from_edges(3, [(0, 1), (0, 2), (1, 2)])
    assert reduce_waits(dag, {0: 0, 1: 1, 2: 1}, (0, 1, 2)) == ((1, 0),)


def test_waiting_on_the_latest_op_of_a_stream_covers_its_earlier_ones():
    dag = Dag.from_edges(3, [(0, 1), (0, 2), (1, 2)])
    assert reduce_waits(dag, {0: 0, 1: 0, 2: 1}, (0, 1, 2)) == ((2, 1),)


def test_waits_are_transitive_across_streams():
    # 1 (stream 1) waited for 0 (stream 0); 2 (stream 2) waits for 1 and thereby for 0.
    dag = Dag.from_edges(3, [(0, 1), (0, 2), (1, 2)])
    assert reduce_waits(dag, {0: 0, 1: 1, 2: 2}, (0, 1, 2)) == ((1, 0), (2, 1))


def test_a_wait_covers_everything_before_the_producer_on_its_stream():
    # 2 (stream 1) waited for 1, which follows 0 on stream 0; 3 reads 0 and needs no wait of its own.
    dag = Dag.from_edges(4, [(0, 1), (1, 2), (0, 3), (2, 3)])
    assert reduce_waits(dag, {0: 0, 1: 0, 2: 1, 3: 1}, (0, 1, 2, 3)) == ((2, 1),)


def test_launch_order_decides_what_is_implied():
    # 0 and 1 share stream 0 and feed 2 and 3 on stream 1: whichever wait comes last on stream 0's
    # order covers the other.
    dag = Dag.from_edges(4, [(0, 2), (1, 3)])
    stream = {0: 0, 1: 0, 2: 1, 3: 1}
    assert reduce_waits(dag, stream, (0, 1, 2, 3)) == ((2, 0), (3, 1))
    assert reduce_waits(dag, stream, (1, 0, 2, 3)) == ((2, 0),)
    assert reduce_waits(dag, stream, (0, 1, 3, 2)) == ((3, 1),)


def test_op_ids_need_not_be_0_to_n():
    dag = Dag((5, 9, 30), {5: (), 9: (5,), 30: (5, 9)}, {5: (9, 30), 9: (30,), 30: ()})
    assert reduce_waits(dag, {5: 0, 9: 1, 30: 2}, (5, 9, 30)) == ((9, 5), (30, 9))


@pytest.mark.parametrize("algo", PARALLEL_ALGOS)
@pytest.mark.parametrize("order", ("topo", "opara", "critical"))
@pytest.mark.parametrize("dag", [DIAMOND, FORK_JOIN, WIDTH_THREE], ids=["diamond", "fork_join", "width_three"])
def test_the_plan_checker_accepts_the_waits_and_no_fewer(algo, order, dag):
    a, launch, waits, _ = schedule(dag, algo, order)
    assert list(waits) == sorted(waits)
    assert _plan_checker_accepts(dag, a.stream, launch, waits) and covered(dag, a.stream, launch, waits)
    for k in range(len(waits)):
        assert not _plan_checker_accepts(dag, a.stream, launch, waits[:k] + waits[k + 1:])
