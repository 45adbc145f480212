"""The CPU-side parts of benchmarks/head_to_head.py: the per-call kernel summary and the kernel differences."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "head_to_head.py"
_spec = importlib.util.spec_from_file_location("bench_head_to_head", _PATH)
h2h = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(h2h)


def test_the_summary_counts_overlaps_once_and_splits_calls_at_the_idle_gaps():
    gap = h2h.CALL_GAP_S * 1e6  # µs between calls
    one_call = [(0.0, 10.0), (5.0, 12.0), (20.0, 30.0)]  # two kernels overlap (streams), then an idle 8 µs
    intervals = one_call + [(s + gap, t + gap) for s, t in one_call]
    summary = h2h.summarize(intervals, calls=2)
    assert summary["kernels_per_call"] == 3.0
    assert summary["kernel_sum_ms"] == pytest.approx(27.0 / 1e3)  # 10 + 7 + 10 µs
    assert summary["busy_ms"] == pytest.approx(22.0 / 1e3)        # 0-12 and 20-30
    assert summary["spans_found"] == 2 and summary["span_ms"] == pytest.approx(30.0 / 1e3)


def test_no_kernels_means_no_span():
    assert h2h.summarize([], calls=3) == {"kernels_per_call": 0.0, "kernel_sum_ms": 0.0, "busy_ms": 0.0, "calls": 3}


def test_the_kernels_that_differ_most_come_first_and_one_sided_ones_count():
    rows = h2h.kernel_differences({"gemm": 120.0, "copy": 0.0, "ln": 8.0}, {"gemm": 124.0, "memcpy": 2.5, "ln": 8.1},
                                  "torch_compile", "opara_default", top=2)
    assert [(r["kernel"], r["diff_us"]) for r in rows] == [("gemm", 4.0), ("memcpy", 2.5)]
    assert rows[1]["torch_compile_us"] == 0.0
