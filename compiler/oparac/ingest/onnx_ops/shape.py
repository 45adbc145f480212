"""Shape and data-movement ONNX ops: constants, Shape/Size, reshapes, Transpose, Concat, Split, Slice, Gather, Pad..."""
from __future__ import annotations

import math

import torch

from oparac.ingest.onnx_ops.base import Context, aten, handles, norm_axis


def reshape(ctx: Context, x, shape):
    shape = [int(d) for d in shape]
    meta = ctx.value_meta(x)
    if list(meta.shape) == shape:
        return x
    # a view launches nothing; a strided (e.g. transposed) input needs reshape's copy
    op = aten.view.default if not ctx.fold and meta.is_contiguous() else aten.reshape.default
    return ctx.op(op, x, shape)


@handles("Identity")
def identity(ctx: Context):
    return ctx.importer.values[ctx.node.input[0]]


@handles("Dropout")
def dropout(ctx: Context):
    ctx.attr("seed")
    if ctx.version < 7 and ctx.attr("is_test", 1) != 1:
        raise ctx.unsupported("is_test=0 (training)")
    if ctx.has(2) and (not ctx.is_const(2) or bool(ctx.const(2).item())):
        raise ctx.unsupported("training_mode=True")
    ctx.attr("ratio")
    x = ctx.importer.values[ctx.node.input[0]]
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        return [x, torch.ones(ctx.shape(0), dtype=torch.bool)]
    return x


@handles("Constant")
def constant(ctx: Context):
    for name in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if name in ctx.attrs:
            v = ctx.attr(name)
            if isinstance(v, torch.Tensor):
                return v
            dtype = torch.float32 if name.startswith("value_float") else torch.int64
            return torch.tensor(v, dtype=dtype)
    raise ctx.unsupported(f"a Constant with attribute {sorted(ctx.attrs)} (sparse or string values)")


@handles("ConstantOfShape", since=9)
def constant_of_shape(ctx: Context):
    shape = ctx.ints(0, "shape")
    value = ctx.attr("value")
    fill = value.reshape(-1) if value is not None else torch.zeros(1, dtype=torch.float32)
    if not ctx.fold:  # a large filled tensor (see onnx_import.EMBED_LIMIT_BYTES) is made when the plan runs
        dtype = ctx.importer.float_dtype if fill.dtype == torch.float32 else fill.dtype
        return ctx.op(aten.full.default, shape, fill[0].item(), dtype=dtype, device=torch.device("cpu"))
    # a broadcast view: a large fill costs no memory at compile time (values are never written in place)
    return fill.expand(shape) if shape else fill.reshape(())


@handles("Shape")
def shape(ctx: Context):
    dims = ctx.shape(0)
    start, end = ctx.attr("start", 0), ctx.attr("end", len(dims))
    return torch.tensor(dims[slice(start, end)], dtype=torch.int64)


@handles("Size")
def size(ctx: Context):
    return torch.tensor(math.prod(ctx.shape(0)), dtype=torch.int64)


@handles("Range", since=11)
def range_(ctx: Context):
    start, limit, delta = (ctx.const(i, "Range bound").reshape(()) for i in range(3))
    n = max(math.ceil((limit.item() - start.item()) / delta.item()), 0)
    if not ctx.fold:  # a large range (see onnx_import.EMBED_LIMIT_BYTES) is made when the plan runs
        dtype = ctx.importer.float_dtype if start.dtype == torch.float32 else start.dtype
        # arange counts ceil((limit - start) / delta) elements in double precision, as n is computed here
        return ctx.op(aten.arange.start_step, start.item(), limit.item(), delta.item(), dtype=dtype,
                      device=torch.device("cpu"))
    return (start + torch.arange(n, dtype=torch.float64).to(start.dtype) * delta).to(start.dtype) \
        if start.dtype.is_floating_point else torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


@handles("Reshape")
def reshape_op(ctx: Context):
    allowzero = ctx.attr("allowzero", 0)
    target = ctx.ints(1, "shape")
    src = ctx.shape(0)
    out = [src[i] if d == 0 and not allowzero else d for i, d in enumerate(target)]
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = math.prod(src) // known if known else 0
    return reshape(ctx, ctx.input(0), out)


@handles("Flatten")
def flatten(ctx: Context):
    src = ctx.shape(0)
    axis = ctx.attr("axis", 1)
    axis = norm_axis(axis + len(src) if axis < 0 else axis, len(src) + 1, ctx)
    return reshape(ctx, ctx.input(0), [math.prod(src[:axis]), math.prod(src[axis:])])


