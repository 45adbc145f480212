"""The deployment's options without a running Ray: the replica's numerics flag and build_app's argument checks."""
from __future__ import annotations

import pytest
import torch

import oparac
from helpers.models import small_cnn
from opara_plan import OparaError

pytest.importorskip("ray")
from opara_runtime.serve.deployment import OparaDeployment, build_app  # noqa: E402


@pytest.fixture
def restore_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("tf32", [False, True])
def test_tf32_sets_the_replicas_flags_before_it_loads(restore_tf32, tf32):
    model, inputs = small_cnn()
    plan = oparac.compile(model, inputs, device="cpu")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not tf32
    replica = OparaDeployment.func_or_class(plan, model.state_dict(), tf32=tf32)
    assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
    assert replica.describe()["max_batch"] >= 1


def test_without_tf32_the_flags_are_left_alone(restore_tf32):
    model, inputs = small_cnn()
    plan = oparac.compile(model, inputs, device="cpu")
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
    OparaDeployment.func_or_class(plan, model.state_dict())
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, True)


def test_build_app_refuses_a_tf32_that_is_not_a_boolean():
    with pytest.raises(OparaError, match="tf32='maybe', expected true or false"):
        build_app({"plan": "model.plan", "model": "weights.pt", "tf32": "maybe"})
