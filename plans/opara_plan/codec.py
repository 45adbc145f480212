"""Plan <-> msgpack bytes and plan files. The file is untrusted: size limits, strict types, every field checked."""
from __future__ import annotations

from pathlib import Path

from opara_plan.atomic import atomic_write
from opara_plan.canonical import canonical_bytes
from opara_plan.decoding import MAX_ARG_DEPTH, decode_plan
from opara_plan.errors import PlanFormatError
from opara_plan.schema import Plan

__all__ = ["MAX_ARG_DEPTH", "MAX_PLAN_BYTES", "atomic_write", "load_plan", "plan_from_bytes", "plan_to_bytes",
           "save_plan"]

MAX_PLAN_BYTES = 512 * 1024 * 1024


def plan_to_bytes(plan: Plan) -> bytes:
    """Deterministic bytes: sorted keys, no timestamps, floats as float64 (opara_plan.canonical)."""
    return canonical_bytes(plan)


def save_plan(plan: Plan, path) -> None:
    """Validate, then write atomically (temp file, fsync, rename) with the umask's permissions, like open()."""
    from opara_plan.validate import validate

    validate(plan)
    atomic_write(Path(path), plan_to_bytes(plan))


def plan_from_bytes(data: bytes, *, name: str | None = None) -> Plan:
    """Decode and type-check a plan. Any problem is a PlanFormatError naming the field (and the file, as name)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PlanFormatError(f"plan data: expected bytes, found {type(data).__name__}")
    where = f"plan {name}" if name else "plan"
    if len(data) > MAX_PLAN_BYTES:
        raise PlanFormatError(f"{where} is {len(data)} bytes; the limit is {MAX_PLAN_BYTES}")
    return decode_plan(data if isinstance(data, bytes) else bytes(data), name=name)


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of `what` (a plan, a plan set) at `path`, refused before reading when over `limit` bytes or when
    the file grows while it is read; every failure is a PlanFormatError naming the file."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise PlanFormatError(f"cannot read {what} {path}: {e.strerror}") from None
    if size > limit:
        raise PlanFormatError(f"{what} {path} is {size} bytes; the limit is {limit}")
    try:
        with path.open("rb") as f:
            data = f.read(size)  # read(n) allocates n bytes up front: n is the size, not the limit
            grew = f.read(1) != b""
    except OSError as e:
        raise PlanFormatError(f"cannot read {what} {path}: {e.strerror}") from None
    if grew:
        raise PlanFormatError(f"{what} {path} grew while it was read; is it still being written?")
    return data


def load_plan(path) -> Plan:
    """Read, decode and validate a plan file."""
    from opara_plan.validate import validate

    path = Path(path)
    plan = plan_from_bytes(read_bounded(path, MAX_PLAN_BYTES, "plan"), name=str(path))
    try:
        validate(plan)
    except PlanFormatError as e:  # the message names the node or field; say which file holds it
        raise type(e)(f"{path}: {e}") from None
    return plan

