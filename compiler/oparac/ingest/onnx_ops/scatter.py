"""Scatters: ScatterND, ScatterElements (and opset 9's Scatter), with their reductions, as functional ATen scatters."""
from __future__ import annotations

import math

import torch

from oparac.ingest.onnx_ops import unsigned
from oparac.ingest.onnx_ops.base import Context, aten, handles, norm_axis
from oparac.ingest.onnx_ops.shape import reshape

# ONNX reduction -> scatter_reduce's name for it; 'none' is a plain scatter (later updates of a repeated index
# win in some order, which ONNX leaves undefined).
_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}
# The opset each reduction appeared in (ScatterND-16 / ScatterElements-16: add, mul; -18: max, min).
_REDUCE_SINCE = {"none": 11, "add": 16, "mul": 16, "max": 18, "min": 18}
# Same-width signed types: a plain scatter only moves bits, so unsigned data goes through these.
_SIGNED_VIEW = {torch.uint16: torch.int16, torch.uint32: torch.int32, torch.uint64: torch.int64}


def _reduction(ctx: Context) -> str:
    reduction = ctx.attr("reduction", "none")
    if reduction not in _REDUCE_SINCE or ctx.version < _REDUCE_SINCE[reduction]:
        raise ctx.unsupported(f"reduction={reduction!r}")
    return reduction


def _scatter(ctx: Context, data, dim: int, index, updates, reduction: str):
    """data with updates scattered along dim at index (an int64 tensor shaped like updates)."""
    dtype = ctx.value_meta(data).dtype
    if reduction == "none":
        signed = _SIGNED_VIEW.get(dtype)
        if signed is None:
            return ctx.op(aten.scatter.src, data, dim, index, updates)
        out = ctx.op(aten.scatter.src, ctx.op(aten.view.dtype, data, signed), dim, index,
                     ctx.op(aten.view.dtype, updates, signed))
        return ctx.op(aten.view.dtype, out, dtype)
    if dtype in unsigned.WIDE_UNSIGNED:
        raise ctx.unsupported(f"reduction={reduction!r} on {str(dtype).removeprefix('torch.')} data (torch has no "
                              f"scatter_reduce kernel for it)")
    return ctx.op(aten.scatter_reduce.two, data, dim, index, updates, _REDUCE[reduction], include_self=True)


@handles("ScatterND", since=11)
def scatter_nd(ctx: Context):
    """Rows of data viewed as [prod(shape[:k]), *shape[k:]] are addressed by the linear index of each k-tuple."""
    reduction = _reduction(ctx)
    src, idx_shape = ctx.shape(0), ctx.shape(1)
    k = idx_shape[-1]
    if k > len(src):
        raise ctx.unsupported(f"indices of depth {k} into data of rank {len(src)}")
    picked, rest = src[:k], src[k:]
    strides = [math.prod(picked[j + 1:]) for j in range(k)]
    n_updates = math.prod(idx_shape[:-1])
    if ctx.is_const(1):
        idx = ctx.const(1).to(torch.int64)
        bound = torch.tensor(picked, dtype=torch.int64)
        linear = (torch.where(idx < 0, idx + bound, idx) * torch.tensor(strides, dtype=torch.int64)).sum(-1)
        linear = ctx.constant(linear.reshape(n_updates).contiguous())
    else:
        # negative indices count from the end, as numpy's (and onnxruntime's) indexing does
        idx = ctx.op(aten.remainder.Tensor, ctx.input(1), ctx.constant(torch.tensor(picked, dtype=torch.int64)))
        linear = ctx.op(aten.sum.dim_IntList, ctx.op(aten.mul.Tensor, idx, ctx.constant(
            torch.tensor(strides, dtype=torch.int64))), [-1], False)
        linear = reshape(ctx, linear, [n_updates])
    rows = [math.prod(picked)] + rest
    index = reshape(ctx, linear, [n_updates] + [1] * len(rest))
    if rest:
        index = ctx.op(aten.expand.default, index, [n_updates] + rest)
    updates = reshape(ctx, ctx.input(2), [n_updates] + rest)
    out = _scatter(ctx, reshape(ctx, ctx.input(0), rows), 0, index, updates, reduction)
    return reshape(ctx, out, src)


@handles("ScatterElements", since=11)
def scatter_elements(ctx: Context):
    return _scatter_elements(ctx, _reduction(ctx))


@handles("Scatter", since=9)
def scatter_legacy(ctx: Context):
    if ctx.version >= 11:
        raise ctx.unsupported("Scatter, deprecated since opset 11 (export ScatterElements instead)")
    return _scatter_elements(ctx, "none")


def _scatter_elements(ctx: Context, reduction: str):
    src = ctx.shape(0)
    axis = norm_axis(ctx.attr("axis", 0), len(src), ctx)
    n = src[axis]
    if ctx.is_const(1):
        idx = ctx.const(1).to(torch.int64)
        index = ctx.constant(torch.where(idx < 0, idx + n, idx).contiguous())
    else:
        index = ctx.op(aten.remainder.Scalar, ctx.input(1), n)
        if ctx.dtype(1) != torch.int64:
            index = ctx.op(aten._to_copy.default, index, dtype=torch.int64)
    return _scatter(ctx, ctx.input(0), axis, index, ctx.input(2), reduction)
