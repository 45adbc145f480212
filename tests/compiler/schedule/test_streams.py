"""Stream assignment on tiny named graphs, including the cases where nothing should run in parallel."""
from __future__ import annotations

import pytest

from oparac.schedule.dag import Dag
from oparac.schedule import Costs, StreamAssignment, assign_streams

from helpers.schedules import (CHAIN, DIAMOND, FORK_JOIN, NO_PARALLELISM, PARALLEL_ALGOS, STREAM_ALGOS, TWO_BRANCHES,
                               WIDTH_THREE, relabel, schedule)


def _assign(dag, algo, cap=0, costs=None):
    return assign_streams(dag, costs or Costs.uniform(dag), algorithm=algo, max_streams=cap)


@pytest.mark.parametrize("algo", STREAM_ALGOS)
@pytest.mark.parametrize("dag", [CHAIN, NO_PARALLELISM], ids=["chain", "no_parallelism"])
def test_without_parallelism_everything_stays_on_stream_0(algo, dag):
    a = _assign(dag, algo)
    assert a == StreamAssignment({i: 0 for i in dag.ops}, 1)


@pytest.mark.parametrize("algo", PARALLEL_ALGOS)
def test_diamond_splits_its_middle(algo):
    a = _assign(DIAMOND, algo)
    assert a.num_streams == 2
    assert a.stream[0] == 0 and a.stream[1] != a.stream[2]


@pytest.mark.parametrize("algo", PARALLEL_ALGOS)
def test_fork_join_opens_one_stream_per_branch(algo):
    a = _assign(FORK_JOIN, algo)
    assert a.num_streams == 4
    assert len({a.stream[i] for i in (1, 2, 3, 4)}) == 4


@pytest.mark.parametrize("algo", PARALLEL_ALGOS)
def test_independent_branches_each_get_a_stream(algo):
    a = _assign(TWO_BRANCHES, algo)
    assert a.num_streams == 2
    assert a.stream[0] == a.stream[1] == a.stream[2] == 0
    assert a.stream[3] == a.stream[4] == a.stream[5] == 1


def test_single_puts_everything_on_stream_0():
    assert _assign(FORK_JOIN, "single") == StreamAssignment({i: 0 for i in FORK_JOIN.ops}, 1)


def test_nimble_uses_the_width():
    assert _assign(WIDTH_THREE, "nimble").num_streams == 3


def test_opara_follows_the_first_predecessor_that_has_not_handed_on():
    a = _assign(WIDTH_THREE, "opara")
    # 1 continues 0; 2 and 3 find 0 handed on and open streams; 5 finds 1 handed (to 4) and takes 2's.
    assert a.stream == {0: 0, 1: 0, 2: 1, 3: 2, 4: 0, 5: 1, 6: 2}


@pytest.mark.parametrize("algo", PARALLEL_ALGOS)
def test_the_first_op_is_on_stream_0(algo):
    # Critical scheduling places the longer branch 1 -> 2 first; 0 still gets stream 0.
    a = _assign(Dag.from_edges(3, [(1, 2)]), algo)
    assert a.stream[0] == 0 and a.num_streams == 2


def test_critical_ties_prefer_a_producers_stream():
    # 0 and 1 start together on streams 0 and 1; at t=1 both streams are free, and 2 (after 1) takes
    # 1's stream rather than the lower-numbered one: no wait needed.
    a, _, waits, sim = schedule(Dag.from_edges(4, [(1, 2), (0, 3)]), "critical")
    assert a.stream == {0: 0, 1: 1, 2: 1, 3: 0}
    assert waits == () and sim.makespan_ms == pytest.approx(2.0)


def test_critical_opens_a_stream_only_when_it_starts_earlier():
    # 2 depends on 1 only; joining 0's stream would start it at 2, its producer's stream at 1.
    costs = Costs(ms={0: 2.0, 1: 1.0, 2: 1.0}, intensity=dict.fromkeys(range(3), "compute"),
                  demand=dict.fromkeys(range(3), 0.5))
    a = _assign(Dag.from_edges(3, [(1, 2)]), "critical", costs=costs)
    assert a.num_streams == 2 and a.stream[2] == a.stream[1]


