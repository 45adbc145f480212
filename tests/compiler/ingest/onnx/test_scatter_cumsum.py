"""ScatterND, ScatterElements and CumSum through oparac.compile against onnxruntime: every reduction, exclusive and
reverse, run-time and compile-time indices, negative indices and repeated ones."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import oparac
from opara_plan import UnsupportedOpError

from helpers.onnx_models import check_against_ort, make_model, run_opara, save

R = np.random.default_rng(0)
DATA = R.standard_normal((4, 3, 5)).astype(np.float32)
# (index tuples into the first two axes, one with a negative index); the last two repeat [1, 2]
IDX = np.array([[[0, 1], [-1, 0]], [[1, 2], [1, 2]]], dtype=np.int64)
UPD = R.standard_normal((2, 2, 5)).astype(np.float32)
REPEATING = ("add", "mul", "max", "min")  # reductions defined for repeated indices


def targets(plan) -> list[str]:
    return [n.target for n in plan.graph.nodes if n.kind == "op"]


@pytest.mark.parametrize("indices_at", ["run time", "compile time"])
@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd_reductions(tmp_path, reduction, indices_at):
    idx = IDX if reduction in REPEATING else IDX[:, :1]  # 'none' leaves repeated indices undefined
    upd = UPD if reduction in REPEATING else UPD[:, :1]
    attrs = {} if reduction == "none" else {"reduction": reduction}
    node = helper.make_node("ScatterND", ["x", "i", "u"], ["y"], name="snd", **attrs)
    inputs = {"x": DATA, "u": upd}
    inits = {}
    if indices_at == "run time":
        inputs["i"] = idx
    else:
        inits["i"] = idx
    model = make_model([node], inputs, ["y"], initializers=inits, opset=18)
    plan = check_against_ort(model, tmp_path, inputs)
    op = "aten.scatter.src" if reduction == "none" else "aten.scatter_reduce.two"
    assert op in targets(plan)


def test_scatter_nd_full_index_depth_and_whole_tensor_updates(tmp_path):
    # k == rank: single elements; k == 0: the whole tensor replaced
    idx = np.array([[0, 2, 4], [3, 0, 1]], dtype=np.int64)
    upd = np.array([10.0, 20.0], dtype=np.float32)
    nodes = [helper.make_node("ScatterND", ["x", "i", "u"], ["a"]),
             helper.make_node("ScatterND", ["a", "e", "w"], ["y"])]
    inputs = {"x": DATA, "i": idx, "u": upd, "w": DATA[None] * 2}
    model = make_model(nodes, inputs, ["a", "y"], initializers={"e": np.zeros((1, 0), dtype=np.int64)}, opset=13)
    check_against_ort(model, tmp_path, inputs)


def test_scatter_nd_max_before_opset_18_is_refused(tmp_path):
    node = helper.make_node("ScatterND", ["x", "i", "u"], ["y"], name="snd", reduction="max")
    model = make_model([node], {"x": DATA, "i": IDX, "u": UPD}, ["y"], opset=16)
    with pytest.raises(UnsupportedOpError, match=r"ScatterND node 'snd' \(opset 16, ScatterND-16\): "
                                                 r"reduction='max' is not supported"):
        oparac.compile(save(model, tmp_path), None, device="cpu")


def test_scatter_nd_uint32_data_moves_bits(tmp_path):
    data = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.uint32)
    upd = np.array([[4294967295, 7]], dtype=np.uint32)
    node = helper.make_node("ScatterND", ["x", "i", "u"], ["y"])
    model = make_model([node], {"x": data, "u": upd}, ["y"], initializers={"i": np.array([[1]], dtype=np.int64)},
                       opset=13)
    _, (y,) = run_opara(save(model, tmp_path), [data, upd])
    np.testing.assert_array_equal(y.numpy(), np.array([[1, 2], [4294967295, 7], [5, 6]], dtype=np.uint32))


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("axis", [0, -1])
def test_scatter_elements(tmp_path, reduction, axis):
    data = R.standard_normal((3, 4)).astype(np.float32)
    idx = np.array([[1, -1, 0], [2, 0, 0]], dtype=np.int32) if reduction != "none" else \
        np.array([[1, -1, 0], [2, 0, 1]], dtype=np.int32)
    if axis == 0:
        idx = np.where(idx == 2, -3, idx).astype(np.int32)  # rows: 3
    upd = R.standard_normal(idx.shape).astype(np.float32)
    attrs = {} if reduction == "none" else {"reduction": reduction}
    node = helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=axis, **attrs)
    inputs = {"x": data, "i": idx, "u": upd}
    check_against_ort(make_model([node], inputs, ["y"], opset=18), tmp_path, inputs)


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_cumsum(tmp_path, exclusive, reverse, axis):
    x = R.standard_normal((3, 4, 5)).astype(np.float32)
    node = helper.make_node("CumSum", ["x", "a"], ["y"], exclusive=exclusive, reverse=reverse)
    model = make_model([node], {"x": x}, ["y"], initializers={"a": np.array(axis, dtype=np.int64)}, opset=14)
    plan = check_against_ort(model, tmp_path, {"x": x})
    ops = targets(plan)
    assert "aten.cumsum.default" in ops
    assert ("aten.flip.default" in ops) == bool(reverse)
    assert ("aten.constant_pad_nd.default" in ops) == bool(exclusive)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_cumsum_keeps_integer_type(tmp_path, dtype):
    # torch's cumsum would widen int32 to int64; ONNX keeps the input's type
    x = np.array([[1, 2, 3], [4, 5, 6]], dtype=dtype)
    node = helper.make_node("CumSum", ["x", "a"], ["y"], exclusive=1)
    model = make_model([node], {"x": x}, ["y"], initializers={"a": np.array([1], dtype=np.int32)}, opset=14)
    check_against_ort(model, tmp_path, {"x": x})


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_cumsum_unsigned_wraps(tmp_path, dtype):
    top = np.iinfo(dtype).max
    x = np.array([top, 2, top - 1, 5], dtype=dtype)
    node = helper.make_node("CumSum", ["x", "a"], ["y"], reverse=1)
    model = make_model([node], {"x": x}, ["y"], initializers={"a": np.array(0, dtype=np.int64)}, opset=14)
    _, (y,) = run_opara(save(model, tmp_path), [x])
    with np.errstate(over="ignore"):
        want = np.cumsum(x[::-1], dtype=dtype)[::-1]
    assert y.numpy().dtype == dtype
    np.testing.assert_array_equal(y.numpy(), want)


def test_cumsum_axis_computed_at_run_time_is_refused(tmp_path):
    x = np.ones((2, 3), dtype=np.float32)
    node = helper.make_node("CumSum", ["x", "a"], ["y"], name="cs")
    model = make_model([node], {"x": x, "a": np.array(1, dtype=np.int64)}, ["y"], opset=14)
    with pytest.raises(UnsupportedOpError, match=r"CumSum node 'cs'.*input 1 \(axis\) 'a' is computed at run time"):
        oparac.compile(save(model, tmp_path), None, device="cpu")
