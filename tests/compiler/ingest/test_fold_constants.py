"""Values that depend on neither inputs nor weights are computed at compile time and stored as plan constants."""
from __future__ import annotations

import torch

import opara_runtime
import oparac
from oparac.ingest.fold_constants import FOLD_LIMIT_BYTES, fold_constants

from helpers.ingest_models import WindowMask


def _targets(plan):
    return [n.target for n in plan.graph.nodes if n.kind == "op"]


def test_a_mask_built_from_shapes_becomes_one_constant_and_the_plan_matches_eager_bit_for_bit():
    torch.manual_seed(0)
    model = WindowMask().eval()
    x = torch.randn(2, 6, 8)
    plan = oparac.compile(model, (x,), device="cpu")
    targets = _targets(plan)
    assert not {"aten.new_zeros.default", "aten.fill.Tensor", "aten.slice_scatter.default", "aten.ne.Scalar"} & set(
        targets), targets
    assert [n.kind for n in plan.graph.nodes].count("constant") == 1
    with torch.no_grad():
        want = model(x)
    assert torch.equal(opara_runtime.load(plan, model)(x), want)


def test_weights_are_never_folded_so_new_weights_take_effect():
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(4))

        def forward(self, x):
            return x * (self.w * 2 + torch.arange(4.0))

    x = torch.randn(3, 4)
    plan = oparac.compile(Scaled().eval(), (x,), device="cpu")
    assert "aten.mul.Tensor" in _targets(plan)  # w * 2 stays an op; the arange is folded
    assert "aten.arange.start_step" not in _targets(plan) and "aten.arange.default" not in _targets(plan)
    other = Scaled().eval()
    with torch.no_grad():
        assert torch.equal(opara_runtime.load(plan, other)(x), other(x))


def test_inputs_random_ops_and_uninitialised_tensors_stay_ops():
    class Noisy(torch.nn.Module):
        def forward(self, x):
            return x + torch.rand(4) + torch.empty(4).fill_(1.0) + x.sum()

    ep = torch.export.export(Noisy(), (torch.randn(4),)).run_decompositions({})
    folded = fold_constants(ep.graph, {})
    names = {str(n.target) for n in folded}
    assert not any("rand" in t or "empty" in t or "sum" in t for t in names), names
    kept = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"} - names
    assert any("rand" in t for t in kept) and any("sum" in t for t in kept)


def test_large_values_and_an_exceeded_budget_are_left_as_ops():
    class Big(torch.nn.Module):
        def forward(self, x):
            return x + x.new_ones((FOLD_LIMIT_BYTES // 4 + 1,)).sum(), x + torch.ones(4)

    ep = torch.export.export(Big(), (torch.randn(4),)).run_decompositions({})
    folded = fold_constants(ep.graph, {})
    assert {str(n.target) for n in folded} >= {"aten.ones.default"}
    assert not any("new_ones" in str(n.target) for n in folded)  # 4 MiB and a float: not embedded
    assert fold_constants(ep.graph, {}, budget=8) == {}  # the small ones need 16 bytes


def test_an_output_that_is_a_constant():
    class WithTable(torch.nn.Module):
        def forward(self, x):
            return x + 1, torch.arange(6).reshape(2, 3) * 2

    x = torch.randn(2)
    model = WithTable().eval()
    plan = oparac.compile(model, (x,), device="cpu")
    got = opara_runtime.load(plan, model)(x)
    want = model(x)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
