"""Neural-network ONNX ops: convolutions, pooling, normalizations, matrix products, Softmax and LRN."""
from __future__ import annotations

import math

import torch

from oparac.ingest.onnx_ops.base import Context, aten, handles, norm_axis
from oparac.ingest.onnx_ops.shape import reshape


def _same_pads(auto_pad: str, spatial, kernel, strides, dilations):
    begin, end = [], []
    for n, k, s, d in zip(spatial, kernel, strides, dilations):
        out = math.ceil(n / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else big)
        end.append(big if auto_pad == "SAME_UPPER" else small)
    return begin, end


def _window(ctx: Context, kernel):
    """strides, dilations, pads (begin, end) of a conv or pool node."""
    n = len(kernel)
    strides = ctx.attr("strides") or [1] * n
    dilations = ctx.attr("dilations") or [1] * n
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = _same_pads(auto_pad, ctx.shape(0)[2:], kernel, strides, dilations)
    elif auto_pad in ("NOTSET", "VALID"):
        pads = ctx.attr("pads") or [0] * (2 * n)
        begin, end = (pads[:n], pads[n:]) if auto_pad == "NOTSET" else ([0] * n, [0] * n)
    else:
        raise ctx.unsupported(f"auto_pad={auto_pad!r}")
    return strides, dilations, begin, end


def _pad_spatial(ctx: Context, x, begin, end, value=0.0):
    flat = []
    for b, e in zip(reversed(begin), reversed(end)):
        flat += [b, e]
    return ctx.op(aten.constant_pad_nd.default, x, flat, value)


@handles("Conv")
def conv(ctx: Context):
    w_shape = ctx.shape(1)
    kernel = ctx.attr("kernel_shape") or w_shape[2:]
    strides, dilations, begin, end = _window(ctx, kernel)
    group = ctx.attr("group", 1)
    x = ctx.input(0)
    if begin != end:
        x = _pad_spatial(ctx, x, begin, end)
        begin = [0] * len(kernel)
    return ctx.op(aten.convolution.default, x, ctx.input(1), ctx.input(2), strides, begin, dilations, False,
                  [0] * len(kernel), group)


