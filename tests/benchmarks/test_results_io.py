"""benchmarks/results_io.py: the result files every benchmark script writes."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "results_io.py"
_spec = importlib.util.spec_from_file_location("bench_results_io", _PATH)
results_io = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(results_io)


def test_a_new_result_names_its_file_and_machine(tmp_path):
    path, header = results_io.new_result(tmp_path / "out", "suite", torch.device("cpu"), tag="s1", tf32=False)
    assert path.parent == tmp_path / "out" and path.name.startswith("suite-") and path.name.endswith("-s1.json")
    assert header["gpu"] == "cpu" and header["torch"] == torch.__version__ and header["tf32"] is False
    assert {"cuda", "date"} <= header.keys()


def test_writes_replace_the_file_whole(tmp_path):
    path = tmp_path / "r.json"
    results_io.write_result(path, {"records": [1]})
    results_io.write_result(path, {"records": [1, 2]})
    assert json.loads(path.read_text()) == {"records": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
