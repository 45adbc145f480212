"""Builds a plan Graph node by node; every front end (torch.export, FX, ONNX) goes through it."""
from __future__ import annotations

import torch

from opara_plan import CONCAT_PARAM, Graph, Node, OutTree, Ref, Sym, TensorMeta, UnsupportedOpError
from opara_runtime.ops import constant_bytes, dtype_name, op_target, resolve_op

MAX_CONSTANT_BYTES = 64 * 1024 * 1024

_SYM_TYPES = {torch.dtype: "dtype", torch.device: "device", torch.layout: "layout",
              torch.memory_format: "memory_format"}


def tensor_meta(t: torch.Tensor, where: str) -> TensorMeta:
    shape = []
    for d in t.shape:
        if not isinstance(d, int):
            raise UnsupportedOpError(f"{where}: output shape {tuple(t.shape)} is data-dependent; "
                                     f"CUDA graphs need static shapes")
        shape.append(d)
    return TensorMeta(tuple(shape), dtype_name(t.dtype))


def to_arg(x, where: str):
    """A Python/torch value -> plan argument tree. Refs pass through."""
    if x is None or isinstance(x, (bool, int, float, str, Ref)):
        return x
    if isinstance(x, (list, tuple)):
        return tuple(to_arg(v, where) for v in x)
    for cls, kind in _SYM_TYPES.items():
        if isinstance(x, cls):
            value = dtype_name(x) if kind == "dtype" else str(x).removeprefix("torch.")
            return Sym(kind, "cuda" if kind == "device" else value)
    raise UnsupportedOpError(f"{where}: argument of type {type(x).__name__} ({x!r:.60}) cannot be "
                             f"stored in a plan (expected tensors, numbers, strings, dtypes, devices)")


class GraphBuilder:
    """Appends nodes in topological order and computes each op's output metadata.

    Output metadata comes from the caller when known (torch.export's fake tensors) or from running the
    op on 'meta' tensors, which checks the call is well-formed as a side effect.
    """

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self._meta: list[object] = []  # meta tensor, or tuple of them, per node
        self._constant_bytes = 0
        # (ops, groups) built as slices of merged linears or convolutions (ingest/merge_projections), and why
        # merging was given up where it was
        self.merged_projections = (0, 0)
        self.merge_refused = ""

    def _add(self, node: Node, meta) -> int:
        self.nodes.append(node)
        self._meta.append(meta)
        return len(self.nodes) - 1

    def meta_of(self, ref: Ref) -> torch.Tensor:
        m = self._meta[ref.node]
        return m[ref.index] if isinstance(m, tuple) else m

    def input(self, name: str, shape, dtype: torch.dtype) -> Ref:
        return self._leaf("input", name, shape, dtype)

    def param(self, name: str, shape, dtype: torch.dtype) -> Ref:
        return self._leaf("param", name, shape, dtype)

    def stacked_param(self, parts: list[str], shapes: list, dtype: torch.dtype) -> Ref:
        """A param that is the weights `parts` (of `shapes`) concatenated along dimension 0 at load (CONCAT_PARAM),
        named after them."""
        shape = (sum(s[0] for s in shapes), *shapes[0][1:])
        t = torch.empty(shape, dtype=dtype, device="meta")
        name = "+".join(parts)
        node = Node(kind="param", name=name, target=CONCAT_PARAM, args=tuple(parts),
                    outputs=(tensor_meta(t, f"param {name!r}"),))
        return Ref(self._add(node, t))

    def _leaf(self, kind: str, name: str, shape, dtype) -> Ref:
        t = torch.empty(tuple(shape), dtype=dtype, device="meta")
        node = Node(kind=kind, name=name, outputs=(tensor_meta(t, f"{kind} {name!r}"),))
        return Ref(self._add(node, t))

    def constant(self, name: str, value: torch.Tensor) -> Ref:
        data = constant_bytes(value)
        self._constant_bytes += len(data)
        if self._constant_bytes > MAX_CONSTANT_BYTES:
            raise UnsupportedOpError(f"constant {name!r}: embedded constants exceed {MAX_CONSTANT_BYTES} "
                                     f"bytes; register large tensors as parameters or buffers")
        meta = torch.empty(tuple(value.shape), dtype=value.dtype, device="meta")
        node = Node(kind="constant", name=name, outputs=(tensor_meta(meta, f"constant {name!r}"),), data=data)
        return Ref(self._add(node, meta))

    def op(self, op, args=(), kwargs=None, *, name: str = "", meta=None):
        """Append a call of ATen overload `op`. Returns a Ref, or a tuple of Refs for multi-output ops."""
        target = op if isinstance(op, str) else op_target(op)
        overload = resolve_op(target)
        where = f"node {name or target}"
        if overload._schema.is_mutable:
            raise UnsupportedOpError(f"{where}: {target} writes to its inputs; plans need functional ops "
                                     f"(export with run_decompositions)")
        args = to_arg(tuple(args), where)
        kwargs = tuple(sorted((k, to_arg(v, where)) for k, v in (kwargs or {}).items()))
        if meta is None:
            meta = self._run_meta(overload, args, kwargs, where)
        multi = isinstance(meta, (tuple, list))
        metas = tuple(meta) if multi else (meta,)
        for m in metas:
            if not isinstance(m, torch.Tensor):
                raise UnsupportedOpError(f"{where}: {target} returns a {type(m).__name__}, not a tensor; "
                                         f"host syncs and Python scalars cannot be captured in a CUDA graph")
        node = Node(kind="op", name=name or f"{overload._opname}_{len(self.nodes)}", target=target,
                    args=args, kwargs=kwargs, outputs=tuple(tensor_meta(m, where) for m in metas), multi=multi)
        i = self._add(node, tuple(metas) if multi else metas[0])
        return tuple(Ref(i, k) for k in range(len(metas))) if multi else Ref(i)

    def _run_meta(self, overload, args, kwargs, where):
        def real(a):
            if isinstance(a, Ref):
                m = self.meta_of(a)
                # export's fake tensors carry the model's device: the same layout on 'meta', so they mix with
                # the meta tensors of weights and of ops built here
                return m if m.is_meta else torch.empty_strided(m.shape, m.stride(), dtype=m.dtype, device="meta")
            if isinstance(a, tuple):
                return [real(v) for v in a]
            if isinstance(a, Sym):
                from opara_runtime.ops import materialize
                return materialize(a, None, torch.device("meta"))
            return a
        try:
            return overload(*[real(a) for a in args], **{k: real(v) for k, v in kwargs})
        except Exception as e:
            raise UnsupportedOpError(f"{where}: {op_target(overload)} rejected its arguments: {e}") from None

    def output(self, refs, tree: OutTree) -> None:
        self._add(Node(kind="output", name="output", args=tuple(refs)), None)
        self.tree = tree

    def build(self) -> Graph:
        return Graph(tuple(self.nodes))
