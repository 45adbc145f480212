"""Weights computed inside the graph (ConstantOfShape, Expand of a scalar, Range...): a large one stays graph ops
made when the plan runs, not a constant embedded in the plan, so a model over 64 MiB of them compiles."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from oparac.cli import main
from oparac.ingest.graph_builder import MAX_CONSTANT_BYTES
from oparac.ingest.onnx_import import EMBED_LIMIT_BYTES

from helpers.onnx_models import check_against_ort, make_model, save

X = np.random.default_rng(0).standard_normal((2, 4096)).astype(np.float32)
BIG = [4096, 4100]  # 4096 * 4100 float32 = 67_174_400 bytes, over the plan's embedded-constant limit
assert 4 * BIG[0] * BIG[1] > MAX_CONSTANT_BYTES


def embedded_bytes(plan) -> int:
    return sum(len(n.data or b"") for n in plan.graph.nodes if n.kind == "constant")


def targets(plan) -> list[str]:
    return [n.target for n in plan.graph.nodes if n.kind == "op"]


def fill(value: float):
    return helper.make_tensor("v", TensorProto.FLOAT, [1], [value])


def test_constant_of_shape_weight_over_64_mib(tmp_path):
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["w"], value=fill(0.5)),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    model = make_model(nodes, {"x": X}, ["y"], initializers={"s": np.array(BIG, dtype=np.int64)})
    plan = check_against_ort(model, tmp_path, {"x": X}, rtol=1e-4, atol=1e-4)
    assert targets(plan) == ["aten.full.default", "aten.mm.default"]
    assert embedded_bytes(plan) < EMBED_LIMIT_BYTES


def test_expand_of_a_scalar_then_arithmetic_stays_ops(tmp_path):
    # w = Expand(0.25, BIG) * 3 + Range-made row; every intermediate is over the limit
    nodes = [helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.FLOAT, [], [0.25])),
             helper.make_node("Expand", ["c", "s"], ["e"]),
             helper.make_node("Mul", ["e", "three"], ["m"]),
             helper.make_node("Range", ["r0", "r1", "r2"], ["row"]),
             helper.make_node("Add", ["m", "row"], ["w"]),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    inits = {"s": np.array(BIG, dtype=np.int64), "three": np.float32(3.0), "r0": np.float32(0.0),
             "r1": np.float32(BIG[1] / 1000), "r2": np.float32(0.001)}
    model = make_model(nodes, {"x": X}, ["y"], initializers=inits, opset=13)
    plan = check_against_ort(model, tmp_path, {"x": X}, rtol=1e-4, atol=1e-3)
    ops = targets(plan)
    assert {"aten.expand.default", "aten.mul.Tensor", "aten.add.Tensor", "aten.mm.default"} <= set(ops)
    assert embedded_bytes(plan) < EMBED_LIMIT_BYTES


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_large_range_is_made_at_run_time(tmp_path, dtype):
    n = 300_000  # over EMBED_LIMIT_BYTES in either type
    x = np.arange(n, dtype=dtype)[::-1].copy()
    nodes = [helper.make_node("Range", ["a", "b", "d"], ["r"]), helper.make_node("Add", ["x", "r"], ["y"])]
    inits = {"a": np.array(5, dtype=dtype), "b": np.array(5 + 2 * n, dtype=dtype), "d": np.array(2, dtype=dtype)}
    plan = check_against_ort(make_model(nodes, {"x": x}, ["y"], initializers=inits, opset=11), tmp_path, {"x": x})
    assert targets(plan) == ["aten.arange.start_step", "aten.add.Tensor"]
    assert embedded_bytes(plan) < EMBED_LIMIT_BYTES


def test_every_output_of_a_rebuilt_node_comes_from_one_set_of_ops(tmp_path):
    # both halves of a large made tensor are over the limit; the node making them is emitted once
    x = np.random.default_rng(1).standard_normal((1, 512, 1024)).astype(np.float32)
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["w"], value=fill(1.5)),
             helper.make_node("Split", ["w"], ["a", "b"], axis=0),
             helper.make_node("Add", ["x", "a"], ["y"]), helper.make_node("Sub", ["x", "b"], ["z"])]
    model = make_model(nodes, {"x": x}, ["y", "z"], initializers={"s": np.array([2, 512, 1024], dtype=np.int64)},
                       opset=13)
    plan = check_against_ort(model, tmp_path, {"x": x})
    ops = targets(plan)
    assert ops.count("aten.full.default") == 1 and ops.count("aten.split_with_sizes.default") == 1, ops
    assert embedded_bytes(plan) < EMBED_LIMIT_BYTES


def test_small_computed_constants_are_still_folded(tmp_path):
    x = X[:, :8]
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["w"], value=fill(2.0)),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    model = make_model(nodes, {"x": x}, ["y"], initializers={"s": np.array([8, 4], dtype=np.int64)})
    plan = check_against_ort(model, tmp_path, {"x": x})
    assert targets(plan) == ["aten.mm.default"]
    assert any(n.kind == "constant" and n.outputs[0].shape == (8, 4) for n in plan.graph.nodes)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cli_compiles_and_verifies_a_model_with_a_computed_64_mib_weight(tmp_path, dtype):
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["w"], value=fill(0.001)),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    path = save(make_model(nodes, {"x": X}, ["y"], initializers={"s": np.array(BIG, dtype=np.int64)}), tmp_path)
    plan = tmp_path / "model.plan"
    result = CliRunner().invoke(main, ["compile", str(path), "-o", str(plan), "--device", "cpu", "--dtype", dtype])
    assert result.exit_code == 0, result.output
    assert plan.stat().st_size < EMBED_LIMIT_BYTES
    if dtype == "float32":
        result = CliRunner().invoke(main, ["verify", str(plan), str(path), "--device", "cpu"])
        assert result.exit_code == 0, result.output
