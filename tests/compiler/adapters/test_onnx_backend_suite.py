"""ONNX's own backend test runner (onnx.backend.test.BackendTest) driving OparaBackend on the CPU.

It runs the node test cases onnx generates for every op the importer supports and the models shipped inside
the onnx package (simple, pytorch-operator, pytorch-converted) whose ops are all supported: the same selection
as tools/onnx_conformance.py. What it does not run is excluded with the reason in the pattern (shown as the
skip reason); the known failures listed in docs/onnx_conformance.md are expected failures, so one that starts
passing fails the run (unexpected success) until the table is regenerated.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import onnx.backend.test
import pytest
from onnx.backend.test.loader import load_model_tests

from oparac.adapters.onnx_backend import OparaBackend

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools"))
import onnx_conformance  # noqa: E402

pytestmark = pytest.mark.slow

RESULTS = ROOT / "benchmarks" / "results" / "onnx_conformance.json"
KNOWN_FAILURES = {f["case"].rsplit("/", 1)[-1]: f["reason"] for f in json.loads(RESULTS.read_text())["failures"]}
CASES, REPORT = onnx_conformance.collect()


def _names(names) -> str:
    """A pattern matching exactly these test names (the runner appends the device)."""
    return "^(" + "|".join(re.escape(n) for n in sorted(names)) + ")_(cpu|cuda)$"


def _because(reason: str, names) -> str:
    # A regex comment carries the reason into the runner's skip message ('matched exclude pattern ...').
    return f"(?#{reason.replace(')', ']').replace('(', '[')})" + _names(names)


backend_test = onnx.backend.test.BackendTest(OparaBackend, __name__)

# Not run: the CUDA variants (1100 single-op plans profiled on the GPU each are too slow for a test run; the
# GPU suite covers CUDA with real models), the model zoo ("real": downloads), ops the importer does not have.
backend_test.exclude(r"(?#CUDA variants are not part of the CPU conformance run)_cuda$")
backend_test.exclude(_because("real model zoo: needs a download", [t.name for t in load_model_tests(kind="real")]))
by_op: dict[str, list[str]] = {}
for case, op in REPORT.unsupported.items():
    by_op.setdefault(op, []).append(case)
for op, cases in sorted(by_op.items()):
    backend_test.exclude(_because(f"op {op} is not supported by the importer", cases))
for model, ops in sorted(REPORT.excluded.items()):
    backend_test.exclude(_because(f"uses {', '.join(ops)}, not supported by the importer", [model.rsplit("/", 1)[-1]]))

# Known failures, each listed with its reason in docs/onnx_conformance.md.
for case, reason in sorted(KNOWN_FAILURES.items()):
    backend_test.xfail(_because(reason[:120], [case]))

globals().update(backend_test.test_cases)


def test_selection_matches_the_conformance_table():
    """The suite runs exactly the cases the table reports on."""
    table = json.loads(RESULTS.read_text())
    assert len(CASES) == table["total"]
    assert set(KNOWN_FAILURES) <= {c.name.rsplit("/", 1)[-1] for c in CASES}
