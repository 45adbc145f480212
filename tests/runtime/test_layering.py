"""DESIGN section 1: opara_plan imports nothing of ours; the runtime never imports the compiler."""
from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in out.split()}


@pytest.mark.parametrize("statement, forbidden", [
    ("import opara_plan", {"oparac", "opara_runtime", "torch", "click", "networkx", "onnx"}),
    ("import opara_runtime", {"oparac", "click", "networkx", "onnx", "rich"}),
])
def test_import_direction(statement, forbidden):
    assert not (_modules_after(statement) & forbidden)


def test_oparac_help_is_light():
    mods = _modules_after("from oparac.cli import main")
    assert "torch" not in mods and "onnx" not in mods
