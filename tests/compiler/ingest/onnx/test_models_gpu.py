"""The ONNX front end on the GPU: an exported model runs as a multi-stream plan like its PyTorch twin."""
from __future__ import annotations

import pytest
import torch

import opara_runtime
import oparac
from oparac.models import zoo
from oparac.bench.methods import SequentialGraph
from oparac.profile.measure import time_gpu

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("no_tf32")]


@pytest.mark.parametrize("dynamo", [False, True])
def test_onnx_googlenet_on_gpu(tmp_path, dynamo):
    model, (x,) = zoo.googlenet()
    path = tmp_path / "g.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=dynamo, opset_version=18 if dynamo else 17)
    plan = oparac.compile(path, None, device="cuda")
    assert plan.model.source == "onnx" and plan.schedule.num_streams > 1
    runner = opara_runtime.load(plan, path, device="cuda")
    xc = x.cuda()
    model = model.cuda()
    with torch.no_grad():
        want = model(xc)
    got = runner(xc)
    got = got[0] if isinstance(got, tuple) else got
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-4
    torch_plan = oparac.compile(model, (xc,), device="cuda")
    torch_runner = opara_runtime.load(torch_plan, model, device="cuda")
    dev = torch.device("cuda")
    seq_graph = SequentialGraph(model, (xc,))
    seq = time_gpu(lambda: seq_graph(xc), dev)
    onnx_ms = time_gpu(lambda: runner(xc), dev).ms_b2b
    torch_ms = time_gpu(lambda: torch_runner(xc), dev).ms_b2b
    print(f"GoogLeNet ({'dynamo' if dynamo else 'legacy'} ONNX export): sequential graph {seq.ms_b2b:.3f} ms, "
          f"ONNX plan {onnx_ms:.3f} ms ({seq.ms_b2b / onnx_ms:.2f}x), PyTorch plan {torch_ms:.3f} ms "
          f"({seq.ms_b2b / torch_ms:.2f}x)")
    assert onnx_ms < seq.ms_b2b
