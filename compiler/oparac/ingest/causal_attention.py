"""Attention whose mask is a compile-time causal mask runs as causal attention, without the mask.

Traced, transformers' decoders cannot skip their causal mask (in eager they pass is_causal=True when nothing is
padded, a check on the data): export, like torch.compile's dynamo, gives scaled_dot_product_attention a
materialised lower-triangular mask built from shapes. Folded (ingest/fold_constants.py) it is a constant, and a
constant that keeps exactly the lower triangle (boolean True, or an additive 0, with -inf or the dtype's lowest
value elsewhere) means what is_causal=True means for a square score matrix. Without a mask SDPA can choose its
causal kernels (flash attention in half precision on a GPU), which skip the masked half of the scores instead of
reading a mask for all of them.
"""
from __future__ import annotations

import torch
import torch.fx

SDPA = torch.ops.aten.scaled_dot_product_attention.default
_MASK, _DROPOUT, _CAUSAL = 3, 4, 5  # positions in scaled_dot_product_attention's schema


def causal_attention(graph: torch.fx.Graph, values: dict[torch.fx.Node, object]) -> dict[torch.fx.Node, tuple]:
    """Each SDPA node of `graph` whose mask is a causal mask among `values` (compile-time values) -> the (args,
    kwargs) that call it without the mask and with is_causal=True."""
    out = {}
    for node in graph.nodes:
        if node.op != "call_function" or node.target is not SDPA:
            continue
        args, kwargs = list(node.args), dict(node.kwargs)
        mask = _take(args, kwargs, _MASK, "attn_mask")
        dropout = _take(args, kwargs, _DROPOUT, "dropout_p", 0.0)
        causal = _take(args, kwargs, _CAUSAL, "is_causal", False)
        if not isinstance(mask, torch.fx.Node) or dropout or causal:
            continue
        query, key = (a.meta.get("val") if isinstance(a, torch.fx.Node) else None for a in node.args[:2])
        value = values.get(mask)
        if isinstance(query, torch.Tensor) and isinstance(key, torch.Tensor) and isinstance(value, torch.Tensor) \
                and is_causal_mask(value, query.shape[-2], key.shape[-2]):
            if len(args) > _CAUSAL:
                args[_CAUSAL] = True
            else:
                kwargs["is_causal"] = True
            out[node] = (tuple(args), kwargs)
    return out


def mask_of(node: torch.fx.Node) -> torch.fx.Node | None:
    """The attention mask node an SDPA call reads."""
    if len(node.args) > _MASK:
        return node.args[_MASK]
    return node.kwargs.get("attn_mask")


def is_causal_mask(mask: torch.Tensor, rows: int, cols: int) -> bool:
    """Every [rows, cols] slice of `mask` keeps exactly the lower triangle of a square score matrix."""
    if rows != cols or mask.dim() < 2 or tuple(mask.shape[-2:]) != (rows, cols):
        return False
    keep = torch.ones(rows, cols, dtype=torch.bool).tril().expand(mask.shape)
    if mask.dtype == torch.bool:
        return torch.equal(mask, keep)
    if mask.is_floating_point():
        return bool((mask[keep] == 0).all()) and bool((mask[~keep] <= torch.finfo(mask.dtype).min).all())
    return False


def _take(args: list, kwargs: dict, position: int, name: str, default=None):
    """Read an argument and leave its slot as the default: positional args stay positional."""
    if len(args) > position:
        value, args[position] = args[position], default
        return value
    return kwargs.pop(name, default)
