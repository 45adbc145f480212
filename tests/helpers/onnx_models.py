"""Tiny ONNX models built with onnx.helper for the ONNX tests, run through Opara and through onnxruntime."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

import opara_runtime
import oparac
from oparac.ingest.onnx_reference import run_onnxruntime

NP_TO_ONNX = {np.float32: TensorProto.FLOAT, np.int64: TensorProto.INT64, np.bool_: TensorProto.BOOL,
              np.float16: TensorProto.FLOAT16, np.int32: TensorProto.INT32, np.uint16: TensorProto.UINT16,
              np.uint32: TensorProto.UINT32, np.uint64: TensorProto.UINT64}


def make_model(nodes, inputs: dict, outputs: list[str], *, initializers: dict | None = None, opset: int = 17,
               ir_version: int = 8, out_types: dict | None = None) -> onnx.ModelProto:
    """inputs: name -> example array (its dtype and shape declare the input); out_types: name -> (elem type,
    shape) declares outputs fully (onnx's checker wants that), initializers: name -> array."""
    ins = [helper.make_tensor_value_info(k, NP_TO_ONNX[v.dtype.type], list(v.shape)) for k, v in inputs.items()]
    outs = [helper.make_tensor_value_info(k, *out_types[k]) if out_types and k in out_types else
            helper.make_empty_tensor_value_info(k) for k in outputs]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()]
    graph = helper.make_graph(nodes, "g", ins, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


def save(model: onnx.ModelProto, tmp_path: Path, name: str = "m.onnx") -> Path:
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def run_opara(path: Path, inputs: list[np.ndarray], **options):
    plan = oparac.compile(path, None, device="cpu", **options)
    runner = opara_runtime.load(plan, path, device="cpu")
    out = runner(*[torch.from_numpy(np.array(x, copy=True)) for x in inputs])
    return plan, (out if isinstance(out, tuple) else (out,))


def check_against_ort(model: onnx.ModelProto, tmp_path: Path, inputs: dict, *, rtol: float = 1e-5,
                      atol: float = 1e-6, **options):
    """Compile and run with Opara, run onnxruntime, compare every output (values, shape and dtype)."""
    path = save(model, tmp_path)
    arrays = list(inputs.values())
    plan, got = run_opara(path, arrays, **options)
    want = run_onnxruntime(path, [torch.from_numpy(np.array(x, copy=True)) for x in arrays])
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype, (g.dtype, w.dtype)
        assert tuple(g.shape) == tuple(w.shape), (tuple(g.shape), tuple(w.shape))
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol)
    return plan


def rel_error(got, want) -> float:
    return max(((g - w).abs().max() / w.abs().max().clamp_min(1e-30)).item() for g, w in zip(got, want))
