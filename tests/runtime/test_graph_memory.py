"""Graph memory predicted without a GPU: live bytes per stream under the plan's release points, and a pool shared
by several captures."""
from __future__ import annotations

import dataclasses

from opara_plan import Graph, Node, Ref, TensorMeta
from opara_runtime.graph_memory import (GraphMemory, capture_order, predict_graph_memory, predict_shared_pool,
                                        value_bytes)


def test_fork_join_peaks_per_stream(tiny_plan):
    # mm (stream 0) is read by relu on stream 1, so it lives until add, which waits for relu; relu's value has no
    # later op on its own stream to be freed after, so it lives for the whole graph; add is the output.
    memory = predict_graph_memory(tiny_plan)
    assert memory.peak == (3 * 24, 24)  # mm, sigmoid and add live together on stream 0
    assert memory.held == (24, 0)  # only the output stays allocated after the capture
    assert memory.total == 96


def test_views_allocate_nothing(tiny_plan):
    view = Node(kind="op", name="view", target="aten.view.default", args=(Ref(2), (6,)),
                outputs=(TensorMeta((6,), "float32"),))
    plan = dataclasses.replace(tiny_plan, graph=Graph(tiny_plan.graph.nodes + (view,)))
    assert value_bytes(plan, len(plan.graph.nodes) - 1) == 0
    assert value_bytes(plan, 2) == 24 and value_bytes(plan, 0) == 0  # inputs live outside the pool


def test_a_shared_pool_holds_the_largest_plus_what_the_others_keep():
    large = GraphMemory(peak=(72, 24), held=(24, 0))
    fits = GraphMemory(peak=(36, 12), held=(12, 0))
    assert capture_order([fits, large]) == [1, 0]
    assert predict_shared_pool([fits, large]) == ([0, 96], 96)
    # A capture that needs more on a stream than the earlier ones left free adds the difference.
    grows = GraphMemory(peak=(60, 30), held=(12, 0))
    assert predict_shared_pool([large, grows]) == ([96, (24 + 60 - 72) + (30 - 24)], 96 + 12 + 6)
    # Without sharing the pools would add up.
    assert sum(m.total for m in (large, fits)) == 144
