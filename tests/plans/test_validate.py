"""validate(): every way a decoded plan can be inconsistent is named precisely."""
from __future__ import annotations

import dataclasses

import pytest

from opara_plan import Graph, Node, PlanFormatError, Ref, TensorMeta, graph_fingerprint, validate


def _sched(plan, **changes):
    return dataclasses.replace(plan, schedule=dataclasses.replace(plan.schedule, **changes))


def _graph(plan, nodes):
    graph = Graph(tuple(nodes))
    model = dataclasses.replace(plan.model, fingerprint=graph_fingerprint(graph))
    return dataclasses.replace(plan, graph=graph, model=model)


def test_the_valid_plan_passes(tiny_plan):
    validate(tiny_plan)


@pytest.mark.parametrize("changes, message", [
    ({"launch_order": (2, 3, 3, 5)}, r"node 3 \(aten.relu.default 'relu'\) appears twice"),
    ({"launch_order": (2, 3, 5)}, r"node 4 \(aten.sigmoid.default 'sigmoid'\) is missing from the launch order"),
    ({"launch_order": (2, 3, 4, 1)}, r"launch_order\[3\]: 1 is not an op node"),
    ({"launch_order": (2, 5, 3, 4), "waits": ((3, 2),)}, "not topological|without waiting"),
    ({"waits": ((5, 3),)}, r"node 3 \(aten.relu.default 'relu'\) on stream 1 reads node 2 of stream 0 without waiting"),
    ({"waits": ((3, 2),)}, r"node 5 \(aten.add.Tensor 'add'\) on stream 0 reads node 3 of stream 1 without waiting"),
    ({"waits": ((2, 3), (5, 3))}, r"node 2 .* waits on node 3, which launches later"),
    ({"stream": (-1, -1, 0, 2, 0, 0, -1)}, r"stream 2 out of range 0..1"),
    ({"num_streams": 0}, r"num_streams: expected 1..1024"),
    ({"stream": (0, 0, 0)}, r"schedule.stream: expected 7 entries"),
    ({"device": (0, 0, 0, 0, 0, 3, 0)}, r"device 3 out of range"),
])
def test_schedule_errors_name_the_node(tiny_plan, changes, message):
    with pytest.raises(PlanFormatError, match=message):
        validate(_sched(tiny_plan, **changes))


def test_waits_can_be_transitive(tiny_plan):
    # add (stream 0) already follows mm on stream 0; relu's wait covers mm -> relu.
    validate(_sched(tiny_plan, waits=((3, 2), (5, 3))))


def test_fingerprint_must_match_graph(tiny_plan):
    nodes = list(tiny_plan.graph.nodes)
    nodes[3] = dataclasses.replace(nodes[3], target="aten.tanh.default")
    with pytest.raises(PlanFormatError, match="fingerprint"):
        validate(dataclasses.replace(tiny_plan, graph=Graph(tuple(nodes))))


@pytest.mark.parametrize("index, node, message", [
    (3, Node(kind="op", name="relu", target="aten.relu.default", args=(Ref(5),),
             outputs=(TensorMeta((2, 3), "float32"),)), r"refers to node 5, expected an earlier node"),
    (3, Node(kind="op", name="relu", target="aten.relu.default", args=(Ref(2, 4),),
             outputs=(TensorMeta((2, 3), "float32"),)), r"refers to output 4 of node 2"),
    (3, Node(kind="op", name="relu", target="relu", args=(Ref(2),),
             outputs=(TensorMeta((2, 3), "float32"),)), r"target must be 'namespace.op.overload'"),
    (3, Node(kind="op", name="relu", target="aten.relu.default", args=(Ref(2),),
             outputs=(TensorMeta((2, 3), "float99"),)), r"unknown dtype 'float99'"),
    (3, Node(kind="blob", name="relu"), r"kind must be one of"),
    (1, Node(kind="constant", name="w", outputs=(TensorMeta((3, 3), "float32"),), data=b"\0" * 8),
     r"constant holds 8 bytes.*needs 36"),
    (6, Node(kind="op", name="add2", target="aten.relu.default", args=(Ref(5),),
             outputs=(TensorMeta((2, 3), "float32"),)), r"exactly one 'output' node"),
])
def test_graph_errors_name_the_node(tiny_plan, index, node, message):
    nodes = list(tiny_plan.graph.nodes)
    nodes[index] = node
    with pytest.raises(PlanFormatError, match=message):
        validate(_graph(tiny_plan, nodes))


