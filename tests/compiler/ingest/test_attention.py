"""--attention math: scaled_dot_product_attention lowered to matmuls and a softmax, with SDPA's semantics."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import opara_runtime
import oparac
from opara_plan import ModelError, UnsupportedOpError

SDPA = "aten.scaled_dot_product_attention.default"


class Attend(torch.nn.Module):
    def __init__(self, **options):
        super().__init__()
        self.options = options

    def forward(self, q, k, v, mask=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **self.options)


def _targets(plan) -> set[str]:
    return {n.target for n in plan.graph.nodes if n.kind == "op"}


def _run(model, inputs, attention):
    plan = oparac.compile(model, inputs, device="cpu", attention=attention)
    return plan, opara_runtime.load(plan, {}, device="cpu")(*inputs)


def _qkv(heads=4, kv_heads=4, lq=6, lk=7, e=8):
    torch.manual_seed(0)
    return torch.randn(1, heads, lq, e), torch.randn(1, kv_heads, lk, e), torch.randn(1, kv_heads, lk, e)


BOOL = torch.rand(1, 1, 6, 7) > 0.3
BOOL[..., 2, :] = False  # a row with every key masked: SDPA gives zeros there, not NaN
CASES = {
    "no mask": ({}, None),
    "bool mask": ({}, BOOL),
    "float mask": ({}, torch.randn(1, 4, 6, 7)),
    "causal": ({"is_causal": True}, None),
    "scale": ({"scale": 0.3}, None),
}


@pytest.mark.parametrize("case", CASES)
def test_math_lowering_matches_sdpa(case):
    options, mask = CASES[case]
    q, k, v = _qkv()
    inputs = (q, k, v) if mask is None else (q, k, v, mask)
    model = Attend(**options)
    fused_plan, fused = _run(model, inputs, "sdpa")
    math_plan, spelled = _run(model, inputs, "math")
    assert SDPA in _targets(fused_plan) and SDPA not in _targets(math_plan)
    assert "aten._safe_softmax.default" in _targets(math_plan)
    want = model(*inputs)
    assert not want.isnan().any()
    torch.testing.assert_close(spelled, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused, want, rtol=1e-5, atol=1e-6)


def test_grouped_query_attention():
    q, k, v = _qkv(heads=4, kv_heads=2)
    model = Attend(enable_gqa=True)
    plan, got = _run(model, (q, k, v), "math")
    assert SDPA not in _targets(plan)
    torch.testing.assert_close(got, model(q, k, v), rtol=1e-5, atol=1e-6)


def test_dropout_is_refused_naming_it():
    with pytest.raises(UnsupportedOpError, match="dropout_p=0.5"):
        oparac.compile(Attend(dropout_p=0.5), _qkv(), device="cpu", attention="math")


def test_unknown_attention_is_refused():
    with pytest.raises(ModelError, match=r"attention: expected one of \('sdpa', 'math'\), found 'flash'"):
        oparac.compile(Attend(), _qkv(), device="cpu", attention="flash")


@pytest.mark.slow
def test_bert_with_math_attention_matches_eager(tmp_path):
    from oparac.cli import main

    path = tmp_path / "bert.plan"
    result = CliRunner().invoke(main, ["compile", "oparac.models.zoo:bert", "-o", str(path), "--device", "cpu",
                                       "--attention", "math"])
    assert result.exit_code == 0, result.output
    from opara_plan import load_plan

    assert SDPA not in _targets(load_plan(path))
    result = CliRunner().invoke(main, ["verify", str(path), "oparac.models.zoo:bert", "--device", "cpu"])
    assert result.exit_code == 0 and result.output.startswith("OK"), result.output
