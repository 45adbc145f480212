"""The oparac command line, driven through its real entry point."""
from __future__ import annotations

import json

import pytest
import torch
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
                              "segments_ms": None, "mode": "segments"}


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


@pytest.mark.parametrize("args, message", [
    (["--fuse", "inductor", "--cut", "fine"], "error: Invalid value for '--cut': 'fine' is not one of 'maximal', "
                                              "'coarse'"),
    (["--cut", "coarse"], "error: cut 'coarse': applies to fused plans only; add fuse='inductor' (--fuse inductor)"),
])
def test_bad_cut_flags_are_refused(args, message, tmp_path):
    result = CliRunner().invoke(main, ["compile", MODEL, "-o", str(tmp_path / "x.plan"), "--device", "cpu", *args])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.plan").exists()


def _one_error_line(result, message: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output and "Usage:" not in result.output


@pytest.mark.parametrize("args, message", [
    (["compile", MODEL, "-o", "x.plan", "--streams", "bogus"],
     "Invalid value for '--streams': 'bogus' is not one of 'opara', 'nimble', 'critical', 'window', 'single'"),
    (["compile", MODEL, "-o", "x.plan", "--max-streams", "-1"], "Invalid value for '--max-streams': -1 is not in "
                                                                "the range 0<=x<=1024"),
    (["compile", MODEL, "-o", "x.plan", "--max-streams", "5000"], "Invalid value for '--max-streams'"),
    (["compile", MODEL], "Missing option '-o' / '--output'"),
    (["verify", "p.plan", MODEL, "--tolerance", "abc"], "Invalid value for '--tolerance': 'abc' is not a valid float"),
    (["compile", MODEL, "-o", "x.plan", "--device", "tpu"], "device 'tpu': expected 'cpu' or 'cuda[:N]'"),
    (["verify", "p.plan", MODEL, "--device", "tpu"], "device 'tpu': expected 'cpu' or 'cuda[:N]'"),
    (["bench", "p.plan", MODEL, "--device", "tpu:0"], "device 'tpu:0': expected 'cpu' or 'cuda[:N]'"),
    (["no-such-command"], "No such command 'no-such-command'"),
])
def test_usage_errors_print_one_error_line_and_exit_1(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_error_line(CliRunner().invoke(main, args), message)
    assert not (tmp_path / "x.plan").exists()


def test_shapes_naming_an_input_the_model_does_not_take_are_refused(tmp_path):
    result = CliRunner().invoke(main, ["compile", MODEL, "-o", str(tmp_path / "x.plan"), "--device", "cpu",
                                       "--shapes", "y:1x3x224x224"])
    _one_error_line(result, f"--shapes names 'y', which is not an input of model '{MODEL}'; it takes x")
    assert not (tmp_path / "x.plan").exists()


def test_shapes_naming_the_model_input_are_used(tmp_path):
    from opara_plan import load_plan

    path = tmp_path / "sq64.plan"
    result = CliRunner().invoke(main, ["compile", MODEL, "-o", str(path), "--device", "cpu",
                                       "--shapes", "x:1x3x64x64"])
    assert result.exit_code == 0, result.output
    assert load_plan(path).model.inputs[0].shape == (1, 3, 64, 64)


class _TwoInputs(torch.nn.Module):
    def forward(self, image, mask, scale=None):
        return image * mask


@pytest.mark.parametrize("given, message", [
    ({"image": ((1, 3), "float32")}, "--shapes gives 1 input (image); model 'm:f' needs 2: image, mask"),
    ({"mask": ((1, 3), "float32"), "image": ((1, 3), "float32")},
     "--shapes lists mask, image; give them in the order model 'm:f' takes them: image, mask"),
    ({"image": ((1, 3), "float32"), "mask": ((1, 3), "float32"), "bias": ((1,), "float32")},
     "--shapes names 'bias', which is not an input of model 'm:f'; it takes image, mask, scale"),
])
def test_shapes_are_checked_for_count_and_order(given, message):
    from opara_plan import ModelError
    from oparac.ingest.input_names import check_shapes_fit

    with pytest.raises(ModelError) as e:
        check_shapes_fit(_TwoInputs(), given, "m:f")
    assert str(e.value) == message
    check_shapes_fit(_TwoInputs(), {"image": ((1, 3), "float32"), "mask": ((1, 3), "float32")}, "m:f")


def test_a_pt2_model_is_checked_against_its_exported_inputs(tmp_path):
    from opara_plan import ModelError
    from oparac.ingest.input_names import check_shapes_fit, declared_inputs

    x = torch.randn(1, 3)
    ep = torch.export.export(_TwoInputs(), (x, x))
    assert declared_inputs(ep) == (("image", "mask"), 2)
    with pytest.raises(ModelError, match="--shapes names 'x', which is not an input"):
        check_shapes_fit(ep, {"x": ((1, 3), "float32")}, "m.pt2")


def test_compiling_without_a_device_and_without_a_gpu_says_it_uses_the_cost_model(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(main, ["compile", MODEL, "-o", str(tmp_path / "x.plan")])
    assert result.exit_code == 0, result.output
    assert "[oparac] device: no CUDA GPU here, so the plan is a preview from the analytic cost model" in result.output
    assert "(cost-model)" in result.output
    named = CliRunner().invoke(main, ["compile", MODEL, "-o", str(tmp_path / "y.plan"), "--device", "cpu"])
    assert named.exit_code == 0 and "no CUDA GPU here" not in named.output


def test_progress_reports_every_stage_with_its_time(tmp_path):
    result = CliRunner().invoke(main, ["compile", MODEL, "-o", str(tmp_path / "x.plan"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    done = [line.split(":")[0].removeprefix("[oparac] ") for line in result.output.splitlines()
            if line.startswith("[oparac] ") and ": done in " in line]
    assert done == ["ingest", "profile", "schedule"]


def test_version_comes_from_the_installed_package():
    from importlib import metadata

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"oparac, version {metadata.version('opara')}"


def test_click_choices_are_the_options_own_lists():
    from oparac import options

    params = {p.name: p for p in main.commands["compile"].params}
    for name, allowed in (("streams", options.STREAM_ALGORITHMS), ("order", options.ORDER_ALGORITHMS),
                          ("dtype", options.DTYPES), ("fuse", options.FUSE_BACKENDS), ("cut", options.CUTS),
                          ("attention", options.ATTENTION_MODES), ("memory_format", options.MEMORY_FORMATS)):
        assert tuple(params[name].type.choices) == allowed, name
    assert (params["max_streams"].type.min, params["max_streams"].type.max) == options.MAX_STREAMS_RANGE


# --- signing (issue 16): keygen, compile --sign-key, inspect's digest and verdict, trust flags on loads

@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    result = CliRunner().invoke(main, ["keygen", str(d / "opara.key"), str(d / "opara.pub")])
    assert result.exit_code == 0, result.output
    assert "key " in result.output and (d / "opara.key").stat().st_mode & 0o077 == 0
    return d / "opara.key", d / "opara.pub"


def test_keygen_keeps_existing_keys(keys):
    private, public = keys
    before = private.read_bytes()
    result = CliRunner().invoke(main, ["keygen", str(private), str(public)])
    _one_error_line(result, f"key file {private} exists")
    assert private.read_bytes() == before


def test_a_signed_plan_is_trusted_by_its_public_key_only(keys, tmp_path, monkeypatch):
    from opara_plan import load_plan
    from opara_plan.digest import plan_digest

    monkeypatch.delenv("OPARA_TRUSTED_KEYS", raising=False)
    private, public = keys
    path = tmp_path / "signed.plan"
    result = CliRunner().invoke(main, ["compile", MODEL, "-o", str(path), "--device", "cpu", "--sign-key",
                                       str(private)])
    assert result.exit_code == 0 and ", signed by key " in result.output, result.output
    plan = load_plan(path)
    assert len(plan.signature) == 1
    info = json.loads(CliRunner().invoke(main, ["inspect", str(path), "--json", "--trusted-key", str(public)]).output)
    assert info["integrity"]["digest"] == plan_digest(plan) and info["integrity"]["trusted"]
    assert info["integrity"]["key_id"] == plan.signature[0].key_id
    shown = CliRunner().invoke(main, ["inspect", str(path), "--trusted-key", str(public)]).output
    assert f"digest     {plan_digest(plan)}" in shown and "signature  trusted: valid signature by key" in shown
    other = tmp_path / "other"
    CliRunner().invoke(main, ["keygen", str(other.with_suffix(".key")), str(other.with_suffix(".pub"))])
    untrusted = CliRunner().invoke(main, ["inspect", str(path), "--trusted-key", str(other.with_suffix(".pub"))])
    assert "signature  not trusted: signed by key" in untrusted.output and "not among the trusted keys" in \
        untrusted.output
    monkeypatch.setenv("OPARA_TRUSTED_KEYS", str(public))
    from_env = json.loads(CliRunner().invoke(main, ["inspect", str(path), "--json"]).output)["integrity"]
    assert from_env["trusted"] and from_env["checked_against"] == "1 key from $OPARA_TRUSTED_KEYS"


def test_an_unsigned_plan_says_so(plan_path, monkeypatch):
    monkeypatch.delenv("OPARA_TRUSTED_KEYS", raising=False)
    shown = CliRunner().invoke(main, ["inspect", str(plan_path)]).output
    assert "signature  not trusted: no signature (checked against no trusted keys)" in shown


def test_the_signing_key_defaults_to_the_environment(keys, tmp_path, monkeypatch):
    from opara_plan import load_plan

    private, _ = keys
    monkeypatch.setenv("OPARA_SIGNING_KEY", str(private))
    path = tmp_path / "env.plan"
    result = CliRunner().invoke(main, ["compile", MODEL, "-o", str(path), "--device", "cpu"])
    assert result.exit_code == 0 and load_plan(path).signature, result.output


def test_a_bad_signing_key_fails_before_compiling(keys, tmp_path):
    _, public = keys
    result = CliRunner().invoke(main, ["compile", MODEL, "-o", str(tmp_path / "x.plan"), "--device", "cpu",
                                       "--sign-key", str(public)])
    _one_error_line(result, f"signing key {public}: not an unencrypted PEM private key (is it the public key?)")
    assert not (tmp_path / "x.plan").exists()


@pytest.mark.parametrize("flags, trust", [
    ([], {"trust_compiled_code": False, "trusted_keys": None}),
    (["--trust-compiled-code"], {"trust_compiled_code": True, "trusted_keys": None}),
    (["--trusted-key", "a.pub", "--trusted-key", "b.pub"], {"trust_compiled_code": False,
                                                            "trusted_keys": ("a.pub", "b.pub")}),
])
def test_verify_passes_the_trust_flags_to_the_runtime(plan_path, flags, trust, monkeypatch):
    import opara_runtime

    seen = []
    real = opara_runtime.load

    def load(plan, model, **kwargs):
        seen.append({k: kwargs[k] for k in ("trust_compiled_code", "trusted_keys")})
        return real(plan, model, **kwargs)
    monkeypatch.setattr(opara_runtime, "load", load)
    result = CliRunner().invoke(main, ["verify", str(plan_path), MODEL, "--device", "cpu", *flags])
    assert result.exit_code == 0 and result.output.startswith("OK"), result.output
    assert seen == [trust]


@pytest.mark.parametrize("command", ["verify", "bench", "trace"])
def test_every_command_that_runs_a_plan_takes_the_trust_flags(command):
    names = {p.name for p in main.commands[command].params}
    assert {"trust_compiled_code", "trusted_keys"} <= names


def test_compile_merges_projections_unless_told_not_to(tmp_path):
    from opara_plan import CONCAT_PARAM, load_plan

    def stacked(*flags):
        result = CliRunner().invoke(main, ["compile", "helpers.models:attention", "-o", str(path), "--device", "cpu",
                                           *flags])
        assert result.exit_code == 0, result.output
        return [n.args for n in load_plan(path).graph.nodes if n.kind == "param" and n.target == CONCAT_PARAM]

    path = tmp_path / "attn.plan"
    assert stacked("--no-merge-projections") == []
    assert stacked() == [("q.weight", "k.weight", "v.weight"), ("q.bias", "k.bias", "v.bias")]
    shown = CliRunner().invoke(main, ["inspect", str(path)])
    assert shown.exit_code == 0 and "2 of them stacked at load" in shown.output, shown.output
    assert json.loads(CliRunner().invoke(main, ["inspect", str(path), "--json"]).output)["graph"]["stacked_params"] == 2
