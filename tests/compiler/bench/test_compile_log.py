"""CompileLog: where a benchmarked compile's time went, kept in the benchmark record."""
from __future__ import annotations

import json

import torch

import oparac
from oparac.bench.methods import CompileLog, Record


def _compile_logged(echo=None) -> CompileLog:
    log = CompileLog(echo)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    oparac.compile(model, (torch.randn(1, 3, 8, 8),), device="cpu", progress=log)
    return log


def test_stages_and_lines_are_kept_with_their_times():
    lines = []
    log = _compile_logged(lines.append)
    assert {"ingest", "profile", "schedule"} <= set(log.stages)
    assert all(s >= 0 for s in log.stages.values())
    times = [t for t, _ in log.notes]
    assert times == sorted(times) and times[0] >= 0
    assert any(line.startswith("ingest: ") for _, line in log.notes)
    # the echo gets the lines the CLI prints, finished stages included
    assert any(line.startswith("profile: done in ") for line in lines)


def test_a_record_carries_the_log_into_its_json_and_drops_it_where_there_is_none():
    log = _compile_logged()
    rec = Record(model="m", batch=1, dtype="float32", method="opara_default", ms_b2b=1.0)
    log.fill(rec)
    d = json.loads(json.dumps(rec.as_dict()))
    assert d["compile_stages"] == log.stages and len(d["compile_notes"]) == len(log.notes)
    plain = Record(model="m", batch=1, dtype="float32", method="torch_compile", ms_b2b=1.0).as_dict()
    assert "compile_stages" not in plain and "compile_notes" not in plain
