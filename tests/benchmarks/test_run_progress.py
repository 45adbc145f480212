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


def _suite(path: Path, gpu: str, records: list[tuple]) -> None:
    import json

    path.write_text(json.dumps({"gpu": gpu, "records": [
        {"model": m, "batch": b, "dtype": d, "method": method, "dynamo": "cold", **({"error": "x"} if err else {})}
        for m, b, d, method, err in records]}))


def test_skip_measured_takes_groups_one_file_measured_whole_on_this_gpu(tmp_path):
    h200 = "NVIDIA H200"
    _suite(tmp_path / "suite-1.json", h200, [("gpt2", 1, "float16", "torch_compile", False),
                                            ("gpt2", 1, "float16", "opara_default", False),
                                            ("vit_b16", 1, "float16", "torch_compile", False),   # one method only
                                            ("llama", 8, "float32", "torch_compile", False),
                                            ("llama", 8, "float32", "opara_default", True)])    # failed
    _suite(tmp_path / "suite-2.json", h200, [("vit_b16", 1, "float16", "opara_default", False)])  # other run
    _suite(tmp_path / "suite-3.json", "NVIDIA H100 80GB HBM3", [("resnet50", 1, "float32", "torch_compile", False),
                                                              ("resnet50", 1, "float32", "opara_default", False)])
    _suite(tmp_path / "other-4.json", h200, [("bert", 1, "float32", "torch_compile", False)])
    done = bench_run.measured(tmp_path, h200, ["torch_compile", "opara_default"])
    assert done == {("gpt2", 1, "float16")}
    assert bench_run.measured(tmp_path, h200, ["torch_compile"]) == {("gpt2", 1, "float16"), ("vit_b16", 1, "float16"),
                                                                    ("llama", 8, "float32")}


def test_skip_measured_counts_only_groups_timed_the_requested_way(tmp_path):
    import json

    h200 = "NVIDIA H200"
    recs = [{"model": "gpt2", "batch": 1, "dtype": "float16", "method": m, "timing": "interleaved"}
            for m in ("torch_compile", "opara_default")]
    recs += [{"model": "vit_b16", "batch": 1, "dtype": "float16", "method": m} for m in ("torch_compile",
                                                                                       "opara_default")]
    (tmp_path / "suite-1.json").write_text(json.dumps({"gpu": h200, "records": recs}))
    both = ["torch_compile", "opara_default"]
    assert bench_run.measured(tmp_path, h200, both, "interleaved") == {("gpt2", 1, "float16")}
    assert bench_run.measured(tmp_path, h200, both, "sequential") == {("vit_b16", 1, "float16")}


def test_skip_measured_measures_again_a_group_whose_torch_compile_was_a_dynamic_recompile(tmp_path):
    import json

    h200 = "NVIDIA H200"
    recs = [{"model": "gpt2", "batch": b, "dtype": "float16", "method": m}
            for b in (8, 1) for m in ("torch_compile", "opara_default")]  # b1's compile followed b8's, no reset
    recs += [{"model": "resnet50", "batch": b, "dtype": "float16", "method": m, "dynamo": "cold"}
             for b in (1, 8) for m in ("torch_compile", "opara_default")]  # each compiled after a reset
    (tmp_path / "suite-1.json").write_text(json.dumps({"gpu": h200, "records": recs}))
    assert bench_run.measured(tmp_path, h200, ["torch_compile", "opara_default"]) == {
        ("gpt2", 8, "float16"), ("resnet50", 1, "float16"), ("resnet50", 8, "float16")}
    assert ("gpt2", 1, "float16") in bench_run.measured(tmp_path, h200, ["opara_default"])


