"""The per-node lowering context, the handler registry and ONNX dtype tables shared by every op family."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from opara_plan import Ref, UnsupportedOpError
# uint16/32/64 are in the table but have few ATen kernels: see unsigned.py.
from opara_runtime.onnx_weights import ONNX_DTYPES
from oparac.ingest.onnx_ops.unsigned import check_kernel


aten = torch.ops.aten


class CompileTimeValueError(UnsupportedOpError):
    """An operand that fixes a shape (axes, pads, a target shape...) is only known at run time."""

    def __init__(self, message: str, value: str) -> None:
        super().__init__(message)
        self.value = value


@dataclass(frozen=True)
class Handler:
    fn: Callable
    min_version: int  # the first since_version of the op this handler implements


HANDLERS: dict[str, Handler] = {}


def handles(*op_types: str, since: int = 1):
    """Register `fn(ctx) -> value or list of values` as the lowering of `op_types` from opset `since` on."""
    def deco(fn):
        for t in op_types:
            HANDLERS[t] = Handler(fn, since)
        return fn
    return deco


class Context:
    """One ONNX node being lowered.

    In fold mode every input is a CPU tensor known at compile time and `op` evaluates eagerly; otherwise
    `op` appends a node to the graph. Handlers are written once and work in both modes.
    """

    def __init__(self, importer, node, version: int, fold: bool, index: int | None = None) -> None:
        self.importer = importer
        self.node = node
        self.version = version  # since_version of the op's definition in the model's opset
        self.fold = fold
        self.index = importer.node_index if index is None else index  # the node's place in the graph: op names
        self.attrs = {a.name: a for a in node.attribute}
        self.read: set[str] = set()
        self._ops = 0

    # -- errors ---------------------------------------------------------------------------------------
    def where(self) -> str:
        return (f"{self.node.op_type} node {self.node.name or '(unnamed)'!r} (opset {self.importer.opset}, "
                f"{self.node.op_type}-{self.version})")

    def unsupported(self, what: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"{self.where()}: {what} is not supported")

    # -- attributes -----------------------------------------------------------------------------------
    def attr(self, name: str, default=None):
        self.read.add(name)
        a = self.attrs.get(name)
        if a is None:
            return default
        import onnx

        value = onnx.helper.get_attribute_value(a)
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, list):
            return [v.decode() if isinstance(v, bytes) else v for v in value]
        if isinstance(value, onnx.TensorProto):
            return self.importer.tensor_of(value)
        return value

    def unread_attrs(self) -> list[str]:
        return sorted(set(self.attrs) - self.read)

    # -- inputs ---------------------------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        return len(self.node.input)

    def has(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def is_const(self, i: int) -> bool:
        return self.has(i) and isinstance(self.importer.values[self.node.input[i]], torch.Tensor)

    def input(self, i: int):
        """Input i as a tensor (fold mode) or a graph Ref (constants become param/constant nodes)."""
        if not self.has(i):
            return None
        name = self.node.input[i]
        if self.fold:
            return self.importer.values[name]
        return self.importer.runtime(name)

    def const(self, i: int, what: str = "") -> torch.Tensor | None:
        """Input i, which must be known at compile time (a shape, axes, pads...)."""
        if not self.has(i):
            return None
        v = self.importer.values[self.node.input[i]]
        if not isinstance(v, torch.Tensor):
            raise CompileTimeValueError(
                f"{self.where()}: input {i} ({what or 'operand'}) {self.node.input[i]!r} is computed at run time; "
                f"it must be a compile-time constant (an initializer, a Constant or a shape computation), "
                f"because plans have static shapes", self.node.input[i])
        return v

    def ints(self, i: int, what: str = "") -> list[int] | None:
        v = self.const(i, what)
        return None if v is None else [int(x) for x in v.reshape(-1).tolist()]

    def meta(self, i: int) -> torch.Tensor:
        v = self.importer.values[self.node.input[i]]
        return v if isinstance(v, torch.Tensor) else self.importer.builder.meta_of(v)

    def shape(self, i: int) -> list[int]:
        return list(self.meta(i).shape)

    def dtype(self, i: int) -> torch.dtype:
        return self.meta(i).dtype

    def rank(self, i: int) -> int:
        return self.meta(i).dim()

    def onnx_dtype(self, elem_type: int) -> torch.dtype:
        """An ONNX element type as it is computed here: FLOAT is the plan's float dtype at run time."""
        dt = ONNX_DTYPES.get(elem_type)
        if dt is None:
            raise self.unsupported(f"element type {elem_type} ({type_name(elem_type)})")
        if dt == torch.float32 and not self.fold:
            return self.importer.float_dtype
        return dt

    # -- emitting -------------------------------------------------------------------------------------
    def op(self, overload, *args, **kwargs):
        """Call an ATen overload: eagerly in fold mode, else as a graph node named after the ONNX node."""
        check_kernel(self, overload, args + tuple(kwargs.values()))
        if self.fold:
            return overload(*args, **kwargs)
        base = self.node.name or f"{self.node.op_type}_{self.index}"
        name = base if self._ops == 0 else f"{base}:{self._ops}"
        self._ops += 1
        return self.importer.builder.op(overload, args, kwargs, name=name)

    def value_meta(self, v) -> torch.Tensor:
        return v if isinstance(v, torch.Tensor) else self.importer.builder.meta_of(v)

    def constant(self, t: torch.Tensor):
        """A tensor computed at compile time used as an operand here: itself when folding, else a node."""
        return t if self.fold else self.importer.constant_node(t)


def type_name(elem_type: int) -> str:
    import onnx

    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return "unknown"


def norm_axis(axis: int, rank: int, ctx: Context | None = None) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < max(rank, 1):
        where = f"{ctx.where()}: " if ctx else ""
        raise UnsupportedOpError(f"{where}axis {axis} is out of range for rank {rank}")
    return a


def is_ref(v) -> bool:
    return isinstance(v, Ref)
