"""Longest paths through the op DAG by profiled time: bottom levels and the critical path."""
from __future__ import annotations


def bottom_levels(dag, costs) -> dict[int, float]:
    """Longest time from an op's start to the end of the graph, the op included."""
    level: dict[int, float] = {}
    for i in reversed(dag.ops):
        level[i] = costs.ms[i] + max((level[s] for s in dag.succs[i]), default=0.0)
    return level


def critical_path(dag, costs) -> tuple[tuple[int, ...], float]:
    """The longest path (ops) and its length in ms."""
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
