"""Launch orders: topo (graph order), opara (Opara Alg. 2, resource-aware), critical (longest path first)."""
from __future__ import annotations

import heapq

from oparac.options import ORDER_ALGORITHMS
from oparac.schedule.simulate import bottom_levels


def order_launches(dag, assignment, costs, *, algorithm: str) -> tuple[int, ...]:
    """A topological order of every op: the order in which ops are launched during capture.

    None of the orders depends on the stream assignment; it is an input so that an order may.
    """
    if algorithm not in ORDER_ALGORITHMS:
        raise ValueError(f"launch order: expected one of {ORDER_ALGORITHMS}, found {algorithm!r}")
    if algorithm == "topo":
        return tuple(dag.ops)
    if algorithm == "critical":
        return _critical_order(dag, costs)
    return _opara_order(dag, costs)


def _is_free(dag, costs, i: int) -> bool:
    return i in dag.free or costs.intensity[i] == "free"


def _critical_order(dag, costs) -> tuple[int, ...]:
    """Ready ops by highest bottom level, ties by lowest id. Free ops go first when ready: they cost
    nothing and release their consumers."""
    level = bottom_levels(dag, costs)
    waiting = {i: len(dag.preds[i]) for i in dag.ops}

    def key(i):
        return (not _is_free(dag, costs, i), -level[i], i)

    ready = [key(i) for i in dag.ops if not waiting[i]]
    heapq.heapify(ready)
    out: list[int] = []
    while ready:
        i = heapq.heappop(ready)[-1]
        out.append(i)
        for c in dag.succs[i]:
            waiting[c] -= 1
            if not waiting[c]:
                heapq.heappush(ready, key(c))
    return tuple(out)


def _opara_order(dag, costs) -> tuple[int, ...]:
    """Two ready lists, memory- and compute-intensive; alternate between them (memory first), each time
    launching the ready op with the smallest resource demand (ties: lowest id), so that kernels which fit
    beside each other on the SMs overlap. When one list is empty the other goes on. Free ops launch as
    soon as they are ready and do not take a turn."""
    waiting = {i: len(dag.preds[i]) for i in dag.ops}
    free: list[int] = []
    lists: dict[str, list[tuple[float, int]]] = {"memory": [], "compute": []}

    def push(i):
        if _is_free(dag, costs, i):
            heapq.heappush(free, i)
        else:
            kind = "compute" if costs.intensity[i] == "compute" else "memory"
            heapq.heappush(lists[kind], (costs.demand[i], i))

    for i in dag.ops:
        if not waiting[i]:
            push(i)
    out: list[int] = []
    turn, other = "memory", "compute"
    while free or lists["memory"] or lists["compute"]:
        if free:
            i = heapq.heappop(free)
        else:
            if not lists[turn]:
                turn, other = other, turn
            i = heapq.heappop(lists[turn])[1]
            turn, other = other, turn
        out.append(i)
        for c in dag.succs[i]:
            waiting[c] -= 1
            if not waiting[c]:
                push(c)
    return tuple(out)