def test_input_spec_must_match_input_node(tiny_plan):
    model = dataclasses.replace(tiny_plan.model, inputs=())
    with pytest.raises(PlanFormatError, match="model.inputs"):
        validate(dataclasses.replace(tiny_plan, model=model))


def test_profile_must_cover_every_node(tiny_plan):
    profile = dataclasses.replace(tiny_plan.profile, ops=tiny_plan.profile.ops[:3])
    with pytest.raises(PlanFormatError, match="profile.ops: expected 7"):
        validate(dataclasses.replace(tiny_plan, profile=profile))


def test_memory_format_must_be_known(tiny_plan):
    plan = dataclasses.replace(tiny_plan, model=dataclasses.replace(tiny_plan.model, memory_format="nhwc"))
    with pytest.raises(PlanFormatError, match=r"plan field model.memory_format: expected one of "
                                              r"\('contiguous', 'channels_last'\), found 'nhwc'"):
        validate(plan)


def test_schedule_clocks_are_bounded(monkeypatch, tiny_plan):
    """Checking waits keeps one clock per op still waited on; a hostile schedule that would hold too many at once
    is refused, not allowed to allocate without bound (opara_plan/clocks.py)."""
    from opara_plan import clocks

    validate(tiny_plan)  # the fork-join's one wait fits any bound above one clock
    monkeypatch.setattr(clocks, "MAX_CLOCK_BYTES", 8)
    with pytest.raises(PlanFormatError, match="too large to check"):
        validate(tiny_plan)


def test_streamed_clocks_equal_the_whole_table():
    from opara_plan.clocks import iter_clocks, vector_clocks

    order, stream = [0, 1, 2, 3], {0: 0, 1: 1, 2: 0, 3: 0}
    waits = [(3, 1)]
    seq, start = vector_clocks(order, stream, 2, waits)
    assert seq == {0: 1, 1: 1, 2: 2, 3: 3}
    assert start == {0: [0, 0], 1: [0, 0], 2: [1, 0], 3: [2, 1]}
    assert [(i, k, c.tolist()) for i, k, c in iter_clocks(order, stream, 2, waits)] == \
        [(i, seq[i], start[i]) for i in order]


_W = (TensorMeta((3, 3), "float32"),)


def test_a_stacked_param_names_the_weights_it_concatenates(tiny_plan):
    nodes = list(tiny_plan.graph.nodes)
    nodes[1] = Node(kind="param", name="a+b", target="concat", args=("a", "b"), outputs=_W)
    validate(_graph(tiny_plan, nodes))


@pytest.mark.parametrize("node, message", [
    (Node(kind="param", name="w", target="concat", args=("a",), outputs=_W), r"names 2..64 weights, found 1"),
    (Node(kind="param", name="w", target="concat", args=tuple(f"w{k}" for k in range(65)), outputs=_W),
     r"names 2..64 weights, found 65"),
    (Node(kind="param", name="w", target="concat", args=("a", Ref(0)), outputs=_W), r"not all of them names"),
    (Node(kind="param", name="w", target="concat", args=("a", ""), outputs=_W), r"not all of them names"),
    (Node(kind="param", name="w", target="concat", args=("a", "b"), kwargs=(("dim", 1),), outputs=_W),
     r"and keyword arguments"),
    (Node(kind="param", name="w", target="concat", args=("a", "a"), outputs=_W), r"names a weight twice"),
    (Node(kind="param", name="w", target="concat", args=("a", "b"), outputs=(TensorMeta((), "float32"),)),
     r"needs at least one dimension"),
    (Node(kind="param", name="w", target="aten.cat.default", args=("a", "b"), outputs=_W),
     r"a param node takes no arguments"),
    (Node(kind="param", name="w", target="stack", outputs=_W), r"a param node has no target \('concat' is"),
    (Node(kind="input", name="w", target="concat", outputs=_W), r"an input node has no target"),
])
def test_a_malformed_stacked_param_is_refused_naming_the_node(tiny_plan, node, message):
    nodes = list(tiny_plan.graph.nodes)
    nodes[1] = node
    with pytest.raises(PlanFormatError, match=r"plan node 1 .*" + message):
        validate(_graph(tiny_plan, nodes))


def test_two_params_of_one_name_must_bind_the_same_weight(tiny_plan):
    # Weights are placed once per name: a second param of the name binding something else would get the first's.
    nodes = list(tiny_plan.graph.nodes)
    nodes[0] = Node(kind="param", name="w", target="concat", args=("a", "b"), outputs=(TensorMeta((2, 3), "float32"),))
    with pytest.raises(PlanFormatError, match=r"plan node 1 \(param 'w'\): another param of this name binds"):
        validate(_graph(tiny_plan, nodes))
