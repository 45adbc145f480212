"""What to do about an ONNX op the importer refuses: advice by family of op, domain and control flow."""
from __future__ import annotations

PYTORCH = ("compile the PyTorch module instead (oparac.compile(module, example_inputs), or `oparac compile "
           "package.module:factory`)")
REEXPORT = ("re-export with the other torch.onnx exporter (dynamo=True or dynamo=False) or another opset_version, "
            "which may spell it with supported ops (docs/onnx.md lists them)")

_DATA_DEPENDENT = frozenset({"NonZero", "Unique", "Compress", "NonMaxSuppression", "StringSplit", "RegexFullMatch"})
_QUANTIZED = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                        "QLinearMatMul", "ConvInteger", "MatMulInteger"})
_RANDOM = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli",
                     "Multinomial"})
_RECURRENT = frozenset({"LSTM", "GRU", "RNN"})
_FROM_OPSET_23 = frozenset({"Attention", "RMSNormalization", "RotaryEmbedding"})


def op_advice(op_type: str) -> str:
    """The way around an unsupported op of the default domain, as a clause to follow the refusal."""
    if op_type in _DATA_DEPENDENT:
        return (f"{op_type}'s output shape depends on the input's values and a plan has static shapes (one CUDA "
                f"graph): compute a fixed-size result in the model instead (a mask rather than indices)")
    if op_type.startswith(("Sequence", "Optional")) or op_type in ("SplitToSequence", "ConcatFromSequence"):
        return (f"tensor sequences and optionals are not supported: export with torch.onnx.export(..., "
                f"dynamo=True), which writes lists of tensors as separate values, or {PYTORCH}")
    if op_type in _QUANTIZED or op_type.startswith("QLinear"):
        return "quantized graphs are not supported: compile the float model (before quantization), or " + PYTORCH
    if op_type in _RANDOM:
        return ("random ops are not supported (a plan replays the same kernels): export the model in eval mode "
                "without sampling, or " + PYTORCH)
    if op_type in _RECURRENT:
        return f"{PYTORCH}: its front end keeps recurrent layers as ATen ops (aten.lstm, aten.gru...)"
    if op_type in _FROM_OPSET_23:
        return (f"exporters write {op_type} from opset 23 on: re-export with opset_version=22 or lower, which "
                f"spells it out in supported ops, or {PYTORCH}")
    return f"{PYTORCH}, or {REEXPORT}"


def domain_advice(domain: str) -> str:
    """The way around a node of a non-default domain."""
    if domain == "com.microsoft":
        return ("these are onnxruntime's contrib ops, written by its transformer optimizer or quantization tools: "
                "compile the model as the exporter wrote it, before onnxruntime's optimizations")
    if domain.startswith("org.pytorch"):
        return ("export without operator_export_type=ONNX_ATEN_FALLBACK (or with dynamo=True), or " + PYTORCH)
    return f"custom ops cannot be compiled: {PYTORCH}"


def control_flow_advice() -> str:
    return ("export with fixed shapes from traced code (both torch.onnx exporters unroll Python loops; "
            "torch.jit.script, torch.cond and data-dependent branches become If/Loop), or " + PYTORCH)