@pytest.mark.parametrize("algo", PARALLEL_ALGOS)
@pytest.mark.parametrize("cap", (1, 2, 3, 4, 5))
@pytest.mark.parametrize("dag", [FORK_JOIN, WIDTH_THREE], ids=["fork_join", "width_three"])
def test_cap_is_honoured(algo, cap, dag):
    uncapped = _assign(dag, algo).num_streams
    a = _assign(dag, algo, cap=cap)
    assert a.num_streams == min(cap, uncapped)
    assert sorted(set(a.stream.values())) == list(range(a.num_streams)) and a.stream[0] == 0


def test_folding_puts_extra_streams_on_the_least_loaded_pool_stream():
    # opara: {0, 1, 5} on stream 0 (3 ms), then 2, 3, 4 on streams of 1 ms each. With two pool
    # streams, 3 and 4 join stream 1 (1 ms, then 2 ms of work against stream 0's 3).
    a = _assign(FORK_JOIN, "opara", cap=2)
    assert a.stream == {0: 0, 1: 0, 5: 0, 2: 1, 3: 1, 4: 1}


def test_critical_with_a_cap_keeps_the_pool_busy():
    a, _, _, sim = schedule(FORK_JOIN, "critical", cap=2)
    assert a.num_streams == 2 and sim.makespan_ms == pytest.approx(4.0)


@pytest.mark.parametrize("algo", STREAM_ALGOS)
def test_a_view_stays_on_its_producers_stream(algo):
    dag = Dag.from_edges(4, [(0, 1), (1, 2), (0, 3)], free=(1,))
    a = _assign(dag, algo)
    assert a.stream[1] == a.stream[0]


@pytest.mark.parametrize("algo", PARALLEL_ALGOS)
def test_a_view_passes_its_producers_hand_off_to_its_consumer(algo):
    # 0 -> view 1 -> 2 and 0 -> 3: 2 continues 0's stream through the view, so 3 needs its own stream
    # instead of queueing behind 2.
    dag = Dag.from_edges(4, [(0, 1), (1, 2), (0, 3)], free=(1,))
    a = _assign(dag, algo)
    assert a.num_streams == 2 and a.stream[2] != a.stream[3]


@pytest.mark.parametrize("algo", PARALLEL_ALGOS)
def test_a_view_of_an_input_joins_its_consumer_and_needs_no_wait(algo):
    # 3 is a view of a weight (no producer) read by 4, which runs beside 1 off stream 0.
    dag = Dag.from_edges(5, [(0, 1), (0, 2), (2, 4), (3, 4)], free=(3,))
    a, _, waits, _ = schedule(dag, algo)
    assert a.stream[3] == a.stream[4]
    assert all(producer != 3 for _, producer in waits)


@pytest.mark.parametrize("algo", PARALLEL_ALGOS)
def test_views_of_inputs_viewed_together_share_a_stream_with_their_consumer(algo):
    # 0 and 1 view inputs and 4 views both; kernel 3 reads 0 and runs beside kernel 2. Placed one by one, 1
    # joined its consumer 4 on stream 0, 4 then rode on its first producer 0, which had joined 3 off stream 0,
    # and 1 was left alone on stream 0 (found by test_properties).
    dag = Dag.from_edges(5, [(0, 3), (0, 4), (1, 4)], free=(0, 1, 4))
    a = _assign(dag, algo)
    assert a.num_streams == 2 and a.stream[2] != a.stream[3]
    assert a.stream[0] == a.stream[1] == a.stream[4] == a.stream[3]


@pytest.mark.parametrize("algo", STREAM_ALGOS)
def test_free_ops_never_open_a_stream(algo):
    dag = Dag.from_edges(4, [(0, 1), (0, 2), (0, 3)], free=(1, 2, 3))
    assert _assign(dag, algo).num_streams == 1
    only_views = Dag.from_edges(3, [(0, 1)], free=(0, 1, 2))
    assert _assign(only_views, algo) == StreamAssignment({0: 0, 1: 0, 2: 0}, 1)


@pytest.mark.parametrize("algo", STREAM_ALGOS)
def test_op_ids_need_not_be_0_to_n(algo):
    label = {0: 10, 1: 13, 2: 20, 3: 41, 4: 42, 5: 97}
    dag = relabel(FORK_JOIN, label)
    a = _assign(dag, algo)
    expected = _assign(FORK_JOIN, algo)
    assert a.stream == {label[i]: s for i, s in expected.stream.items()}


def test_empty_dag():
    assert _assign(Dag((), {}, {}), "opara") == StreamAssignment({}, 1)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="stream algorithm"):
        _assign(CHAIN, "magic")
    with pytest.raises(ValueError, match="max_streams"):
        _assign(CHAIN, "opara", cap=-1)
