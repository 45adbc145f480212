"""Paired latency timing on the CPU, with a fake synchronize: call order, samples, paired differences."""
from __future__ import annotations

import time

import pytest

from oparac.profile.measure import median_paired_diff_us, time_alternating


def logging_fns(log: list, names):
    return {name: (lambda name=name: log.append(name)) for name in names}


def test_calls_alternate_strictly_after_each_fn_is_warmed_up():
    log = []
    samples = time_alternating(logging_fns(log, "ab"), None, iters=3, warmup=2, sync=lambda: log.append("sync"))
    assert log == ["a", "a", "sync", "b", "b", "sync"] + ["a", "sync", "b", "sync"] * 3
    assert list(samples) == ["a", "b"] and all(len(s) == 3 for s in samples.values())


def test_lead_in_calls_come_before_each_timed_call():
    log = []
    time_alternating(logging_fns(log, "ab"), None, iters=2, warmup=1, lead_in=1, sync=lambda: log.append("sync"))
    assert log == ["a", "sync", "b", "sync"] + ["a", "sync", "a", "sync", "b", "sync", "b", "sync"] * 2


def test_a_single_fn_is_timed_every_iteration():
    log = []
    samples = time_alternating(logging_fns(log, "a"), None, iters=4, warmup=0, sync=lambda: None)
    assert log == ["a"] * 4 and len(samples["a"]) == 4


def test_samples_are_wall_times_in_ms_including_the_sync():
    # sleep() waits at least as long as asked, so these lower bounds hold on a loaded machine; upper bounds would not.
    fns = {"fast": lambda: None, "slow": lambda: time.sleep(0.010)}
    samples = time_alternating(fns, None, iters=5, warmup=1, sync=lambda: time.sleep(0.002))
    assert all(ms >= 2.0 for ms in samples["fast"])
    assert all(ms >= 12.0 for ms in samples["slow"])
    diff = median_paired_diff_us(samples, "slow", "fast")
    assert diff > 5000.0
    assert median_paired_diff_us(samples, "fast", "slow") == -diff


def test_paired_difference_is_the_median_of_per_iteration_differences_in_us():
    samples = {"call": [1.0, 9.0, 3.0], "floor": [0.5, 8.0, 0.5]}  # differences 0.5, 1.0, 2.5 ms
    assert median_paired_diff_us(samples, "call", "floor") == pytest.approx(1000.0)
    assert median_paired_diff_us(samples, "floor", "floor") == 0.0


def test_paired_difference_refuses_samples_of_different_lengths():
    with pytest.raises(ValueError):
        median_paired_diff_us({"call": [1.0, 2.0], "floor": [1.0]}, "call", "floor")
