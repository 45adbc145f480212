"""Elementwise ONNX ops: activations, arithmetic, comparisons, logic, Clip, Cast, Where and variadic Sum/Mean/Min/Max."""
from __future__ import annotations

import math

import torch

from oparac.ingest.onnx_ops import unsigned
from oparac.ingest.onnx_ops.base import Context, aten, handles

_UNARY = {
    "Relu": aten.relu.default, "Sigmoid": aten.sigmoid.default, "Tanh": aten.tanh.default, "Erf": aten.erf.default,
    "Sqrt": aten.sqrt.default, "Reciprocal": aten.reciprocal.default, "Exp": aten.exp.default,
    "Log": aten.log.default, "Neg": aten.neg.default, "Abs": aten.abs.default, "Not": aten.logical_not.default,
    "Floor": aten.floor.default, "Ceil": aten.ceil.default, "Sin": aten.sin.default, "Cos": aten.cos.default,
    "Tan": aten.tan.default, "Sign": aten.sign.default, "HardSwish": aten.hardswish.default,
    "Round": aten.round.default, "Asin": aten.asin.default, "Acos": aten.acos.default, "Atan": aten.atan.default,
    "Sinh": aten.sinh.default, "Cosh": aten.cosh.default, "Asinh": aten.asinh.default,
    "Acosh": aten.acosh.default, "Atanh": aten.atanh.default, "Mish": aten.mish.default,
}
_BINARY = {
    "Add": aten.add.Tensor, "Sub": aten.sub.Tensor, "Mul": aten.mul.Tensor,
    "Equal": aten.eq.Tensor, "Less": aten.lt.Tensor, "Greater": aten.gt.Tensor,
    "LessOrEqual": aten.le.Tensor, "GreaterOrEqual": aten.ge.Tensor,
    "And": aten.logical_and.default, "Or": aten.logical_or.default, "Xor": aten.logical_xor.default,
}


@handles(*_UNARY)
def unary(ctx: Context):
    if ctx.node.op_type == "Abs" and ctx.dtype(0) in (torch.uint8, torch.uint16, torch.uint32, torch.uint64):
        return ctx.input(0)
    return ctx.op(_UNARY[ctx.node.op_type], ctx.input(0))


def _binary(ctx: Context, op, a, b):
    """op(a, b), through int64 where the operands are uint16/32/64 (torch lacks their arithmetic kernels)."""
    dt = ctx.value_meta(a).dtype
    if dt in unsigned.WIDE_UNSIGNED:
        return unsigned.binary(ctx, op, a, b, dt)
    return ctx.op(op, a, b)


@handles(*_BINARY)
def binary(ctx: Context):
    return _binary(ctx, _BINARY[ctx.node.op_type], ctx.input(0), ctx.input(1))


@handles("Div")
def div(ctx: Context):
    a, b = ctx.input(0), ctx.input(1)
    if ctx.dtype(0).is_floating_point:
        return ctx.op(aten.div.Tensor, a, b)
    if ctx.dtype(0) in unsigned.WIDE_UNSIGNED:  # unsigned division truncates and floors alike
        return _binary(ctx, aten.floor_divide.default, a, b)
    return ctx.op(aten.div.Tensor_mode, a, b, rounding_mode="trunc")  # ONNX integer division truncates


@handles("Mod")
def mod(ctx: Context):
    a, b = ctx.input(0), ctx.input(1)
    if ctx.attr("fmod", 0):
        return _binary(ctx, aten.fmod.Tensor, a, b)
    return _binary(ctx, aten.remainder.Tensor, a, b)


@handles("Pow")
def pow_(ctx: Context):
    exponent = ctx.input(1)
    if ctx.dtype(1) in unsigned.WIDE_UNSIGNED:
        # torch's pow has no unsigned kernels; an integer base keeps integer powers, a float base takes the
        # exponent as float64 (exact below 2**53)
        wide = torch.int64 if not ctx.dtype(0).is_floating_point else torch.float64
        exponent = ctx.op(aten._to_copy.default, exponent, dtype=wide)
    out = ctx.op(aten.pow.Tensor_Tensor, ctx.input(0), exponent)
    if ctx.value_meta(out).dtype != ctx.dtype(0):  # ONNX keeps the base's type
        out = ctx.op(aten._to_copy.default, out, dtype=ctx.dtype(0))
    return out


@handles("LeakyRelu")
def leaky_relu(ctx: Context):
    return ctx.op(aten.leaky_relu.default, ctx.input(0), float(ctx.attr("alpha", 0.01)))


@handles("Elu")
def elu(ctx: Context):
    return ctx.op(aten.elu.default, ctx.input(0), float(ctx.attr("alpha", 1.0)))


@handles("Selu")
def selu(ctx: Context):
    alpha, gamma = float(ctx.attr("alpha", 1.67326319217681884765625)), float(ctx.attr("gamma", 1.05070102214813232421875))
    return ctx.op(aten.elu.default, ctx.input(0), alpha, gamma)


@handles("Celu")
def celu(ctx: Context):
    return ctx.op(aten.celu.default, ctx.input(0), float(ctx.attr("alpha", 1.0)))


