"""Turning plan nodes into torch calls: resolve ATen targets, materialize arguments, know which ops alias."""
from __future__ import annotations

import functools

import torch

from opara_plan import ExecutionError, Node, PlanMismatchError, Ref, Sym, node_refs

ALLOWED_NAMESPACES = ("aten", "prims")

_LAYOUTS = {"strided": torch.strided}  # plans run strided tensors only (admit refuses any other layout)
_MEMORY_FORMATS = {
    "contiguous_format": torch.contiguous_format, "channels_last": torch.channels_last,
    "preserve_format": torch.preserve_format, "channels_last_3d": torch.channels_last_3d,
}


def torch_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise PlanMismatchError(f"dtype {name!r} is not known to torch {torch.__version__}")
    return dtype


def spec_text(dtype: str, shape, device=None) -> str:
    """'float32[1, 3, 224, 224] on cuda:0': how errors show a tensor that was expected or found."""
    text = f"{dtype}[{', '.join(map(str, shape))}]"
    return f"{text} on {device}" if device is not None else text


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@functools.lru_cache(maxsize=None)
def resolve_op(target: str) -> torch._ops.OpOverload:
    """'aten.convolution.default' -> torch.ops.aten.convolution.default, only from allowed namespaces."""
    ns, name, overload = target.split(".")
    if ns not in ALLOWED_NAMESPACES:
        raise PlanMismatchError(f"op {target!r}: namespace {ns!r} is not allowed (expected one of "
                                f"{ALLOWED_NAMESPACES})")
    try:
        op = getattr(getattr(getattr(torch.ops, ns), name), overload)
    except (AttributeError, RuntimeError):
        raise PlanMismatchError(f"op {target!r} does not exist in torch {torch.__version__}") from None
    if not isinstance(op, torch._ops.OpOverload):
        raise PlanMismatchError(f"op {target!r} is not an operator overload")
    return op


# channels_last plans: aten.view needs strides that fit the new shape, which an NHWC tensor lacks when H and W
# are not 1 (the flatten before a classifier). reshape gives the same value: the view where the strides allow
# it, else a view of a contiguous copy. Only these targets change, and only in channels_last plans.
_RESHAPE = "aten.reshape.default"
_CHANNELS_LAST_TARGETS = {"aten.view.default": _RESHAPE, "aten._unsafe_view.default": _RESHAPE}


def plan_op(target: str, memory_format: str = "contiguous") -> torch._ops.OpOverload:
    """The overload that runs `target` in a plan of this memory format (resolve_op, or its stand-in)."""
    if memory_format == "channels_last":
        target = _CHANNELS_LAST_TARGETS.get(target, target)
    return resolve_op(target)


def in_layout(t: torch.Tensor, memory_format: str) -> torch.Tensor:
    """`t` made contiguous in the plan's layout: NHWC for 4-D floating-point tensors of channels_last plans,
    else NCHW. A tensor already so laid out is returned as it is, not copied."""
    if memory_format == "channels_last" and t.dim() == 4 and t.is_floating_point():
        return t.contiguous(memory_format=torch.channels_last)
    return t.contiguous()


def op_target(op: torch._ops.OpOverload) -> str:
    return f"{op.namespace}.{op._opname}.{op._overloadname}"


def op_packet(op: torch._ops.OpOverload) -> str:
    """The overload's packet, which names every overload of the op: namespace and op name, no overload name."""
    return f"{op.namespace}.{op._opname}"


@functools.lru_cache(maxsize=None)
def aliased_input(target: str) -> int | None:
    """Index of the argument whose storage the op's first output aliases (views), else None."""
    schema = resolve_op(target)._schema
    ret = schema.returns[0].alias_info if schema.returns else None
    if ret is None or ret.is_write:
        return None
    for i, arg in enumerate(schema.arguments):
        if arg.alias_info is not None and arg.alias_info.before_set & ret.before_set:
            return i
    return None


def materialize(arg, values, device: torch.device):
    """Argument tree -> torch call arguments. values[node] is a tensor or a tuple (multi-output op)."""
    if isinstance(arg, Ref):
        v = values[arg.node]
        return v[arg.index] if isinstance(v, (tuple, list)) else v
    if isinstance(arg, tuple):
        return [materialize(a, values, device) for a in arg]
    if isinstance(arg, Sym):
        if arg.kind == "dtype":
            return torch_dtype(arg.value)
        if arg.kind == "device":
            return device
        table = _LAYOUTS if arg.kind == "layout" else _MEMORY_FORMATS
        if arg.value not in table:
            raise PlanMismatchError(f"unknown {arg.kind} {arg.value!r} (expected one of {sorted(table)})")
        return table[arg.value]
    return arg


def run_node(node: Node, values, device: torch.device, memory_format: str = "contiguous"):
    op = plan_op(node.target, memory_format)
    args = [materialize(a, values, device) for a in node.args]
    kwargs = {k: materialize(v, values, device) for k, v in node.kwargs}
    return op(*args, **kwargs)


def input_specs(node: Node, values) -> str:
    """'float32[2, 3], int64[4]': the tensors a node reads, for messages about it."""
    shown = []
    for ref in node_refs(node):
        v = values[ref.node]
        v = v[ref.index] if isinstance(v, (tuple, list)) and ref.index < len(v) else v
        shown.append(spec_text(dtype_name(v.dtype), tuple(v.shape)) if isinstance(v, torch.Tensor) else "released")
    return ", ".join(shown) or "none"


def op_failure(node_id: int, node: Node, values, error: Exception, where: str) -> ExecutionError:
    """The Opara error for an op that raised while running: node, op, input shapes and torch's first line."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return ExecutionError(f"plan node {node_id} ({node.target} {node.name!r}) failed {where} on inputs "
                          f"({input_specs(node, values)}): {type(error).__name__}: {first[:300]}")


def constant_tensor(node: Node, device: torch.device) -> torch.Tensor:
    meta = node.outputs[0]
    dtype = torch_dtype(meta.dtype)
    if not node.data:
        return torch.empty(meta.shape, dtype=dtype, device=device)
    flat = torch.frombuffer(bytearray(node.data), dtype=dtype)
    return flat.reshape(meta.shape).to(device)


def constant_bytes(t: torch.Tensor) -> bytes:
    """Little-endian raw bytes of a tensor (the encoding of constant nodes)."""
    t = t.detach().contiguous().cpu()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
