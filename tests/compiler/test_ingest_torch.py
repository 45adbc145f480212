"""PyTorch front end: export to functional ATen, FX graphs as given, refusals that name the node."""
from __future__ import annotations

import pytest
import torch

import opara_runtime
import oparac
from opara_plan import ModelError, UnsupportedOpError, plan_to_bytes


class Branches(torch.nn.Module):
    """Three independent branches joined by a concat, with an in-place op and a view inside."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(3, 4, 1)
        self.c = torch.nn.Linear(3, 3)
        self.bn = torch.nn.BatchNorm2d(4)

    def forward(self, x):
        a = self.bn(self.a(x)).relu_()
        b = torch.sigmoid(self.b(x))
        c = self.c(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return torch.cat([a, b, c], dim=1).flatten(1)


def _check(model, inputs, rel=1e-5, **options):
    plan = oparac.compile(model, inputs, device="cpu", **options)
    runner = opara_runtime.load(plan, model)
    got = runner(*inputs)
    want = model(*inputs)
    torch.testing.assert_close(got, want, rtol=rel, atol=rel * max(1.0, want.abs().max().item()))
    return plan


def test_branches_module():
    plan = _check(Branches().eval(), (torch.randn(2, 3, 8, 8),))
    assert plan.schedule.num_streams >= 3
    targets = {n.target for n in plan.graph.nodes if n.kind == "op"}
    assert not any(t.split(".")[1].endswith("_") for t in targets), "in-place ops must be functionalised"


def test_same_model_gives_identical_bytes():
    torch.manual_seed(0)
    m = Branches().eval()
    x = torch.randn(1, 3, 8, 8)
    assert plan_to_bytes(oparac.compile(m, (x,), device="cpu")) == plan_to_bytes(oparac.compile(m, (x,), device="cpu"))


def test_new_weights_same_fingerprint():
    x = torch.randn(1, 3, 8, 8)
    p1 = oparac.compile(Branches().eval(), (x,), device="cpu")
    p2 = oparac.compile(Branches().eval(), (x,), device="cpu")
    assert p1.model.fingerprint == p2.model.fingerprint


def test_item_is_refused_naming_the_node():
    class M(torch.nn.Module):
        def forward(self, x):
            return x * x.sum().item()
    with pytest.raises((UnsupportedOpError, ModelError), match="_local_scalar_dense|item|data-dependent"):
        oparac.compile(M(), (torch.randn(3),), device="cpu")


def test_data_dependent_shape_is_refused():
    class M(torch.nn.Module):
        def forward(self, x):
            return torch.nonzero(x)
    with pytest.raises((UnsupportedOpError, ModelError), match="nonzero|data-dependent"):
        oparac.compile(M(), (torch.randn(3),), device="cpu")


def test_structured_outputs_come_back_in_the_models_structure():
    class M(torch.nn.Module):
        def forward(self, x, y):
            return {"sum": x + y, "parts": (x * 2, [y - 1])}
    m = M()
    x, y = torch.randn(2, 2), torch.randn(2, 2)
    plan = oparac.compile(m, (x, y), device="cpu")
    out = opara_runtime.load(plan, m)(x, y)
    assert set(out) == {"sum", "parts"}
    torch.testing.assert_close(out["parts"][1][0], y - 1)
    torch.testing.assert_close(out["sum"], x + y)


def test_aten_graph_module_is_taken_as_is():
    from torch.fx.experimental.proxy_tensor import make_fx

    def f(x, w):
        return torch.relu(x @ w) + torch.tanh(x @ w)
    x, w = torch.randn(4, 4), torch.randn(4, 4)
    gm = make_fx(f)(x, w)
    plan = oparac.compile(gm, (x, w), device="cpu")
    assert plan.model.source == "fx"
    torch.testing.assert_close(opara_runtime.load(plan, gm)(x, w), f(x, w))


def test_torch_level_graph_module_is_exported():
    gm = torch.fx.symbolic_trace(Branches().eval())
    plan = _check(gm, (torch.randn(1, 3, 8, 8),))
    assert plan.model.source == "torch.export"


def test_non_tensor_inputs_are_refused():
    with pytest.raises(ModelError, match="example input 0: expected a tensor"):
        oparac.compile(Branches(), (3,), device="cpu")
    with pytest.raises(ModelError, match="dtype"):
        oparac.compile(Branches(), (torch.randn(1, 3, 8, 8),), device="cpu", dtype="int8")
    with pytest.raises(ModelError, match="fuse: expected one of"):
        oparac.compile(Branches(), (torch.randn(1, 3, 8, 8),), device="cpu", fuse="tensorrt")
    with pytest.raises(ModelError, match="--tune measures schedules on the GPU"):
        oparac.compile(Branches(), (torch.randn(1, 3, 8, 8),), device="cpu", tune=True)


def test_float16_plan_casts_weights_at_load():
    m = Branches().eval()
    x = torch.randn(1, 3, 8, 8)
    plan = oparac.compile(m, (x,), device="cpu", dtype="bfloat16")
    assert plan.model.precision == "bfloat16"
    assert {n.outputs[0].dtype for n in plan.graph.nodes if n.kind == "param" and n.outputs[0].dtype != "int64"} == {"bfloat16"}
    got = opara_runtime.load(plan, m)(x.bfloat16())
    want = m(x)
    assert ((got.float() - want).abs().max() / want.abs().max()).item() < 5e-2
