"""ONNX model -> plan graph: each ONNX node lowered to ATen calls, shape computations folded at compile time."""
from __future__ import annotations

from pathlib import Path

import torch

from opara_plan import ModelError, OutTree, Ref, UnsupportedOpError
from oparac.ingest.graph_builder import GraphBuilder
from oparac.ingest.onnx_ops import HANDLERS, ONNX_DTYPES, Context
from oparac.ingest.onnx_ops.advice import control_flow_advice, domain_advice, op_advice
from oparac.ingest.onnx_ops.base import type_name

MIN_OPSET = 9
# Initializers above this many elements are weights: ops on them run at deploy time on param nodes (so new
# weights in the .onnx file take effect) instead of being folded into plan constants.
FOLD_LIMIT = 4096
# A value computed at compile time (ConstantOfShape, Expand of a scalar, Range, Tile...) larger than this is not
# embedded in the plan: the nodes that compute it are emitted as graph ops (aten.full, aten.expand of a small
# constant...), so a model whose weights are made inside the graph stays a small plan.
EMBED_LIMIT_BYTES = 1 << 20
CONTROL_FLOW = ("If", "Loop", "Scan", "SequenceMap")


def graph_from_onnx(path: Path, shapes: dict, dtype: str) -> GraphBuilder:
    """Import an .onnx file. shapes: input name -> (shape, dtype str) fixing symbolic dimensions."""
    return OnnxImporter(load_onnx(Path(path)), shapes or {}, dtype).run()


def load_onnx(path: Path):
    """The model with external data loaded (relative to its folder) and local functions inlined."""
    import onnx.inliner

    from opara_runtime.onnx_weights import read_onnx

    model = read_onnx(path, external_data=True)
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    return upgrade_opset(model)


