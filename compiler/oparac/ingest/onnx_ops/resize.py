"""Resize and Upsample: separable per-axis resampling with index tables or weight matrices built at compile time
(resample_weights.py)."""
from __future__ import annotations

import math

import numpy as np
import torch

from oparac.ingest.onnx_ops.base import Context, aten, handles
from oparac.ingest.onnx_ops.resample_weights import axis_weights

_COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@handles("Upsample", since=9)
def upsample(ctx: Context):
    mode = ctx.attr("mode", "nearest")
    scales = [float(s) for s in ctx.const(1, "scales").reshape(-1).tolist()]
    src = ctx.shape(0)
    sizes = [int(math.floor(d * s)) for d, s in zip(src, scales)]
    return _resample(ctx, mode, "asymmetric", "floor", scales, sizes, None, cubic_a=-0.75)


@handles("Resize", since=10)
def resize(ctx: Context):
    src = ctx.shape(0)
    rank = len(src)
    mode = ctx.attr("mode", "nearest")
    if ctx.version == 10:
        coord, nearest = "asymmetric", "floor"
        scales, sizes, roi = ctx.const(1, "scales"), None, None
    else:
        coord = ctx.attr("coordinate_transformation_mode", "half_pixel")
        nearest = ctx.attr("nearest_mode", "round_prefer_floor")
        roi = ctx.const(1, "roi") if ctx.has(1) else None
        scales = ctx.const(2, "scales") if ctx.has(2) else None
        sizes = ctx.ints(3, "sizes") if ctx.has(3) else None
    if scales is not None and scales.numel() == 0:
        scales = None
    axes = [a + rank if a < 0 else a for a in ctx.attr("axes", list(range(rank)))]
    policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
    antialias = ctx.attr("antialias", 0)
    exclude_outside = ctx.attr("exclude_outside", 0)
    cubic_a = ctx.attr("cubic_coeff_a", -0.75)
    extrapolation = ctx.attr("extrapolation_value", 0.0)
    if coord not in _COORD_MODES:
        raise ctx.unsupported(f"coordinate_transformation_mode={coord!r}")
    if mode == "nearest" and nearest not in _NEAREST_MODES:
        raise ctx.unsupported(f"nearest_mode={nearest!r}")
    all_scales = [1.0] * rank
    out = list(src)
    if sizes is not None:
        for a, s in zip(axes, sizes):
            out[a] = s
        all_scales = [o / i if i else 1.0 for o, i in zip(out, src)]
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            scale = pick(all_scales[a] for a in axes)
            all_scales = [scale if i in axes else 1.0 for i in range(rank)]
            out = [int(scale * src[i] + 0.5) if i in axes else src[i] for i in range(rank)]
    elif scales is not None:
        for a, s in zip(axes, scales.reshape(-1).tolist()):
            all_scales[a] = float(s)
        out = [int(math.floor(d * s)) for d, s in zip(src, all_scales)]
    else:
        raise ctx.unsupported("a Resize without scales or sizes")
    full_roi = None
    if roi is not None and roi.numel():
        full_roi = [0.0] * rank + [1.0] * rank
        values = roi.reshape(-1).tolist()
        for k, a in enumerate(axes):
            full_roi[a], full_roi[rank + a] = values[k], values[len(axes) + k]
    return _resample(ctx, mode, coord, nearest, all_scales, out, full_roi, cubic_a=cubic_a, antialias=antialias,
                     exclude_outside=exclude_outside, extrapolation=extrapolation)


def _resample(ctx: Context, mode, coord, nearest, scales, sizes, roi, *, cubic_a, antialias=0, exclude_outside=0,
              extrapolation=0.0):
    if mode not in ("nearest", "linear", "cubic"):
        raise ctx.unsupported(f"mode={mode!r}")
    if mode == "nearest" and antialias:
        raise ctx.unsupported("antialias=1 with mode='nearest'")
    src = ctx.shape(0)
    rank = len(src)
    x = ctx.input(0)
    dtype = ctx.dtype(0)
    mask = None
    for axis in range(rank):
        n_in, n_out, scale = src[axis], sizes[axis], scales[axis]
        axis_roi = None if roi is None else [roi[axis], roi[axis + rank]]
        if math.isclose(scale, 1.0) and n_in == n_out and (axis_roi is None or axis_roi == [0.0, 1.0]):
            continue
        w = axis_weights(mode, coord, nearest, n_in, n_out, scale, axis_roi, cubic_a=cubic_a,
                         antialias=bool(antialias), exclude_outside=bool(exclude_outside))
        if w.outside is not None:
            axis_mask = torch.from_numpy(w.outside).reshape([n_out] + [1] * (rank - axis - 1))
            mask = axis_mask if mask is None else (mask | axis_mask)
        if mode == "nearest":
            idx = torch.from_numpy(w.matrix.argmax(axis=1)).to(torch.int64)
            x = ctx.op(aten.index_select.default, x, axis, ctx.constant(idx))
            continue
        if not dtype.is_floating_point:
            raise ctx.unsupported(f"mode={mode!r} on {dtype} data")
        matrix = torch.from_numpy(np.ascontiguousarray(w.matrix.T)).to(torch.float64 if dtype == torch.float64
                                                                       else torch.float32)
        moved = ctx.op(aten.movedim.int, x, axis, -1) if axis != rank - 1 else x
        y = ctx.op(aten.matmul.default, moved, ctx.constant(matrix))
        x = ctx.op(aten.movedim.int, y, -1, axis) if axis != rank - 1 else y
    if mask is not None and bool(mask.any()):
        x = ctx.op(aten.where.ScalarSelf, ctx.constant(mask), float(extrapolation), x)
    return x
