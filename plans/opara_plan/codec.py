"""Plan <-> msgpack bytes. The file is untrusted: size limits, strict types, every field checked."""
from __future__ import annotations

import dataclasses
import os
import tempfile
import typing
from pathlib import Path

import msgpack

from opara_plan.errors import PlanFormatError
from opara_plan.schema import FORMAT, SCHEMA_VERSION, Arg, Plan, Ref, Sym

MAX_PLAN_BYTES = 512 * 1024 * 1024
MAX_ARG_DEPTH = 16
_SYM_KINDS = ("dtype", "device", "layout", "memory_format")


# ---------------------------------------------------------------- encoding

def _encode(value, hint):
    if hint is Arg:
        return _encode_arg(value)
    if dataclasses.is_dataclass(value):
        hints = _hints(type(value))
        return {f.name: _encode(getattr(value, f.name), hints[f.name]) for f in sorted(
            dataclasses.fields(value), key=lambda f: f.name) if not _omitted(f, getattr(value, f.name))}
    if isinstance(value, tuple):
        return [_encode(v, h) for v, h in zip(value, _element_hints(hint, len(value)))]
    if isinstance(value, float):
        return float(value)
    return value


def _omitted(f: dataclasses.Field, value) -> bool:
    """A field added by a minor version is left out while it holds its default: older plans keep their bytes."""
    return bool(f.metadata.get("omit_default")) and value == f.default


def _encode_arg(value):
    if isinstance(value, Ref):
        return {"ref": [value.node, value.index]}
    if isinstance(value, Sym):
        return {"sym": [value.kind, value.value]}
    if isinstance(value, (tuple, list)):
        return [_encode_arg(v) for v in value]
    return value


def plan_to_bytes(plan: Plan) -> bytes:
    """Deterministic bytes: sorted keys, no timestamps, floats as float64."""
    return msgpack.packb(_encode(plan, Plan), use_bin_type=True)


def save_plan(plan: Plan, path) -> None:
    """Write atomically: a temp file in the same folder, fsync, then os.replace."""
    from opara_plan.validate import validate

    validate(plan)
    _atomic_write(Path(path), plan_to_bytes(plan))


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- decoding

def _hints(cls) -> dict:
    return typing.get_type_hints(cls, globalns=vars(__import__("opara_plan.schema").schema))


def _element_hints(hint, n):
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
        return [args[0]] * n
    if args:
        return list(args)
    return [None] * n


def _fail(path: str, expected: str, found) -> PlanFormatError:
    shown = type(found).__name__ if not isinstance(found, (str, int, float)) or isinstance(found, bool) \
        else repr(found)[:60]
    return PlanFormatError(f"plan field {path or '<root>'}: expected {expected}, found {shown}")


def _decode(obj, hint, path: str):
    if hint is Arg:
        return _decode_arg(obj, path, 0)
    if hint is int:
        if isinstance(obj, bool) or not isinstance(obj, int):
            raise _fail(path, "an integer", obj)
        return obj
    if hint is float:
        if isinstance(obj, bool) or not isinstance(obj, (int, float)):
            raise _fail(path, "a number", obj)
        return float(obj)
    if hint is bool:
        if not isinstance(obj, bool):
            raise _fail(path, "a boolean", obj)
        return obj
    if hint is str:
        if not isinstance(obj, str):
            raise _fail(path, "a string", obj)
        return obj
    if hint is bytes:
        if not isinstance(obj, bytes):
            raise _fail(path, "bytes", obj)
        return obj
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode_dataclass(obj, hint, path)
    if typing.get_origin(hint) is tuple:
        if not isinstance(obj, (list, tuple)):
            raise _fail(path, "an array", obj)
        hints = _element_hints(hint, len(obj))
        if len(hints) != len(obj):
            raise _fail(path, f"an array of {len(hints)} items", obj)
        return tuple(_decode(v, h, f"{path}[{i}]") for i, (v, h) in enumerate(zip(obj, hints)))
    raise PlanFormatError(f"plan field {path}: unsupported schema type {hint!r}")


