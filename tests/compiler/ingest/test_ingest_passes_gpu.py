"""The ingest's rewrites on a GPU: one GEMM for a strided projection, folded masks, causal attention."""
from __future__ import annotations

import pytest
import torch

import opara_runtime
import oparac

from helpers.ingest_models import Attention, Decoder, WindowMask

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("no_tf32")]
CUDA = torch.device("cuda")


def _plan_and_runner(model, inputs, **options):
    plan = oparac.compile(model, inputs, device="cuda", **options)
    return plan, opara_runtime.load(plan, model, device=CUDA, trust_compiled_code=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_strided_projection_runs_eagers_gemm_bit_for_bit(dtype):
    torch.manual_seed(0)
    model = Attention(dim=64, heads=4).eval().to(CUDA, dtype)
    x = torch.randn(8, 50, 64, device=CUDA, dtype=dtype)
    _, runner = _plan_and_runner(model, (x,), dtype=str(dtype).removeprefix("torch."))
    want = model(x).detach()  # grad on: the composite path, whose GEMMs the plan runs
    assert torch.equal(runner(x), want)


def test_folded_mask_plan_matches_eager_in_a_cuda_graph():
    torch.manual_seed(0)
    model = WindowMask().eval().to(CUDA)
    x = torch.randn(4, 6, 8, device=CUDA)
    _, runner = _plan_and_runner(model, (x,))
    with torch.no_grad():
        want = model(x)
    torch.testing.assert_close(runner(x), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fuse", ["", "inductor"])
def test_causal_attention_in_half_precision_matches_the_masked_call(fuse):
    torch.manual_seed(0)
    model = Decoder("bool").eval().to(CUDA, torch.float16)
    x = torch.randn(8, 64, 16, device=CUDA, dtype=torch.float16)
    plan, runner = _plan_and_runner(model, (x,), dtype="float16", fuse=fuse)
    assert all(dict(n.kwargs).get("is_causal") for n in plan.graph.nodes
               if n.kind == "op" and n.target == "aten.scaled_dot_product_attention.default")
    with torch.no_grad():
        want = model(x)
    torch.testing.assert_close(runner(x), want, rtol=2e-3, atol=2e-3)
