"""The makespan simulator: predicts when every op starts and finishes under a schedule."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Simulation:
    makespan_ms: float
    start: dict[int, float]
    finish: dict[int, float]


def simulate(dag, stream: dict[int, int], order, waits, costs, *, launch_overhead_ms: float = 0.0) -> Simulation:
    """Each stream runs its ops one at a time in launch order; an op starts once its stream is free, its
    producers have finished and the ops it waits on have finished. Kernels on different streams are
    assumed not to slow each other down (no contention model), so the prediction is a lower bound that
    ranks schedules; --tune measures the real thing."""
    waits_of: dict[int, list[int]] = {}
    for c, p in waits:
        waits_of.setdefault(c, []).append(p)
    free_at: dict[int, float] = {}
    start: dict[int, float] = {}
    finish: dict[int, float] = {}
    host = 0.0
    for i in order:
        s = stream[i]
        host += 0.0 if i in dag.free else launch_overhead_ms
        ready = max([free_at.get(s, 0.0), host] + [finish[p] for p in dag.preds[i]]
                    + [finish[p] for p in waits_of.get(i, ())])
        start[i] = ready
        finish[i] = ready + costs.ms[i]
        free_at[s] = finish[i]
    return Simulation(max(finish.values(), default=0.0), start, finish)
