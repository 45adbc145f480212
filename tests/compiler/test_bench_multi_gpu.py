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
