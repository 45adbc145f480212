"""uint16/uint32/uint64 tensors: arithmetic and comparisons through int64, wrapping and ordering as unsigned."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from opara_plan import UnsupportedOpError

from helpers.onnx_models import check_against_ort, make_model, run_opara, save

U64_BIG = np.array([2 ** 64 - 1, 2 ** 63 + 1, 5, 0], dtype=np.uint64)
U64_SMALL = np.array([1, 2 ** 63, 7, 0], dtype=np.uint64)


def one(op, a, b, tmp_path, **attrs):
    model = make_model([helper.make_node(op, ["a", "b"], ["y"], **attrs)], {"a": a, "b": b}, ["y"], opset=14)
    _, (y,) = run_opara(save(model, tmp_path), [a, b])
    return y.numpy()


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64])
@pytest.mark.parametrize("op, fn", [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply)])
def test_arithmetic_wraps_like_unsigned(tmp_path, dtype, op, fn):
    top = np.iinfo(dtype).max
    a = np.array([top, 3, top // 2 + 1, 0], dtype=dtype)
    b = np.array([1, 5, 2, 1], dtype=dtype)
    with np.errstate(over="ignore"):
        want = fn(a, b)
    got = one(op, a, b, tmp_path)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("op, fn", [("Less", np.less), ("Greater", np.greater), ("LessOrEqual", np.less_equal),
                                    ("GreaterOrEqual", np.greater_equal), ("Equal", np.equal)])
def test_uint64_comparisons_order_values_above_2_63(tmp_path, op, fn):
    np.testing.assert_array_equal(one(op, U64_BIG, U64_SMALL, tmp_path), fn(U64_BIG, U64_SMALL))


@pytest.mark.parametrize("op, fn", [("Max", np.maximum), ("Min", np.minimum)])
def test_uint64_max_min(tmp_path, op, fn):
    got = one(op, U64_BIG, U64_SMALL, tmp_path)
    assert got.dtype == np.uint64
    np.testing.assert_array_equal(got, fn(U64_BIG, U64_SMALL))


def test_uint32_div_and_mod(tmp_path):
    a = np.array([4294967295, 7, 9], dtype=np.uint32)
    b = np.array([2, 7, 4], dtype=np.uint32)
    np.testing.assert_array_equal(one("Div", a, b, tmp_path), a // b)
    np.testing.assert_array_equal(one("Mod", a, b, tmp_path), a % b)


@pytest.mark.parametrize("op, fn, attrs", [("Div", np.floor_divide, {}), ("Mod", np.remainder, {}),
                                           ("Mod", np.fmod, {"fmod": 1})])
def test_uint64_division_above_2_63(tmp_path, op, fn, attrs):
    # dividends and divisors on both sides of 2**63, where int64 division would give other results
    top = 2 ** 64 - 1
    a = np.array([top, top, 2 ** 63 + 1, 2 ** 63, 2 ** 63 - 1, 10, 0, top, 2 ** 63 + 5], dtype=np.uint64)
    b = np.array([1, 2 ** 63, 2 ** 63 + 1, 3, 2 ** 63, 3, 7, top, 2 ** 62 + 1], dtype=np.uint64)
    got = one(op, a, b, tmp_path, **attrs)
    assert got.dtype == np.uint64
    np.testing.assert_array_equal(got, fn(a, b))


def test_uint64_division_broadcasts(tmp_path):
    a = np.array([[2 ** 64 - 1], [2 ** 63 + 9]], dtype=np.uint64)
    b = np.array([2, 2 ** 63 + 9, 10], dtype=np.uint64)
    np.testing.assert_array_equal(one("Div", a, b, tmp_path), a // b)


def test_uint64_op_without_a_kernel_is_refused_with_the_reason(tmp_path):
    x = np.array([1, 2], dtype=np.uint64)
    model = make_model([helper.make_node("Neg", ["x"], ["y"])], {"x": x}, ["y"], opset=14)
    with pytest.raises(UnsupportedOpError, match=r"Neg node.*neg on uint64 data \(torch has no kernel for it\)"):
        run_opara(save(model, tmp_path), [x])


def test_an_op_torch_lacks_for_uint32_is_refused_at_compile_time(tmp_path):
    x = np.array([[1, 2], [3, 4]], dtype=np.uint32)
    model = make_model([helper.make_node("ReduceMax", ["x"], ["y"], keepdims=0)], {"x": x}, ["y"], opset=17)
    with pytest.raises(UnsupportedOpError, match=r"ReduceMax node.*amax on uint32 data \(torch has no kernel"):
        run_opara(save(model, tmp_path), [x])


def test_uint32_initializer_is_a_weight_bound_from_the_file(tmp_path):
    x = np.array([1, 2, 3], dtype=np.uint32)
    w = np.array([4294967295, 10, 20], dtype=np.uint32)
    model = make_model([helper.make_node("Add", ["x", "w"], ["y"])], {"x": x}, ["y"], initializers={"w": w})
    plan, (y,) = run_opara(save(model, tmp_path), [x])
    assert any(n.kind == "param" and n.name == "w" for n in plan.graph.nodes)
    np.testing.assert_array_equal(y.numpy(), np.array([0, 12, 23], dtype=np.uint32))


def test_uint64_div_and_mod_match_onnxruntime(tmp_path):
    # onnxruntime returns numpy's ulonglong for uint64 outputs, which the reference converts for torch
    a = np.array([2 ** 64 - 1, 2 ** 63 + 1, 10, 2 ** 63 + 5], dtype=np.uint64)
    b = np.array([2 ** 63, 3, 3, 2 ** 62 + 1], dtype=np.uint64)
    nodes = [helper.make_node("Div", ["a", "b"], ["q"]), helper.make_node("Mod", ["a", "b"], ["r"])]
    check_against_ort(make_model(nodes, {"a": a, "b": b}, ["q", "r"], opset=14), tmp_path, {"a": a, "b": b})
