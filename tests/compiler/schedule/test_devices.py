"""HIOS-LP device mapping and the device-aware makespan model, on named graphs and random DAGs."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oparac.schedule.dag import Dag
from oparac.schedule import Costs
from oparac.schedule.devices import DeviceMapping, TransferModel, map_devices, simulate_devices

from helpers.schedules import CHAIN, DIAMOND, TWO_BRANCHES, dags

MB = 1 << 20
CHEAP = TransferModel(latency_ms=0.01, ms_per_byte=1e-9)    # ~1 ms per GB: NVLink-like
DEAR = TransferModel(latency_ms=100.0, ms_per_byte=1e-6)    # far more than any op
# A source feeding two heavy branches of 3 ops that join at a sink.
FORK_JOIN_WIDE = Dag.from_edges(8, [(0, 1), (1, 2), (2, 7), (0, 3), (3, 4), (4, 5), (5, 7), (0, 6), (6, 7)])


def _bytes(dag, nbytes=MB) -> dict[int, float]:
    return dict.fromkeys(dag.ops, float(nbytes))


def _costs(dag, ms: dict[int, float]) -> Costs:
    return Costs(ms=ms, intensity={i: "free" if i in dag.free else "compute" for i in dag.ops},
                 demand={i: 0.0 if i in dag.free else 0.5 for i in dag.ops})


def _all_on_0(dag, costs, out_bytes, transfer) -> float:
    return simulate_devices(dag, costs, dict.fromkeys(dag.ops, 0), out_bytes, transfer, streams_per_device=1)


def test_transfer_cost_is_latency_plus_bytes():
    assert TransferModel(0.5, 1e-6).cost(2e6) == pytest.approx(2.5)


def test_simulate_devices_charges_copies_only_across_devices():
    costs = Costs.uniform(CHAIN, 1.0)
    t = TransferModel(1.0, 0.0)
    assert simulate_devices(CHAIN, costs, dict.fromkeys(CHAIN.ops, 0), _bytes(CHAIN), t) == 4.0
    assert simulate_devices(CHAIN, costs, {0: 0, 1: 0, 2: 1, 3: 1}, _bytes(CHAIN), t) == 5.0
    assert simulate_devices(CHAIN, costs, {0: 0, 1: 1, 2: 0, 3: 1}, _bytes(CHAIN), t) == 7.0


def test_simulate_devices_unlimited_streams_reach_the_critical_path_and_lanes_serialise():
    costs = Costs.uniform(TWO_BRANCHES, 1.0)
    one = dict.fromkeys(TWO_BRANCHES.ops, 0)
    assert simulate_devices(TWO_BRANCHES, costs, one, _bytes(TWO_BRANCHES), CHEAP) == 3.0
    assert simulate_devices(TWO_BRANCHES, costs, one, _bytes(TWO_BRANCHES), CHEAP, streams_per_device=2) == 3.0
    assert simulate_devices(TWO_BRANCHES, costs, one, _bytes(TWO_BRANCHES), CHEAP, streams_per_device=1) == 6.0
    split = {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1}
    assert simulate_devices(TWO_BRANCHES, costs, split, _bytes(TWO_BRANCHES), CHEAP, streams_per_device=1) == 3.0


def test_simulate_devices_rejects_zero_streams():
    with pytest.raises(ValueError, match="streams_per_device"):
        simulate_devices(CHAIN, Costs.uniform(CHAIN), dict.fromkeys(CHAIN.ops, 0), _bytes(CHAIN), CHEAP,
                         streams_per_device=0)


@pytest.mark.parametrize("num_devices", [1, 2, 3, 8])
@pytest.mark.parametrize("transfer", [CHEAP, DEAR])
def test_a_chain_stays_on_device_0(num_devices, transfer):
    costs = Costs.uniform(CHAIN, 10.0)
    m = map_devices(CHAIN, costs, _bytes(CHAIN), num_devices=num_devices, transfer=transfer)
    assert m == DeviceMapping(dict.fromkeys(CHAIN.ops, 0), num_devices, 40.0)


def test_two_heavy_independent_branches_use_two_devices_and_halve_the_makespan():
    costs = Costs.uniform(TWO_BRANCHES, 10.0)
    m = map_devices(TWO_BRANCHES, costs, _bytes(TWO_BRANCHES), num_devices=2, transfer=CHEAP)
    assert m.device == {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1}
    assert m.predicted_ms == pytest.approx(_all_on_0(TWO_BRANCHES, costs, _bytes(TWO_BRANCHES), CHEAP) / 2)


def test_a_fork_join_with_cheap_copies_spreads_and_nearly_halves():
    costs = _costs(FORK_JOIN_WIDE, {0: 1.0, 1: 10.0, 2: 10.0, 3: 10.0, 4: 10.0, 5: 10.0, 6: 1.0, 7: 1.0})
    m = map_devices(FORK_JOIN_WIDE, costs, _bytes(FORK_JOIN_WIDE), num_devices=2, transfer=CHEAP)
    single = _all_on_0(FORK_JOIN_WIDE, costs, _bytes(FORK_JOIN_WIDE), CHEAP)
    assert m.device[1] == m.device[2] != m.device[3] == m.device[4] == m.device[5]
    assert m.device[0] == 0
    assert m.predicted_ms < 0.65 * single  # 53 -> 32 + two copies; the longer branch bounds it


def test_a_fork_join_with_expensive_copies_stays_on_one_device():
    costs = _costs(FORK_JOIN_WIDE, {0: 1.0, 1: 10.0, 2: 10.0, 3: 10.0, 4: 10.0, 5: 10.0, 6: 1.0, 7: 1.0})
    m = map_devices(FORK_JOIN_WIDE, costs, _bytes(FORK_JOIN_WIDE), num_devices=4, transfer=DEAR)
    assert set(m.device.values()) == {0}
    assert m.predicted_ms == _all_on_0(FORK_JOIN_WIDE, costs, _bytes(FORK_JOIN_WIDE), DEAR)


def test_unlimited_streams_never_spread_without_contention():
    costs = Costs.uniform(TWO_BRANCHES, 10.0)
    m = map_devices(TWO_BRANCHES, costs, _bytes(TWO_BRANCHES), num_devices=2, transfer=CHEAP,
                    streams_per_device=None)
    assert set(m.device.values()) == {0} and m.predicted_ms == 30.0


def test_free_ops_follow_their_producer_and_views_of_inputs_their_consumer():
    # two branches 0->1->2 and 3->4->5; 1 and 4 are views; 6 is a view of an input feeding 5
    dag = Dag.from_edges(7, [(0, 1), (1, 2), (3, 4), (4, 5)], free={1, 4})
    dag = Dag(dag.ops, {**dag.preds, 5: (4,), 6: ()}, {**dag.succs, 6: (5,)}, dag.free | {6})
    costs = _costs(dag, {0: 10.0, 1: 0.0, 2: 10.0, 3: 10.0, 4: 0.0, 5: 10.0, 6: 0.0})
    m = map_devices(dag, costs, _bytes(dag), num_devices=2, transfer=CHEAP)
    assert m.device[0] != m.device[3]
    assert m.device[1] == m.device[0] and m.device[4] == m.device[3] and m.device[6] == m.device[5]


def test_missing_output_sizes_are_named():
    with pytest.raises(ValueError, match=r"missing ops \[3\]"):
        map_devices(CHAIN, Costs.uniform(CHAIN), {0: 1.0, 1: 1.0, 2: 1.0}, num_devices=2, transfer=CHEAP)


def test_num_devices_must_be_positive():
    with pytest.raises(ValueError, match="num_devices"):
        map_devices(DIAMOND, Costs.uniform(DIAMOND), _bytes(DIAMOND), num_devices=0, transfer=CHEAP)


def test_the_empty_graph_maps_to_nothing():
    empty = Dag.from_edges(0, [])
    assert map_devices(empty, Costs.uniform(empty), {}, num_devices=2, transfer=CHEAP) == DeviceMapping({}, 2, 0.0)


transfers = st.builds(TransferModel, st.sampled_from([0.0, 0.01, 0.5, 5.0]), st.sampled_from([0.0, 1e-9, 1e-6]))


@settings(max_examples=150, deadline=None)
@given(dags(max_ops=30), st.integers(1, 4), transfers, st.data())
def test_mappings_are_complete_in_range_never_predicted_worse_than_one_device_and_deterministic(
        case, num_devices, transfer, data):
    dag, costs = case
    out_bytes = {i: data.draw(st.sampled_from([0.0, 4e3, 1e6, 1e8])) for i in dag.ops}
    m = map_devices(dag, costs, out_bytes, num_devices=num_devices, transfer=transfer)

    assert set(m.device) == set(dag.ops) and m.num_devices == num_devices
    assert all(0 <= d < num_devices for d in m.device.values())
    if dag.ops:
        assert m.device[dag.ops[0]] == 0
    assert m.predicted_ms == simulate_devices(dag, costs, m.device, out_bytes, transfer, streams_per_device=1)
    single = _all_on_0(dag, costs, out_bytes, transfer)
    assert m.predicted_ms <= single + 1e-9 * max(1.0, single)
    if num_devices == 1:
        assert set(m.device.values()) <= {0}
    for i in dag.free:
        if dag.preds[i]:
            assert m.device[i] == m.device[dag.preds[i][0]]
    assert map_devices(dag, costs, dict(out_bytes), num_devices=num_devices, transfer=transfer) == m