def test_an_isolated_group_keeps_what_its_process_wrote_and_says_how_it_ended(tmp_path, capsys):
    import json
    from types import SimpleNamespace

    def died_after_one_method(cmd):  # the child: wrote one record, then was killed by SIGSEGV
        assert cmd[1].endswith("run.py") and cmd[cmd.index("--models") + 1] == "swin_t"
        out = Path(cmd[cmd.index("--out") + 1])
        (out / "suite-20261202T010119.json").write_text(json.dumps({"gpu": "NVIDIA H200", "records": [
            {"model": "swin_t", "batch": 8, "dtype": "float16", "method": "cudagraph", "ms_b2b": 1.94}]}))
        return SimpleNamespace(returncode=-11)

    args = SimpleNamespace(methods="cudagraph,torch_compile,opara_default", timing="interleaved", rounds=15, iters=0,
                           progress=True)
    argv = bench_run.group_argv(args, "swin_t", 8, "float16")
    assert "--in-process" in argv and "--no-report" in argv and "--progress" in argv
    records = bench_run.run_isolated("swin_t", 8, "float16", args.methods.split(","), argv,
                                     spawn=died_after_one_method)
    assert [r["method"] for r in records] == ["cudagraph", "torch_compile", "opara_default"]
    assert records[0]["ms_b2b"] == 1.94 and "error" not in records[0]
    assert all("killed by signal 11 (SIGSEGV)" in r["error"] for r in records[1:])
    assert "swin_t b8 float16 opara_default: not measured" in capsys.readouterr().out


def test_a_process_end_is_said_in_words():
    assert bench_run.ended(1) == "exited with status 1"
    assert bench_run.ended(-9) == "was killed by signal 9 (SIGKILL)"


def test_a_group_process_takes_the_arguments_it_is_given(capsys):
    """The real child on a machine without a GPU: it parses every argument (argparse would exit 2) and stops
    because there is no CUDA GPU (status 1), which its group's records then say."""
    from types import SimpleNamespace

    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("with a GPU the child measures for real")
    args = SimpleNamespace(methods="cudagraph,opara_default", timing="sequential", rounds=3, iters=5, progress=False)
    records = bench_run.run_isolated("resnet50", 1, "float32", ["cudagraph", "opara_default"],
                                     bench_run.group_argv(args, "resnet50", 1, "float32"))
    assert [r["error"] for r in records] == [
        "not measured: the group's process exited with status 1 before this method's figures were written"] * 2


def _fake_group(monkeypatch, events: list):
    from types import SimpleNamespace

    from oparac.bench import methods

    monkeypatch.setattr(methods, "zoo_model", lambda name, batch, dtype, device: (None, (), None))
    monkeypatch.setattr(methods, "warm_imports", lambda device: events.append("warm imports"))
    monkeypatch.setattr(methods, "build", lambda m, *a, **k: events.append(f"build {m}"))

    def group(recs, makes, *a, **k):
        for make in makes:
            make()
        return recs
    monkeypatch.setattr(methods, "measure_group", group)
    return SimpleNamespace(timing="interleaved", progress=False, rounds=1)


def test_a_group_warms_the_compilers_imports_before_building_any_method(monkeypatch):
    """torch.compile is built before Opara's methods: without the warm-up its compile time alone would carry
    the process's first imports of dynamo, inductor and Triton."""
    events: list = []
    args = _fake_group(monkeypatch, events)
    recs = list(bench_run.run_group("gpt2", 1, "float16", ["cudagraph", "torch_compile", "opara_default"], "cuda",
                                    args, 10))
    assert events == ["warm imports", "build cudagraph", "build torch_compile", "build opara_default"]
    assert {r.method: r.imports for r in recs} == {"cudagraph": None, "torch_compile": "warm", "opara_default": "warm"}
    assert "imports" not in recs[0].as_dict() and recs[1].as_dict()["imports"] == "warm"


def test_a_group_that_compiles_nothing_imports_no_compiler(monkeypatch):
    events: list = []
    args = _fake_group(monkeypatch, events)
    recs = list(bench_run.run_group("gpt2", 1, "float16", ["eager", "cudagraph"], "cuda", args, 10))
    assert events == ["build eager", "build cudagraph"] and all(r.imports is None for r in recs)
