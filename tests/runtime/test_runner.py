"""The runtime on the CPU: weight binding, input checks, execution in launch order, output structure."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import opara_runtime
from opara_plan import InputError, ModelError, OutTree, PlanFormatError, PlanMismatchError
from opara_runtime import rebuild

from helpers.plans import fork_join


def test_runs_the_plan(tiny_plan):
    w = torch.randn(3, 3)
    runner = opara_runtime.load(tiny_plan, {"w": w}, device="cpu")
    x = torch.randn(2, 3)
    torch.testing.assert_close(runner(x), fork_join(x, w))


def test_loads_from_a_path(tiny_plan, tmp_path):
    tiny_plan.save(tmp_path / "t.plan")
    w = torch.randn(3, 3)
    runner = opara_runtime.load(tmp_path / "t.plan", {"w": w})
    x = torch.randn(2, 3)
    torch.testing.assert_close(runner(x), fork_join(x, w))


def test_weights_from_a_module(tiny_plan):
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(3, 3))
    m = M()
    x = torch.randn(2, 3)
    torch.testing.assert_close(opara_runtime.load(tiny_plan, m)(x), fork_join(x, m.w.detach()))


@pytest.mark.parametrize("weights, message", [
    ({}, r"the model has no parameter 'w', which the plan needs as float32\[3, 3\]"),
    ({"w": torch.randn(3, 4)}, r"parameter 'w': the plan expects float32\[3, 3\], the model has float32\[3, 4\]"),
    ({"w": torch.randn(3, 3, dtype=torch.float64)}, r"the model has float64\[3, 3\]"),
])
def test_mismatched_weights_are_refused(tiny_plan, weights, message):
    with pytest.raises(PlanMismatchError, match=message):
        opara_runtime.load(tiny_plan, weights)


@pytest.mark.parametrize("inputs, message", [
    ((), r"expected 1 inputs \('x'\), got 0"),
    ((torch.randn(2, 4),), r"input 0 'x': expected float32\[2, 3\] on cpu, got float32\[2, 4\] on cpu"),
    ((torch.randn(2, 3).half(),), r"input 0 'x': expected float32\[2, 3\] on cpu, got float16\[2, 3\] on cpu"),
    (("x",), r"input 0 'x': expected float32\[2, 3\] on cpu, got str"),
])
def test_bad_inputs_are_refused(tiny_plan, inputs, message):
    runner = opara_runtime.load(tiny_plan, {"w": torch.randn(3, 3)})
    with pytest.raises(InputError, match=message):
        runner(*inputs)


def test_bad_model_argument(tiny_plan):
    with pytest.raises(ModelError, match="expected an nn.Module, an ExportedProgram, a dict of tensors or a path"):
        opara_runtime.load(tiny_plan, 42)
    with pytest.raises(PlanFormatError, match="expected a Plan, a PlanSet or a path"):
        opara_runtime.load(b"bytes", {})


def test_cuda_plan_without_cuda_falls_back_with_a_warning(tiny_plan):
    if torch.cuda.is_available():
        pytest.skip("only meaningful without a GPU")
    target = dataclasses.replace(tiny_plan.target, device_type="cuda", gpu_name="NVIDIA H100",
                                 compute_capability=(9, 0))
    with pytest.warns(UserWarning, match="CUDA is not available"):
        runner = opara_runtime.load(dataclasses.replace(tiny_plan, target=target), {"w": torch.randn(3, 3)})
    assert runner.device.type == "cpu"
    with pytest.raises(PlanMismatchError, match="CUDA is not available"):
        opara_runtime.load(tiny_plan, {"w": torch.randn(3, 3)}, device="cuda")


def test_rebuild_structures():
    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    tree = OutTree("dict", keys=("last", "pair"), children=(
        OutTree("tensor", 2), OutTree("tuple", children=(OutTree("tensor", 0), OutTree("list", children=(
            OutTree("tensor", 1), OutTree("none")))))))
    out = rebuild(tree, [a, b, c])
    assert out["last"] is c and out["pair"][0] is a and out["pair"][1] == [b, None]


def test_runner_calls_are_independent(tiny_plan):
    runner = opara_runtime.load(tiny_plan, {"w": torch.eye(3)})
    x1, x2 = torch.randn(2, 3), torch.randn(2, 3)
    y1 = runner(x1)
    runner(x2)
    torch.testing.assert_close(y1, fork_join(x1, torch.eye(3)))


def test_input_buffers_filled_in_place_give_the_same_result(tiny_plan):
    w = torch.randn(3, 3)
    runner = opara_runtime.load(tiny_plan, {"w": w}, device="cpu")
    (buf,) = runner.input_buffers()
    assert buf.shape == (2, 3) and buf.dtype == torch.float32
    x = torch.randn(2, 3)
    buf.copy_(x)
    torch.testing.assert_close(runner(buf), fork_join(x, w))
