"""ONNX uint16/uint32/uint64 on torch, which has storage, casts and views for them but almost no arithmetic.

Arithmetic and comparisons are computed in int64 and cast back: uint16/uint32 values widen exactly, and
uint64 is reinterpreted bit for bit (add, sub, mul and equality are the same in two's complement; ordering
flips the sign bit first; division halves the dividend so that signed division applies). Any other ATen op on
these dtypes is refused at compile time, since torch would only fail when the plan runs (its meta kernels
accept what its CPU/CUDA kernels lack).
"""
from __future__ import annotations

import torch

from opara_plan import Ref

aten = torch.ops.aten

WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)

# Ops that only copy or re-view memory: torch implements them for every dtype, on the CPU and on CUDA.
DTYPE_AGNOSTIC = frozenset({
    aten._to_copy.default, aten.view.dtype, aten.view.default, aten.reshape.default, aten._unsafe_view.default,
    aten.expand.default, aten.permute.default, aten.unsqueeze.default, aten.squeeze.dims, aten.squeeze.dim,
    aten.slice.Tensor, aten.select.int, aten.clone.default, aten.alias.default, aten.cat.default,
    aten.t.default, aten.transpose.int,
})

_SIGN_BIT = -(2 ** 63)
_ORDERED = {aten.lt.Tensor, aten.gt.Tensor, aten.le.Tensor, aten.ge.Tensor, aten.maximum.default,
            aten.minimum.default}
_WRAPPING = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.eq.Tensor}
_DIVIDING = {aten.floor_divide.default, aten.remainder.Tensor, aten.fmod.Tensor}  # the same on unsigned values
_INT64_MAX = 2 ** 63 - 1


def check_kernel(ctx, overload, args) -> None:
    """Refuse an ATen op torch cannot run on uint16/32/64 operands, naming the op and the dtype."""
    dt = wide_unsigned_in(ctx, args)
    if dt is not None and overload not in DTYPE_AGNOSTIC:
        raise ctx.unsupported(f"{overload._opname} on {str(dt).removeprefix('torch.')} data (torch has no "
                              f"kernel for it)")


def wide_unsigned_in(ctx, args) -> torch.dtype | None:
    """The first uint16/32/64 dtype among the tensor operands `args` (lists looked into), else None."""
    for a in args:
        for v in (a if isinstance(a, (list, tuple)) else (a,)):
            if isinstance(v, (torch.Tensor, Ref)):
                dt = ctx.value_meta(v).dtype
                if dt in WIDE_UNSIGNED:
                    return dt
    return None


def binary(ctx, op, a, b, dtype: torch.dtype):
    """op(a, b) on two uint16/32/64 operands of `dtype`, through int64. Comparisons return bool; values keep
    `dtype` (wrapping modulo 2**bits as ONNX's unsigned arithmetic does)."""
    if dtype != torch.uint64:
        wide = ctx.op(op, _cast(ctx, a, torch.int64), _cast(ctx, b, torch.int64))
        return wide if ctx.value_meta(wide).dtype == torch.bool else _cast(ctx, wide, dtype)
    sa, sb = ctx.op(aten.view.dtype, a, torch.int64), ctx.op(aten.view.dtype, b, torch.int64)
    if op in _WRAPPING:
        out = ctx.op(op, sa, sb)
    elif op in _ORDERED:
        # x ^ 2**63 maps unsigned order onto signed order; the same flip maps a max/min back.
        out = ctx.op(op, _flip(ctx, sa), _flip(ctx, sb))
        if ctx.value_meta(out).dtype != torch.bool:
            out = _flip(ctx, out)
    elif op in _DIVIDING:
        q = _udiv64(ctx, sa, sb)
        out = q if op == aten.floor_divide.default else ctx.op(aten.sub.Tensor, sa, ctx.op(aten.mul.Tensor, q, sb))
    else:
        raise ctx.unsupported(f"{op._opname} on uint64 (torch has no unsigned 64-bit kernel for it, and int64 "
                              f"gives other results from 2**63 on)")
    return out if ctx.value_meta(out).dtype == torch.bool else ctx.op(aten.view.dtype, out, torch.uint64)


def _udiv64(ctx, n, d):
    """Unsigned 64-bit n // d on the int64 views of n and d (Hacker's Delight's divlu): a divisor from 2**63 on
    goes at most once; a smaller one divides n >>> 1 with signed division, and the quotient, doubled, is at most
    one short."""
    big = ctx.op(aten.lt.Scalar, d, 0)
    once = ctx.op(aten._to_copy.default, _uge(ctx, n, d), dtype=torch.int64)
    safe = ctx.op(aten.where.ScalarSelf, big, 1, d)  # below 2**63: signed division applies
    # n >>> 1: the arithmetic shift (floor division by 2) with the sign bit cleared
    half = ctx.op(aten.bitwise_and.Scalar, ctx.op(aten.div.Scalar_mode, n, 2, rounding_mode="floor"), _INT64_MAX)
    q = ctx.op(aten.mul.Scalar, ctx.op(aten.floor_divide.default, half, safe), 2)
    rest = ctx.op(aten.sub.Tensor, n, ctx.op(aten.mul.Tensor, q, safe))
    q = ctx.op(aten.add.Tensor, q, ctx.op(aten._to_copy.default, _uge(ctx, rest, safe), dtype=torch.int64))
    return ctx.op(aten.where.self, big, once, q)


def _uge(ctx, a, b):
    return ctx.op(aten.ge.Tensor, _flip(ctx, a), _flip(ctx, b))


def _flip(ctx, v):
    return ctx.op(aten.bitwise_xor.Scalar, v, _SIGN_BIT)


def _cast(ctx, v, dtype):
    return ctx.op(aten._to_copy.default, v, dtype=dtype)
