"""When an intermediate's memory may be released without racing another stream."""
from __future__ import annotations

from opara_plan import Plan, Ref, node_refs
from opara_runtime.ops import aliased_input


def release_points(plan: Plan, *, sequential: bool) -> dict[int, tuple[int, ...]]:
    """op id -> node ids whose values may be dropped right after that op is launched.

    Values that alias one storage (views) form a group under their root. A group is released after
    its last reader only when every producer and reader of it runs on the root's stream (or the run
    is sequential): then stream order alone guarantees the readers finished before the allocator
    hands the memory to a later op of that stream. Groups read across streams live for the whole
    graph, which is always safe. Graph outputs and inputs/weights are never released.
    """
    nodes, stream = plan.graph.nodes, plan.schedule.stream
    root: dict[int, int] = {}
    for i, node in enumerate(nodes):
        root[i] = i
        if node.kind == "op":
            k = aliased_input(node.target)
            if k is not None and k < len(node.args) and isinstance(node.args[k], Ref):
                root[i] = root[node.args[k].node]
    position = {i: p for p, i in enumerate(plan.schedule.launch_order)}
    members: dict[int, list[int]] = {}
    last_use: dict[int, int] = {}
    streams_of: dict[int, set[int]] = {}
    pinned: set[int] = set()
    for i, node in enumerate(nodes):
        if node.kind == "op":
            r = root[i]
            members.setdefault(r, []).append(i)
            last_use[r] = max(last_use.get(r, -1), position[i])
            streams_of.setdefault(r, set()).add(stream[i])
        for ref in node_refs(node):
            r = root[ref.node]
            if node.kind == "output" or nodes[r].kind != "op":
                pinned.add(r)
                continue
            last_use[r] = max(last_use.get(r, -1), position[i])
            streams_of.setdefault(r, set()).add(stream[i])
    release: dict[int, list[int]] = {}
    for r, group in members.items():
        if r in pinned or (not sequential and streams_of[r] != {stream[r]}):
            continue
        release.setdefault(plan.schedule.launch_order[last_use[r]], []).extend(group)
    return {i: tuple(v) for i, v in release.items()}
