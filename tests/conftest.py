"""Fixtures for every test, and the rule that GPU tests (marked `gpu`) are skipped where CUDA is absent."""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

from helpers.plans import make_tiny_plan, make_two_device_plan
from opara_plan import Plan

# CI replays the same generated examples on every run, so a red build always means a code change;
# local runs keep exploring new examples (and the failures they find are kept in .hypothesis/).
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_plan() -> Plan:
    return make_tiny_plan()


@pytest.fixture
def two_device_plan() -> Plan:
    return make_two_device_plan()


@pytest.fixture
def no_tf32():
    """GPU tests compare against eager PyTorch with TF32 off, so a fused or reordered plan is held to 1e-4."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
