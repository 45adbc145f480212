"""How attention is lowered: one fused SDPA kernel ('sdpa', what export gives) or matrix products around a
softmax ('math'), which at batch 1 and short sequences can keep more of the GPU busy than the fused kernel."""
from __future__ import annotations

import math

import torch

from opara_plan import UnsupportedOpError
from oparac.options import ATTENTION_MODES as ATTENTION


def sdpa_as_math(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                 enable_gqa=False):
    """scaled_dot_product_attention as ATen matmuls and a softmax, with SDPA's semantics: a boolean mask keeps
    True positions, a float mask is added to the scores, and a row with every position masked gives zeros
    (`_safe_softmax`, as SDPA does) rather than NaN."""
    if dropout_p:
        raise UnsupportedOpError(f"scaled_dot_product_attention with dropout_p={dropout_p}: inference plans "
                                 f"run without dropout (put the model in eval mode)")
    if enable_gqa and key.size(-3) != query.size(-3):
        groups = query.size(-3) // key.size(-3)
        key, value = _repeat_heads(key, groups), _repeat_heads(value, groups)
    scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale
    if is_causal:
        keep = torch.ones(query.size(-2), key.size(-2), dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(keep.logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            scores = scores + attn_mask
    weights = torch.ops.aten._safe_softmax.default(scores, -1)
    return torch.matmul(weights, value)


def _repeat_heads(x, groups: int):
    """Each key/value head repeated for its group of query heads, as a view and a copy (repeat_interleave
    with a count lowers to an op with a data-dependent size, which a CUDA graph cannot hold)."""
    *lead, heads, length, dim = x.shape
    return x.unsqueeze(-3).expand(*lead, heads, groups, length, dim).reshape(*lead, heads * groups, length, dim)


def decompositions(attention: str) -> dict:
    """The table for ExportedProgram.run_decompositions: empty keeps export's ops as they are."""
    if attention == "math":
        return {torch.ops.aten.scaled_dot_product_attention.default: sdpa_as_math}
    return {}
