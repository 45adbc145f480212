"""ONNX import errors: unsupported ops and attributes, control flow, symbolic shapes, run-time shape operands."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import oparac
from opara_plan import ModelError, UnsupportedOpError

from helpers.onnx_models import make_model, run_opara, save

X = np.zeros((1, 3, 4, 4), dtype=np.float32)


def compile_model(model, tmp_path, **options):
    return oparac.compile(save(model, tmp_path), None, device="cpu", **options)


def test_unsupported_op_names_op_node_and_opset(tmp_path):
    model = make_model([helper.make_node("NonZero", ["x"], ["y"], name="nz")], {"x": X}, ["y"], opset=13)
    with pytest.raises(UnsupportedOpError, match=r"NonZero node 'nz' \(opset 13\).*not supported"):
        compile_model(model, tmp_path)


def test_unsupported_attribute_value(tmp_path):
    model = make_model([helper.make_node("Pad", ["x", "p"], ["y"], name="pad", mode="bogus")], {"x": X}, ["y"],
                       initializers={"p": np.zeros(8, dtype=np.int64)}, opset=13)
    with pytest.raises(UnsupportedOpError, match=r"Pad node 'pad'.*Pad-13.*mode='bogus'"):
        compile_model(model, tmp_path)


def test_unknown_attribute_is_refused(tmp_path):
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r", flavour=3)], {"x": X}, ["y"], opset=14)
    with pytest.raises(UnsupportedOpError, match=r"Relu node 'r'.*attribute\(s\) \['flavour'\]"):
        compile_model(model, tmp_path)


def test_if_is_refused_as_control_flow(tmp_path):
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["o"])], "b", [],
                               [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
    node = helper.make_node("If", ["c"], ["y"], name="cond", then_branch=branch, else_branch=branch)
    model = make_model([node], {"x": X, "c": np.array(True)}, ["y"], opset=13)
    with pytest.raises(UnsupportedOpError, match=r"If node 'cond'.*control flow"):
        compile_model(model, tmp_path)


def test_symbolic_dim_without_shapes_names_the_input(tmp_path):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": X}, ["y"])
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    with pytest.raises(ModelError, match=r"ONNX input 'x' has symbolic dimensions \['batch', 3, 4, 4\].*--shapes x:"):
        compile_model(model, tmp_path)
    plan = compile_model(model, tmp_path, shapes="x:2x3x4x4")
    assert plan.model.inputs[0].shape == (2, 3, 4, 4)


def test_shapes_must_agree_with_fixed_dims(tmp_path):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": X}, ["y"])
    with pytest.raises(ModelError, match="--shapes x"):
        compile_model(model, tmp_path, shapes="x:1x5x4x4")
    with pytest.raises(ModelError, match="not inputs of the ONNX model"):
        compile_model(model, tmp_path, shapes="z:1x3")


def test_shapes_as_a_dict(tmp_path):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": X}, ["y"])
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    plan = compile_model(model, tmp_path, shapes={"x": (5, 3, 4, 4)})
    assert plan.model.inputs[0].shape == (5, 3, 4, 4)
    plan = compile_model(model, tmp_path, shapes={"x": ([2, 3, 4, 4], "float32")})
    assert plan.model.inputs[0].shape == (2, 3, 4, 4)
    with pytest.raises(ModelError, match="not inputs of the ONNX model"):
        compile_model(model, tmp_path, shapes={"z": (1, 3)})
    with pytest.raises(ModelError, match="--shapes x: the ONNX input has rank 4"):
        compile_model(model, tmp_path, shapes={"x": (2, 3)})


@pytest.mark.parametrize("shapes, message", [
    ({1: (1, 3)}, r"keys must be input names.*found 1"),
    ({"x": "1x3x4x4"}, r"shapes\['x'\]: expected a tuple of positive ints.*found '1x3x4x4'"),
    ({"x": (1, 3.0, 4, 4)}, r"shapes\['x'\]: expected a tuple of positive ints"),
    ({"x": (0, 3, 4, 4)}, r"shapes\['x'\]: dimensions must be positive, found \[0, 3, 4, 4\]"),
    ({"x": ((1, 3, 4, 4), "complex")}, r"shapes\['x'\]: dtype must be one of .*found 'complex'"),
    ([("x", (1, 3))], r"shapes: expected a string like 'x:1x3x224x224' or a dict.*found list"),
])
def test_bad_shapes_dict_is_refused(tmp_path, shapes, message):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": X}, ["y"])
    with pytest.raises(ModelError, match=message):
        compile_model(model, tmp_path, shapes=shapes)


def test_shape_operand_computed_at_run_time(tmp_path):
    model = make_model([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")],
                       {"x": X, "s": np.array([1, -1], dtype=np.int64)}, ["y"], opset=14)
    with pytest.raises(UnsupportedOpError, match=r"Reshape node 'rs'.*input 1 \(shape\) 's' is computed at run time"):
        compile_model(model, tmp_path)


def test_foreign_domain_and_old_opset(tmp_path):
    node = helper.make_node("FusedGemm", ["x"], ["y"], name="fg", domain="com.microsoft")
    model = make_model([node], {"x": X}, ["y"])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(UnsupportedOpError, match="domain 'com.microsoft'"):
        compile_model(model, tmp_path)


def test_opset_8_model_is_upgraded(tmp_path):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": X - 1}, ["y"], opset=8, ir_version=3)
    _, (y,) = run_opara(save(model, tmp_path), [X - 1])
    assert float(y.abs().max()) == 0.0


def test_unsupported_op_says_what_to_do(tmp_path):
    model = make_model([helper.make_node("Hardmax", ["x"], ["y"], name="hm")], {"x": X}, ["y"], opset=13)
    with pytest.raises(UnsupportedOpError) as e:
        compile_model(model, tmp_path)
    message = str(e.value)
    assert "Hardmax node 'hm' (opset 13): operator Hardmax is not supported by the ONNX importer" in message
    assert "compile the PyTorch module instead (oparac.compile(module, example_inputs)" in message
    assert "dynamo=True or dynamo=False) or another opset_version" in message


@pytest.mark.parametrize("op, advice", [
    ("NonZero", "output shape depends on the input's values"),
    ("SequenceEmpty", "export with torch.onnx.export(..., dynamo=True)"),
    ("DequantizeLinear", "compile the float model (before quantization)"),
    ("LSTM", "its front end keeps recurrent layers as ATen ops"),
])
def test_unsupported_op_advice_by_family(tmp_path, op, advice):
    model = make_model([helper.make_node(op, ["x"], ["y"], name="n")], {"x": X}, ["y"], opset=17)
    with pytest.raises(UnsupportedOpError, match=rf"{op} node 'n' \(opset 17\): operator {op} is not supported") as e:
        compile_model(model, tmp_path)
    assert advice in str(e.value)


def test_foreign_domain_and_control_flow_say_what_to_do(tmp_path):
    node = helper.make_node("FusedGemm", ["x"], ["y"], name="fg", domain="com.microsoft")
    model = make_model([node], {"x": X}, ["y"])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(UnsupportedOpError, match="onnxruntime's contrib ops.*before onnxruntime's optimizations"):
        compile_model(model, tmp_path)
    body = helper.make_graph([], "b", [], [])
    node = helper.make_node("Loop", ["", ""], [], name="lp", body=body)
    model = make_model([node, helper.make_node("Relu", ["x"], ["y"])], {"x": X}, ["y"], opset=13)
    with pytest.raises(UnsupportedOpError, match=r"Loop node 'lp'.*control flow.*unroll Python loops.*"
                                                 r"compile the PyTorch module instead"):
        compile_model(model, tmp_path)


def test_op_version_too_old_says_which_opset(tmp_path):
    model = make_model([helper.make_node("Gelu", ["x"], ["y"], name="g")], {"x": X}, ["y"], opset=20)
    model.opset_import[0].version = 19  # Gelu-20 is the first; onnx resolves nothing older
    with pytest.raises(UnsupportedOpError, match="does not exist in ONNX opset 19"):
        compile_model(model, tmp_path)
