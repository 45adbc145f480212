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
    monkeypatch.setattr(measure, "time_graph_replays", lambda g, device, sample_ms=None: 2.0)
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


class _Clock:
    """Fake CUDA events over a fake graph whose every replay takes `ms`."""

    def __init__(self, ms: float) -> None:
        self.ms, self.replays, self.now = ms, 0, 0.0

    def replay(self) -> None:
        self.replays += 1
        self.now += self.ms

    def event(self, **_):
        clock = self

        class Event:
            def record(self):
                self.t = clock.now

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                return end.t - self.t
        return Event()


@pytest.mark.parametrize("replay_ms, replays_per_sample", [(3.0, 1), (0.5, 4), (0.01, 10)])
def test_a_long_graph_is_replayed_only_as_often_as_a_sample_needs(monkeypatch, replay_ms, replays_per_sample):
    clock = _Clock(replay_ms)
    monkeypatch.setattr(torch.cuda, "Event", clock.event)
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    ms = measure.time_graph_replays(clock, "cuda", repeats=5, replays=10, sample_ms=2.0)
    assert ms == pytest.approx(replay_ms)
    assert clock.replays == 2 + 5 * replays_per_sample  # warm-up, the probe, then the samples
    clock.replays = 0
    measure.time_graph_replays(clock, "cuda", repeats=5, replays=10)  # no sample_ms: as many as asked for
    assert clock.replays == 1 + 5 * 10


def test_replays_spanning_stays_within_its_bounds():
    assert measure.replays_spanning(10.0, 8.06, least=3, most=20) == 3
    assert measure.replays_spanning(10.0, 1.07, least=3, most=20) == 10
    assert measure.replays_spanning(2.0, 0.0, least=1, most=10) == 10


def test_the_profiler_keeps_the_callers_warnings_and_drops_torchs_note_on_cycles(monkeypatch):
    from torch import profiler

    @contextlib.contextmanager
    def fake_profile(activities):  # what torch 2.11 does as a profiler starts
        warnings.warn("Warning: Profiler clears events at the end of each cycle.Only events from the current "
                      "cycle will be reported.To keep events across cycles, set acc_events=True.", UserWarning)
        yield "trace"

    monkeypatch.setattr(profiler, "profile", fake_profile)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with measure.cuda_profile() as prof:
            warnings.warn("the caller's own", RuntimeWarning)
    assert prof == "trace"
    assert [str(w.message) for w in caught] == ["the caller's own"]
