"""The CPU-side parts of benchmarks/multi_gpu.py: configurations, the best single-GPU candidate, the table."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from opara_plan import Candidate

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "multi_gpu.py"
_spec = importlib.util.spec_from_file_location("bench_multi_gpu", _PATH)
multi_gpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(multi_gpu)


def test_configurations_parse_and_bad_ones_are_named():
    assert multi_gpu.parse_config("inception_v3:4x512") == ("inception_v3", 4, 512)
    assert [multi_gpu.parse_config(c)[0] for c in multi_gpu.CONFIGS] == ["inception_v3", "inception_v3", "googlenet",
                                                                        "nasnet"]
    with pytest.raises(ValueError, match=r"configuration 'googlenet': expected MODEL:BATCHxSIZE"):
        multi_gpu.parse_config("googlenet")


def test_the_best_single_gpu_candidate_ignores_multi_gpu_and_unmeasured_ones():
    candidates = (Candidate("single", "topo", 0, 2.0, 3.0), Candidate("opara", "opara", 0, 1.0, 2.5),
                  Candidate("critical", "critical", 4, 1.0, -1.0), Candidate("window", "critical", 0, 1.0, 1.0,
                                                                               chosen=True, num_devices=2))
    assert multi_gpu.best_single(candidates) == ("opara", "opara", 0)
    with pytest.raises(ValueError, match="no measured single-GPU candidate"):
        multi_gpu.best_single(candidates[3:])


def test_the_table_shows_the_ratios_of_the_2gpu_plan():
    rows = [{"model": "inception_v3", "batch": 1, "size": 1024, "method": "cudagraph", "ms_b2b": 12.0},
            {"model": "inception_v3", "batch": 1, "size": 1024, "method": "opara", "ms_b2b": 10.0},
            {"model": "inception_v3", "batch": 1, "size": 1024, "method": "opara_2gpu", "ms_b2b": 8.0,
             "devices_used": 2},
            {"model": "googlenet", "batch": 1, "size": 224, "method": "opara_2gpu", "error": "skipped"}]
    lines = multi_gpu.table(rows).splitlines()
    assert lines[1].split() == ["inception_v3", "1x3x1024x1024", "12.000", "10.000", "8.000", "2", "1.25x", "1.50x"]
    assert lines[2].split() == ["googlenet", "1x3x224x224", "-", "-", "-", "-", "-", "-"]


def test_the_best_single_gpu_candidate_is_taken_among_the_finalists():
    # 'opara/opara' was lucky once in the first pass; the finalists' medians say 'critical/critical/cap 4' is faster
    candidates = (Candidate("single", "topo", 0, 2.0, 3.0), Candidate("opara", "opara", 0, 1.0, 1.5),
                  Candidate("critical", "critical", 4, 1.0, 2.0), Candidate("window", "critical", 0, 1.0, 1.0,
                                                                               chosen=True, num_devices=2))
    said = ["tune: single/topo/cap -: 3.0000 ms", "tune: finalists window/critical/cap - on 2 GPUs 1.0000 ms, "
            "critical/critical/cap 4 2.0000 ms, single/topo/cap - 3.0000 ms"]
    finalists = multi_gpu.finalist_labels(said)
    assert finalists == {"window/critical/cap - on 2 GPUs", "critical/critical/cap 4", "single/topo/cap -"}
    assert multi_gpu.best_single(candidates, finalists) == ("critical", "critical", 4)
    assert multi_gpu.best_single(candidates, multi_gpu.finalist_labels([])) == ("opara", "opara", 0)


@pytest.mark.slow
def test_a_configuration_runs_end_to_end_with_the_gpus_faked(monkeypatch):
    """run_config's glue on the CPU: CUDA bookkeeping is a no-op, timing a fixed figure, the sequential graph is
    eager, and compile(devices=..., tune=True) is a CPU compile on simulated GPUs whose tuning keeps the
    HIOS-LP plan and reports it as the only finalist besides the single stream."""
    import dataclasses

    import torch

    import oparac
    from oparac.bench import methods as bench
    from oparac.profile.links import nominal_links
    from oparac.profile.measure import Timing

    for name in ("synchronize", "reset_peak_memory_stats", "empty_cache"):
        monkeypatch.setattr(torch.cuda, name, lambda *args, **kwargs: None)
    for name in ("memory_allocated", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, lambda *args, **kwargs: 0)
    monkeypatch.setattr(bench, "time_gpu", lambda fn, device, **kwargs: (fn(), Timing(1.0, 1.0))[1])
    monkeypatch.setattr(bench, "SequentialGraph", lambda model, inputs: lambda *xs: model(*xs))
    real_compile = oparac.compile
    asked = []

    def compile(model, inputs, *, device, devices=None, tune=False, progress=None):
        asked.append((devices, tune))
        if devices is None:
            return real_compile(model, inputs, device="cpu")
        plan = real_compile(model, inputs, device="cpu", devices=["cuda:0", "cuda:1"],
                            links=nominal_links(2, latency_ms=0.0, ms_per_byte=0.0))
        s = plan.schedule
        chosen = Candidate(s.stream_algorithm, s.order_algorithm, 0, s.predicted_ms, 1.0, chosen=True,
                           num_devices=s.num_devices)
        progress("tune: finalists opara/opara/cap - on 2 GPUs 1.0000 ms, single/topo/cap - 2.0000 ms")
        candidates = (chosen, Candidate("single", "topo", 0, 2.0, 2.0), Candidate("nimble", "topo", 0, 2.0, 1.5))
        return dataclasses.replace(plan, profile=dataclasses.replace(plan.profile, candidates=candidates))

    monkeypatch.setattr(oparac, "compile", compile)
    monkeypatch.setattr(multi_gpu, "build_model", lambda name, batch, size: (
        multi_gpu_model(), (torch.randn(batch, 3, size, size),)))
    records = multi_gpu.run_config("two_branches", 1, 32, ["cpu", "cpu"], iters=1, warmup=0)
    assert [r["method"] for r in records] == list(multi_gpu.METHODS)
    assert all("error" not in r for r in records), records
    assert records[2]["devices_used"] == 2 and records[2]["max_abs_diff"] < 1e-4
    assert asked == [(["cpu", "cpu"], True), (None, False)]


def multi_gpu_model():
    from helpers.models import two_branches

    return two_branches()[0]
