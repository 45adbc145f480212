"""When an intermediate's memory may be released without racing another stream."""
from __future__ import annotations

from opara_plan import Plan, Ref, node_refs
from opara_plan.clocks import vector_clocks
from opara_runtime.ops import aliased_input


def release_points(plan: Plan, *, sequential: bool) -> dict[int, tuple[int, ...]]:
    """op id -> node ids whose values may be dropped right after that op is launched.

    Values that alias one storage (views) form a group under their root op, whose stream allocated the
    memory. The caching allocator hands a freed block only to later work of that same stream, so a
    group may be dropped after an op x of the allocating stream that is ordered after every op touching
    the group: by stream order for users on that stream, by the waits (vector clocks) for the others.
    Groups with no such x live for the whole graph. Sequential runs drop a group after its last use.
    Graph outputs and inputs/weights are never released. In a graph spanning several GPUs, values of
    the devices other than the first live for the whole graph (the capture's private pool is the first
    device's; see capture.py).
    """
    nodes, s = plan.graph.nodes, plan.schedule
    root: dict[int, int] = {}
    for i, node in enumerate(nodes):
        root[i] = i
        if node.kind == "op":
            k = aliased_input(node.target)
            if k is not None and k < len(node.args) and isinstance(node.args[k], Ref):
                root[i] = root[node.args[k].node]
    position = {i: p for p, i in enumerate(s.launch_order)}
    users: dict[int, set[int]] = {}
    members: dict[int, list[int]] = {}
    pinned: set[int] = set()
    for i, node in enumerate(nodes):
        if node.kind == "op":
            users.setdefault(root[i], set()).add(i)
            members.setdefault(root[i], []).append(i)
        for ref in node_refs(node):
            r = root[ref.node]
            if node.kind == "output" or nodes[r].kind != "op":
                pinned.add(r)
            elif node.kind == "op":
                users.setdefault(r, set()).add(i)
    if not sequential and plan.schedule.device:
        pinned.update(r for r in users if plan.schedule.device[r] != 0)
    if sequential:
        after = {r: s.launch_order[max(position[u] for u in us)] for r, us in users.items() if r not in pinned}
    else:
        after = _ordered_after(plan, users, pinned, position)
    release: dict[int, list[int]] = {}
    for r, x in after.items():
        release.setdefault(x, []).extend(members[r])
    return {i: tuple(v) for i, v in release.items()}


def _ordered_after(plan: Plan, users: dict[int, set[int]], pinned: set[int], position) -> dict[int, int]:
    """root -> the first op of the root's stream ordered after every user of the root's storage."""
    s = plan.schedule
    seq, start = vector_clocks(s.launch_order, s.stream, s.num_streams, s.waits)
    on_stream: dict[int, list[int]] = {}
    for i in s.launch_order:
        on_stream.setdefault(s.stream[i], []).append(i)
    out: dict[int, int] = {}
    for r, us in users.items():
        if r in pinned:
            continue
        home = s.stream[r]
        last = max(position[u] for u in us)
        foreign = [u for u in us if s.stream[u] != home]
        for x in on_stream[home]:
            if position[x] < last:
                continue
            if all(start[x][s.stream[u]] >= seq[u] for u in foreign):
                out[r] = x
                break
    return out
