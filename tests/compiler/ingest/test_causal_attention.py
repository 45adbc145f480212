"""Attention given a compile-time causal mask is built as causal attention without the mask."""
from __future__ import annotations

import pytest
import torch

import opara_runtime
import oparac
from oparac.ingest.causal_attention import is_causal_mask

from helpers.ingest_models import Decoder


def _attention_calls(plan):
    return [n for n in plan.graph.nodes if n.kind == "op" and n.target == "aten.scaled_dot_product_attention.default"]


def _run(model, inputs):
    plan = oparac.compile(model, inputs, device="cpu")
    got = opara_runtime.load(plan, model)(*inputs)
    with torch.no_grad():
        want = model(*inputs)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    return plan


@pytest.mark.parametrize("mask", ["bool", "float"])
def test_a_causal_mask_from_shapes_becomes_is_causal_and_is_not_stored(mask):
    torch.manual_seed(0)
    plan = _run(Decoder(mask).eval(), (torch.randn(2, 6, 16),))
    (call,) = _attention_calls(plan)
    assert (call.args + (None,) * 4)[3] is None and dict(call.kwargs).get("is_causal") is True
    assert not [n for n in plan.graph.nodes if n.kind == "constant"]


def test_other_masks_stay_masks():
    torch.manual_seed(0)
    band = _run(Decoder("band").eval(), (torch.randn(2, 6, 16),))
    (call,) = _attention_calls(band)
    assert not dict(call.kwargs).get("is_causal") and band.graph.nodes[call.args[3].node].kind == "constant"
    pad = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    padded = _run(Decoder("padded").eval(), (torch.randn(2, 6, 16), pad))
    (call,) = _attention_calls(padded)
    assert not dict(call.kwargs).get("is_causal") and padded.graph.nodes[call.args[3].node].kind == "op"


def test_is_causal_mask():
    keep = torch.ones(4, 4, dtype=torch.bool).tril()
    assert is_causal_mask(keep, 4, 4) and is_causal_mask(keep.expand(3, 2, 4, 4), 4, 4)
    assert not is_causal_mask(keep, 4, 5) and not is_causal_mask(keep[:3], 3, 4)
    assert not is_causal_mask(keep.clone().fill_diagonal_(False), 4, 4)
    additive = torch.zeros(4, 4).masked_fill(~keep, float("-inf"))
    assert is_causal_mask(additive, 4, 4) and is_causal_mask(additive.half(), 4, 4)
    assert not is_causal_mask(additive.masked_fill(~keep, -1e4), 4, 4)  # not low enough to mean "masked"
    assert not is_causal_mask(keep.long(), 4, 4)


def test_gpt2_attends_causally_without_a_mask():
    from oparac.models import zoo

    model, inputs = zoo.gpt2(2, 16)
    plan = _run(model.eval(), inputs)
    calls = _attention_calls(plan)
    assert len(calls) == 12 and all(dict(c.kwargs).get("is_causal") is True for c in calls)
