"""Merged projections (compile option merge_projections): sibling linears become one GEMM over weights the runtime
stacks at load; each consumer reads a slice. Checked on the CPU path, which runs the plan's ops as a GPU would."""
from __future__ import annotations

import pytest
import torch

import opara_runtime
import oparac
from opara_plan import CONCAT_PARAM, PlanMismatchError, plan_from_bytes, plan_to_bytes

from helpers.models import Attention


def _linears(plan) -> int:
    return sum(n.target == "aten.linear.default" for n in plan.graph.nodes)


def _stacked(plan) -> list:
    return [n for n in plan.graph.nodes if n.kind == "param" and n.target == CONCAT_PARAM]


@pytest.mark.parametrize("bias", [True, False])
def test_sibling_projections_become_one_gemm_over_weights_stacked_at_load(bias):
    model, x = Attention(bias=bias).eval(), torch.randn(2, 8, 32)
    notes = []
    plan = oparac.compile(model, (x,), device="cpu", merge_projections=True, progress=notes.append)
    plain = oparac.compile(model, (x,), device="cpu", merge_projections=False)
    assert (_linears(plain), _linears(plan)) == (4, 2)
    stacked = _stacked(plan)
    assert [n.args for n in stacked] == [("q.weight", "k.weight", "v.weight")] + (
        [("q.bias", "k.bias", "v.bias")] if bias else [])
    assert stacked[0].outputs[0].shape == (96, 32) and stacked[0].name == "q.weight+k.weight+v.weight"
    assert not {"q.weight", "k.weight", "v.weight"} & {n.name for n in plan.graph.nodes if n.kind == "param"}
    assert any("3 projections merged into 1 ops over stacked weights" in str(n) for n in notes)
    with torch.no_grad():
        want = model(x)
    # stored and read back, as a deployed plan is
    runner = opara_runtime.load(plan_from_bytes(plan_to_bytes(plan)), model, device="cpu")
    torch.testing.assert_close(runner(x), want, rtol=1e-5, atol=1e-6)


def test_the_stacked_weight_is_the_models_own_at_load_so_new_weights_take_effect():
    model, x = Attention().eval(), torch.randn(1, 8, 32)
    plan = oparac.compile(model, (x,), device="cpu", merge_projections=True)
    with torch.no_grad():
        model.k.weight.mul_(-2.0)
        want = model(x)
    torch.testing.assert_close(opara_runtime.load(plan, model, device="cpu")(x), want, rtol=1e-5, atol=1e-6)


def test_a_model_missing_a_stacked_weight_is_refused_naming_it():
    model, x = Attention().eval(), torch.randn(1, 8, 32)
    plan = oparac.compile(model, (x,), device="cpu", merge_projections=True)
    weights = dict(model.state_dict())
    del weights["k.weight"]
    with pytest.raises(PlanMismatchError, match=r"the model has no parameter 'k.weight', which the plan needs"):
        opara_runtime.load(plan, weights, device="cpu")
    weights = dict(model.state_dict(), **{"k.weight": torch.zeros(16, 32)})
    with pytest.raises(PlanMismatchError, match=r"'q.weight\+k.weight\+v.weight' \(plan node \d+\): the plan stacks "
                                                r"'q.weight' \[32, 32\], 'k.weight' \[16, 32\], 'v.weight' \[32, 32\]"):
        opara_runtime.load(plan, weights, device="cpu")


def test_weights_placed_once_keep_their_stack_for_every_runner_built_from_them():
    # Tuning, the guard, buckets and replicas place the weights once (weights_on_device) and build runners from that
    # dict, which holds each stack under its param's name rather than the weights it was made of.
    from opara_runtime.bind import weights_of, weights_on_device
    from opara_runtime.runner import Runner

    model, x = Attention().eval(), torch.randn(1, 8, 32)
    plan = oparac.compile(model, (x,), device="cpu", merge_projections=True)
    placed = weights_on_device(plan, weights_of(model), torch.device("cpu"))
    assert "q.weight" not in placed and placed["q.weight+k.weight+v.weight"].shape == (96, 32)
    again = weights_on_device(plan, placed, torch.device("cpu"))
    assert again["q.weight+k.weight+v.weight"].data_ptr() == placed["q.weight+k.weight+v.weight"].data_ptr()
    with torch.no_grad():
        torch.testing.assert_close(Runner(plan, placed, torch.device("cpu"))(x), model(x), rtol=1e-5, atol=1e-6)
    placed["q.weight+k.weight+v.weight"] = torch.zeros(64, 32)
    with pytest.raises(PlanMismatchError, match=r"parameter 'q.weight\+k.weight\+v.weight': the plan expects "
                                                r"float32\[96, 32\]"):
        Runner(plan, placed, torch.device("cpu"))


def test_plan_sets_and_replicas_of_a_merged_plan_stack_once_and_match_eager():
    from opara_runtime import RunnerPool
    from oparac.buckets import compile_buckets

    model, x = Attention().eval(), torch.randn(2, 8, 32)
    runner = opara_runtime.load(compile_buckets(model, (x,), batches=(1, 2), device="cpu"), model)
    stack = runner.weights["q.weight+k.weight+v.weight"]
    assert all(r._base[i].data_ptr() == stack.data_ptr() for r in runner.runners
               for i, n in enumerate(r.plan.graph.nodes) if n.name == "q.weight+k.weight+v.weight")
    pool = RunnerPool(oparac.compile(model, (x,), device="cpu"), model, replicas=2)
    with torch.no_grad():
        for batch in (x[:1], x):
            torch.testing.assert_close(runner(batch), model(batch), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(pool(x), model(x), rtol=1e-5, atol=1e-6)


def test_where_a_slice_cannot_take_a_consumers_view_nothing_is_merged_and_the_note_says_why():
    model, x = Attention(flat_value=True).eval(), torch.randn(1, 8, 32)
    notes = []
    plan = oparac.compile(model, (x,), device="cpu", merge_projections=True, progress=notes.append)
    assert not _stacked(plan) and _linears(plan) == 5  # q, k, v and flat would have merged
    assert any("projections not merged" in str(n) and "aten.view.default" in str(n) for n in notes)
    with torch.no_grad():
        torch.testing.assert_close(opara_runtime.load(plan, model, device="cpu")(x), model(x))


def test_on_by_default_off_when_asked_and_linears_of_different_inputs_stay_apart():
    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)

        def forward(self, x, y):
            return self.a(x) + self.b(y)
    model, x = Attention().eval(), torch.randn(1, 4, 32)
    notes = []
    assert len(_stacked(oparac.compile(model, (x,), device="cpu"))) == 2
    assert not _stacked(oparac.compile(model, (x,), device="cpu", merge_projections=False, progress=notes.append))
    two = TwoInputs().eval()
    assert not _stacked(oparac.compile(two, (torch.randn(2, 8), torch.randn(2, 8)), device="cpu",
                                       progress=notes.append))
    assert not any("merged" in str(n) for n in notes)  # nothing to report where nothing was merged
