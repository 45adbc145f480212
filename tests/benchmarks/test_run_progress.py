"""benchmarks/run.py --progress: the compiler's progress lines, stamped with the seconds a method has taken."""
from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"
_spec = importlib.util.spec_from_file_location("bench_run", _PATH)
bench_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_run)


def test_progress_lines_carry_the_group_and_the_elapsed_seconds(capsys):
    say = bench_run.stamped("googlenet b1 float16 opara_fused_tuned", time.perf_counter() - 2.0)
    say("tune: fused opara+inductor: 46 segments")
    line = capsys.readouterr().out.strip()
    m = re.fullmatch(r"\[\s*(\d+\.\d) s\] googlenet b1 float16 opara_fused_tuned: tune: fused opara\+inductor: "
                     r"46 segments", line)
    assert m and float(m.group(1)) >= 2.0


def test_the_compiler_takes_the_progress_option():
    """The suite passes the callback as a plan option, which bench.build hands to oparac.compile as a keyword."""
    import inspect

    from oparac.pipeline import compile

    assert "progress" in inspect.signature(compile).parameters