@handles("ConvTranspose")
def conv_transpose(ctx: Context):
    src, w_shape = ctx.shape(0), ctx.shape(1)
    kernel = ctx.attr("kernel_shape") or w_shape[2:]
    n = len(kernel)
    strides = ctx.attr("strides") or [1] * n
    dilations = ctx.attr("dilations") or [1] * n
    out_pad = ctx.attr("output_padding") or [0] * n
    group = ctx.attr("group", 1)
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    output_shape = ctx.attr("output_shape")
    pads = ctx.attr("pads")
    spatial = src[2:]
    full = [s * (i - 1) + (k - 1) * d + 1 for i, s, k, d in zip(spatial, strides, kernel, dilations)]
    if output_shape or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = list(output_shape[-n:]) if output_shape else [i * s for i, s in zip(spatial, strides)]
        total = [f + p - o for f, p, o in zip(full, out_pad, out)]
        upper = auto_pad == "SAME_UPPER"
        begin = [t // 2 if upper else t - t // 2 for t in total]
    elif auto_pad in ("NOTSET", "VALID"):
        pads = pads if pads and auto_pad == "NOTSET" else [0] * (2 * n)
        begin = pads[:n]
        out = [f + p - b - e for f, p, b, e in zip(full, out_pad, pads[:n], pads[n:])]
    else:
        raise ctx.unsupported(f"auto_pad={auto_pad!r}")
    end = [f + p - b - o for f, p, b, o in zip(full, out_pad, begin, out)]
    x, w, bias = ctx.input(0), ctx.input(1), ctx.input(2)
    simple = begin == end and all(b >= 0 for b in begin) and all(
        0 <= p < max(s, d) for p, s, d in zip(out_pad, strides, dilations))
    if simple:
        return ctx.op(aten.convolution.default, x, w, bias, strides, begin, dilations, True, out_pad, group)
    # asymmetric or negative padding: transpose with no padding, then crop (or zero-extend) each side
    y = ctx.op(aten.convolution.default, x, w, None, strides, [0] * n, dilations, True, [0] * n, group)
    y = _pad_spatial(ctx, y, [-b for b in begin], [o - (f - b) for o, f, b in zip(out, full, begin)])
    if bias is not None:
        y = ctx.op(aten.add.Tensor, y, reshape(ctx, bias, [ctx.shape(2)[0]] + [1] * n))
    return y


def _pool_direct_ok(begin, end, kernel, dilations) -> bool:
    """torch pools pad symmetrically by at most half the (dilated) window."""
    return begin == end and all(2 * b <= (k - 1) * d + 1 for b, k, d in zip(begin, kernel, dilations))


_MAX_POOL = {1: aten.max_pool1d_with_indices.default, 2: aten.max_pool2d_with_indices.default,
             3: aten.max_pool3d_with_indices.default}
_AVG_POOL = {1: aten.avg_pool1d.default, 2: aten.avg_pool2d.default, 3: aten.avg_pool3d.default}


@handles("MaxPool")
def max_pool(ctx: Context):
    kernel = ctx.attr("kernel_shape")
    strides, dilations, begin, end = _window(ctx, kernel)
    ceil_mode = bool(ctx.attr("ceil_mode", 0))
    ctx.attr("storage_order")
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        raise ctx.unsupported("the Indices output")
    if len(kernel) not in _MAX_POOL:
        raise ctx.unsupported(f"a {len(kernel)}-D window")
    x = ctx.input(0)
    if not _pool_direct_ok(begin, end, kernel, dilations):
        x = _pad_spatial(ctx, x, begin, end, float("-inf"))
        begin = [0] * len(kernel)
    return ctx.op(_MAX_POOL[len(kernel)], x, kernel, strides, begin, dilations, ceil_mode)[0]


@handles("AveragePool")
def avg_pool(ctx: Context):
    kernel = ctx.attr("kernel_shape")
    strides, dilations, begin, end = _window(ctx, kernel)
    ceil_mode = bool(ctx.attr("ceil_mode", 0))
    include = bool(ctx.attr("count_include_pad", 0))
    n = len(kernel)
    if any(d != 1 for d in dilations):
        raise ctx.unsupported(f"dilations={dilations}")
    if n not in _AVG_POOL:
        raise ctx.unsupported(f"a {n}-D window")
    pool = _AVG_POOL[n]
    extra = (None,) if n > 1 else ()
    x = ctx.input(0)
    if _pool_direct_ok(begin, end, kernel, dilations):
        return ctx.op(pool, x, kernel, strides, begin, ceil_mode, include, *extra)
    # asymmetric padding: average of the zero-padded input over the average of a padded mask, the mask
    # counting real elements (and padding where count_include_pad) and computed now
    padded = _pad_spatial(ctx, x, begin, end)
    num = ctx.op(pool, padded, kernel, strides, [0] * n, ceil_mode, True, *extra)
    ones = torch.ones([1, 1] + ctx.shape(0)[2:], dtype=torch.float64)
    flat = []
    for b, e in zip(reversed(begin), reversed(end)):
        flat += [b, e]
    mask = torch.nn.functional.pad(ones, flat, value=1.0 if include else 0.0)
    den = _AVG_POOL[n](mask, kernel, strides, [0] * n, ceil_mode, True, *extra)
    den = den.to(torch.float64 if ctx.dtype(0) == torch.float64 else torch.float32)
    return ctx.op(aten.div.Tensor, num, ctx.constant(den))


@handles("GlobalAveragePool")
def global_avg_pool(ctx: Context):
    return ctx.op(aten.mean.dim, ctx.input(0), list(range(2, ctx.rank(0))), True)


@handles("GlobalMaxPool")
def global_max_pool(ctx: Context):
    return ctx.op(aten.amax.default, ctx.input(0), list(range(2, ctx.rank(0))), True)


@handles("BatchNormalization")
def batch_norm(ctx: Context):
    eps = float(ctx.attr("epsilon", 1e-5))
    momentum = float(ctx.attr("momentum", 0.9))
    if ctx.attr("training_mode", 0):
        raise ctx.unsupported("training_mode=1")
    if ctx.attr("spatial", 1) != 1:
        raise ctx.unsupported("spatial=0")
    ctx.attr("is_test")
    if any(ctx.node.output[1:]):
        raise ctx.unsupported("the training outputs (running mean/var)")
    args = [ctx.input(i) for i in range(5)]
    # `batch_norm` (training=False) rather than the functional native kernel: on a GPU it runs cuDNN's
    # kernel, as eager PyTorch and the PyTorch front end do; same function, no state written.
    return ctx.op(aten.batch_norm.default, *args, False, momentum, eps, True)


@handles("InstanceNormalization")
def instance_norm(ctx: Context):
    src = ctx.shape(0)
    eps = float(ctx.attr("epsilon", 1e-5))
    return ctx.op(aten.native_group_norm.default, ctx.input(0), ctx.input(1), ctx.input(2), src[0], src[1],
                  math.prod(src[2:]), src[1], eps)[0]


@handles("LayerNormalization", since=17)
def layer_norm(ctx: Context):
    src = ctx.shape(0)
    axis = norm_axis(ctx.attr("axis", -1), len(src), ctx)
    eps = float(ctx.attr("epsilon", 1e-5))
    ctx.attr("stash_type")
    normalized = src[axis:]
    direct = ctx.shape(1) == normalized and (not ctx.has(2) or ctx.shape(2) == normalized)
    if direct:
        out = ctx.op(aten.native_layer_norm.default, ctx.input(0), normalized, ctx.input(1), ctx.input(2), eps)
        return list(out)
    out = ctx.op(aten.native_layer_norm.default, ctx.input(0), normalized, None, None, eps)
    y = ctx.op(aten.mul.Tensor, out[0], ctx.input(1))
    if ctx.has(2):
        y = ctx.op(aten.add.Tensor, y, ctx.input(2))
    return [y, out[1], out[2]]


@handles("Gemm")
def gemm(ctx: Context):
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    a, b = ctx.input(0), ctx.input(1)
    if ctx.attr("transA", 0):
        a = ctx.op(aten.permute.default, a, [1, 0])
    if ctx.attr("transB", 0):
        b = ctx.op(aten.permute.default, b, [1, 0])
    if ctx.has(2) and beta != 0:
        return ctx.op(aten.addmm.default, ctx.input(2), a, b, beta=beta, alpha=alpha)
    y = ctx.op(aten.mm.default, a, b)
    return y if alpha == 1 else ctx.op(aten.mul.Scalar, y, alpha)


@handles("MatMul")
def matmul(ctx: Context):
    a, b = ctx.input(0), ctx.input(1)
    sa, sb = ctx.shape(0), ctx.shape(1)
    if ctx.fold:
        return ctx.op(aten.matmul.default, a, b)
    if len(sa) == 2 and len(sb) == 2:
        return ctx.op(aten.mm.default, a, b)
    if len(sa) > 2 and len(sb) == 2:
        # One GEMM over all rows (a strided input copied first), not ATen's batch of small GEMMs sharing the
        # 2-D operand: see ingest/weight_products.py
        flat = reshape(ctx, a, [math.prod(sa[:-1]), sa[-1]])
        return reshape(ctx, ctx.op(aten.mm.default, flat, b), sa[:-1] + [sb[-1]])
    if len(sa) == 3 and len(sb) == 3 and sa[0] == sb[0]:
        return ctx.op(aten.bmm.default, a, b)
    return ctx.op(aten.matmul.default, a, b)


@handles("Einsum", since=12)
def einsum(ctx: Context):
    equation = ctx.attr("equation").replace(" ", "")
    return ctx.op(aten.einsum.default, equation, [ctx.input(i) for i in range(ctx.n_inputs)])


def _softmax(ctx: Context, op):
    src = ctx.shape(0)
    axis = norm_axis(ctx.attr("axis", 1 if ctx.version < 13 else -1), len(src), ctx)
    if ctx.version >= 13 or axis == len(src) - 1:
        return ctx.op(op, ctx.input(0), axis, False)
    # before opset 13 the input is coerced to 2-D at `axis`
    flat = reshape(ctx, ctx.input(0), [math.prod(src[:axis]), math.prod(src[axis:])])
    return reshape(ctx, ctx.op(op, flat, 1, False), src)


@handles("Softmax")
def softmax(ctx: Context):
    return _softmax(ctx, aten._softmax.default)


@handles("LogSoftmax")
def log_softmax(ctx: Context):
    return _softmax(ctx, aten._log_softmax.default)


@handles("LRN")
def lrn(ctx: Context):
    size = ctx.attr("size")
    alpha, beta, bias = float(ctx.attr("alpha", 1e-4)), float(ctx.attr("beta", 0.75)), float(ctx.attr("bias", 1.0))
    src = ctx.shape(0)
    x = ctx.input(0)
    square = ctx.op(aten.mul.Tensor, x, x)
    grid = reshape(ctx, square, [src[0], 1, src[1], math.prod(src[2:])])
    before = (size - 1) // 2
    grid = ctx.op(aten.constant_pad_nd.default, grid, [0, 0, before, size - 1 - before], 0.0)
    window_mean = ctx.op(aten.avg_pool2d.default, grid, [size, 1], [1, 1], [0, 0], False, True, None)
    scale = ctx.op(aten.add.Scalar, ctx.op(aten.mul.Scalar, reshape(ctx, window_mean, src), alpha), bias)
    return ctx.op(aten.div.Tensor, x, ctx.op(aten.pow.Tensor_Scalar, scale, beta))