def _axes(ctx: Context, since_input: int):
    """Axes from the attribute (older opsets) or from input 1."""
    if ctx.version >= since_input:
        return ctx.ints(1, "axes")
    return ctx.attr("axes")


@handles("Squeeze")
def squeeze(ctx: Context):
    src = ctx.shape(0)
    axes = _axes(ctx, 13)
    if axes is None:
        axes = [i for i, d in enumerate(src) if d == 1]
    axes = {norm_axis(a, len(src), ctx) for a in axes}
    return reshape(ctx, ctx.input(0), [d for i, d in enumerate(src) if i not in axes])


@handles("Unsqueeze")
def unsqueeze(ctx: Context):
    src = ctx.shape(0)
    axes = sorted(norm_axis(a, len(src) + len(_axes(ctx, 13)), ctx) for a in _axes(ctx, 13))
    out = list(src)
    for a in axes:
        out.insert(a, 1)
    return reshape(ctx, ctx.input(0), out)


@handles("Expand", since=8)
def expand(ctx: Context):
    shape, src = ctx.ints(1, "shape"), ctx.shape(0)
    out = list(torch.broadcast_shapes(tuple(src), tuple(shape)))
    if out == src:
        return ctx.input(0)
    return ctx.op(aten.expand.default, ctx.input(0), out)


@handles("Tile")
def tile(ctx: Context):
    return ctx.op(aten.repeat.default, ctx.input(0), ctx.ints(1, "repeats"))


@handles("Transpose")
def transpose(ctx: Context):
    rank = ctx.rank(0)
    perm = ctx.attr("perm") or list(range(rank))[::-1]
    return ctx.op(aten.permute.default, ctx.input(0), [norm_axis(p, rank, ctx) for p in perm])


@handles("Concat")
def concat(ctx: Context):
    rank = ctx.rank(0)
    axis = norm_axis(ctx.attr("axis"), rank, ctx)
    parts = [ctx.input(i) for i in range(ctx.n_inputs) if ctx.has(i)]
    return ctx.op(aten.cat.default, parts, axis)


@handles("Split")
def split(ctx: Context):
    src = ctx.shape(0)
    axis = norm_axis(ctx.attr("axis", 0), len(src), ctx)
    sizes = ctx.ints(1, "split") if ctx.version >= 13 else ctx.attr("split")
    n_out = len(ctx.node.output)
    if ctx.version >= 18:
        n_out = ctx.attr("num_outputs", n_out)
    if not sizes:
        step = math.ceil(src[axis] / n_out)
        sizes = [min(step, src[axis] - k * step) for k in range(n_out)]
    outs = ctx.op(aten.split_with_sizes.default, ctx.input(0), sizes, axis)
    return list(outs)


@handles("Slice")
def slice_(ctx: Context):
    src = ctx.shape(0)
    if ctx.version < 10:
        starts, ends, axes, steps = ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes"), None
    else:
        starts, ends = ctx.ints(1, "starts"), ctx.ints(2, "ends")
        axes, steps = ctx.ints(3, "axes"), ctx.ints(4, "steps")
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps or [1] * len(starts)
    x = ctx.input(0)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = norm_axis(axis, len(src), ctx)
        idx = range(src[axis])[slice(*_clamp_slice(start, end, step, src[axis]))]
        if step > 0:
            if idx.start == 0 and idx.stop >= src[axis] and step == 1:
                continue
            x = ctx.op(aten.slice.Tensor, x, axis, idx.start, max(idx.stop, idx.start), step)
        else:
            x = ctx.op(aten.index_select.default, x, axis, ctx.constant(torch.tensor(list(idx), dtype=torch.int64)))
    return x


def _clamp_slice(start: int, end: int, step: int, dim: int) -> tuple:
    """ONNX Slice bounds (any int64, INT_MAX meaning 'to the end') as a Python slice over range(dim)."""
    if step == 0:
        raise ValueError("Slice step 0")
    lo, hi = (0, dim) if step > 0 else (-1, dim - 1)
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    start, end = min(max(start, lo), hi), min(max(end, lo), hi)
    if step < 0:
        return start, (None if end < 0 else end), step
    return start, end, step


