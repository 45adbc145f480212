"""channels_last plans on the GPU: fp16 ResNet-50 profiled, captured and replayed in NHWC."""
from __future__ import annotations

import pytest
import torch

import opara_runtime
import oparac
from oparac.models import zoo
from oparac.verify import verify

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("no_tf32")]


def test_resnet50_fp16_channels_last_verifies_and_returns_contiguous_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("OPARA_CACHE_DIR", str(tmp_path))
    model, inputs = zoo.resnet50()
    plan = oparac.compile(model, inputs, device="cuda", dtype="float16", memory_format="channels_last")
    assert plan.model.memory_format == "channels_last" and plan.profile.method == "cuda-graph"
    assert verify(plan, model, device="cuda").ok
    runner = opara_runtime.load(plan, model, device="cuda")
    x = inputs[0].cuda().half()
    out = runner(x)
    assert out.is_contiguous() and out.dtype == torch.float16
    (buf,) = runner.input_buffers()
    assert buf.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(runner(x, zero_copy=True), out)  # static buffers: same values, any strides
