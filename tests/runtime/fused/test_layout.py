"""The fused package has no import circle: each module imports only those before it in this order, never the
package itself, and no private name of another module."""
from __future__ import annotations

import ast
from pathlib import Path

import opara_runtime.fused

ORDER = ["programs", "compile", "private_cache", "pool", "jobs", "worker", "parallel", "wrapper_ir", "kernel_streams",
         "kernel_mode", "prepare", "__init__"]
PACKAGE = "opara_runtime.fused"
HERE = Path(opara_runtime.fused.__file__).parent


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def test_every_module_is_in_the_order():
    assert sorted(p.stem for p in HERE.glob("*.py")) == sorted(ORDER)


def test_modules_import_only_modules_before_them_and_no_private_names():
    for k, name in enumerate(ORDER):
        for module, names in _imports(HERE / f"{name}.py"):
            if module == PACKAGE:
                raise AssertionError(f"{name}.py imports the package itself ({names})")
            if module.startswith(PACKAGE + "."):
                used = module.removeprefix(PACKAGE + ".")
                assert used in ORDER[:k], f"{name}.py imports {used}, which is not before it"
            if module.startswith("opara"):
                private = [n for n in names if n.startswith("_")]
                assert not private, f"{name}.py imports private names {private} from {module}"


def test_the_pool_knows_nothing_of_the_jobs():
    assert {m for m, _ in _imports(HERE / "pool.py")} <= {"__future__", "atexit", "contextlib", "os", "pickle",
                                                           "selectors", "shutil", "signal", "struct", "subprocess",
                                                           "sys", "tempfile", "time", "traceback",
                                                           "collections.abc", "pathlib"}
