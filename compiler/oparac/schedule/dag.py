"""The op-level dependency DAG that schedulers work on, derived from a plan graph."""
from __future__ import annotations

from dataclasses import dataclass

from opara_plan import Graph, node_refs


@dataclass(frozen=True)
class Dag:
    """Ops only (inputs, params and constants are ready before anything runs).

    ops: op node ids in graph (topological) order. preds/succs: direct op dependencies.
    free: ops that launch no kernel (views, reshapes); schedulers keep them on a producer's stream.
    """

    ops: tuple[int, ...]
    preds: dict[int, tuple[int, ...]]
    succs: dict[int, tuple[int, ...]]
    free: frozenset[int] = frozenset()

    @staticmethod
    def from_graph(graph: Graph, free: frozenset[int] = frozenset()) -> Dag:
        nodes = graph.nodes
        ops = tuple(i for i, n in enumerate(nodes) if n.kind == "op")
        preds: dict[int, tuple[int, ...]] = {}
        succs: dict[int, list[int]] = {i: [] for i in ops}
        for i in ops:
            ps = sorted({r.node for r in node_refs(nodes[i]) if nodes[r.node].kind == "op"})
            preds[i] = tuple(ps)
            for p in ps:
                succs[p].append(i)
        return Dag(ops, preds, {i: tuple(v) for i, v in succs.items()}, frozenset(free))

    @staticmethod
    def from_edges(num_ops: int, edges, free=()) -> Dag:
        """A DAG over ops 0..num_ops-1 from (producer, consumer) pairs with producer < consumer. For tests."""
        preds: dict[int, set[int]] = {i: set() for i in range(num_ops)}
        for p, c in edges:
            if not 0 <= p < c < num_ops:
                raise ValueError(f"edge ({p}, {c}) must satisfy 0 <= producer < consumer < {num_ops}")
            preds[c].add(p)
        succs: dict[int, list[int]] = {i: [] for i in range(num_ops)}
        for c in range(num_ops):
            for p in sorted(preds[c]):
                succs[p].append(c)
        return Dag(tuple(range(num_ops)), {i: tuple(sorted(v)) for i, v in preds.items()},
                   {i: tuple(v) for i, v in succs.items()}, frozenset(free))
