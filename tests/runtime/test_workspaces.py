"""opara_runtime.workspaces without a GPU: cuBLAS's cached workspaces are dropped right before a capture and right
after it, also when the capture fails, so a graph's matmuls use workspaces from its own pool (the GPU side is
tests/runtime/test_runner_gpu.py's test that a plan survives torch.compile clearing them)."""
from __future__ import annotations

import pytest
import torch

from opara_runtime import workspaces


def test_the_workspaces_are_cleared_before_and_after_the_capture_even_when_it_fails(monkeypatch):
    events = []
    monkeypatch.setattr(torch._C, "_cuda_clearCublasWorkspaces", lambda: events.append("clear"), raising=False)
    with workspaces.graph_owned_workspaces():
        events.append("capture")
    assert events == ["clear", "capture", "clear"]
    events.clear()
    with pytest.raises(RuntimeError, match="capture failed"):
        with workspaces.graph_owned_workspaces():
            events.append("capture")
            raise RuntimeError("capture failed")
    assert events == ["clear", "capture", "clear"]


def test_a_torch_without_the_hook_captures_as_before(monkeypatch):
    monkeypatch.delattr(torch._C, "_cuda_clearCublasWorkspaces", raising=False)
    with workspaces.graph_owned_workspaces():
        pass
