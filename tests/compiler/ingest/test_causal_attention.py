"""Attention given a compile-time causal mask is built as causal attention without the mask."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import opara_runtime
import oparac
from oparac.ingest.causal_attention import is_causal_mask


class Decoder(torch.nn.Module):
    """One attention layer masked the way traced decoders are: a mask built from the sequence length."""

    def __init__(self, mask: str = "bool"):
        super().__init__()
        self.qkv = torch.nn.Linear(16, 48)
        self.mask = mask

    def forward(self, x, pad=None):
        q, k, v = self.qkv(x).view(x.shape[0], x.shape[1], 3, 2, 8).permute(2, 0, 3, 1, 4)
        n = x.shape[1]
        keep = torch.ones(n, n, dtype=torch.bool).tril()
        if self.mask == "float":
            mask = torch.zeros(n, n).masked_fill(~keep, torch.finfo(torch.float32).min)
        elif self.mask == "band":  # not causal: the diagonal is masked too
            mask = torch.ones(n, n, dtype=torch.bool).tril(-1) | (torch.arange(n) == 0)[:, None]
        elif self.mask == "padded":  # causal and an input's padding: known only at run time
            mask = keep & pad[:, None, None, :]
        else:
            mask = keep[None, None].expand(x.shape[0], 1, n, n)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


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
