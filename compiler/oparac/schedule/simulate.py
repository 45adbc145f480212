"""Timing of a schedule from per-op costs: the makespan simulator and longest paths (bottom levels)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Simulation:
    makespan_ms: float
    start: dict[int, float]
    finish: dict[int, float]


def simulate(dag, stream: dict[int, int], order, waits, costs, *, launch_overhead_ms: float = 0.0) -> Simulation:
    """Predict when every op starts and finishes.

    Each stream runs its ops one at a time in launch order; an op starts once the previous op on its
    stream and every op it waits on have finished, and not before the host has launched it (the host
    issues launches in `order`, `launch_overhead_ms` per kernel, free ops cost nothing). Kernels on
    different streams do not slow each other down (no contention model): the prediction is a lower
    bound that ranks schedules; --tune measures the real thing.

    Producers are also honoured directly: in a valid schedule that changes nothing (waits and stream
    order already imply them), but callers that simulate lanes other than the plan's streams (one lane
    per device and stream) get a correct answer too.
    """
    waits_of: dict[int, list[int]] = {}
    for consumer, producer in waits:
        waits_of.setdefault(consumer, []).append(producer)
    free_at: dict[int, float] = {}
    start: dict[int, float] = {}
    finish: dict[int, float] = {}
    host = 0.0
    for i in order:
        s = stream[i]
        if i not in dag.free:
            host += launch_overhead_ms
        ready = max([free_at.get(s, 0.0), host]
                    + [finish[p] for p in waits_of.get(i, ())]
                    + [finish[p] for p in dag.preds[i]])
        start[i] = ready
        finish[i] = ready + costs.ms[i]
        free_at[s] = finish[i]
    return Simulation(max(finish.values(), default=0.0), start, finish)


def bottom_levels(dag, costs) -> dict[int, float]:
    """Longest time from an op's start to the end of the graph, the op included."""
    level: dict[int, float] = {}
    for i in reversed(dag.ops):
        level[i] = costs.ms[i] + max((level[s] for s in dag.succs[i]), default=0.0)
    return level


def critical_path(dag, costs) -> tuple[tuple[int, ...], float]:
    """The longest path (its ops, first to last) and its length in ms; ties go to the lowest op id."""
    if not dag.ops:
        return (), 0.0
    level = bottom_levels(dag, costs)
    entries = [i for i in dag.ops if not dag.preds[i]]
    node = max(entries, key=lambda i: (level[i], -i))
    path = [node]
    while dag.succs[node]:
        node = max(dag.succs[node], key=lambda s: (level[s], -s))
        path.append(node)
    return tuple(path), level[path[0]]