def upgrade_opset(model):
    """Models older than opset 9 are converted to opset 9 with onnx's version converter."""
    import onnx.version_converter

    opset = model_opset(model)
    if opset >= MIN_OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as e:
        raise ModelError(f"ONNX model: opset {opset} is older than {MIN_OPSET} and onnx's version converter "
                         f"cannot upgrade it: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def model_opset(model) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ModelError("ONNX model: no opset is imported for the default domain (ai.onnx)")


def tensor_from_proto(proto) -> torch.Tensor:
    """An initializer or attribute TensorProto as a CPU tensor (external data already loaded)."""
    import numpy as np
    from onnx import numpy_helper

    if proto.data_type not in ONNX_DTYPES:
        raise UnsupportedOpError(f"tensor {proto.name!r}: element type {proto.data_type} is not supported")
    if proto.data_type == 16:  # bfloat16: numpy has no such type, go through its bits
        bits = numpy_helper.to_array(proto).view(np.uint16)
        return torch.from_numpy(bits.copy()).view(torch.bfloat16)
    array = numpy_helper.to_array(proto)
    return torch.from_numpy(np.array(array, copy=True)).to(ONNX_DTYPES[proto.data_type])


class OnnxImporter:
    def __init__(self, model, shapes: dict, dtype: str) -> None:
        self.model = model
        self.graph = model.graph
        self.shapes = shapes
        self.float_dtype = getattr(torch, dtype)
        self.opset = model_opset(model)
        self.builder = GraphBuilder()
        self.values: dict[str, object] = {}  # value name -> CPU tensor (compile-time) or Ref
        self.origin: dict[str, str] = {}  # value name -> initializer it is (through Identity)
        self.params: dict[str, Ref] = {}
        self.constants: dict[int, tuple[torch.Tensor, Ref]] = {}
        # value name -> (node, its index in the graph, op version) of a large folded value; the Ref it became
        self.recipes: dict[str, tuple[object, int, int]] = {}
        self.rebuilt: dict[str, Ref] = {}
        self.node_index = 0

    def run(self) -> GraphBuilder:
        import onnx

        latest = onnx.defs.onnx_opset_version()
        if not MIN_OPSET <= self.opset <= latest:
            raise ModelError(f"ONNX model: opset {self.opset} is not supported (expected {MIN_OPSET} to {latest}, "
                             f"the newest the installed onnx {onnx.__version__} knows); re-export with "
                             f"opset_version={latest} or lower, or upgrade onnx")
        if self.graph.sparse_initializer:
            raise UnsupportedOpError("ONNX model: sparse initializers are not supported")
        for init in self.graph.initializer:
            self.values[init.name] = tensor_from_proto(init)
            self.origin[init.name] = init.name
        self._inputs()
        for k, node in enumerate(self.graph.node):
            self.node_index = k
            self._lower(node)
        self._outputs()
        return self.builder

    # -- graph inputs and outputs ---------------------------------------------------------------------
    def _inputs(self) -> None:
        names = [i.name for i in self.graph.input if i.name not in self.values]
        unknown = sorted(set(self.shapes) - set(names))
        if unknown:
            raise ModelError(f"--shapes names {unknown}, which are not inputs of the ONNX model "
                             f"(inputs: {names})")
        for vi in self.graph.input:
            if vi.name in self.values:  # IR < 4: initializers are listed as inputs too
                continue
            tt = vi.type.tensor_type
            if not vi.type.HasField("tensor_type"):
                raise UnsupportedOpError(f"ONNX input {vi.name!r}: only tensor inputs are supported (found a "
                                         f"{vi.type.WhichOneof('value')})")
            if tt.elem_type not in ONNX_DTYPES:
                raise UnsupportedOpError(f"ONNX input {vi.name!r}: element type {type_name(tt.elem_type)} is not "
                                         f"supported (supported: {', '.join(type_name(t) for t in ONNX_DTYPES)})")
            dtype = ONNX_DTYPES[tt.elem_type]
            if dtype == torch.float32:
                dtype = self.float_dtype
            self.values[vi.name] = self.builder.input(vi.name, self._input_shape(vi), dtype)

    def _input_shape(self, vi) -> tuple[int, ...]:
        dims = vi.type.tensor_type.shape.dim
        declared = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
        if vi.name in self.shapes:
            given = tuple(self.shapes[vi.name][0])
            if vi.type.tensor_type.HasField("shape") and len(given) != len(declared):
                raise ModelError(f"--shapes {vi.name}: the ONNX input has rank {len(declared)} {declared}, "
                                 f"found {len(given)} dimensions {list(given)}")
            for g, d in zip(given, declared):
                if isinstance(d, int) and d != g:
                    raise ModelError(f"--shapes {vi.name}: the ONNX input's shape is {declared}, found "
                                     f"{list(given)}")
            return given
        if not vi.type.tensor_type.HasField("shape"):
            raise ModelError(f"ONNX input {vi.name!r} has no declared shape; give it with --shapes "
                             f"{vi.name}:DxDx...")
        symbolic = [d for d in declared if not isinstance(d, int)]
        if symbolic:
            example = "x".join(str(d) if isinstance(d, int) else "N" for d in declared)
            raise ModelError(f"ONNX input {vi.name!r} has symbolic dimensions {declared}; fix them with "
                             f"--shapes {vi.name}:{example} (shapes={{'{vi.name}': (shape, dtype)}} from Python)")
        return tuple(declared)

    def _outputs(self) -> None:
        refs = []
        for vi in self.graph.output:
            if vi.name not in self.values:
                raise ModelError(f"ONNX output {vi.name!r} is not produced by any node")
            refs.append(self.runtime(vi.name))
        if len(refs) == 1:
            tree = OutTree("tensor", 0)
        else:
            tree = OutTree("tuple", children=tuple(OutTree("tensor", k) for k in range(len(refs))))
        self.builder.output(refs, tree)

    # -- values ---------------------------------------------------------------------------------------
    def tensor_of(self, proto) -> torch.Tensor:
        return tensor_from_proto(proto)

    def runtime(self, name: str) -> Ref:
        """The value as a graph Ref: initializers become param nodes, large computed values the ops that compute
        them, other constants constant nodes."""
        v = self.values[name]
        if isinstance(v, Ref):
            return v
        init = self.origin.get(name)
        if init is not None:
            if init not in self.params:
                dtype = self.float_dtype if v.dtype == torch.float32 else v.dtype
                self.params[init] = self.builder.param(init, tuple(v.shape), dtype)
            return self.params[init]
        if name in self.recipes:
            return self.rebuild(name)
        return self.constant_node(v, name)

    def rebuild(self, name: str) -> Ref:
        """A large folded value as graph ops: its node lowered again, not folded, its inputs as Refs in turn."""
        if name in self.rebuilt:
            return self.rebuilt[name]
        node, index, version = self.recipes[name]
        ctx = Context(self, node, version, fold=False, index=index)
        result = HANDLERS[node.op_type].fn(ctx)
        outputs = list(result) if isinstance(result, (list, tuple)) else [result]
        for k, out_name in enumerate(node.output):
            if out_name in self.recipes and out_name not in self.rebuilt:
                self.rebuilt[out_name] = self._rebuilt_ref(node, out_name, outputs[k])
        return self.rebuilt[name]

    def _rebuilt_ref(self, node, name: str, out) -> Ref:
        if isinstance(out, torch.Tensor):
            # a handler that passes an input through (Identity, Dropout...) gives that input's value back
            source = next((i for i in node.input if i and self.values[i] is out), None)
            out = self.runtime(source) if source is not None else self.constant_node(out, name)
        folded, meta = self.values[name], self.builder.meta_of(out)
        want = self.float_dtype if folded.dtype == torch.float32 else folded.dtype
        if tuple(meta.shape) != tuple(folded.shape) or meta.dtype != want:
            raise ModelError(f"{node.op_type} node {node.name or '(unnamed)'!r}: rebuilding its output {name!r} "
                             f"as graph ops gave {meta.dtype}{list(meta.shape)}, folding it gave "
                             f"{want}{list(folded.shape)} (an importer bug)")
        return out

    def constant_node(self, t: torch.Tensor, name: str = "") -> Ref:
        hit = self.constants.get(id(t))
        if hit is not None and hit[0] is t:
            return hit[1]
        data = t.to(self.float_dtype) if t.dtype == torch.float32 else t
        ref = self.builder.constant(name or f"const_{len(self.builder.nodes)}", data.contiguous())
        self.constants[id(t)] = (t, ref)
        return ref

    # -- nodes ----------------------------------------------------------------------------------------
    def _lower(self, node) -> None:
        where = f"{node.op_type} node {node.name or '(unnamed)'!r} (opset {self.opset})"
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOpError(f"{where}: operators of domain {node.domain!r} are not supported "
                                     f"(only the default ONNX domain); {domain_advice(node.domain)}")
        if node.op_type in CONTROL_FLOW:
            raise UnsupportedOpError(f"{where}: control flow ({node.op_type}) is not supported, since a CUDA graph "
                                     f"replays one static sequence of kernels; {control_flow_advice()}")
        handler = HANDLERS.get(node.op_type)
        if handler is None:
            raise UnsupportedOpError(f"{where}: operator {node.op_type} is not supported by the ONNX importer; "
                                     f"{op_advice(node.op_type)}")
        version = self._since_version(node.op_type)
        if version < handler.min_version:
            raise UnsupportedOpError(f"{where}: {node.op_type}-{version} is not supported (from "
                                     f"{node.op_type}-{handler.min_version} on); re-export with "
                                     f"opset_version={handler.min_version} or later")
        for name in node.input:
            if name and name not in self.values:
                raise ModelError(f"{where}: input {name!r} is not produced before this node (the graph must "
                                 f"be topologically sorted)")
        ctx = Context(self, node, version, fold=self._foldable(node))
        result = handler.fn(ctx)
        unread = ctx.unread_attrs()
        if unread:
            raise ctx.unsupported(f"attribute(s) {unread}")
        outputs = list(result) if isinstance(result, (list, tuple)) else [result]
        for k, name in enumerate(node.output):
            if not name:
                continue
            if k >= len(outputs) or outputs[k] is None:
                raise ctx.unsupported(f"output {k} ({name!r})")
            self.values[name] = outputs[k]
            if self._large_computed(node, outputs[k]):
                self.recipes[name] = (node, self.node_index, version)
        if node.op_type == "Identity" and node.input[0] in self.origin:
            self.origin[node.output[0]] = self.origin[node.input[0]]

    def _since_version(self, op_type: str) -> int:
        import onnx

        try:
            return onnx.defs.get_schema(op_type, self.opset, "").since_version
        except Exception:
            raise UnsupportedOpError(f"operator {op_type} does not exist in ONNX opset {self.opset}") from None

    @staticmethod
    def _large_computed(node, value) -> bool:
        """A folded value too large to embed that its node can compute at run time (a Constant's is data)."""
        if not isinstance(value, torch.Tensor) or node.op_type == "Constant":
            return False
        return value.numel() * value.element_size() > EMBED_LIMIT_BYTES

    def _foldable(self, node) -> bool:
        """All inputs known at compile time, and none of them a weight (see FOLD_LIMIT)."""
        present = [n for n in node.input if n]
        for name in present:
            v = self.values[name]
            if not isinstance(v, torch.Tensor):
                return False
            if name in self.origin and v.numel() > FOLD_LIMIT:
                return False
        return True
