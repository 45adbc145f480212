"""The oparac command line, driven through its real entry point."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from oparac.cli import main

MODEL = "oparac.models.zoo:squeezenet"


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "sq.plan"
    result = CliRunner().invoke(main, ["compile", MODEL, "-o", str(path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    return path


def test_inspect_table_and_json(plan_path):
    result = CliRunner().invoke(main, ["inspect", str(plan_path)])
    assert result.exit_code == 0, result.output
    assert "streams" in result.output and "fingerprint" in result.output
    info = json.loads(CliRunner().invoke(main, ["inspect", str(plan_path), "--json"]).output)
    assert info["graph"]["kernels"] > 0 and info["schedule"]["streams"] >= 1
    assert info["profile"]["method"] == "cost-model"
    assert info["fusion"]["backend"] == "" and "fusion" not in result.output


def test_inspect_shows_fused_segments_and_the_code_they_store(plan_path, tmp_path):
    import dataclasses

    from opara_plan import load_plan
    from oparac.fuse.segments import fuse_plan

    fused = fuse_plan(load_plan(plan_path), "inductor")
    path = tmp_path / "fused.plan"
    fused.save(path)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert f"inductor: {len(fused.fusion.segments)} segments, none compiled" in result.output
    # Two distinct programs: the first segment's, and one the others share.
    segments = tuple(dataclasses.replace(s, program=min(k, 1)) for k, s in enumerate(fused.fusion.segments))
    stored = dataclasses.replace(fused, fusion=dataclasses.replace(fused.fusion, segments=segments,
                                                                   programs=(b"x" * 1024, b"y" * 2048),
                                                                   cache_key="torch 9.9 | some GPU"))
    stored.save(path)
    info = json.loads(CliRunner().invoke(main, ["inspect", str(path), "--json"]).output)
    assert info["fusion"] == {"backend": "inductor", "segments": len(segments), "compiled_segments": len(segments),
                              "compiled_programs": 2, "compiled_bytes": 3072, "compiled_for": "torch 9.9 | some GPU",
                              "segments_ms": None}


def test_verify_ok(plan_path):
    result = CliRunner().invoke(main, ["verify", str(plan_path), MODEL, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK")


def test_verify_mismatched_model_is_one_line(plan_path):
    result = CliRunner().invoke(main, ["verify", str(plan_path), "oparac.models.zoo:mobilenet_v3", "--device", "cpu"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.output.strip().startswith("error: ") and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["inspect", "nope.plan"], "cannot read plan"),
    (["compile", "nope.pt2", "-o", "x.plan"], "no such file"),
    (["compile", "no_such_module:f", "-o", "x.plan"], "cannot import"),
    (["compile", "oparac.models.zoo:nothing", "-o", "x.plan"], "no callable"),
    (["compile", "oparac.models.zoo:squeezenet", "-o", "x.plan", "--shapes", "x:1xA"], "dimensions must be integers"),
])
def test_user_errors_print_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_corrupt_plan_is_refused(tmp_path):
    bad = tmp_path / "bad.plan"
    bad.write_bytes(b"\x85garbage")
    result = CliRunner().invoke(main, ["inspect", str(bad)])
    assert result.exit_code == 1 and "error:" in result.output


def test_pt2_model(tmp_path):
    import torch

    from oparac.models import zoo
    model, inputs = zoo.squeezenet()
    ep = torch.export.export(model, inputs)
    torch.export.save(ep, tmp_path / "sq.pt2")
    out = tmp_path / "sq.plan"
    result = CliRunner().invoke(main, ["compile", str(tmp_path / "sq.pt2"), "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["verify", str(out), str(tmp_path / "sq.pt2"), "--device", "cpu"])
    assert result.exit_code == 0, result.output


def test_demo_on_cpu(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--model", "squeezenet", "-o", str(tmp_path / "d.plan"),
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "verify: OK" in result.output


def test_help_is_instant():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "compile" in result.output


def test_memory_format_flag_reaches_the_plan(plan_path, tmp_path):
    from opara_plan import load_plan

    path = tmp_path / "sq_cl.plan"
    result = CliRunner().invoke(main, ["compile", MODEL, "-o", str(path), "--device", "cpu",
                                       "--memory-format", "channels_last"])
    assert result.exit_code == 0, result.output
    assert load_plan(path).model.memory_format == "channels_last"
    assert load_plan(plan_path).model.memory_format == "contiguous"
    assert "float32, channels_last" in CliRunner().invoke(main, ["inspect", str(path)]).output
    result = CliRunner().invoke(main, ["verify", str(path), MODEL, "--device", "cpu"])
    assert result.exit_code == 0 and result.output.startswith("OK"), result.output


@pytest.mark.parametrize("flags, layout", [([], "channels_last"), (["--memory-format", "auto"], "channels_last"),
                                           (["--memory-format", "contiguous"], "contiguous")])
def test_a_fused_convolution_plan_is_nhwc_unless_a_layout_is_named(tmp_path, flags, layout):
    from opara_plan import load_plan

    path = tmp_path / "sq_fused.plan"
    result = CliRunner().invoke(main, ["compile", MODEL, "-o", str(path), "--device", "cpu", "--fuse", "inductor",
                                       *flags])
    assert result.exit_code == 0, result.output
    assert load_plan(path).model.memory_format == layout


def test_cut_flag_reaches_the_fused_plan(plan_path, tmp_path):
    from opara_plan import load_plan

    path = tmp_path / "sq_coarse.plan"
    result = CliRunner().invoke(main, ["compile", MODEL, "-o", str(path), "--device", "cpu", "--fuse", "inductor",
                                       "--cut", "coarse"])
    assert result.exit_code == 0, result.output
    coarse = load_plan(path)
    assert f"{len(coarse.fusion.segments)} fused segments" in result.output
    assert coarse.fusion.backend == "inductor" and coarse.schedule.stream_algorithm == "opara+coarse"
    assert coarse.schedule.num_streams < load_plan(plan_path).schedule.num_streams
    assert "opara+coarse / order opara" in CliRunner().invoke(main, ["inspect", str(path)]).output
    result = CliRunner().invoke(main, ["verify", str(path), MODEL, "--device", "cpu"])
    assert result.exit_code == 0 and result.output.startswith("OK"), result.output


@pytest.mark.parametrize("args, code, message", [
    (["--fuse", "inductor", "--cut", "fine"], 2, "Invalid value for '--cut': 'fine' is not one of 'maximal', 'coarse'"),
    (["--cut", "coarse"], 1, "error: cut 'coarse': applies to fused plans only; add fuse='inductor' (--fuse inductor)"),
])
def test_bad_cut_flags_are_refused(args, code, message, tmp_path):
    result = CliRunner().invoke(main, ["compile", MODEL, "-o", str(tmp_path / "x.plan"), "--device", "cpu", *args])
    assert result.exit_code == code and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.plan").exists()
