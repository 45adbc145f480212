"""benchmarks/group_probe.py without a GPU: every step is followed by a synchronize, the first failing one stops the
probe and is recorded with its error, and an Opara runner's plan is named."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(_DIR))
_spec = importlib.util.spec_from_file_location("group_probe", _DIR / "group_probe.py")
group_probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(group_probe)


def _steps(events: list, fail_sync_after: str | None = None):
    result = {"steps": []}

    def sync():
        events.append("sync")
        if fail_sync_after and events[-2:-1] == [fail_sync_after]:
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore")
    return result, group_probe.Steps(result, sync, lambda: events.append("save"), label=lambda plan: plan.name)


def test_every_step_is_synchronised_and_saved_and_a_plan_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: events.append("empty_cache"))
    events: list = []
    result, steps = _steps(events)

    def make(method):
        def run(x):
            events.append(f"call {method}")
        if method == "opara":
            run.plan = SimpleNamespace(name="16 streams")
        return run
    assert group_probe.probe(["eager", "opara"], make, (1,), steps, rounds=2)
    names = [s["step"] for s in result["steps"]]
    assert names == ["build eager", "first call of eager", "build opara", "first call of opara",
                     "round 0 eager", "round 0 opara", "round 1 eager", "round 1 opara", "empty_cache",
                     "after empty_cache eager", "after empty_cache opara"]
    assert all(s["ok"] and s["error"] is None for s in result["steps"])
    assert result["steps"][2]["plan"] == "16 streams" and "plan" not in result["steps"][0]
    assert events[events.index("empty_cache") + 1] == "sync"
    assert events.count("sync") == len(names)


def test_the_first_failing_step_stops_the_probe_with_its_error():
    events: list = []
    result, steps = _steps(events, fail_sync_after="call b")

    def make(method):
        return lambda x: events.append(f"call {method}")
    assert not group_probe.probe(["a", "b"], make, (1,), steps, rounds=3)
    assert [s["step"] for s in result["steps"]][-1] == "first call of b"
    assert result["steps"][-1] == dict(result["steps"][-1], ok=False,
                                       error="RuntimeError: CUDA error: an illegal memory access was encountered")
    assert "call a" in events and events.count("call a") == 1  # nothing ran after the failure
