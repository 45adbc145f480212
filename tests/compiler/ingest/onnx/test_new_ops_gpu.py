"""ScatterND, ScatterElements, CumSum, graph-made weights and uint64 division profiled and captured in a CUDA graph,
against onnxruntime on the CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

import opara_runtime
import oparac
from oparac.ingest.onnx_reference import run_onnxruntime

from helpers.onnx_models import make_model, save

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("no_tf32")]
R = np.random.default_rng(0)


def run_cuda_and_compare(model, tmp_path, inputs: dict, *, rtol=1e-5, atol=1e-5):
    path = save(model, tmp_path)
    plan = oparac.compile(path, None, device="cuda")
    runner = opara_runtime.load(plan, path, device="cuda")
    tensors = [torch.from_numpy(np.array(v, copy=True)) for v in inputs.values()]
    got = runner(*[t.cuda() for t in tensors])
    got = got if isinstance(got, tuple) else (got,)
    want = run_onnxruntime(path, tensors)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and tuple(g.shape) == tuple(w.shape)
        torch.testing.assert_close(g.cpu(), w, rtol=rtol, atol=atol)
    return plan


def test_scatters_and_cumsum_side_by_side_on_gpu(tmp_path):
    """Independent branches, so the plan runs them on several streams."""
    data = R.standard_normal((8, 6, 32)).astype(np.float32)
    idx = np.array([[[0, 1], [-1, 0]], [[3, 2], [3, 2]]], dtype=np.int64)
    upd = R.standard_normal((2, 2, 32)).astype(np.float32)
    eidx = R.integers(-6, 6, size=(8, 6, 32)).astype(np.int64)
    nodes = [helper.make_node("ScatterND", ["x", "i", "u"], [f"nd_{r}"], reduction=r)
             for r in ("add", "mul", "max", "min")]
    nodes += [helper.make_node("ScatterND", ["x", "i1", "u1"], ["nd_none"]),
              helper.make_node("ScatterElements", ["x", "e", "x"], ["el_add"], axis=1, reduction="add"),
              helper.make_node("CumSum", ["x", "a"], ["cs"], exclusive=1, reverse=1),
              helper.make_node("CumSum", ["x", "a"], ["cs_plain"])]
    outs = ["nd_add", "nd_mul", "nd_max", "nd_min", "nd_none", "el_add", "cs", "cs_plain"]
    inputs = {"x": data, "i": idx, "u": upd, "i1": idx[:, :1], "u1": upd[:, :1], "e": eidx}
    model = make_model(nodes, inputs, outs, initializers={"a": np.array(-1, dtype=np.int64)}, opset=18)
    plan = run_cuda_and_compare(model, tmp_path, inputs, rtol=1e-4, atol=1e-4)
    assert plan.schedule.num_streams > 1


def test_graph_made_64_mib_weight_on_gpu(tmp_path):
    x = R.standard_normal((2, 4096)).astype(np.float32)
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["w"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.001])),
             helper.make_node("Expand", ["c", "s"], ["e"]),
             helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("MatMul", ["x", "e"], ["z"])]
    inits = {"s": np.array([4096, 4100], dtype=np.int64), "c": np.float32(-0.002)}
    plan = run_cuda_and_compare(make_model(nodes, {"x": x}, ["y", "z"], initializers=inits), tmp_path, {"x": x},
                                rtol=1e-4, atol=1e-4)
    targets = {n.target for n in plan.graph.nodes if n.kind == "op"}
    assert {"aten.full.default", "aten.expand.default"} <= targets


def test_uint64_division_on_gpu(tmp_path):
    a = np.array([2 ** 64 - 1, 2 ** 63 + 1, 10, 2 ** 63 + 5], dtype=np.uint64)
    b = np.array([2 ** 63, 3, 3, 2 ** 62 + 1], dtype=np.uint64)
    nodes = [helper.make_node("Div", ["a", "b"], ["q"]), helper.make_node("Mod", ["a", "b"], ["r"])]
    run_cuda_and_compare(make_model(nodes, {"a": a, "b": b}, ["q", "r"], opset=14), tmp_path, {"a": a, "b": b})
