"""Reductions: Reduce* (axes as attribute or input, by opset), ArgMax and ArgMin."""
from __future__ import annotations

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
