"""Opara as an onnx.backend.base.Backend: prepare() compiles a ModelProto into a plan, run() executes it."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from opara_plan import ModelError
from oparac.ingest.onnx_ops import CompileTimeValueError


def _device_str(device: str) -> str:
    d = Device(device)
    return "cuda" if d.type == DeviceType.CUDA else "cpu"


class OparaRep(BackendRep):
    """A model ready to run.

    Plans have static shapes, so what fixes a shape must be known when compiling: symbolic input dimensions
    are fixed by the inputs of the first run, and a graph input that feeds a shape operand (Reshape's shape,
    Squeeze's axes...) is compiled in as a constant with the value given. One plan per distinct set of such
    shapes and values.
    """

    def __init__(self, model: onnx.ModelProto, device: str, dtype: str = "float32") -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="opara-onnx-")
        self.model = model
        self.device = _device_str(device)
        self.dtype = dtype
        init = {i.name for i in model.graph.initializer}
        self.inputs = [vi for vi in model.graph.input if vi.name not in init]
        self.baked: set[str] = set()
        self._runners: dict[tuple, object] = {}
        if all(_static(vi) for vi in self.inputs):
            try:
                self._compile({}, {})  # now, so that unsupported ops are reported by prepare()
            except CompileTimeValueError as e:
                if e.value not in {vi.name for vi in self.inputs}:
                    raise
                self.baked.add(e.value)

    def _compile(self, shapes: dict, values: dict):
        import opara_runtime
        from oparac.pipeline import compile as compile_plan

        model = self.model
        if values:
            model = onnx.ModelProto()
            model.CopyFrom(self.model)
            kept = [vi for vi in model.graph.input if vi.name not in values]
            del model.graph.input[:]
            model.graph.input.extend(kept)
            model.graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in values.items())
        path = Path(self._dir.name) / f"model_{len(self._runners)}.onnx"
        onnx.save(model, str(path))
        fixed = {k: tuple(s) for k, s in shapes.items() if k not in values}
        plan = compile_plan(path, None, device=self.device, dtype=self.dtype, shapes=fixed)
        return opara_runtime.load(plan, path, device=self.device)

    def _runner(self, arrays: dict):
        while True:
            shapes = {vi.name: arrays[vi.name].shape for vi in self.inputs if not _static(vi)}
            values = {k: arrays[k] for k in sorted(self.baked)}
            key = (tuple(sorted(shapes.items())), tuple((k, v.dtype.str, v.shape, v.tobytes())
                                                        for k, v in values.items()))
            if key in self._runners:
                return self._runners[key]
            try:
                self._runners[key] = self._compile(shapes, values)
                return self._runners[key]
            except CompileTimeValueError as e:
                if e.value not in arrays or e.value in self.baked:
                    raise
                self.baked.add(e.value)

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            inputs = [inputs[vi.name] for vi in self.inputs]
        elif not isinstance(inputs, (list, tuple)):
            inputs = [inputs]
        if len(inputs) != len(self.inputs):
            raise ModelError(f"the model takes {len(self.inputs)} inputs, got {len(inputs)}")
        arrays = {vi.name: _array(x, vi) for vi, x in zip(self.inputs, inputs)}
        runner = self._runner(arrays)
        tensors = [_tensor(arrays[vi.name]).to(runner.device) for vi in self.inputs if vi.name not in self.baked]
        out = runner(*tensors)
        outs = out if isinstance(out, tuple) else (out,)
        return tuple(_numpy(o) for o in outs)


def _array(x, vi) -> np.ndarray:
    """An input as a numpy array of the model's declared element type (test data may hold objects)."""
    if isinstance(x, onnx.TensorProto):
        x = onnx.numpy_helper.to_array(x)
    x = np.asarray(x)
    if x.dtype == object:
        x = x.astype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
    return x


def _tensor(x: np.ndarray) -> torch.Tensor:
    if x.dtype.name == "bfloat16":  # ml_dtypes' bfloat16, which torch cannot read directly
        return torch.from_numpy(x.view(np.uint16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(x, copy=True))


def _numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.uint16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def node_model(node, inputs, outputs_info=None, opset: int | None = None) -> onnx.ModelProto:
    """A model whose graph is `node`, its inputs declared from the arrays given for them."""
    names = [n for n in node.input if n]
    if len(names) != len(inputs):
        raise ModelError(f"{node.op_type} node {node.name or '(unnamed)'!r}: it reads {len(names)} inputs "
                         f"{names}, got {len(inputs)} arrays")
    declared = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(np.asarray(x).dtype),
                                                   np.asarray(x).shape) for n, x in zip(names, inputs)]
    outputs = []
    for k, name in enumerate(node.output):
        if outputs_info and k < len(outputs_info):
            dtype, shape = outputs_info[k]
            outputs.append(onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape))
        else:
            outputs.append(onnx.helper.make_empty_tensor_value_info(name))
    graph = onnx.helper.make_graph([node], f"{node.op_type}_node", declared, outputs)
    opset = opset or onnx.defs.onnx_opset_version()
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    # onnx's checker wants every graph output typed: shape inference fills those outputs_info left out.
    return onnx.shape_inference.infer_shapes(model)


def _static(vi) -> bool:
    t = vi.type.tensor_type
    return t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim)


class OparaBackend(Backend):
    @classmethod
    def is_compatible(cls, model, device: str = "CPU", **kwargs) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs) -> OparaRep:
        if isinstance(model, (str, Path)):
            model = onnx.load(str(model))
        super().prepare(model, device, **kwargs)
        return OparaRep(model, device, kwargs.get("dtype", "float32"))

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device: str = "CPU", outputs_info=None, **kwargs):
        """One node as a one-node model: inputs (arrays, in the node's input order) declare the graph inputs;
        outputs_info [(numpy dtype, shape)] declares the outputs where given. opset_version= picks the opset
        (default: the installed onnx's latest)."""
        super().run_node(node, inputs, device=device, outputs_info=outputs_info, **kwargs)
        return cls.run_model(node_model(node, inputs, outputs_info, kwargs.get("opset_version")), inputs, device)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        d = Device(device)
        if d.type == DeviceType.CPU:
            return True
        return d.type == DeviceType.CUDA and torch.cuda.is_available()


prepare = OparaBackend.prepare
run_model = OparaBackend.run_model
run_node = OparaBackend.run_node
supports_device = OparaBackend.supports_device
