"""time_in_graph: a capture that launches nothing times as 0.0 without torch's empty-graph warning; other
warnings of the captured work still reach the caller. (The capture is faked: this runs without a GPU.)"""
from __future__ import annotations

import contextlib
import warnings

import pytest
import torch

from oparac.profile import measure


@pytest.fixture
def fake_capture(monkeypatch):
    state = {"launched": False}

    @contextlib.contextmanager
    def graph(g, stream=None):
        state["launched"] = False
        yield
        if not state["launched"]:
            warnings.warn("The CUDA Graph is empty. This usually means that the graph was attempted to be "
                          "captured on wrong device or stream.", UserWarning)

    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: object())
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    monkeypatch.setattr(measure, "time_graph_replays", lambda g, device: 2.0)
    return state


def test_work_that_launches_nothing_times_zero_and_warns_nothing(fake_capture):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert measure.time_in_graph(lambda: None, "cuda", None, 10) == 0.0
    assert caught == []


def test_real_work_is_timed_per_call_and_its_own_warnings_pass_through(fake_capture):
    def work():
        fake_capture["launched"] = True
        warnings.warn("something of the caller's", RuntimeWarning)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert measure.time_in_graph(work, "cuda", None, 4) == 0.5
    assert [str(w.message) for w in caught] == ["something of the caller's"] * 4
