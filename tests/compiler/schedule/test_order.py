"""Launch orders on tiny named graphs: topo, opara (memory/compute alternation) and critical."""
from __future__ import annotations

import pytest

from oparac.schedule.dag import Dag
from oparac.schedule import Costs, assign_streams, order_launches

from helpers.schedules import CHAIN, DIAMOND, FORK_JOIN, ORDERS, WIDTH_THREE


def _order(dag, algo, costs=None):
    costs = costs or Costs.uniform(dag)
    return order_launches(dag, assign_streams(dag, costs, algorithm="opara"), costs, algorithm=algo)


def _costs(intensity: dict[int, str], demand: dict[int, float]) -> Costs:
    return Costs(ms={i: 0.0 if k == "free" else 1.0 for i, k in intensity.items()}, intensity=intensity,
                 demand=demand)


@pytest.mark.parametrize("algo", ORDERS)
@pytest.mark.parametrize("dag", [CHAIN, DIAMOND, FORK_JOIN, WIDTH_THREE])
def test_orders_are_topological_permutations(algo, dag):
    order = _order(dag, algo)
    assert sorted(order) == sorted(dag.ops)
    position = {i: k for k, i in enumerate(order)}
    assert all(position[p] < position[c] for c in dag.ops for p in dag.preds[c])


@pytest.mark.parametrize("algo", ORDERS)
def test_a_chain_has_one_order(algo):
    assert _order(CHAIN, algo) == (0, 1, 2, 3)


def test_topo_is_graph_order():
    assert _order(WIDTH_THREE, "topo") == WIDTH_THREE.ops


def test_opara_alternates_memory_and_compute_smallest_demand_first():
    dag = Dag.from_edges(5, [(0, 1), (0, 2), (0, 3), (0, 4)])
    costs = _costs({0: "memory", 1: "compute", 2: "compute", 3: "memory", 4: "memory"},
                   {0: 0.1, 1: 0.9, 2: 0.2, 3: 0.5, 4: 0.3})
    # After 0 (memory): compute 2 (0.2), memory 4 (0.3), compute 1, memory 3.
    assert _order(dag, "opara", costs) == (0, 2, 4, 1, 3)


def test_opara_goes_on_with_one_kind_when_the_other_is_empty():
    dag = Dag.from_edges(4, [(0, 1), (0, 2), (0, 3)])
    costs = _costs(dict.fromkeys(range(4), "compute"), {0: 0.5, 1: 0.9, 2: 0.1, 3: 0.4})
    assert _order(dag, "opara", costs) == (0, 2, 3, 1)


def test_opara_breaks_demand_ties_by_id():
    dag = Dag.from_edges(4, [(0, 3), (0, 2), (0, 1)])
    costs = _costs(dict.fromkeys(range(4), "memory"), dict.fromkeys(range(4), 0.5))
    assert _order(dag, "opara", costs) == (0, 1, 2, 3)


def test_opara_launches_free_ops_as_soon_as_they_are_ready():
    # After 0 both the kernel 1 and the view 2 are ready; the view goes first, at no cost.
    dag = Dag.from_edges(3, [(0, 1), (0, 2)], free=(2,))
    costs = _costs({0: "memory", 1: "compute", 2: "free"}, {0: 0.1, 1: 0.1, 2: 0.0})
    assert _order(dag, "opara", costs) == (0, 2, 1)


def test_critical_launches_the_long_branch_first():
    dag = Dag.from_edges(5, [(0, 1), (0, 2), (2, 3), (3, 4)])
    assert _order(dag, "critical")[:2] == (0, 2)


def test_critical_breaks_ties_by_id():
    assert _order(FORK_JOIN, "critical") == (0, 1, 2, 3, 4, 5)


def test_critical_uses_the_costs():
    dag = Dag.from_edges(3, [])
    costs = Costs(ms={0: 1.0, 1: 3.0, 2: 2.0}, intensity=dict.fromkeys(range(3), "compute"),
                  demand=dict.fromkeys(range(3), 0.5))
    assert _order(dag, "critical", costs) == (1, 2, 0)


def test_unknown_order_is_refused():
    with pytest.raises(ValueError, match="launch order"):
        _order(CHAIN, "magic")
