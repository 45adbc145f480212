"""docs/design.md, "Layout and dependencies": the import direction between packages and between the compiler's
stages, checked both at run time (what importing a package pulls in) and statically (every import statement)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPILER = ROOT / "compiler" / "oparac"

# The compiler's stages in dependency order: a module may import its own stage and the stages before it, never
# one after it. options (the allowed values) and progress (the hook) come first, since every stage reads them.
# The other top-level modules sit where they are used: pipeline runs the stages, verify and the
# observers run plans the pipeline made, bench times them, demo and cli wire everything.
STAGES = ("options", "progress", "models", "ingest", "profile", "schedule", "fuse", "search", "pipeline", "buckets",
          "adapters", "verify", "observe", "bench", "demo", "cli")
# The package itself (`oparac.compile`) is the pipeline.
RANK = {name: k for k, name in enumerate(STAGES)} | {"__init__": STAGES.index("pipeline")}


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


def _stage_of(module: str) -> str:
    """'oparac.schedule.build' -> 'schedule'; 'oparac.pipeline' -> 'pipeline'; 'oparac' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path):
    """(line, imported module) for every oparac import in a file, including imports inside functions."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "oparac":
                for alias in node.names:
                    yield node.lineno, f"oparac.{alias.name}"
            elif node.module.startswith("oparac."):
                yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "oparac" or alias.name.startswith("oparac."):
                    yield node.lineno, alias.name


def test_compiler_stages_import_one_way():
    wrong = []
    for path in sorted(COMPILER.rglob("*.py")):
        rel = path.relative_to(COMPILER.parent).with_suffix("")
        here = _stage_of(".".join(rel.parts).removesuffix(".__init__"))
        assert here in RANK, f"{path}: stage {here!r} is not in STAGES; add it in dependency order"
        for line, module in _imports(path):
            there = _stage_of(module)
            if there != here and RANK.get(there, -1) > RANK[here]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {module} ({there}), a later stage")
    assert not wrong, "\n".join(wrong)


def test_no_private_names_imported_across_modules():
    """`from x import _name` couples a module to another's internals (docs/design.md)."""
    wrong = []
    for package in (ROOT / "plans" / "opara_plan", COMPILER, ROOT / "runtime" / "opara_runtime"):
        for path in sorted(package.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and \
                        node.module.split(".")[0] in ("opara_plan", "oparac", "opara_runtime"):
                    wrong += [f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}.{a.name}"
                              for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not wrong, "\n".join(wrong)
