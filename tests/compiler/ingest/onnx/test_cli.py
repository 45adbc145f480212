"""The CLI path for ONNX models: oparac compile model.onnx, then oparac verify model.plan model.onnx."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import helper

from oparac.cli import main

from helpers.onnx_models import make_model, save


def test_compile_then_verify(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["y"])]
    model = make_model(nodes, {"x": x}, ["y"], initializers={"w": rng.standard_normal((4, 3, 3, 3), np.float32)})
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    path = save(model, tmp_path)
    plan = tmp_path / "model.plan"
    result = CliRunner().invoke(main, ["compile", str(path), "-o", str(plan), "--device", "cpu",
                                       "--shapes", "x:2x3x8x8"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["verify", str(plan), str(path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK")


def test_compile_unsupported_op_is_one_line(tmp_path):
    x = np.zeros((2, 2), dtype=np.float32)
    path = save(make_model([helper.make_node("NonZero", ["x"], ["y"], name="nz")], {"x": x}, ["y"]), tmp_path)
    result = CliRunner().invoke(main, ["compile", str(path), "-o", str(tmp_path / "p.plan"), "--device", "cpu"])
    assert result.exit_code == 1
    assert "NonZero node 'nz'" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("content, says", [
    (b"", "is empty (0 bytes), not an ONNX model"),
    (b"hello, this is not an ONNX model\n", "is not an ONNX model: it does not parse as an onnx ModelProto"),
    (b"\x08\x07", "is not an ONNX model: expected an ir_version and a graph, found no graph"),
])
def test_compile_a_file_that_is_not_onnx_names_it(tmp_path, content, says):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    result = CliRunner().invoke(main, ["compile", str(path), "-o", str(tmp_path / "p.plan"), "--device", "cpu"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if not line.startswith("[oparac]")]  # progress lines
    assert len(errors) == 1, result.output
    assert errors[0].startswith("error: ") and str(path) in errors[0] and says in errors[0], result.output
