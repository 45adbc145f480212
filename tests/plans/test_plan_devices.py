"""Plans for several GPUs: codec round trip, and validation of devices, copies and links."""
from __future__ import annotations

import dataclasses

import pytest

from opara_plan import (Graph, Link, Node, PlanFormatError, Ref, graph_fingerprint, is_copy, plan_from_bytes,
                        plan_to_bytes, validate)

from helpers.plans import make_two_device_plan


def _sched(plan, **changes):
    return dataclasses.replace(plan, schedule=dataclasses.replace(plan.schedule, **changes))


def _nodes(plan, changes: dict[int, Node]):
    graph = Graph(tuple(changes.get(i, n) for i, n in enumerate(plan.graph.nodes)))
    model = dataclasses.replace(plan.model, fingerprint=graph_fingerprint(graph))
    return dataclasses.replace(plan, graph=graph, model=model)


def test_round_trip_keeps_devices_copies_and_links(two_device_plan):
    validate(two_device_plan)
    data = plan_to_bytes(two_device_plan)
    back = plan_from_bytes(data)
    assert back == two_device_plan
    assert plan_to_bytes(back) == data
    assert back.profile.links[0] == Link(0, 1, 0.01, 5e-9) and back.schedule.device_algorithm == "hios-lp"
    assert plan_to_bytes(make_two_device_plan()) == data


def test_copy_nodes_are_recognised(two_device_plan):
    assert [i for i, n in enumerate(two_device_plan.graph.nodes) if is_copy(n)] == [3, 5]


def test_a_single_device_plan_has_no_new_keys_set(tiny_plan):
    assert tiny_plan.schedule.device == () and tiny_plan.profile.links == ()
    validate(tiny_plan)


def test_a_cross_device_edge_without_its_copy_is_named(two_device_plan):
    relu = two_device_plan.graph.nodes[4]
    plan = _nodes(two_device_plan, {4: dataclasses.replace(relu, args=(Ref(2),))})
    with pytest.raises(PlanFormatError, match=r"node 4 \(aten.relu.default 'relu'\) on device 1 reads node 2 on "
                                              r"device 0 without a copy; .* aten._to_copy.default"):
        validate(plan)


def test_an_output_on_another_device_needs_its_copy(two_device_plan):
    plan = _nodes(two_device_plan, {8: Node(kind="output", name="output", args=(Ref(4),))})
    with pytest.raises(PlanFormatError, match=r"node 8 \(output 'output'\) on device 0 reads node 4 on device 1 "
                                              r"without a copy"):
        validate(plan)


def test_a_weight_read_on_another_device_needs_its_own_node(two_device_plan):
    relu = two_device_plan.graph.nodes[4]
    mm = Node(kind="op", name="mm1", target="aten.mm.default", args=(Ref(3), Ref(1)), outputs=relu.outputs)
    plan = _nodes(two_device_plan, {4: mm})
    with pytest.raises(PlanFormatError, match=r"node 4 \(aten.mm.default 'mm1'\) on device 1 reads node 1 on "
                                              r"device 0 without a copy"):
        validate(plan)


@pytest.mark.parametrize("changes, message", [
    ({"device": (0, 0, 0, 2, 2, 0, 0, 0, 0)}, r"node 3 \(aten._to_copy.default 'copy_mm_to_1'\): device 2 out of "
                                             r"range 0..1"),
    ({"num_devices": 65}, r"num_devices: expected 1..64"),
    ({"device": (1, 1, 1, 1, 1, 1, 1, 1, 1)}, r"node 0 \(input 'x'\): on device 1, expected 0"),
    ({"stream": (-1, -1, 0, 1, 1, 1, 0, 0, -1), "waits": ((3, 2), (7, 5))},
     r"node 5 .*: on device 0, but its stream 1 is on device 1 \(node 3\)"),
    ({"stream": (-1, -1, 1, 0, 0, 1, 1, 1, -1), "waits": ((3, 2), (5, 4))},
     r"node 3 .*: on device 1, but its stream 0 is device 0's capture stream"),
])
def test_device_errors_name_the_node(two_device_plan, changes, message):
    with pytest.raises(PlanFormatError, match=message):
        validate(_sched(two_device_plan, **changes))


@pytest.mark.parametrize("link, message", [
    (Link(0, 0, 0.01, 1e-9), r"links\[0\]: expected two different devices, found 0 -> 0"),
    (Link(0, 2, 0.01, 1e-9), r"links\[0\]: device 2 out of range 0..1"),
    (Link(0, 1, -1.0, 1e-9), r"links\[0\]: expected non-negative latency"),
])
def test_link_errors_are_named(two_device_plan, link, message):
    plan = dataclasses.replace(two_device_plan, profile=dataclasses.replace(two_device_plan.profile, links=(link,)))
    with pytest.raises(PlanFormatError, match=message):
        validate(plan)


def test_a_plan_without_the_new_keys_still_decodes(tiny_plan):
    import msgpack

    obj = msgpack.unpackb(plan_to_bytes(tiny_plan), raw=False)
    obj["schema_version"] = [1, 0]
    for key in ("links", "links_method"):
        obj["profile"].pop(key)
    obj["schedule"].pop("device_algorithm")
    assert plan_from_bytes(msgpack.packb(obj, use_bin_type=True)).schedule == tiny_plan.schedule
