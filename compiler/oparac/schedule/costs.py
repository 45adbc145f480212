"""Per-op costs the schedulers read: time, compute/memory intensity and resource demand."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Costs:
    ms: dict[int, float]
    intensity: dict[int, str]  # 'compute' | 'memory' | 'free'
    demand: dict[int, float]   # the op's kernels' resource demand relative to one SM, 0 for free ops

    @staticmethod
    def uniform(dag, ms: float = 1.0) -> Costs:
        """Every kernel costs `ms`, free ops nothing. For tests."""
        return Costs(ms={i: 0.0 if i in dag.free else ms for i in dag.ops},
                     intensity={i: "free" if i in dag.free else "compute" for i in dag.ops},
                     demand={i: 0.0 if i in dag.free else 0.5 for i in dag.ops})
