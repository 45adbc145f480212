"""Values that depend on neither the model's inputs nor its weights, computed once at compile time.

Models build masks and index tables in forward from shapes alone: torchvision's Swin-T writes each shifted
window's attention mask into a zeros tensor slice by slice (after export: a fill and a slice_scatter, which
copies the whole mask, per slice: 135 ops of its 906), transformers build causal masks from aranges. In eager
PyTorch and in the plan these are small kernels on every call; here they are evaluated on the CPU as the graph is
ingested, and the values the rest of the graph reads become plan constants (checked and bounded like any other).

Weights are never folded: a plan binds them at load, so new weights take effect. Ops with random or undefined
results (empty tensors), and sorts, whose order of ties differs between CPU and GPU, stay ops. Folding is all or
nothing per model: where the constants it would embed exceed FOLD_BUDGET_BYTES, the graph is ingested as it is.
"""
from __future__ import annotations

import operator

import torch
import torch.fx
import torch.utils._pytree as pytree

from opara_runtime.ops import op_packet

FOLD_LIMIT_BYTES = 4 * 2**20  # no single folded value larger: a big table stays cheaper to compute than to ship
FOLD_BUDGET_BYTES = 16 * 2**20  # the constants one model's folding may add to its plan

# Ops whose result depends on their first tensor argument's shape and dtype only, not on its values.
SHAPE_ONLY = frozenset({"aten.new_zeros", "aten.new_ones", "aten.new_full", "aten.zeros_like", "aten.ones_like",
                        "aten.full_like"})
# Uninitialised results, and sorts (ties ordered differently on the CPU and on a GPU).
NEVER = frozenset({"aten.empty", "aten.empty_like", "aten.new_empty", "aten.empty_strided", "aten.new_empty_strided",
                   "aten.empty_permuted", "aten.sort", "aten.argsort", "aten.topk", "aten.kthvalue", "aten.median",
                   "aten.nanmedian", "aten.mode", "aten.unique", "aten._unique", "aten._unique2", "aten.unique_dim",
                   "aten.unique_consecutive", "aten.msort"})
_CPU = torch.device("cpu")


def fold_constants(graph: torch.fx.Graph, known: dict[torch.fx.Node, torch.Tensor], *,
                   budget: int = FOLD_BUDGET_BYTES, dropped: frozenset = frozenset()) -> dict[torch.fx.Node, object]:
    """Every call_function node of `graph` computable at compile time -> its value (a tensor, or a tuple for a
    multi-output op read through getitem). known: nodes whose values are constants already (lifted constants);
    dropped: nodes the ingest leaves out (unused metadata assertions), which read nothing that must be kept.
    Empty where the values the rest of the graph would read exceed `budget` bytes."""
    values: dict[torch.fx.Node, object] = dict(known)
    for node in graph.nodes:
        if node.op == "call_function":
            value = _evaluate(node, values)
            if value is not None:
                values[node] = value
    folded = {n: v for n, v in values.items() if n not in known}
    if sum(nbytes(folded[n]) for n in folded if read_by_kept_ops(n, folded, dropped)) > budget:
        return {}
    return folded


def read_by_kept_ops(node: torch.fx.Node, folded: dict, dropped=frozenset(), unread=frozenset()) -> bool:
    """An op kept in the graph (or the output) reads `node`, so its value becomes a plan constant. dropped: nodes
    left out of the graph; unread: (node, user) pairs where the user is rebuilt without reading it."""
    return any(u not in folded and u not in dropped and (node, u) not in unread for u in node.users)


def _evaluate(node: torch.fx.Node, values: dict) -> object | None:
    if node.target is operator.getitem:
        src, index = node.args
        parent = values.get(src)
        return parent[index] if isinstance(parent, tuple) else None
    target = node.target
    if not isinstance(target, torch._ops.OpOverload):
        return None
    packet = op_packet(target)
    if packet in NEVER or torch.Tag.nondeterministic_seeded in target.tags:
        return None
    reads = [n for n in pytree.tree_leaves((node.args, node.kwargs)) if isinstance(n, torch.fx.Node)]
    shape_only = packet in SHAPE_ONLY and bool(node.args) and isinstance(node.args[0], torch.fx.Node)
    needed = reads[1:] if shape_only else reads
    if any(n not in values or not isinstance(values[n], torch.Tensor) for n in needed):
        return None

    def real(a):
        if isinstance(a, torch.fx.Node):
            if a in values:
                return values[a]
            meta = a.meta["val"]  # the shape-only operand: its shape and dtype are what the op reads
            return torch.empty(meta.shape, dtype=meta.dtype)
        return _CPU if isinstance(a, torch.device) else a

    try:
        args, kwargs = pytree.tree_map(real, node.args), pytree.tree_map(real, node.kwargs)
        with torch.no_grad():
            out = target(*args, **kwargs)
    except Exception:  # an op the CPU cannot evaluate (or without recorded metadata) stays an op
        return None
    return out if _matches(out, node.meta.get("val"), node) else None


def _matches(out, meta, node: torch.fx.Node) -> bool:
    """The value has the shape and dtype export recorded and is small enough; a tuple only read by getitem."""
    if isinstance(out, torch.Tensor):
        return (isinstance(meta, torch.Tensor) and tuple(out.shape) == tuple(meta.shape) and out.dtype == meta.dtype
                and nbytes(out) <= FOLD_LIMIT_BYTES)
    if isinstance(out, (tuple, list)) and isinstance(meta, (tuple, list)) and len(out) == len(meta):
        return (all(u.target is operator.getitem for u in node.users)
                and all(_matches(o, m, node) for o, m in zip(out, meta)))
    return False


def nbytes(value) -> int:
    """The bytes of a tensor, or of a tuple of them."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return sum(nbytes(v) for v in value)
