"""--tune without a GPU: the replay timings are faked per candidate, the runners are real CPU runners (so the
weights and the device list each candidate is built with are checked); what is tested is which candidate the
tuners keep and what they record."""
from __future__ import annotations

import dataclasses
import functools
from types import SimpleNamespace

import pytest
import torch

import oparac
from opara_plan import is_copy, validate
from opara_runtime.runner import Runner
from oparac.search import tune
from oparac.profile.links import nominal_links
from oparac.pipeline import model_weights

from helpers.models import two_branches

CHEAP = nominal_links(2, latency_ms=0.001, ms_per_byte=1e-10)
DEAR = nominal_links(2, latency_ms=5.0, ms_per_byte=1e-6)
CPUS = [torch.device("cpu")] * 2
SINGLE = tune.SINGLE + (1,)
LUCKY = ("opara", "topo", 0, 1)  # a one-GPU candidate the tests make fast in the first pass only


class FakeGpu:
    """Stands in for timed_runner and time_graph_replays. A candidate is named by its schedule's
    (streams, order, max_streams, num_devices); first(key) is its first-pass figure, finals(key) its figures
    in the final rounds."""

    def __init__(self, first, finals):
        self.first, self.finals = first, finals
        self.samples: dict[tuple, int] = {}
        self.devices: dict[tuple, list] = {}

    def timed_runner(self, plan, weights, device, devices=None):
        Runner(plan, weights, device, devices=devices)  # refuses a device list that does not fit the plan
        s = plan.schedule
        key = (s.stream_algorithm, s.order_algorithm, s.max_streams, s.num_devices)
        self.devices[key] = list(devices or [device])
        return SimpleNamespace(captured=SimpleNamespace(graph=key))

    def time_graph_replays(self, key, device, *, repeats, replays):
        taken = self.samples.get(key, 0)
        self.samples[key] = taken + 1
        return self.first(key) if taken == 0 else self.finals(key)[taken - 1]


@pytest.fixture
def fake_gpu(monkeypatch):
    def install(first, finals):
        gpu = FakeGpu(first, finals)
        monkeypatch.setattr(tune, "timed_runner", gpu.timed_runner)
        monkeypatch.setattr(tune, "time_graph_replays", gpu.time_graph_replays)
        return gpu
    return install


@functools.lru_cache(maxsize=1)
def _one_gpu_plan():
    model, inputs = two_branches()
    return oparac.compile(model, inputs, device="cpu"), model_weights(model)


def _tune_devices(links, say=None):
    plan, weights = _one_gpu_plan()
    plan = dataclasses.replace(plan, profile=dataclasses.replace(plan.profile, links=links))
    return tune.tune_devices(plan, weights, CPUS, say)


def _chosen(plan):
    [chosen] = [c for c in plan.profile.candidates if c.chosen]
    return chosen


def _recorded(plan, key):
    return {c.measured_ms for c in plan.profile.candidates if (c.streams, c.order, c.max_streams, c.num_devices) == key}


def _steady(multi_gpu_finals):
    """First pass: every 2-GPU candidate 0.5 ms (the three fastest), one-GPU ones 1.0 ms, the single stream 2.0 ms;
    the final rounds give the 2-GPU candidates `multi_gpu_finals` and the others their first figure again."""
    def first(key):
        return 0.5 if key[3] == 2 else 2.0 if key == SINGLE else 1.0

    def finals(key):
        return multi_gpu_finals if key[3] == 2 else [first(key)] * tune.FINAL_ROUNDS
    return first, finals


def test_a_multi_gpu_candidate_fast_only_in_the_first_pass_is_not_chosen(fake_gpu):
    gpu = fake_gpu(*_steady([1.4, 1.5, 0.2]))
    plan = _tune_devices(CHEAP)
    assert plan.schedule.num_devices == 1 and not any(is_copy(n) for n in plan.graph.nodes)
    chosen = _chosen(plan)
    assert chosen.num_devices == 1 and chosen.measured_ms == 1.0
    again = [k for k, n in gpu.samples.items() if k[3] == 2 and n > 1]
    assert len(again) == tune.FINALISTS
    assert all(gpu.samples[k] == 1 + tune.FINAL_ROUNDS and _recorded(plan, k) == {1.4} for k in again), \
        "finalists are recorded with the median of their final rounds"
    assert {c.measured_ms for c in plan.profile.candidates if c.num_devices == 2} == {0.5, 1.4}
    validate(plan)


def test_a_multi_gpu_candidate_that_only_ties_the_best_single_gpu_one_is_not_chosen(fake_gpu):
    fake_gpu(*_steady([1.0] * tune.FINAL_ROUNDS))
    plan = _tune_devices(CHEAP)
    assert plan.schedule.num_devices == 1
    assert _chosen(plan).num_devices == 1 and _chosen(plan).measured_ms == 1.0


