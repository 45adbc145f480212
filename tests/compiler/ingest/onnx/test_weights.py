"""Weights at deploy time: initializers by name, Identity-deduplicated and shared initializers, external data."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

import opara_runtime
import oparac
from opara_plan import PlanMismatchError
from opara_runtime.onnx_weights import onnx_weights

from helpers.onnx_models import check_against_ort, make_model, save

R = np.random.default_rng(1)
X = R.standard_normal((2, 8)).astype(np.float32)


def linear_chain(w_name_a="w", w_name_b="w"):
    return [helper.make_node("MatMul", ["x", w_name_a], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", w_name_b], ["y"])]


def test_shared_initializer_is_one_param(tmp_path):
    model = make_model(linear_chain(), {"x": X}, ["y"], initializers={"w": R.standard_normal((8, 8), np.float32)})
    plan = check_against_ort(model, tmp_path, {"x": X})
    assert [n.name for n in plan.graph.nodes if n.kind == "param"] == ["w"]


def test_identity_deduplicated_initializer(tmp_path):
    # the legacy exporter writes one initializer and Identity nodes for its other names
    nodes = [helper.make_node("Identity", ["onnx::MatMul_7"], ["layer2.weight"])] + linear_chain(
        "onnx::MatMul_7", "layer2.weight")
    model = make_model(nodes, {"x": X}, ["y"], initializers={"onnx::MatMul_7": R.standard_normal((8, 8), np.float32)})
    plan = check_against_ort(model, tmp_path, {"x": X})
    params = [n.name for n in plan.graph.nodes if n.kind == "param"]
    assert params == ["onnx::MatMul_7"]
    assert set(params) <= set(onnx_weights(tmp_path / "m.onnx"))


def test_external_data_relative_to_the_model(tmp_path):
    w = R.standard_normal((8, 8)).astype(np.float32)
    model = make_model(linear_chain(), {"x": X}, ["y"], initializers={"w": w})
    folder = tmp_path / "deploy"
    folder.mkdir()
    onnx.save(model, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    assert (folder / "weights.bin").is_file()
    assert torch.equal(onnx_weights(folder / "m.onnx")["w"], torch.from_numpy(w))
    plan = oparac.compile(folder / "m.onnx", None, device="cpu")
    y = opara_runtime.load(plan, folder / "m.onnx", device="cpu")(torch.from_numpy(X))
    ref = np.maximum(X @ w, 0) @ w
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_new_weights_same_plan(tmp_path):
    model = make_model(linear_chain(), {"x": X}, ["y"], initializers={"w": np.eye(8, dtype=np.float32)})
    path = save(model, tmp_path)
    plan = oparac.compile(path, None, device="cpu")
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(2 * np.eye(8, dtype=np.float32), "w"))
    other = save(model, tmp_path, "m2.onnx")
    y = opara_runtime.load(plan, other, device="cpu")(torch.from_numpy(X))
    np.testing.assert_allclose(y.numpy(), 4 * np.maximum(X, 0), rtol=1e-6)


def test_mismatched_weights_are_refused(tmp_path):
    path = save(make_model(linear_chain(), {"x": X}, ["y"], initializers={"w": np.eye(8, dtype=np.float32)}),
                tmp_path)
    plan = oparac.compile(path, None, device="cpu")
    other = save(make_model(linear_chain(), {"x": X}, ["y"], initializers={"w": np.eye(8, 4, dtype=np.float32)}),
                 tmp_path, "other.onnx")
    with pytest.raises(PlanMismatchError, match="parameter 'w'"):
        opara_runtime.load(plan, other, device="cpu")


def test_runtime_reads_weights_without_importing_onnx_at_import_time():
    code = "import sys, opara_runtime, opara_runtime.onnx_weights; print('onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
