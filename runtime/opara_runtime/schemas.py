"""A plan node's call checked against its ATen overload's schema: argument count and names, types, string values
from the allowlist's fixed sets, and dtype/layout/device/memory-format symbols a plan may hold."""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable

from opara_plan import DTYPE_SIZES, Plan, PlanFormatError, Ref, Sym
from opara_plan.allowlist import STRING_PATTERNS, STRING_VALUES, ZERO_ARGS
from opara_runtime.ops import resolve_op

INT64 = (-(1 << 63), (1 << 63) - 1)
SYM_VALUES = {
    "dtype": frozenset(DTYPE_SIZES),
    "layout": frozenset({"strided"}),  # a plan runs strided tensors only: no sparse or mkldnn results
    "memory_format": frozenset({"contiguous_format", "channels_last", "preserve_format", "channels_last_3d"}),
}
# The device of a Sym is never read (an op runs on its node's device); its spelling is still held to a device name.
DEVICE_NAME = re.compile(r"(cpu|cuda|meta)(:[0-9]{1,3})?")


def node_label(plan: Plan, i: int) -> str:
    node = plan.graph.nodes[i]
    return f"plan node {i} ({node.target or node.kind} {node.name!r})"


@dataclass(frozen=True)
class Param:
    """One schema argument: how a plan value is checked against it."""

    name: str
    text: str  # the type as the schema spells it, for messages
    check: Callable[[object], bool]
    required: bool
    kwarg_only: bool


@dataclass(frozen=True)
class Signature:
    params: tuple[Param, ...]
    positional: int
    index: dict[str, int]


@functools.lru_cache(maxsize=None)
def signature(target: str) -> Signature:
    """How a call of `target` is checked; built once per target from its ATen schema and the allowlist rules."""
    schema = resolve_op(target)._schema
    params = []
    for a in schema.arguments:
        check = _checker(a.real_type, target, a.name, a.N)
        if (target, a.name) in _zero_args():
            check = _and(check, lambda v: v is None or v == 0)
        params.append(Param(a.name, str(a.real_type), check, not a.has_default_value(), a.kwarg_only))
    positional = sum(not p.kwarg_only for p in params)
    return Signature(tuple(params), positional, {p.name: k for k, p in enumerate(params)})


@functools.lru_cache(maxsize=None)
def _zero_args() -> frozenset:
    return frozenset(ZERO_ARGS)


@functools.lru_cache(maxsize=None)
def _string_rules() -> dict:
    rules = {(t, a): frozenset(values).__contains__ for t, a, values in STRING_VALUES}
    for t, a, pattern in STRING_PATTERNS:
        rules[(t, a)] = lambda v, r=re.compile(pattern): r.fullmatch(v) is not None
    return rules


def _and(f, g):
    return lambda v: f(v) and g(v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and INT64[0] <= v <= INT64[1]


def _is_number(v) -> bool:
    return isinstance(v, float) or _is_int(v)


def _sym(kind: str):
    if kind == "device":
        return lambda v: isinstance(v, Sym) and v.kind == "device" and DEVICE_NAME.fullmatch(v.value) is not None
    allowed = SYM_VALUES[kind]
    return lambda v: isinstance(v, Sym) and v.kind == kind and v.value in allowed


_SCALARS = {
    # A Python number where a Tensor goes is what export writes for `x + 0` (torch wraps it as a 0-d tensor).
    "TensorType": lambda v: isinstance(v, (Ref, bool, float)) or _is_int(v),
    "IntType": _is_int, "SymIntType": _is_int,
    "FloatType": _is_number,
    "BoolType": lambda v: isinstance(v, bool),
    "NumberType": lambda v: isinstance(v, bool) or _is_number(v),
    "ScalarTypeType": _sym("dtype"), "LayoutType": _sym("layout"), "DeviceObjType": _sym("device"),
    "MemoryFormatType": _sym("memory_format"),
}


def _checker(t, target: str, name: str, fixed: int | None):
    kind = t.kind()
    if kind == "ListType" and t.getElementType().kind() in ("TensorType", "OptionalType"):
        inner = _checker(t.getElementType(), target, name, None)
        return lambda v: isinstance(v, tuple) and all(x is None or isinstance(x, Ref) for x in v) and all(map(inner, v))
    if kind == "OptionalType":
        inner = _checker(t.getElementType(), target, name, fixed)
        return lambda v: v is None or inner(v)
    if kind == "ListType":
        inner = _checker(t.getElementType(), target, name, None)
        if fixed is not None and t.getElementType().kind() in ("IntType", "SymIntType"):
            return lambda v: _is_int(v) or (isinstance(v, tuple) and all(inner(x) for x in v))  # int[2] takes 3
        return lambda v: isinstance(v, tuple) and all(inner(x) for x in v)
    if kind == "StringType":
        allowed = _string_rules().get((target, name))
        if allowed is None:
            return lambda v: False
        return lambda v: isinstance(v, str) and allowed(v)
    return _SCALARS.get(kind, lambda v: False)


def _shown(v) -> str:
    if isinstance(v, Ref):
        return f"a reference to node {v.node}"
    if isinstance(v, Sym):
        return f"{v.kind} {v.value!r}"
    if isinstance(v, tuple):
        return f"a list of {len(v)}"
    return f"{type(v).__name__} {v!r:.60}"


def check_call(plan: Plan, i: int) -> None:
    """The arguments of op node i fit its overload's schema: count, names, types, string and symbol values."""
    node = plan.graph.nodes[i]
    sig = signature(node.target)
    where = f"{node_label(plan, i)}"
    if len(node.args) > sig.positional:
        raise PlanFormatError(f"{where}: takes at most {sig.positional} positional arguments, found {len(node.args)}")
    given = set()
    for k, v in enumerate(node.args):
        p = sig.params[k]
        if not p.check(v):
            raise PlanFormatError(f"{where}: argument {k} ({p.name}): expected {p.text}, found {_shown(v)}")
        given.add(k)
    for name, v in node.kwargs:
        k = sig.index.get(name)
        if k is None:
            raise PlanFormatError(f"{where}: has no argument named {name!r} (its schema: "
                                  f"{resolve_op(node.target)._schema})")
        if k in given:
            raise PlanFormatError(f"{where}: argument {name!r} is given twice")
        p = sig.params[k]
        if not p.check(v):
            raise PlanFormatError(f"{where}: argument {name!r}: expected {p.text}, found {_shown(v)}")
        given.add(k)
    for k, p in enumerate(sig.params):
        if p.required and k not in given:
            raise PlanFormatError(f"{where}: required argument {p.name!r} ({p.text}) is missing")
