"""The ONNX importer op by op: tiny one-node models against onnxruntime on the CPU, including opset variants."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from helpers.onnx_models import check_against_ort, make_model

R = np.random.default_rng(0)


def f32(*shape):
    return R.standard_normal(shape).astype(np.float32)


def i64(values):
    return np.array(values, dtype=np.int64)


_NAMES = iter(range(10**6))


def node(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), name=f"{op.lower()}_{next(_NAMES)}", **attrs)


X4 = f32(2, 3, 8, 8)
# (id, nodes, inputs, initializers, opset)
CASES = [
    ("conv_bias_pads", [node("Conv", "xwb", pads=[1, 1, 1, 1], strides=[2, 2])], {"x": X4},
     {"w": f32(4, 3, 3, 3), "b": f32(4)}, 17),
    ("conv_asym_same_upper_group", [node("Conv", "xw", auto_pad="SAME_UPPER", group=3, strides=[2, 2])], {"x": X4},
     {"w": f32(3, 1, 4, 4)}, 11),
    ("conv_transpose", [node("ConvTranspose", "xwb", strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])],
     {"x": X4}, {"w": f32(3, 2, 3, 3), "b": f32(2)}, 17),
    ("conv_transpose_output_shape", [node("ConvTranspose", "xw", strides=[2, 2], output_shape=[17, 17])],
     {"x": X4}, {"w": f32(3, 2, 3, 3)}, 17),
    ("batchnorm", [node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3)], {"x": X4},
     {"s": f32(3), "b": f32(3), "m": f32(3), "v": np.abs(f32(3)) + 0.5}, 15),
    ("instancenorm", [node("InstanceNormalization", "xsb")], {"x": X4}, {"s": f32(3), "b": f32(3)}, 17),
    ("layernorm", [node("LayerNormalization", "xsb", axis=-1)], {"x": f32(2, 5, 8)}, {"s": f32(8), "b": f32(8)},
     17),
    ("relu", [node("Relu", "x")], {"x": X4}, {}, 14),
    ("leaky_relu", [node("LeakyRelu", "x", alpha=0.2)], {"x": X4}, {}, 16),
    ("prelu", [node("PRelu", "xs")], {"x": X4}, {"s": f32(3, 1, 1)}, 16),
    ("sigmoid_tanh", [node("Sigmoid", "x", ["a"]), node("Tanh", "a")], {"x": X4}, {}, 13),
    ("hard_sigmoid", [node("HardSigmoid", "x", alpha=0.3, beta=0.4)], {"x": X4}, {}, 17),
    ("hard_swish", [node("HardSwish", "x")], {"x": X4}, {}, 17),
    ("gelu_tanh", [node("Gelu", "x", approximate="tanh")], {"x": X4}, {}, 20),
    ("erf", [node("Erf", "x")], {"x": X4}, {}, 13),
    ("clip_inputs", [node("Clip", "xab")], {"x": X4}, {"a": np.float32(-0.5), "b": np.float32(0.7)}, 13),
    ("clip_attrs_opset9", [node("Clip", "x", min=-0.5, max=0.5)], {"x": X4}, {}, 9),
    ("softplus", [node("Softplus", "x")], {"x": X4}, {}, 17),
    ("arith", [node("Add", "xw", ["a"]), node("Sub", "aw", ["b"]), node("Mul", "bx", ["c"]),
               node("Div", "cw", ["d"]), node("Pow", ["d", "p"])], {"x": X4},
     {"w": np.abs(f32(8)) + 1, "p": np.float32(2.0)}, 14),
    ("unary_math", [node("Abs", "x", ["a"]), node("Sqrt", "a", ["b"]), node("Reciprocal", "b", ["c"]),
                    node("Log", "c", ["d"]), node("Exp", "d", ["e"]), node("Neg", "e")], {"x": X4}, {}, 13),
    ("matmul_3d_2d", [node("MatMul", "xw")], {"x": f32(2, 5, 8)}, {"w": f32(8, 4)}, 13),
    ("matmul_strided_3d_2d", [node("Transpose", "x", ["t"], perm=[1, 0, 2]), node("MatMul", "tw")],
     {"x": f32(2, 5, 8)}, {"w": f32(8, 4)}, 13),
    ("matmul_batched", [node("MatMul", "xw")], {"x": f32(2, 3, 5, 8)}, {"w": f32(2, 3, 8, 4)}, 13),
    ("gemm_trans", [node("Gemm", "xwb", transB=1, alpha=0.5, beta=2.0)], {"x": f32(4, 8)},
     {"w": f32(6, 8), "b": f32(6)}, 13),
    ("einsum", [node("Einsum", "xw", equation="bij,bjk->bik")], {"x": f32(2, 3, 4)}, {"w": f32(2, 4, 5)}, 12),
    ("maxpool_ceil", [node("MaxPool", "x", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)], {"x": X4}, {}, 12),
    ("maxpool_asym_pads", [node("MaxPool", "x", kernel_shape=[2, 2], pads=[0, 0, 1, 1])], {"x": X4}, {}, 12),
    ("avgpool_pads", [node("AveragePool", "x", kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)],
     {"x": X4}, {}, 19),
    ("avgpool_same_lower", [node("AveragePool", "x", kernel_shape=[2, 2], auto_pad="SAME_LOWER")],
     {"x": X4}, {}, 11),
    ("global_pools", [node("GlobalAveragePool", "x", ["a"]), node("GlobalMaxPool", "x", ["b"]),
                      node("Add", "ab")], {"x": X4}, {}, 13),
    ("concat_split_opset13", [node("Split", "xs", ["a", "b"], axis=1), node("Concat", "ba", axis=1)],
     {"x": X4}, {"s": i64([1, 2])}, 13),
    ("split_attr_opset11", [node("Split", "x", ["a", "b"], axis=1, split=[2, 1]), node("Concat", "ba", axis=1)],
     {"x": X4}, {}, 11),
    ("split_num_outputs_opset18", [node("Split", "x", ["a", "b"], axis=2, num_outputs=2),
                                   node("Sub", "ab")], {"x": X4}, {}, 18),
    ("slice_steps", [node("Slice", ["x", "s", "e", "a", "t"])], {"x": X4},
     {"s": i64([1, -1]), "e": i64([100, 0]), "a": i64([2, 3]), "t": i64([2, -2])}, 13),
    ("slice_attrs_opset9", [node("Slice", "x", starts=[1], ends=[3], axes=[1])], {"x": X4}, {}, 9),
    ("gather_runtime_indices", [node("Gather", "wi", axis=0)], {"i": i64([[0, 2], [-1, 1]])}, {"w": f32(5, 4)},
     13),
    ("gather_const_scalar", [node("Gather", "xi", axis=1)], {"x": X4}, {"i": np.array(2, dtype=np.int64)}, 13),
    ("gather_elements", [node("GatherElements", "xi", axis=1)], {"x": f32(3, 4)},
     {"i": i64([[0, 3], [1, -1], [2, 2]])}, 13),
    ("reshape_flatten_transpose", [node("Reshape", "xs", ["a"]), node("Transpose", "a", ["b"], perm=[1, 0, 2]),
                                   node("Flatten", "b", axis=2)], {"x": X4}, {"s": i64([0, -1, 8])}, 14),
    ("squeeze_unsqueeze_opset13", [node("Unsqueeze", "xa", ["u"]), node("Squeeze", "ua")], {"x": X4},
     {"a": i64([1, -1])}, 13),
    ("squeeze_unsqueeze_opset11", [node("Unsqueeze", "x", ["u"], axes=[0, 5]), node("Squeeze", "u", axes=[0])],
     {"x": X4}, {}, 11),
    ("expand_tile", [node("Expand", "xs", ["a"]), node("Tile", "ar")], {"x": f32(3, 1)},
     {"s": i64([2, 3, 4]), "r": i64([1, 2, 1])}, 13),
    ("pad_constant", [node("Pad", "xpv")], {"x": X4}, {"p": i64([0, 0, 1, 2, 0, 0, 2, 1]), "v": np.float32(0.5)},
     13),
    ("pad_reflect_edge", [node("Pad", "xp", ["a"], mode="reflect"), node("Pad", "ap", mode="edge")], {"x": X4},
     {"p": i64([0, 0, 2, 1, 0, 0, 1, 2])}, 13),
    ("pad_attrs_opset9", [node("Pad", "x", pads=[0, 0, 1, 1, 0, 0, 1, 1], value=1.5)], {"x": X4}, {}, 9),
    ("resize_nearest_scales", [node("Resize", ["x", "", "s"], mode="nearest")], {"x": X4},
     {"s": np.array([1, 1, 2, 1.5], dtype=np.float32)}, 13),
    ("resize_linear_sizes", [node("Resize", ["x", "", "", "s"], mode="linear")], {"x": X4},
     {"s": i64([2, 3, 13, 5])}, 13),
    ("resize_linear_align_corners", [node("Resize", ["x", "roi", "s"], mode="linear",
                                          coordinate_transformation_mode="align_corners")], {"x": X4},
     {"s": np.array([1, 1, 2, 2], dtype=np.float32), "roi": np.zeros(0, dtype=np.float32)}, 11),
    ("resize_cubic", [node("Resize", ["x", "", "s"], mode="cubic")], {"x": X4},
     {"s": np.array([1, 1, 2, 2], dtype=np.float32)}, 13),
    ("upsample_opset9", [node("Upsample", "xs", mode="nearest")], {"x": X4},
     {"s": np.array([1, 1, 2, 2], dtype=np.float32)}, 9),
    ("softmax_opset11_coerced", [node("Softmax", "x", axis=1)], {"x": X4}, {}, 11),
    ("softmax_logsoftmax_opset13", [node("Softmax", "x", ["a"], axis=1), node("LogSoftmax", "a", axis=2)],
     {"x": X4}, {}, 13),
    ("lrn", [node("LRN", "x", size=3, alpha=1e-3, beta=0.75, bias=2.0)], {"x": X4}, {}, 13),
    ("sum_mean_min_max", [node("Sum", "xxw", ["a"]), node("Mean", "aw", ["b"]), node("Min", "bx", ["c"]),
                          node("Max", "cw")], {"x": X4}, {"w": f32(8)}, 13),
    ("reduce_opset13_axes_attr", [node("ReduceMean", "x", ["a"], axes=[2, 3]), node("ReduceMax", "a", ["b"], axes=[1]),
                                  node("ReduceMin", "b", axes=[0], keepdims=0)], {"x": X4}, {}, 13),
    ("reduce_opset18_axes_input", [node("ReduceMean", "xa", ["m"]), node("ReduceMax", "ma", ["n"]),
                                   node("ReduceSum", "na")], {"x": X4}, {"a": i64([-1])}, 18),
    ("reducesum_opset11_attr", [node("ReduceSum", "x", axes=[1], keepdims=0)], {"x": X4}, {}, 11),
    ("reducesum_opset13_input", [node("ReduceSum", "xa", keepdims=0)], {"x": X4}, {"a": i64([1])}, 13),
    ("argmax_last_index", [node("ArgMax", "x", axis=1, select_last_index=1)], {"x": np.round(X4)}, {}, 13),
    ("compare_logic_where", [node("Greater", "xw", ["g"]), node("Less", "xw", ["l"]), node("Equal", "gl", ["e"]),
                             node("Not", "e", ["n"]), node("And", "gn", ["c"]), node("Where", "cxw")],
     {"x": X4}, {"w": f32(8)}, 13),
    ("cast_int_float", [node("Cast", "x", ["a"], to=7), node("Cast", "a", to=1)], {"x": X4 * 4}, {}, 13),
    ("constants_and_shape_folding", [
        node("Shape", "x", ["s"]), node("Size", "x", ["n"]), node("Gather", ["s", "g"], ["c"], axis=0),
        node("Constant", [], ["k"], value=helper.make_tensor("k", 7, [1], [-1])),
        node("Unsqueeze", "ck", ["u"]), node("Concat", "uk", ["t"], axis=0),
        node("ConstantOfShape", "u", ["o"], value=helper.make_tensor("v", 1, [1], [2.0])),
        node("Range", ["z", "n", "d"], ["r"]), node("Cast", ["r"], ["rf"], to=1),
        node("ReduceSum", ["rf"], ["rs"], keepdims=0),
        node("Reshape", "xt", ["y0"]), node("Mul", ["y0", "rs"], ["y1"]), node("Identity", ["y1"], ["y2"]),
        node("Dropout", ["y2"], ["y3"]), node("Unsqueeze", ["o", "one"], ["o2"]), node("Add", ["y3", "o2"])],
     {"x": X4}, {"z": np.array(0, dtype=np.int64), "d": np.array(7, dtype=np.int64), "g": np.array(1, dtype=np.int64),
                "one": i64([1])},
     13),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op_matches_onnxruntime(case, tmp_path):
    _, nodes, inputs, inits, opset = case
    names = {o for n in nodes for o in n.output}
    last = nodes[-1].output[0]
    assert last in names
    model = make_model(nodes, inputs, [last], initializers=inits, opset=opset)
    check_against_ort(model, tmp_path, inputs)


def test_shape_computations_are_folded(tmp_path):
    case = next(c for c in CASES if c[0] == "constants_and_shape_folding")
    model = make_model(case[1], case[2], ["y"], initializers=case[3], opset=case[4])
    plan = check_against_ort(model, tmp_path, case[2])
    targets = [n.target for n in plan.graph.nodes if n.kind == "op"]
    assert targets == ["aten.view.default", "aten.mul.Tensor", "aten.add.Tensor"], targets


def test_float16_plan_declares_inputs_and_weights_in_float16(tmp_path):
    import torch

    inputs = {"x": f32(1, 3, 8, 8)}
    model = make_model([node("Conv", "xwb", pads=[1, 1, 1, 1]), ], inputs, ["y"],
                       initializers={"w": f32(4, 3, 3, 3), "b": f32(4)})
    from helpers.onnx_models import run_opara, save

    path = save(model, tmp_path)
    plan, (got,) = run_opara(path, [inputs["x"].astype(np.float16)], dtype="float16")
    assert {n.outputs[0].dtype for n in plan.graph.nodes if n.kind in ("input", "param")} == {"float16"}
    assert got.dtype == torch.float16


def test_strided_matmul_by_a_matrix_is_one_gemm(tmp_path):
    """A transposed activation times a weight: one mm over all rows after a copy, not a batch of small GEMMs."""
    case = next(c for c in CASES if c[0] == "matmul_strided_3d_2d")
    model = make_model(case[1], case[2], ["y"], initializers=case[3], opset=case[4])
    plan = check_against_ort(model, tmp_path, case[2])
    targets = [n.target for n in plan.graph.nodes if n.kind == "op"]
    assert targets == ["aten.permute.default", "aten.reshape.default", "aten.mm.default", "aten.view.default"], targets
