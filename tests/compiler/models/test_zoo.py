"""Every model of the suite compiles on CPU and its plan matches eager under every stream/order choice; every zoo
model's output depends on its input, so that comparing a plan with eager checks something."""
from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
import torch.utils._pytree as pytree

import opara_runtime
import oparac
from oparac.models import zoo
from oparac.schedule.build import make_schedule

STREAMS = ("opara", "nimble", "critical", "single")
ORDERS = ("topo", "opara", "critical")
MODELS = ("googlenet", "inception_v3", "resnet50", "densenet121", "squeezenet", "mobilenet_v3",
          "inception_timm", "bert")
QUICK = {"squeezenet", "mobilenet_v3", "googlenet"}


@functools.lru_cache(maxsize=2)
def _compiled(name: str, batch: int):
    torch.manual_seed(0)
    model, inputs = getattr(zoo, name)(batch)
    # convolutions kept apart: the schedules, which must not change a bit, are what is under test here; a merged
    # convolution sums in another order (tests/compiler/ingest/test_merge_convolutions.py checks its accuracy)
    plan = oparac.compile(model, inputs, device="cpu", merge_convolutions=False)
    with torch.no_grad():
        want = model(*inputs)
    return model, inputs, plan, want


def _assert_close(got, want, rel=1e-5):
    for a, b in zip(pytree.tree_leaves(got), pytree.tree_leaves(want), strict=True):
        scale = b.abs().max().item()
        assert (a - b).abs().max().item() <= rel * scale, f"relative error above {rel}"


def _params(batch):
    marks = lambda name: () if (name in QUICK and batch == 1) else (pytest.mark.slow,)
    return [pytest.param(name, batch, marks=marks(name), id=f"{name}-b{batch}") for name in MODELS]


@pytest.mark.parametrize("name, batch", _params(1) + _params(8))
def test_plan_matches_eager_for_every_schedule(name, batch):
    model, inputs, plan, want = _compiled(name, batch)
    for streams, order in [(s, o) for s in STREAMS for o in ORDERS]:
        schedule = make_schedule(plan.graph, plan.profile.ops, streams=streams, order=order, max_streams=0)
        variant = dataclasses.replace(plan, schedule=schedule)
        got = opara_runtime.load(variant, model)(*inputs)
        _assert_close(got, want)


HEAVY = {"nasnet", "bert", "gpt2", "inception_v3", "inception_timm", "convnext_t", "mobilenet_v3"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=(pytest.mark.slow,) if n in HEAVY else ())
                                  for n in zoo.MODELS])
def test_every_zoo_models_output_depends_on_its_input(name):
    # A model whose output is constant (torchvision's ViT with its zero-initialised head gave zeros) would match
    # any plan, however wrong: its max abs diff against eager would be 0 and mean nothing.
    model, inputs = getattr(zoo, name)(1)
    x = inputs[0]  # images or token ids; a second input (BERT's attention mask) stays as it is
    other = (torch.randn_like(x) if x.is_floating_point() else torch.randint_like(x, 0, 100),) + tuple(inputs[1:])
    with torch.no_grad():
        first = pytree.tree_leaves(model(*inputs))
        second = pytree.tree_leaves(model(*other))
    out, alt = first[0], second[0]
    assert out.abs().max() > 0.01 and out.std() > 1e-3, f"{name}: output is (nearly) constant"
    assert not torch.allclose(out, alt), f"{name}: output does not depend on the input"
