"""Opara as an onnx.backend.base.Backend: prepare/run, devices, shape operands given at run time."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from opara_plan import ModelError, UnsupportedOpError
from oparac.adapters import onnx_backend
from oparac.adapters.onnx_backend import OparaBackend

from helpers.onnx_models import make_model

F = TensorProto.FLOAT


def one_node(op, inputs, out, **kw):
    return make_model([helper.make_node(op, list(inputs), ["y"])], inputs, ["y"], out_types={"y": out}, **kw)


def test_prepare_and_run():
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    rep = OparaBackend.prepare(one_node("Relu", {"x": x}, (F, [2, 3])), "CPU")
    (y,) = rep.run([x])
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    (y,) = onnx_backend.run_model(one_node("Neg", {"x": x}, (F, [2, 3])), [x])
    np.testing.assert_array_equal(y, -x)


def test_shape_operand_given_at_run_time_is_compiled_in():
    x = np.arange(6, dtype=np.float32)
    rep = OparaBackend.prepare(one_node("Reshape", {"x": x, "s": np.array([2, 3])}, (F, ["a", "b"]), opset=14))
    assert rep.run([x, np.array([2, 3])])[0].shape == (2, 3)
    assert rep.run([x, np.array([3, 2])])[0].shape == (3, 2)


def test_unsupported_op_is_reported_by_prepare():
    x = np.zeros((2, 2), dtype=np.float32)
    with pytest.raises(UnsupportedOpError, match="NonZero"):
        OparaBackend.prepare(one_node("NonZero", {"x": x}, (TensorProto.INT64, [2, "n"])), "CPU")


def test_supports_device():
    assert OparaBackend.supports_device("CPU")
    assert OparaBackend.supports_device("CUDA") == torch.cuda.is_available()


def test_run_node_wraps_one_node_in_a_model():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((3,), 2, dtype=np.float32)
    (y,) = onnx_backend.run_node(helper.make_node("Mul", ["a", "b"], ["y"]), [a, b])
    np.testing.assert_array_equal(y, a * b)
    node = helper.make_node("ArgMax", ["x"], ["i"], axis=1, keepdims=0)
    (i,) = OparaBackend.run_node(node, [a], outputs_info=[(np.int64, (2,))], opset_version=13)
    assert i.dtype == np.int64 and i.tolist() == [2, 2]


def test_run_node_counts_inputs():
    with pytest.raises(ModelError, match=r"Mul node 'm': it reads 2 inputs \['a', 'b'\], got 1 arrays"):
        OparaBackend.run_node(helper.make_node("Mul", ["a", "b"], ["y"], name="m"), [np.zeros(2, np.float32)])
