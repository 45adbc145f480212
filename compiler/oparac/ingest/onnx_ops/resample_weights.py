"""Per-axis resampling weights of ONNX Resize, from the operator's specification, as dense (out, in) matrices.

Resize is separable: along one axis every output position is a weighted sum of input positions. The weights
depend only on the shapes, scale, mode and attributes, so they are computed here once at compile time (numpy,
float64) and the runtime does an index_select (nearest) or a matmul (linear, cubic). Our own code rather than
onnx's reference implementation: its helpers are private and change between onnx releases.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AxisWeights:
    matrix: np.ndarray  # (n_out, n_in) float64; row i holds the weights of output position i
    outside: np.ndarray | None  # (n_out,) bool: tf_crop_and_resize positions that take the extrapolation value


def source_coordinates(coord: str, n_in: int, n_out: int, scale: float, roi) -> tuple[np.ndarray, np.ndarray | None]:
    """The input coordinate each output position maps to, per coordinate_transformation_mode.

    The spec's length_resized is scale * n_in as a real number (not the rounded output size), which matters
    for align_corners, tf_crop_and_resize and pytorch_half_pixel when the output size was rounded down.
    """
    y = np.arange(n_out, dtype=np.float64)
    resized = scale * n_in
    outside = None
    if coord == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif coord == "half_pixel_symmetric":
        # Centres the (possibly rounded) output on the input: shifts half_pixel by what rounding cut off.
        x = n_in / 2 * (1 - n_out / resized) + (y + 0.5) / scale - 0.5
    elif coord == "pytorch_half_pixel":
        x = np.full(n_out, -0.5) if resized == 1 else (y + 0.5) / scale - 0.5
    elif coord == "align_corners":
        x = np.zeros(n_out) if resized == 1 else y * (n_in - 1) / (resized - 1)
    elif coord == "asymmetric":
        x = y / scale
    elif coord == "tf_crop_and_resize":
        start, end = roi if roi is not None else (0.0, 1.0)
        if resized == 1:
            x = np.full(n_out, (end - start) * (n_in - 1) / 2)
        else:
            x = y * (end - start) * (n_in - 1) / (resized - 1)
        x = x + start * (n_in - 1)
        outside = (x < 0) | (x > n_in - 1)
    else:
        raise ValueError(f"coordinate_transformation_mode {coord!r}")
    return x, outside


def _keys_cubic(d: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with coefficient a, at distances d >= 0."""
    inner = ((a + 2) * d - (a + 3)) * d * d + 1
    outer = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, inner, np.where(d < 2, outer, 0.0))


def _taps(mode: str, nearest: str, ratio: np.ndarray, scale: float, cubic_a: float,
          antialias: bool) -> tuple[int, np.ndarray]:
    """(first tap offset, weights (n_out, taps)). Tap k sits at input position left + first + k, where the
    output position's coordinate is left + ratio with ratio in (0, 1] (an exact integer counts as ratio 1 from
    the position below it, so ties go to the lower pixel as the spec's reference does)."""
    if mode == "nearest":
        if nearest == "round_prefer_floor":
            right = ratio > 0.5
        elif nearest == "round_prefer_ceil":
            right = ratio >= 0.5
        elif nearest == "floor":
            right = ratio == 1.0
        else:  # ceil
            right = np.ones_like(ratio, dtype=bool)
        right = right | (ratio == 1.0)
        return 0, np.stack([~right, right], axis=1).astype(np.float64)
    # Antialiasing (downscaling only) stretches the kernel by 1/scale so it covers every input it averages.
    s = min(scale, 1.0) if antialias else 1.0
    support = 1 if mode == "linear" else 2
    first = int(math.floor(-support / s)) + 1
    count = 2 - 2 * first
    d = np.abs((np.arange(first, first + count)[None, :] - ratio[:, None]) * s)
    w = np.clip(1 - d, 0, 1) if mode == "linear" else _keys_cubic(d, cubic_a)
    return first, w / w.sum(axis=1, keepdims=True)


def axis_weights(mode: str, coord: str, nearest: str, n_in: int, n_out: int, scale: float, roi=None, *,
                 cubic_a: float = -0.75, antialias: bool = False, exclude_outside: bool = False) -> AxisWeights:
    """The (n_out, n_in) resampling matrix of one axis; taps beyond the edges read the edge pixel (clamped)
    unless exclude_outside drops them and renormalises the rest."""
    x, outside = source_coordinates(coord, n_in, n_out, scale, roi)
    floor = np.floor(x)
    ratio = np.where(x == floor, 1.0, x - floor)
    left = (x - ratio).astype(np.int64)
    first, w = _taps(mode, nearest, ratio, scale, cubic_a, antialias)
    positions = left[:, None] + first + np.arange(w.shape[1])[None, :]
    if exclude_outside:
        w = np.where((positions < 0) | (positions >= n_in), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    matrix = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.broadcast_to(np.arange(n_out)[:, None], positions.shape)
    np.add.at(matrix, (rows, np.clip(positions, 0, n_in - 1)), w)
    return AxisWeights(matrix, outside)
