"""Launch orders: topo (graph order), opara (Opara Alg. 2, resource-aware), critical (longest path first)."""
from __future__ import annotations

import heapq

from oparac.schedule.paths import bottom_levels

ORDER_ALGORITHMS = ("topo", "opara", "critical")


def order_launches(dag, assignment, costs, *, algorithm: str) -> tuple[int, ...]:
    """A topological order of every op: the order in which ops are launched during capture."""
    if algorithm not in ORDER_ALGORITHMS:
        raise ValueError(f"launch order: expected one of {ORDER_ALGORITHMS}, found {algorithm!r}")
    if algorithm == "topo":
        return tuple(dag.ops)
    if algorithm == "critical":
        level = bottom_levels(dag, costs)
        return _list_order(dag, lambda i: (0 if i in dag.free else 1, -level[i], i))
    return _opara_order(dag, costs)


def _list_order(dag, key) -> tuple[int, ...]:
    waiting = {i: len(dag.preds[i]) for i in dag.ops}
    heap = [(key(i), i) for i in dag.ops if waiting[i] == 0]
    heapq.heapify(heap)
    out = []
    while heap:
        _, i = heapq.heappop(heap)
        out.append(i)
        for c in dag.succs[i]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(heap, (key(c), c))
    return tuple(out)


def _opara_order(dag, costs) -> tuple[int, ...]:
    """Two ready lists, memory- and compute-intensive; alternate between them, each time launching the
    ready op with the smallest resource demand, so that kernels that fit beside each other overlap.
    Free ops launch as soon as they are ready."""
    waiting = {i: len(dag.preds[i]) for i in dag.ops}
    free: list[int] = []
    lists: dict[str, list] = {"memory": [], "compute": []}

    def push(i):
        if i in dag.free or costs.intensity[i] == "free":
            heapq.heappush(free, i)
        else:
            kind = "compute" if costs.intensity[i] == "compute" else "memory"
            heapq.heappush(lists[kind], (costs.demand[i], i))

    for i in dag.ops:
        if waiting[i] == 0:
            push(i)
    out: list[int] = []
    turn = "memory"
    while free or lists["memory"] or lists["compute"]:
        if free:
            i = heapq.heappop(free)
        else:
            if not lists[turn]:
                turn = "compute" if turn == "memory" else "memory"
            i = heapq.heappop(lists[turn])[1]
            turn = "compute" if turn == "memory" else "memory"
        out.append(i)
        for c in dag.succs[i]:
            waiting[c] -= 1
            if waiting[c] == 0:
                push(c)
    return tuple(out)