def test_a_multi_gpu_candidate_faster_in_the_final_rounds_is_chosen(fake_gpu):
    gpu = fake_gpu(*_steady([0.6, 0.7, 5.0]))
    plan = _tune_devices(CHEAP)
    chosen = _chosen(plan)
    assert plan.schedule.num_devices == 2 and chosen.num_devices == 2 and chosen.measured_ms == 0.7
    assert (plan.schedule.stream_algorithm, plan.schedule.order_algorithm) == (chosen.streams, chosen.order)
    assert any(is_copy(n) for n in plan.graph.nodes)
    assert plan.model.fingerprint != _one_gpu_plan()[0].model.fingerprint
    validate(plan)
    assert all(d == (CPUS if k[3] == 2 else CPUS[:1]) for k, d in gpu.devices.items()), \
        "a one-GPU candidate runs on the first device only"


def test_the_best_single_gpu_candidate_and_the_single_stream_are_always_finalists(fake_gpu):
    first, finals = _steady([0.9] * tune.FINAL_ROUNDS)
    gpu = fake_gpu(lambda k: 0.95 if k == LUCKY else first(k), lambda k: [0.8] * 3 if k == LUCKY else finals(k))
    plan = _tune_devices(CHEAP)
    assert gpu.samples[LUCKY] == gpu.samples[SINGLE] == 1 + tune.FINAL_ROUNDS
    assert sum(n > 1 for n in gpu.samples.values()) == tune.FINALISTS + 2
    chosen = _chosen(plan)
    assert (chosen.streams, chosen.order, chosen.max_streams, chosen.num_devices) == LUCKY
    assert chosen.measured_ms == 0.8 and plan.schedule.num_devices == 1


def test_every_candidate_is_recorded_once_with_one_chosen(fake_gpu):
    fake_gpu(*_steady([1.4] * tune.FINAL_ROUNDS))
    plan = _tune_devices(CHEAP)
    keys = [(c.streams, c.order, c.max_streams, c.num_devices) for c in plan.profile.candidates]
    want = [s + (1,) for s in tune.candidate_settings()] + [s + (2,) for s in tune.DEVICE_SETTINGS]
    assert keys == want
    assert sum(c.chosen for c in plan.profile.candidates) == 1
    assert all(c.measured_ms > 0 and c.predicted_ms > 0 for c in plan.profile.candidates)


def test_a_narrow_mapping_tunes_single_gpu_candidates_only(fake_gpu):
    gpu = fake_gpu(*_steady([0.1] * tune.FINAL_ROUNDS))
    said = []
    plan = _tune_devices(DEAR, said.append)
    assert "tune: HIOS-LP keeps every op on one GPU; measuring single-GPU candidates only" in said
    assert all(k[3] == 1 for k in gpu.samples) and all(c.num_devices == 1 for c in plan.profile.candidates)
    assert plan.schedule.num_devices == 1 and _chosen(plan).measured_ms == 1.0


def test_tune_plan_keeps_the_steady_candidate_over_the_lucky_one(fake_gpu):
    def first(key):
        return 0.5 if key == LUCKY else 2.0 if key == SINGLE else 1.0

    def finals(key):
        return [0.4, 2.0, 2.5] if key == LUCKY else [first(key)] * tune.FINAL_ROUNDS
    gpu = fake_gpu(first, finals)
    plan, weights = _one_gpu_plan()
    tuned = tune.tune_plan(plan, weights, torch.device("cpu"))
    chosen = _chosen(tuned)
    assert (chosen.streams, chosen.order, chosen.max_streams) != LUCKY[:3] and chosen.measured_ms == 1.0
    assert _recorded(tuned, LUCKY) == {2.0}, "the median of the final rounds, not their minimum"
    assert gpu.samples[SINGLE] == 1 + tune.FINAL_ROUNDS
    assert sum(n > 1 for n in gpu.samples.values()) == tune.FINALISTS + 1
    assert [(c.streams, c.order, c.max_streams) for c in tuned.profile.candidates] == tune.candidate_settings()
    assert tuned.graph == plan.graph and tuned.model == plan.model
    assert (tuned.schedule.stream_algorithm, tuned.schedule.order_algorithm) == (chosen.streams, chosen.order)


def test_the_progress_line_names_the_finalists(fake_gpu):
    gpu = fake_gpu(*_steady([0.6, 0.7, 5.0]))
    said = []
    _tune_devices(CHEAP, said.append)
    [line] = [s for s in said if s.startswith("tune: finalists ")]
    again = {k for k, n in gpu.samples.items() if n > 1}
    assert sorted(f.rsplit(" ", 2)[0] for f in line.removeprefix("tune: finalists ").split(", ")) == \
        sorted(map(tune.candidate_label, again))
    assert line.endswith("single/topo/cap - 2.0000 ms")


@pytest.mark.parametrize("replay_ms, replays", [(0.4, 20), (0.5, 20), (1.07, 10), (2.0, 5), (8.06, 3), (50.0, 3),
                                                (0.0, 20), (float("nan"), 20)])
def test_a_timing_sample_spans_about_ten_milliseconds_of_replays(replay_ms, replays):
    assert tune.replays_for(replay_ms) == replays
