"""A strided activation times a weight is ingested as eager PyTorch runs it: one GEMM over all rows."""
from __future__ import annotations

import torch

import opara_runtime
import oparac

from helpers.ingest_models import Attention


class Products(torch.nn.Module):
    """matmul by a weight, by a view of a weight, and by an activation, each of a transposed input."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(8, 6))
        self.v = torch.nn.Parameter(torch.randn(6, 8))

    def forward(self, x, m):
        t = x.transpose(0, 1)
        return torch.matmul(t, self.w), torch.matmul(t, self.v.t()), torch.matmul(t, m)


def _ops(plan):
    return [n for n in plan.graph.nodes if n.kind == "op"]


def _batched_products(plan):
    """Matrix products left to ATen whose first operand has three or more dimensions."""
    nodes = plan.graph.nodes
    return [n for n in _ops(plan) if n.target in ("aten.linear.default", "aten.matmul.default")
            and len(nodes[n.args[0].node].outputs[n.args[0].index].shape) >= 3]


def test_multihead_attention_projection_is_one_gemm_and_matches_eager_bit_for_bit():
    torch.manual_seed(0)
    model = Attention().eval()
    x = torch.randn(4, 5, 16)
    plan = oparac.compile(model, (x,), device="cpu")
    assert not _batched_products(plan)
    targets = [n.target for n in _ops(plan)]
    assert {"aten.reshape.default", "aten.mm.default"} <= set(targets)
    want = model(x).detach()  # with grad on, not the fused fast path that eager takes under no_grad
    got = opara_runtime.load(plan, model)(x)
    assert torch.equal(got, want)  # the same kernels as eager's, not the batched GEMM of unbound weights


def test_batch_one_and_contiguous_inputs_are_left_as_they_are():
    """Where the leading dimensions merge without a copy ATen folds by itself: the graph does not change."""
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.GELU(), torch.nn.Linear(8, 4)).eval()
    plan = oparac.compile(model, (torch.randn(3, 5, 16),), device="cpu")
    assert [n.target for n in _ops(plan)].count("aten.linear.default") == 2
    assert "aten.reshape.default" not in {n.target for n in _ops(plan)}


def test_weights_and_their_views_fold_activations_do_not():
    torch.manual_seed(0)
    model = Products().eval()
    x, m = torch.randn(5, 3, 8), torch.randn(8, 4)
    plan = oparac.compile(model, (x, m), device="cpu")
    left = _batched_products(plan)
    # the product by an activation stays ATen's (eager does not fold it either: the operand needs no grad)
    assert len(left) == 1 and plan.graph.nodes[left[0].args[1].node].kind == "input"
    assert [n.target for n in _ops(plan)].count("aten.mm.default") == 2
    with torch.no_grad():
        want = model(x, m)
    got = opara_runtime.load(plan, model)(x, m)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
