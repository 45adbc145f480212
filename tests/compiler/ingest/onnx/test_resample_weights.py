"""Resize's per-axis weights against values worked out by hand from the ONNX specification."""
from __future__ import annotations

import numpy as np
import pytest

from oparac.ingest.onnx_ops.resample_weights import axis_weights


def picks(w):
    return w.matrix.argmax(axis=1).tolist()


def test_linear_half_pixel_upscale_clamps_at_the_edges():
    w = axis_weights("linear", "half_pixel", "", 2, 4, 2.0)
    np.testing.assert_allclose(w.matrix, [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    assert w.outside is None


def test_linear_align_corners():
    w = axis_weights("linear", "align_corners", "", 3, 5, 5 / 3)
    np.testing.assert_allclose(w.matrix, [[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 0, 1]])


@pytest.mark.parametrize("nearest, expected", [
    ("floor", [0, 0, 1, 1, 2, 2]),
    ("ceil", [0, 1, 1, 2, 2, 2]),  # ceil(2.5) = 3 is clamped to the last pixel
    ("round_prefer_floor", [0, 0, 1, 1, 2, 2]),
    ("round_prefer_ceil", [0, 1, 1, 2, 2, 2]),
])
def test_nearest_rounding_rules_on_exact_halves(nearest, expected):
    assert picks(axis_weights("nearest", "asymmetric", nearest, 3, 6, 2.0)) == expected


def test_nearest_downscale_half_pixel():
    # x = (y + 0.5) * 3 - 0.5 = 1, 4: exact pixels whatever the rounding rule
    assert picks(axis_weights("nearest", "half_pixel", "round_prefer_floor", 6, 2, 1 / 3)) == [1, 4]


def test_cubic_is_a_partition_of_unity_and_exact_on_pixels():
    w = axis_weights("cubic", "asymmetric", "", 5, 10, 2.0, cubic_a=-0.5)
    np.testing.assert_allclose(w.matrix.sum(axis=1), 1.0)
    np.testing.assert_allclose(w.matrix[::2], np.eye(5), atol=1e-15)  # x = 0, 1, 2...: the pixel itself
    # x = 0.5 with a = -0.5: taps at -1, 0, 1, 2 weigh -1/16, 9/16, 9/16, -1/16; -1 is clamped onto 0
    np.testing.assert_allclose(w.matrix[1], [0.5, 9 / 16, -1 / 16, 0, 0])


def test_antialias_linear_downscale_widens_the_kernel():
    w = axis_weights("linear", "half_pixel", "", 4, 2, 0.5, antialias=True)
    # x = 0.5: taps -1, 0, 1, 2 at distances 0.75, 0.25, 0.25, 0.75 in output pixels -> 1, 3, 3, 1 (/8)
    np.testing.assert_allclose(w.matrix[0], [0.5, 0.375, 0.125, 0])
    np.testing.assert_allclose(w.matrix[1], [0, 0.125, 0.375, 0.5])
    excluded = axis_weights("linear", "half_pixel", "", 4, 2, 0.5, antialias=True, exclude_outside=True)
    np.testing.assert_allclose(excluded.matrix[0], [3 / 7, 3 / 7, 1 / 7, 0])


def test_tf_crop_and_resize_marks_positions_outside_the_input():
    w = axis_weights("linear", "tf_crop_and_resize", "", 5, 3, 0.6, [0.5, 1.5])
    # x = 2 + y * 4 / (3 - 1) = 2, 4, 6: the last lies beyond pixel 4
    assert w.outside.tolist() == [False, False, True]
    np.testing.assert_allclose(w.matrix[:2], [[0, 0, 1, 0, 0], [0, 0, 0, 0, 1]])


def test_half_pixel_symmetric_centres_a_rounded_output():
    # 5 * 0.5 = 2.5 rounds down to 2; the spec shifts by (5 / 2) * (1 - 2 / 2.5) = 0.5
    sym = axis_weights("linear", "half_pixel_symmetric", "", 5, 2, 0.5)
    np.testing.assert_allclose(sym.matrix, [[0, 1, 0, 0, 0], [0, 0, 0, 1, 0]])
