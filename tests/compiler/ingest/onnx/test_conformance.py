"""ONNX's own test cases for every supported op through importer and runtime; known failures are listed, not skipped."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "tools"))
import onnx_conformance  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "onnx_conformance.json"
KNOWN = {f["case"]: f["reason"] for f in json.loads(RESULTS.read_text())["failures"]} if RESULTS.is_file() else {}
CASES, _ = onnx_conformance.collect()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_conformance_case(case):
    outcome = onnx_conformance.run_case(case)
    if outcome.passed:
        return
    if case.name in KNOWN:
        pytest.xfail(f"listed in docs/onnx_conformance.md: {KNOWN[case.name][:200]}")
    pytest.fail(f"{case.name} [{case.op}] regressed: {outcome.reason}")