@handles("Gather")
def gather(ctx: Context):
    src = ctx.shape(0)
    axis = norm_axis(ctx.attr("axis", 0), len(src), ctx)
    n = src[axis]
    if ctx.is_const(1):
        idx = ctx.const(1).to(torch.int64)
        idx = torch.where(idx < 0, idx + n, idx)
        if idx.dim() == 0:
            return ctx.op(aten.select.int, ctx.input(0), axis, int(idx))
        flat = ctx.constant(idx.reshape(-1).contiguous())
        out_shape = src[:axis] + list(idx.shape) + src[axis + 1:]
    else:
        idx_shape = ctx.shape(1)
        flat = reshape(ctx, ctx.op(aten.remainder.Scalar, ctx.input(1), n), [math.prod(idx_shape)])
        out_shape = src[:axis] + idx_shape + src[axis + 1:]
    picked = ctx.op(aten.index_select.default, ctx.input(0), axis, flat)
    return reshape(ctx, picked, out_shape)


@handles("GatherElements", since=11)
def gather_elements(ctx: Context):
    src = ctx.shape(0)
    axis = norm_axis(ctx.attr("axis", 0), len(src), ctx)
    n = src[axis]
    if ctx.is_const(1):
        idx = ctx.const(1).to(torch.int64)
        idx = ctx.constant(torch.where(idx < 0, idx + n, idx))
    else:
        idx = ctx.op(aten.remainder.Scalar, ctx.input(1), n)
        if ctx.dtype(1) != torch.int64:
            idx = ctx.op(aten._to_copy.default, idx, dtype=torch.int64)
    return ctx.op(aten.gather.default, ctx.input(0), axis, idx)


@handles("Pad")
def pad(ctx: Context):
    src = ctx.shape(0)
    rank = len(src)
    mode = ctx.attr("mode", "constant")
    if ctx.version < 11:
        pads, value = ctx.attr("pads"), float(ctx.attr("value", 0.0))
        axes = list(range(rank))
    else:
        pads = ctx.ints(1, "pads")
        value = ctx.const(2, "constant_value").reshape(-1)[0].item() if ctx.has(2) else 0
        axes = ctx.ints(3, "axes") if ctx.has(3) else list(range(rank))
    axes = [norm_axis(a, rank, ctx) for a in axes]
    begin = dict(zip(axes, pads[:len(axes)]))
    end = dict(zip(axes, pads[len(axes):]))
    x = ctx.input(0)
    if mode == "constant":
        flat = []
        for a in reversed(range(rank)):
            flat += [begin.get(a, 0), end.get(a, 0)]
        if not any(flat):
            return x
        return ctx.op(aten.constant_pad_nd.default, x, flat, value)
    if mode not in ("reflect", "edge", "wrap"):
        raise ctx.unsupported(f"mode={mode!r}")
    for a in axes:
        b, e = begin[a], end[a]
        if b == 0 and e == 0:
            continue
        idx = _pad_indices(mode, src[a], b, e)
        x = ctx.op(aten.index_select.default, x, a, ctx.constant(idx))
    return x


def _pad_indices(mode: str, n: int, begin: int, end: int) -> torch.Tensor:
    """Source index of every output position along one axis for reflect/edge/wrap padding."""
    pos = torch.arange(-begin, n + end)
    if mode == "edge":
        return pos.clamp(0, n - 1)
    if mode == "wrap":
        return pos.remainder(n)
    if n == 1:
        return torch.zeros_like(pos)
    period = 2 * (n - 1)
    r = pos.remainder(period)
    return torch.where(r < n, r, period - r)


@handles("GatherND", since=11)
def gather_nd(ctx: Context):
    src, idx_shape = ctx.shape(0), ctx.shape(1)
    b = ctx.attr("batch_dims", 0)
    k = idx_shape[-1]
    batch, picked, rest = src[:b], src[b:b + k], src[b + k:]
    n_batch, n_picked = math.prod(batch), math.prod(picked)
    strides = [math.prod(picked[j + 1:]) for j in range(k)]
    # every index tuple becomes one row of data viewed as [batch * picked, rest...]
    idx = ctx.op(aten.remainder.Tensor, ctx.input(1), ctx.constant(torch.tensor(picked, dtype=torch.int64)))
    linear = ctx.op(aten.sum.dim_IntList, ctx.op(aten.mul.Tensor, idx, ctx.constant(torch.tensor(strides))),
                    [-1], False)
    if b:
        offsets = (torch.arange(n_batch) * n_picked).reshape(batch + [1] * (len(idx_shape) - 1 - b))
        linear = ctx.op(aten.add.Tensor, linear, ctx.constant(offsets))
    flat = reshape(ctx, ctx.input(0), [n_batch * n_picked] + rest)
    rows = ctx.op(aten.index_select.default, flat, 0, reshape(ctx, linear, [math.prod(idx_shape[:-1])]))
    return reshape(ctx, rows, idx_shape[:-1] + rest)
