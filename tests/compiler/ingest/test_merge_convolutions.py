"""Merged convolutions (compile option merge_convolutions, on by default): sibling convolutions of one activation
with the same kernel size, stride and padding become one over weights the runtime stacks at load; each consumer
reads its channels as a slice. Checked on the CPU path, which runs the plan's ops as a GPU would."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._pytree import tree_leaves

import opara_runtime
import oparac
from opara_plan import CONCAT_PARAM, plan_from_bytes, plan_to_bytes

from helpers.models import InceptionBlock, inception_block

CONVS = ("aten.convolution.default", "aten.conv2d.default")


def _convolutions(plan) -> int:
    return sum(n.target in CONVS for n in plan.graph.nodes)


def _stacked(plan) -> list:
    return [n.args for n in plan.graph.nodes if n.kind == "param" and n.target == CONCAT_PARAM]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
def test_an_inception_blocks_1x1_convolutions_become_one_and_match_eager(bias, memory_format):
    model, x = InceptionBlock(bias=bias).eval(), torch.randn(2, 16, 12, 12)
    notes = []
    plan = oparac.compile(model, (x,), device="cpu", memory_format=memory_format, progress=notes.append)
    plain = oparac.compile(model, (x,), device="cpu", merge_convolutions=False)
    assert (_convolutions(plain), _convolutions(plan)) == (7, 5)
    assert _stacked(plan) == [("b1.0.weight", "r3.0.weight", "r5.0.weight")] + (
        [("b1.0.bias", "r3.0.bias", "r5.0.bias")] if bias else [])
    assert any("3 projections merged into 1 ops" in str(n) for n in notes)
    with torch.no_grad():
        want = model(x)
    runner = opara_runtime.load(plan_from_bytes(plan_to_bytes(plan)), model, device="cpu")
    for got, w in zip(runner(x), want):
        torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-5)


def test_on_by_default_and_new_weights_take_effect():
    model, (x,) = inception_block()
    assert not _stacked(oparac.compile(model, (x,), device="cpu", merge_convolutions=False))
    plan = oparac.compile(model, (x,), device="cpu")
    assert _stacked(plan)
    with torch.no_grad():
        model.r5[0].weight.mul_(-1.5)
        want = model(x)
    torch.testing.assert_close(opara_runtime.load(plan, model, device="cpu")(x)[0], want[0], rtol=1e-5, atol=1e-5)


def test_the_cli_merges_convolutions_unless_told_not_to(tmp_path):
    from click.testing import CliRunner

    from opara_plan import load_plan
    from oparac.cli import main

    merged, apart = tmp_path / "merged.plan", tmp_path / "apart.plan"
    for path, flags in ((merged, []), (apart, ["--no-merge-convolutions"])):
        result = CliRunner().invoke(main, ["compile", "helpers.models:inception_block", "-o", str(path),
                                           "--device", "cpu", *flags])
        assert result.exit_code == 0, result.output
    assert _stacked(load_plan(merged)) == [("b1.0.weight", "r3.0.weight", "r5.0.weight")]
    assert not _stacked(load_plan(apart))


@pytest.mark.parametrize("name, batch", [("googlenet", 1), pytest.param("inception_timm", 8, marks=pytest.mark.slow)])
def test_a_zoo_models_merged_plan_is_as_accurate_as_eager(name, batch):
    """A wider convolution is another kernel, which sums its products in another order: the merged plan is not
    eager's bits. What must hold is that it is as close to the exact result (float64) as eager's float32 is."""
    from oparac.models import zoo

    torch.manual_seed(0)
    model, inputs = getattr(zoo, name)(batch)
    plan = oparac.compile(model, inputs, device="cpu")
    assert _stacked(plan), "the model has sibling convolutions to merge"
    with torch.no_grad():
        got, eager, exact = (tree_leaves(out)[0] for out in (
            opara_runtime.load(plan, model, device="cpu")(*inputs), model(*inputs),
            copy.deepcopy(model).double()(*(x.double() for x in inputs))))
    eager_error = (eager.double() - exact).abs().max().item()
    assert 0 < (got.double() - exact).abs().max().item() <= 2 * eager_error
