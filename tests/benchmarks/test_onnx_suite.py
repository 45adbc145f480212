"""benchmarks/onnx_suite.py on the CPU with a tiny model: export, both front ends, records, JSON and table."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import onnx_suite  # noqa: E402


class Branchy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return torch.relu(self.a(x)) + torch.sigmoid(self.b(x))


def tiny():
    torch.manual_seed(0)
    return Branchy().eval(), (torch.randn(1, 3, 8, 8),)


@pytest.mark.slow
def test_cpu_run_writes_records_for_both_front_ends_and_exporters(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(onnx_suite.MODELS, "tiny", tiny)
    assert onnx_suite.main(["--device", "cpu", "--models", "tiny", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("onnx-suite-*.json")
    result = json.loads(path.read_text())
    assert {"gpu", "torch", "cuda", "date", "records"} <= set(result)
    rows = {(r["method"], r["exporter"]): r for r in result["records"]}
    assert set(rows) == {("opara_torch", None), ("opara_onnx", "dynamo"), ("opara_onnx", "legacy")}
    for r in rows.values():
        assert "error" not in r, r
        assert r["model"] == "tiny" and r["batch"] == 1 and r["dtype"] == "float32"
        assert r["ms_b2b"] is None and r["compile_s"] > 0  # no timings without a GPU
        assert r["max_rel_diff"] <= onnx_suite.TOLERANCE
    out = capsys.readouterr().out
    assert "| tiny |" in out and "opara_onnx (dynamo)" in out and "opara_onnx (legacy)" in out


def test_a_wrong_onnx_plan_is_an_error_row(monkeypatch):
    model, inputs = tiny()
    wrong = (model(*inputs) + 1,)
    rec = onnx_suite.measure("opara_onnx", "tiny", lambda: model, inputs, wrong, torch.device("cpu"), 1, "dynamo")
    assert rec["error"].startswith("output differs from eager: max relative diff")
    assert rec["exporter"] == "dynamo"


def test_unknown_model_or_exporter_is_refused(capsys):
    assert onnx_suite.main(["--device", "cpu", "--models", "nope", "--exporters", "jit"]) == 2
    assert "['jit', 'nope']" in capsys.readouterr().err


def test_table_shows_errors_and_missing_cells():
    records = [
        {"model": "m", "method": "cudagraph", "exporter": None, "ms_b2b": 1.0, "max_rel_diff": None},
        {"model": "m", "method": "opara_onnx", "exporter": "dynamo", "error": "export: boom"},
    ]
    text = onnx_suite.table(records)
    assert "| model | cudagraph | opara_torch | opara_onnx (dynamo) |" in text
    assert "| m | 1.000 ms |  | error |" in text
