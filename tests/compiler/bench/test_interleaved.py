"""oparac.bench.methods.measure_group: every method of a group is built first, then all are timed together; a
method that cannot be built keeps its error and leaves the others' timing alone. The CUDA calls are replaced by
fakes, so this runs without a GPU (the timing itself is tests/compiler/profile's and the GPU suite's)."""
from __future__ import annotations

import torch

from oparac.bench import methods
from oparac.bench.methods import Record, measure_group


def _no_cuda(monkeypatch, calls: list):
    for name in ("synchronize", "reset_peak_memory_stats", "empty_cache"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a, **k: 0)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 3 * 2**20)

    def interleaved(fns, device, *, rounds, iters, warmup):
        calls.append(("b2b", list(fns)))
        out = {name: [] for name in fns}
        for r in range(rounds):
            for i, (name, fn) in enumerate(fns.items()):
                fn()
                out[name].append(1.0 + i + 0.1 * r)
        return out

    def alternating(fns, device, *, iters, warmup):
        calls.append(("latency", list(fns)))
        return {name: [2.0 + i] * iters for i, name in enumerate(fns)}

    monkeypatch.setattr(methods, "time_interleaved", interleaved)
    monkeypatch.setattr(methods, "time_alternating", alternating)


def test_the_group_is_built_first_then_timed_together_and_a_broken_method_keeps_its_error(monkeypatch):
    calls: list = []
    _no_cuda(monkeypatch, calls)
    x = torch.ones(3)
    reference = x * 2

    def make(name):
        def build():
            calls.append(("build", name))
            if name == "broken":
                raise RuntimeError("cannot capture\nsecond line")
            return lambda t: t * 2
        return build

    names = ["fast", "broken", "slow"]
    recs = [Record(model="m", batch=1, dtype="float32", method=n) for n in names]
    measure_group(recs, [make(n) for n in names], (x,), reference, torch.device("cpu"), rounds=5, iters=10,
                  warmup=2)
    assert calls[:3] == [("build", n) for n in names]  # every build before any timing
    assert calls[3:] == [("b2b", ["fast", "slow"]), ("latency", ["fast", "slow"])]
    fast, broken, slow = recs
    assert broken.error == "RuntimeError: cannot capture" and broken.ms_b2b is None
    assert "timing" not in broken.as_dict() and "ms_b2b" not in broken.as_dict()
    assert fast.timing == slow.timing == "interleaved"
    assert fast.ms_b2b_rounds == [1.0, 1.1, 1.2, 1.3, 1.4] and fast.ms_b2b == 1.2   # the median of the rounds
    assert slow.ms_b2b == 2.2 and slow.ms_latency == 3.0
    assert fast.max_abs_diff == 0.0 and fast.peak_mem_mb == 3.0 and fast.compile_s >= 0.0
    assert fast.as_dict()["timing"] == "interleaved"


def test_a_failure_while_timing_marks_every_timed_method(monkeypatch):
    _no_cuda(monkeypatch, [])

    def boom(*a, **k):
        raise RuntimeError("illegal memory access")
    monkeypatch.setattr(methods, "time_interleaved", boom)
    x = torch.ones(2)
    recs = [Record(model="m", batch=1, dtype="float32", method=n) for n in ("a", "b")]
    measure_group(recs, [lambda: (lambda t: t)] * 2, (x,), x, torch.device("cpu"), rounds=3, iters=4, warmup=1)
    assert [r.error for r in recs] == ["timing the group failed: RuntimeError: illegal memory access"] * 2


def test_a_cuda_error_reported_after_the_group_drops_its_figures_and_says_why(monkeypatch):
    # An illegal address is sticky and reported by the next synchronizing call: here the cache release after the
    # timing. The group's records are kept, with the reason, rather than the process dying with nothing written.
    _no_cuda(monkeypatch, [])

    def poisoned():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    monkeypatch.setattr(torch.cuda, "empty_cache", poisoned)
    x = torch.ones(2)
    recs = [Record(model="m", batch=1, dtype="float32", method=n) for n in ("a", "b")]
    measure_group(recs, [lambda: (lambda t: t), lambda: None], (x,), x, torch.device("cpu"), rounds=3, iters=4,
                  warmup=1)
    a, b = recs
    assert a.ms_b2b is a.ms_latency is a.ms_b2b_rounds is a.timing is None
    assert a.error == ("a CUDA error surfaced after the group ran, figures dropped: "
                       "RuntimeError: CUDA error: an illegal memory access was encountered")
    assert b.error.startswith("TypeError")  # its own build error (None is not callable) is kept
    assert not methods.free_cached_memory([])
