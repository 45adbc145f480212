"""Reductions and scans: Reduce* (axes as attribute or input, by opset), ArgMax, ArgMin and CumSum."""
from __future__ import annotations

import torch

from oparac.ingest.onnx_ops import unsigned
from oparac.ingest.onnx_ops.base import Context, aten, handles, norm_axis

# The opset from which each reduction takes its axes as input 1 instead of an attribute.
_AXES_INPUT_SINCE = {"ReduceSum": 13}


def _reduce_axes(ctx: Context):
    rank = ctx.rank(0)
    if ctx.version >= _AXES_INPUT_SINCE.get(ctx.node.op_type, 18):
        axes = ctx.ints(1, "axes") if ctx.has(1) else None
        noop = ctx.attr("noop_with_empty_axes", 0)
    else:
        axes, noop = ctx.attr("axes"), 0
    if not axes:
        return None if noop else list(range(rank))
    return sorted(norm_axis(a, rank, ctx) for a in axes)


@handles("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
         "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp")
def reduce(ctx: Context):
    keep = bool(ctx.attr("keepdims", 1))
    axes = _reduce_axes(ctx)
    x = ctx.input(0)
    if axes is None:
        return x
    kind = ctx.node.op_type
    if kind == "ReduceMean":
        return ctx.op(aten.mean.dim, x, axes, keep)
    if kind == "ReduceMax":
        return ctx.op(aten.amax.default, x, axes, keep)
    if kind == "ReduceMin":
        return ctx.op(aten.amin.default, x, axes, keep)
    if kind == "ReduceLogSumExp":
        return ctx.op(aten.logsumexp.default, x, axes, keep)
    if kind == "ReduceProd":
        for a in sorted(axes, reverse=True):
            x = ctx.op(aten.prod.dim_int, x, a, keep)
        return x
    if kind == "ReduceL1":
        x = ctx.op(aten.abs.default, x)
    elif kind in ("ReduceL2", "ReduceSumSquare"):
        x = ctx.op(aten.mul.Tensor, x, x)
    y = ctx.op(aten.sum.dim_IntList, x, axes, keep, dtype=ctx.dtype(0))
    if kind == "ReduceL2":
        return ctx.op(aten.sqrt.default, y)
    if kind == "ReduceLogSum":
        return ctx.op(aten.log.default, y)
    return y


@handles("ArgMax", "ArgMin")
def arg_reduce(ctx: Context):
    rank = ctx.rank(0)
    axis = norm_axis(ctx.attr("axis", 0), rank, ctx)
    keep = bool(ctx.attr("keepdims", 1))
    op = aten.argmax.default if ctx.node.op_type == "ArgMax" else aten.argmin.default
    x = ctx.input(0)
    if not ctx.attr("select_last_index", 0):
        return ctx.op(op, x, axis, keep)
    # torch returns the first extreme index: search the flipped tensor and map the index back
    idx = ctx.op(op, ctx.op(aten.flip.default, x, [axis]), axis, keep)
    return ctx.op(aten.rsub.Scalar, idx, ctx.shape(0)[axis] - 1)


@handles("CumSum", since=11)
def cumsum(ctx: Context):
    """reverse: flip, sum, flip back; exclusive: shift the input one place along the axis (exact, unlike
    subtracting x from the inclusive sum)."""
    rank = ctx.rank(0)
    axes = ctx.ints(1, "axis")
    if len(axes) != 1:
        raise ctx.unsupported(f"axis with {len(axes)} elements (expected one)")
    dim = norm_axis(axes[0], rank, ctx)
    exclusive, reverse = bool(ctx.attr("exclusive", 0)), bool(ctx.attr("reverse", 0))
    x, dtype = ctx.input(0), ctx.dtype(0)
    # torch has no unsigned cumsum: uint16/32 widen to int64 exactly, and uint64 adds the same bits as int64
    if dtype == torch.uint64:
        x = ctx.op(aten.view.dtype, x, torch.int64)
    elif dtype in unsigned.WIDE_UNSIGNED:
        x = ctx.op(aten._to_copy.default, x, dtype=torch.int64)
    work = ctx.value_meta(x).dtype
    if reverse:
        x = ctx.op(aten.flip.default, x, [dim])
    if exclusive and ctx.shape(0)[dim] > 0:
        pad = [0, 0] * (rank - 1 - dim) + [1, -1]  # one zero in front, the last element dropped
        x = ctx.op(aten.constant_pad_nd.default, x, pad, 0)
    y = ctx.op(aten.cumsum.default, x, dim, dtype=work)  # dtype: torch would widen int32 to int64
    if reverse:
        y = ctx.op(aten.flip.default, y, [dim])
    if dtype == torch.uint64:
        return ctx.op(aten.view.dtype, y, torch.uint64)
    if dtype != work:
        return ctx.op(aten._to_copy.default, y, dtype=dtype)
    return y
