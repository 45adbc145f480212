"""The canonical encoding of plan values: sorted keys, float64, minor-version fields left out at their default.

Plan files, the graph fingerprint and the plan digest are all these bytes, so one encoding serves all three.
"""
from __future__ import annotations

import dataclasses
import types
import typing

import msgpack

from opara_plan import schema
from opara_plan.schema import Ref, Sym

# Flushed to the sink in pieces of about this size: the digest of a large plan never holds its bytes whole.
_CHUNK = 1 << 20


def _layout(cls) -> tuple[tuple[str, bool, bool, object], ...]:
    """(name, float-typed, omitted at default, default) per field, in key order."""
    hints = typing.get_type_hints(cls, globalns=vars(schema))
    return tuple((f.name, hints[f.name] is float, bool(f.metadata.get("omit_default")), f.default)
                 for f in sorted(dataclasses.fields(cls), key=lambda f: f.name))


# Every record type of the schema; Ref and Sym are written in their short argument form instead.
_LAYOUTS = types.MappingProxyType({
    cls: _layout(cls) for cls in vars(schema).values()
    if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls not in (Ref, Sym)})


def _fields(value):
    """The (key, value) pairs written for a record: a float field holding an int is written as the float
    the decoder gives back, so a plan's bytes (and digest) are the same before and after a round trip."""
    layout = _LAYOUTS.get(type(value))
    if layout is None:
        raise TypeError(f"not a plan value: {type(value).__name__}")
    for name, is_float, omit, default in layout:
        v = getattr(value, name)
        if omit and v == default:
            continue
        if is_float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        yield name, v


def canonical_value(value):
    """The value as plain msgpack-able data (dicts, lists, scalars), as the plan file stores it."""
    if isinstance(value, Ref):
        return {"ref": [value.node, value.index]}
    if isinstance(value, Sym):
        return {"sym": [value.kind, value.value]}
    if isinstance(value, (tuple, list)):
        return [canonical_value(v) for v in value]
    if isinstance(value, float):
        return float(value)
    if dataclasses.is_dataclass(value):
        return {k: canonical_value(v) for k, v in _fields(value)}
    return value


def write_canonical(value, sink: typing.Callable[[bytes], object]) -> None:
    """Stream the canonical bytes of value to sink (a file's write, a hash's update) without building them whole."""
    write_each((value,), sink)


def write_each(values, sink: typing.Callable[[bytes], object]) -> None:
    """The canonical bytes of each value in turn, nothing between: the graph fingerprint hashes its nodes so."""
    packer = _packer()
    for value in values:
        _write(value, packer, sink)
    sink(packer.bytes())


def canonical_bytes(value) -> bytes:
    """The canonical bytes of a plan value: msgpack of canonical_value(value)."""
    packer = _packer()
    _write(value, packer, None)
    return packer.bytes()


def _packer() -> msgpack.Packer:
    # A small first buffer (msgpack's default is 256 KiB): a node's bytes are a few dozen; it grows as needed.
    return msgpack.Packer(use_bin_type=True, autoreset=False, buf_size=4096)


def _write(value, packer: msgpack.Packer, sink) -> None:
    if isinstance(value, Ref):
        packer.pack_map_header(1)
        packer.pack("ref")
        packer.pack_array_header(2)
        packer.pack(value.node)
        packer.pack(value.index)
    elif isinstance(value, Sym):
        packer.pack_map_header(1)
        packer.pack("sym")
        packer.pack_array_header(2)
        packer.pack(value.kind)
        packer.pack(value.value)
    elif isinstance(value, (tuple, list)):
        packer.pack_array_header(len(value))
        for v in value:
            _write(v, packer, sink)
    elif isinstance(value, float):
        packer.pack(float(value))
    elif dataclasses.is_dataclass(value):
        items = list(_fields(value))
        packer.pack_map_header(len(items))
        for k, v in items:
            packer.pack(k)
            _write(v, packer, sink)
        if sink is not None and len(packer.getbuffer()) >= _CHUNK:
            sink(packer.bytes())
            packer.reset()
    elif sink is not None and isinstance(value, bytes) and len(value) >= _CHUNK:
        # A stored program straight to the sink, not through the packer's buffer (a copy of it).
        sink(packer.bytes())
        packer.reset()
        sink(b"\xc6" + len(value).to_bytes(4, "big"))  # bin 32, as msgpack writes any bytes over 64 KiB
        sink(value)
    else:
        packer.pack(value)
