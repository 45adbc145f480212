"""`oparac bench` and `oparac trace` without a GPU: argument checks and clear errors; the table renders."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from rich.console import Console

from opara_plan import OparaError
from oparac.bench.cli import BASELINES, parse_methods, print_bench
from oparac.cli import main
from oparac.fuse.segments import fuse_plan

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")


@pytest.fixture
def plan_path(tiny_plan, tmp_path):
    path = tmp_path / "tiny.plan"
    tiny_plan.save(path)
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@no_cuda
@pytest.mark.parametrize("command", ["bench", "trace"])
def test_needs_a_gpu(command, plan_path, tmp_path):
    extra = ["-o", tmp_path / "t.json"] if command == "trace" else []
    result = invoke(command, plan_path, "oparac.models.zoo:squeezenet", *extra)
    assert result.exit_code == 1, result.output
    assert "needs a CUDA GPU" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", ["bench", "trace"])
def test_cpu_device_is_refused(command, plan_path, tmp_path):
    extra = ["-o", tmp_path / "t.json"] if command == "trace" else []
    result = invoke(command, plan_path, "oparac.models.zoo:squeezenet", "--device", "cpu", *extra)
    assert result.exit_code == 1 and "not a CUDA device" in result.output


@pytest.mark.parametrize("args, code, message", [
    (["bench", "missing.plan", "oparac.models.zoo:squeezenet"], 1, "cannot read plan"),
    (["trace", "missing.plan", "oparac.models.zoo:squeezenet", "-o", "t.json"], 1, "cannot read plan"),
    (["bench", "PLAN", "oparac.models.zoo:squeezenet", "--baselines", "eager,tensorrt"], 1, "unknown 'tensorrt'"),
    (["bench", "PLAN", "oparac.models.zoo:squeezenet", "--iters", "0"], 1, "--iters"),
    (["bench", "PLAN", "oparac.models.zoo:squeezenet", "--warmup", "-1"], 1, "--warmup"),
    (["trace", "PLAN", "oparac.models.zoo:squeezenet"], 1, "--output"),
    (["trace", "PLAN", "oparac.models.zoo:squeezenet", "-o", "t.json", "--replays", "0"], 1, "--replays"),
])
def test_argument_errors(args, code, message, plan_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*[plan_path if a == "PLAN" else a for a in args])
    # Usage errors too are one `error:` line and exit 1, like every user error (README, Command line).
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
    assert result.output.strip().startswith("error:") and len(result.output.strip().splitlines()) == 1


def test_parse_methods():
    assert parse_methods(None) == BASELINES
    assert parse_methods("eager, cudagraph") == ("eager", "cudagraph")
    with pytest.raises(OparaError, match="unknown 'x'"):
        parse_methods("x")


def test_table_renders_rows_errors_and_speedups():
    rows = [{"method": "opara", "ms_b2b": 0.5, "ms_latency": 0.6, "compile_s": 1.0, "peak_mem_mb": 10.0,
             "max_abs_diff": 1e-6},
            {"method": "eager", "ms_b2b": 2.0, "ms_latency": 2.1, "compile_s": 0.0, "peak_mem_mb": 5.0,
             "max_abs_diff": 0.0},
            {"method": "cudagraph", "ms_b2b": 1.0, "ms_latency": 1.1, "compile_s": 0.1, "peak_mem_mb": 8.0,
             "max_abs_diff": 0.0},
            {"method": "ort_cuda", "error": "ModuleNotFoundError: No module named 'onnxruntime'"}]
    result = {"model": "sq", "gpu": "NVIDIA H100", "torch": "2.x", "cuda": "13.0", "dtype": "float32",
              "iters": 10, "predicted_ms": 0.4, "records": rows}
    console = Console(record=True, width=200)
    print_bench(result, console)
    text = console.export_text()
    assert "2.00x" in text and "4.00x" in text and "onnxruntime" in text and "NVIDIA H100" in text


def test_a_record_names_the_plan_an_opara_method_ran(tiny_plan):
    import dataclasses

    from oparac.bench.methods import Record, plan_label

    assert plan_label(tiny_plan) == "opara/topo, 2 streams"
    fused = fuse_plan(tiny_plan, "inductor")
    nhwc = dataclasses.replace(fused, model=dataclasses.replace(fused.model, memory_format="channels_last"))
    assert plan_label(nhwc) == f"opara/topo, 2 streams, inductor {len(fused.fusion.segments)} segments, channels_last"
    rec = Record(model="m", batch=1, dtype="float32", method="opara_tuned", ms_b2b=1.0, plan=plan_label(tiny_plan))
    assert rec.as_dict()["plan"] == "opara/topo, 2 streams"
    assert "plan" not in Record(model="m", batch=1, dtype="float32", method="eager", ms_b2b=1.0).as_dict()
