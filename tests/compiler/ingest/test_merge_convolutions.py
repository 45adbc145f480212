"""Merged convolutions (compile option merge_convolutions, experimental): sibling convolutions of one activation
with the same kernel size, stride and padding become one over weights the runtime stacks at load; each consumer
reads its channels as a slice. Checked on the CPU path, which runs the plan's ops as a GPU would."""
from __future__ import annotations

import pytest
import torch

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
    plan = oparac.compile(model, (x,), device="cpu", merge_convolutions=True, memory_format=memory_format,
                          progress=notes.append)
    plain = oparac.compile(model, (x,), device="cpu")
    assert (_convolutions(plain), _convolutions(plan)) == (7, 5)
    assert _stacked(plan) == [("b1.0.weight", "r3.0.weight", "r5.0.weight")] + (
        [("b1.0.bias", "r3.0.bias", "r5.0.bias")] if bias else [])
    assert any("3 projections merged into 1 ops" in str(n) for n in notes)
    with torch.no_grad():
        want = model(x)
    runner = opara_runtime.load(plan_from_bytes(plan_to_bytes(plan)), model, device="cpu")
    for got, w in zip(runner(x), want):
        torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-5)


def test_off_by_default_and_new_weights_take_effect():
    model, (x,) = inception_block()
    assert not _stacked(oparac.compile(model, (x,), device="cpu"))
    plan = oparac.compile(model, (x,), device="cpu", merge_convolutions=True)
    with torch.no_grad():
        model.r5[0].weight.mul_(-1.5)
        want = model(x)
    torch.testing.assert_close(opara_runtime.load(plan, model, device="cpu")(x)[0], want[0], rtol=1e-5, atol=1e-5)


def test_the_cli_flag_merges_convolutions(tmp_path):
    from click.testing import CliRunner

    from opara_plan import load_plan
    from oparac.cli import main

    path = tmp_path / "block.plan"
    result = CliRunner().invoke(main, ["compile", "helpers.models:inception_block", "-o", str(path), "--device", "cpu",
                                       "--merge-convolutions"])
    assert result.exit_code == 0, result.output
    assert _stacked(load_plan(path)) == [("b1.0.weight", "r3.0.weight", "r5.0.weight")]