def _decode_dataclass(obj, cls, path: str):
    if not isinstance(obj, dict):
        raise _fail(path, f"a map ({cls.__name__})", obj)
    hints = _hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        sub = f"{path}.{f.name}" if path else f.name
        if f.name not in obj:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise PlanFormatError(f"plan field {sub}: missing")
            continue
        values[f.name] = _decode(obj[f.name], hints[f.name], sub)
    # Unknown keys are ignored: a minor schema bump may add fields.
    return cls(**values)


def _decode_arg(obj, path: str, depth: int):
    if depth > MAX_ARG_DEPTH:
        raise PlanFormatError(f"plan field {path}: argument nested deeper than {MAX_ARG_DEPTH}")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return tuple(_decode_arg(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj))
    if isinstance(obj, dict) and len(obj) == 1:
        if "ref" in obj:
            ref = obj["ref"]
            if (isinstance(ref, (list, tuple)) and len(ref) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in ref)):
                return Ref(ref[0], ref[1])
            raise _fail(f"{path}.ref", "[node, index] integers", ref)
        if "sym" in obj:
            sym = obj["sym"]
            if (isinstance(sym, (list, tuple)) and len(sym) == 2 and sym[0] in _SYM_KINDS
                    and isinstance(sym[1], str)):
                return Sym(sym[0], sym[1])
            raise _fail(f"{path}.sym", f"[kind in {_SYM_KINDS}, value string]", sym)
    raise _fail(path, "an argument (literal, array, {ref} or {sym})", obj)


def _reject_ext(code, data):
    raise PlanFormatError(f"plan contains a msgpack extension type {code}; plans use none")


def plan_from_bytes(data: bytes) -> Plan:
    """Decode and type-check a plan. Any problem is a PlanFormatError naming the field."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PlanFormatError(f"plan data: expected bytes, found {type(data).__name__}")
    if len(data) > MAX_PLAN_BYTES:
        raise PlanFormatError(f"plan is {len(data)} bytes; the limit is {MAX_PLAN_BYTES}")
    n = max(len(data), 1)
    try:
        obj = msgpack.unpackb(
            bytes(data), raw=False, strict_map_key=True, use_list=True, ext_hook=_reject_ext,
            max_str_len=n, max_bin_len=n, max_array_len=n, max_map_len=n,
            max_ext_len=0)
    except PlanFormatError:
        raise
    except Exception as e:  # msgpack raises several types for corrupt input; all mean "not a plan"
        raise PlanFormatError(f"not a readable plan file (msgpack: {type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise PlanFormatError(f"not an Opara plan: field format: expected {FORMAT!r}, found "
                              f"{obj.get('format')!r}" if isinstance(obj, dict) else
                              f"not an Opara plan: expected a map at the top, found {type(obj).__name__}")
    version = obj.get("schema_version")
    if (not isinstance(version, list) or len(version) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in version)):
        raise _fail("schema_version", "[major, minor]", version)
    if version[0] != SCHEMA_VERSION[0]:
        raise PlanFormatError(
            f"plan field schema_version: this reader supports major version {SCHEMA_VERSION[0]}, "
            f"the plan has {version[0]}.{version[1]}; recompile the plan with a matching oparac")
    try:
        return _decode(obj, Plan, "")
    except RecursionError:
        raise PlanFormatError("plan is nested too deeply") from None


def load_plan(path) -> Plan:
    """Read, decode and validate a plan file."""
    from opara_plan.validate import validate

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise PlanFormatError(f"cannot read plan {path}: {e.strerror}") from None
    if size > MAX_PLAN_BYTES:
        raise PlanFormatError(f"plan {path} is {size} bytes; the limit is {MAX_PLAN_BYTES}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PlanFormatError(f"cannot read plan {path}: {e.strerror}") from None
    plan = plan_from_bytes(data)
    validate(plan)
    return plan