@handles("ThresholdedRelu")
def thresholded_relu(ctx: Context):
    return ctx.op(aten.threshold.default, ctx.input(0), float(ctx.attr("alpha", 1.0)), 0.0)


@handles("PRelu")
def prelu(ctx: Context):
    x, slope = ctx.input(0), ctx.input(1)
    src, sshape = ctx.shape(0), ctx.shape(1)
    if len(sshape) == 1 and len(src) > 2 and sshape[0] == src[1] != src[-1]:
        # a per-channel slope of an opset < 7 model (then broadcast from axis 1, not from the right)
        from oparac.ingest.onnx_ops.shape import reshape

        slope = reshape(ctx, slope, [sshape[0]] + [1] * (len(src) - 2))
    neg = ctx.op(aten.mul.Tensor, x, slope)
    return ctx.op(aten.where.self, ctx.op(aten.lt.Scalar, x, 0), neg, x)


@handles("HardSigmoid")
def hard_sigmoid(ctx: Context):
    alpha, beta = float(ctx.attr("alpha", 0.2)), float(ctx.attr("beta", 0.5))
    if math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5:
        return ctx.op(aten.hardsigmoid.default, ctx.input(0))
    y = ctx.op(aten.add.Scalar, ctx.op(aten.mul.Scalar, ctx.input(0), alpha), beta)
    return ctx.op(aten.clamp.default, y, 0.0, 1.0)


@handles("Gelu", since=20)
def gelu(ctx: Context):
    approximate = ctx.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise ctx.unsupported(f"approximate={approximate!r}")
    return ctx.op(aten.gelu.default, ctx.input(0), approximate=approximate)


@handles("Softplus")
def softplus(ctx: Context):
    # threshold above which torch returns x itself; there exp(x)+1 == exp(x) in float32 anyway
    return ctx.op(aten.softplus.default, ctx.input(0), 1, 20)


@handles("Softsign")
def softsign(ctx: Context):
    x = ctx.input(0)
    return ctx.op(aten.div.Tensor, x, ctx.op(aten.add.Scalar, ctx.op(aten.abs.default, x), 1))


@handles("Clip")
def clip(ctx: Context):
    x = ctx.input(0)
    if ctx.version < 11:
        lo, hi = ctx.attr("min", -3.4028234663852886e38), ctx.attr("max", 3.4028234663852886e38)
        return ctx.op(aten.clamp.default, x, float(lo), float(hi))
    bounds = []
    for i in (1, 2):
        if not ctx.has(i):
            bounds.append(None)
        elif ctx.is_const(i):
            v = ctx.const(i).reshape(-1)[0].item()
            bounds.append(v)
        else:
            return ctx.op(aten.clamp.Tensor, x, ctx.input(1), ctx.input(2))
    if bounds == [None, None]:
        return x
    return ctx.op(aten.clamp.default, x, *bounds)


@handles("Cast")
def cast(ctx: Context):
    if ctx.attr("saturate", 1) != 1:
        raise ctx.unsupported("saturate=0 (a float8 option)")
    ctx.attr("round_mode")
    dtype = ctx.onnx_dtype(ctx.attr("to"))
    return ctx.op(aten._to_copy.default, ctx.input(0), dtype=dtype)


@handles("CastLike", since=15)
def cast_like(ctx: Context):
    if ctx.attr("saturate", 1) != 1:
        raise ctx.unsupported("saturate=0 (a float8 option)")
    ctx.attr("round_mode")
    target = ctx.value_meta(ctx.input(1)).dtype
    return ctx.op(aten._to_copy.default, ctx.input(0), dtype=target)


@handles("Where", since=9)
def where(ctx: Context):
    return ctx.op(aten.where.self, ctx.input(0), ctx.input(1), ctx.input(2))


def _variadic(ctx: Context, op):
    present = [i for i in range(ctx.n_inputs) if ctx.has(i)]
    acc = ctx.input(present[0])
    for i in present[1:]:
        acc = _binary(ctx, op, acc, ctx.input(i))
    return acc, len(present)


@handles("Sum")
def sum_(ctx: Context):
    return _variadic(ctx, aten.add.Tensor)[0]


@handles("Mean")
def mean(ctx: Context):
    acc, n = _variadic(ctx, aten.add.Tensor)
    return ctx.op(aten.div.Scalar, acc, n)


@handles("Max")
def max_(ctx: Context):
    return _variadic(ctx, aten.maximum.default)[0]


@handles("Min")
def min_(ctx: Context):
    return _variadic(ctx, aten.minimum.default)[0]


@handles("IsNaN", since=9)
def is_nan(ctx: Context):
    return ctx.op(aten.isnan.default, ctx.input(0))


@handles("IsInf", since=10)
def is_inf(ctx: Context):
    pos, neg = ctx.attr("detect_positive", 1), ctx.attr("detect_negative", 1)
    x = ctx.input(0)
    if pos and neg:
        return ctx.op(aten.isinf.default, x)
    if pos:
        return ctx.op(aten.isposinf.default, x)
    if neg:
        return ctx.op(aten.isneginf.default, x)
    return ctx.op(aten.zeros_like.default, x, dtype=torch.bool)
