"""`oparac compile --batch` and the list form of --shapes write one plan set; `oparac inspect` shows its buckets
and their graph memory. Driven through the real entry point."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from opara_plan import ModelError, Plan, PlanSet, load_artifact
from oparac.buckets import compile_buckets, parse_batches
from oparac.cli import main

CNN = "helpers.models:small_cnn"
TEXT = "helpers.buckets:tiny_text"


def run(*args):
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "200"})  # rich wraps at the terminal's width


@pytest.fixture(scope="module")
def cnn_set(tmp_path_factory):
    path = tmp_path_factory.mktemp("buckets") / "cnn.plans"
    result = run("compile", CNN, "-o", str(path), "--device", "cpu", "--batch", "8,1,2,4")
    assert result.exit_code == 0, result.output
    assert f"wrote {path}: plan set of 4 buckets (batch 1, 2, 4, 8)" in result.stdout
    return path


def test_batch_writes_one_artifact_with_a_plan_per_bucket(cnn_set):
    ps = load_artifact(cnn_set)
    assert isinstance(ps, PlanSet)
    assert [b.batch for b in ps.buckets] == [1, 2, 4, 8]
    assert [p.model.inputs[0].shape for p in ps.plans] == [(b, 3, 16, 16) for b in (1, 2, 4, 8)]
    assert [p.model.outputs[0].shape for p in ps.plans] == [(b, 10) for b in (1, 2, 4, 8)]
    # One model: the same weights by name, dtype and shape in every bucket.
    params = [{n.name: n.outputs[0] for n in p.graph.nodes if n.kind == "param"} for p in ps.plans]
    assert all(p == params[0] for p in params) and params[0]


def test_without_batch_the_plan_stays_a_single_plan(tmp_path):
    result = run("compile", CNN, "-o", str(tmp_path / "one.plan"), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert isinstance(load_artifact(tmp_path / "one.plan"), Plan)
    assert "plan set" not in result.stdout


def test_inspect_shows_each_bucket_and_the_shared_graph_memory(cnn_set):
    result = run("inspect", str(cnn_set))
    assert result.exit_code == 0, result.output
    assert "Opara plan set" in result.stdout and "Buckets" in result.stdout
    assert "live tensors predicted for all buckets in one shared pool" in result.stdout
    info = json.loads(run("inspect", str(cnn_set), "--json").stdout)
    assert [b["batch"] for b in info["buckets"]] == [1, 2, 4, 8]
    alone = [b["graph_memory"]["predicted_bytes"] for b in info["buckets"]]
    assert alone == sorted(alone) and alone[0] > 0
    # Activations scale with the batch: the largest bucket holds 8x the smallest.
    assert alone[3] == 8 * alone[0]
    memory = info["graph_memory"]
    assert memory["largest_alone_predicted_bytes"] == alone[3]
    assert memory["predicted_total_bytes"] <= 1.3 * alone[3]
    assert memory["measured_total_bytes"] is None  # measured only when loaded on a GPU
    assert len(info["plans"]) == 4 and info["plans"][0]["integrity"]["verdict"] == "no signature"


def test_inspect_one_bucket_as_a_plan(cnn_set, tmp_path):
    result = run("inspect", str(cnn_set), "--bucket", "2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"]["inputs"][0]["shape"] == [4, 3, 16, 16]
    result = run("inspect", str(cnn_set), "--bucket", "4")
    assert result.exit_code == 1 and "--bucket 4: the plan set has buckets 0..3" in result.output
    run("compile", CNN, "-o", str(tmp_path / "one.plan"), "--device", "cpu")
    result = run("inspect", str(tmp_path / "one.plan"), "--bucket", "0")
    assert result.exit_code == 1 and "a single plan, not a plan set" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_measure_without_a_gpu_says_why(cnn_set):
    result = run("inspect", str(cnn_set), "--measure", CNN)
    assert result.exit_code == 1 and "CUDA is not available here" in result.output


@pytest.mark.slow
def test_shape_sets_bucket_other_dimensions(tmp_path):
    path = tmp_path / "text.plans"
    result = run("compile", TEXT, "-o", str(path), "--device", "cpu", "--batch", "1,4",
                 "--shapes", "ids:1x8:int64,mask:1x8", "--shapes", "ids:1x16:int64,mask:1x16")
    assert result.exit_code == 0, result.output
    assert "plan set of 4 buckets (batch 1, 4 x 2 shape sets)" in result.stdout
    ps = load_artifact(path)
    assert [(b.batch, b.inputs[0].shape, b.inputs[1].dtype) for b in ps.buckets] == [
        (1, (1, 8), "float32"), (4, (4, 8), "float32"), (1, (1, 16), "float32"), (4, (4, 16), "float32")]
    assert all(b.inputs[0].dtype == "int64" for b in ps.buckets)
    # Shape sets alone, without --batch: one bucket each.
    result = run("compile", TEXT, "-o", str(path), "--device", "cpu",
                 "--shapes", "ids:2x8:int64,mask:2x8", "--shapes", "ids:2x16:int64,mask:2x16")
    assert result.exit_code == 0, result.output
    assert [(b.batch, b.inputs[0].shape) for b in load_artifact(path).buckets] == [(2, (2, 8)), (2, (2, 16))]


def test_bad_batches_and_models_are_refused_with_a_clear_message(tmp_path):
    out = str(tmp_path / "x.plans")
    for batches, message in [("1,0", "--batch item '0': expected a positive integer"),
                             ("1,x", "--batch item 'x'"), ("2,2", "batch 2 appears twice"),
                             (",".join(str(b) for b in range(1, 66)), "a plan set holds at most 64")]:
        result = run("compile", CNN, "-o", out, "--device", "cpu", "--batch", batches)
        assert result.exit_code == 1, result.output
        assert message in result.output
    result = run("compile", TEXT, "-o", out, "--device", "cpu", "--batch", "1,2", "--shapes", "idz:1x8:int64")
    assert result.exit_code == 1 and "'idz'" in result.output
    model, inputs = torch.nn.Linear(3, 3).eval(), (torch.randn(2, 3),)
    exported = torch.export.export(model, inputs)
    with pytest.raises(ModelError, match=r"ExportedProgram \(.pt2\) has its input shapes fixed at export"):
        compile_buckets(exported, None, batches="1,2", device="cpu")
    with pytest.raises(ModelError, match="every input needs a leading batch dimension"):
        compile_buckets(torch.nn.Identity(), (torch.tensor(1.0),), batches="1,2", device="cpu")


def test_onnx_with_batch_needs_its_shapes(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"")  # never read: the shapes are asked for first
    with pytest.raises(ModelError, match="give --shapes for its inputs"):
        compile_buckets(path, None, batches="1,2", device="cpu")


def test_parse_batches():
    assert parse_batches("8, 1,4") == (1, 4, 8)
    assert parse_batches([2, 1]) == (1, 2)
    with pytest.raises(ModelError, match="at least one batch size"):
        parse_batches("")


@pytest.mark.slow
def test_signed_set_is_trusted_per_bucket(tmp_path):
    from opara_plan.signing import generate_key

    generate_key(tmp_path / "k.pem", tmp_path / "k.pub")
    path = tmp_path / "signed.plans"
    result = run("compile", CNN, "-o", str(path), "--device", "cpu", "--batch", "1,2", "--sign-key",
                 str(tmp_path / "k.pem"))
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().endswith(", signed")
    info = json.loads(run("inspect", str(path), "--json", "--trusted-key", str(tmp_path / "k.pub")).stdout)
    assert [p["integrity"]["trusted"] for p in info["plans"]] == [True, True]
    table = run("inspect", str(path), "--trusted-key", str(tmp_path / "k.pub")).stdout
    assert "signature" in table and "not trusted" not in table
