"""Plan sets: one artifact holding a plan per shape bucket of one model; their codec and validation.

A plan set is what `oparac compile --batch 1,2,4,8` writes. Each bucket's plan is a whole plan, stored with the
plan codec; compiled programs are stored once for the whole set (equal segments of different buckets compile to
the same code), and each plan gets its own program table back on load, exactly as it was written, so its
fingerprint, digest and signature are those of the plan the compiler made.
"""
from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import msgpack

from opara_plan.atomic import atomic_write
from opara_plan.codec import MAX_PLAN_BYTES, plan_from_bytes, plan_to_bytes, read_bounded
from opara_plan.errors import PlanFormatError
from opara_plan.schema import Plan, TensorSpec
from opara_plan.validate import MAX_NODES, validate

PLAN_SET_FORMAT = "opara-plan-set"
PLAN_SET_SCHEMA_VERSION: tuple[int, int] = (1, 0)
MAX_BUCKETS = 64
MAX_PLAN_SET_BYTES = MAX_PLAN_BYTES  # the whole set, all its plans and programs together
MAX_KEYS = 16  # a set or bucket map has four or five fields; later minor versions add a few
_MAX_KEY_BYTES = 64


@dataclass(frozen=True)
class Bucket:
    """One shape bucket: the batch (every input's leading dimension) and the input shapes its plan takes."""

    batch: int
    inputs: tuple[TensorSpec, ...]

    @property
    def key(self) -> tuple:
        """Buckets are ordered by their inputs' other dimensions, then by batch."""
        return tuple(tuple(x.shape[1:]) for x in self.inputs), self.batch


@dataclass(frozen=True)
class PlanSet:
    """Plans of one model for several input shapes: plans[k] serves buckets[k]; buckets in key order.

    batched_outputs: the flat outputs whose leading dimension is the batch (the runtime cuts them back to a
    padded call's batch); the others (a table computed from the weights, say) are returned whole.
    """

    buckets: tuple[Bucket, ...]
    plans: tuple[Plan, ...]
    batched_outputs: tuple[int, ...] = ()
    schema_version: tuple[int, ...] = PLAN_SET_SCHEMA_VERSION
    format: str = PLAN_SET_FORMAT

    def save(self, path) -> None:
        save_plan_set(self, path)


def bucket_of(plan: Plan, where: str = "plan") -> Bucket:
    """The bucket a plan serves: its inputs, and their common leading dimension as the batch."""
    inputs = plan.model.inputs
    if not inputs:
        raise PlanFormatError(f"{where}: the model takes no inputs, so it has no batch to bucket by")
    for x in inputs:
        if not x.shape:
            raise PlanFormatError(f"{where}: input {x.name!r} is a scalar; every input of a bucketed plan needs a "
                                  f"leading batch dimension")
    batch = inputs[0].shape[0]
    for x in inputs[1:]:
        if x.shape[0] != batch:
            raise PlanFormatError(f"{where}: input {x.name!r} has leading dimension {x.shape[0]}, input "
                                  f"{inputs[0].name!r} has {batch}; every input's leading dimension is the batch")
    if batch < 1:
        raise PlanFormatError(f"{where}: batch {batch}: expected at least 1")
    return Bucket(batch=batch, inputs=tuple(inputs))


def make_plan_set(plans, batched_outputs=None) -> PlanSet:
    """The set of these plans (one per bucket, in any order), validated. batched_outputs None: every output whose
    leading dimension is the batch in every bucket; where all buckets have one batch size that cannot tell a
    batch dimension from an equal size, so the compiler works it out and passes it (oparac.buckets)."""
    plans = list(plans)
    buckets = [bucket_of(p, f"plan {k}") for k, p in enumerate(plans)]
    order = sorted(range(len(plans)), key=lambda k: buckets[k].key)
    buckets, plans = tuple(buckets[k] for k in order), tuple(plans[k] for k in order)
    if batched_outputs is None:
        batched_outputs = leading_batch_outputs(buckets, plans)
    out = PlanSet(buckets=buckets, plans=plans, batched_outputs=tuple(sorted(set(batched_outputs))))
    validate_plan_set(out)
    return out


def leading_batch_outputs(buckets, plans) -> tuple[int, ...]:
    """The outputs whose leading dimension equals the batch in every bucket."""
    if not plans:
        return ()
    return tuple(j for j in range(len(plans[0].model.outputs))
                 if all(j < len(p.model.outputs) and p.model.outputs[j].shape[:1] == (b.batch,)
                        for b, p in zip(buckets, plans)))


# ------------------------------------------------------------------ validation

def validate_plan_set(ps: PlanSet) -> None:
    """PlanFormatError naming the bucket and field at the first inconsistency: every plan is valid, every
    descriptor is its plan's, the buckets are distinct and ordered, and all plans are of one model."""
    if ps.format != PLAN_SET_FORMAT:
        raise PlanFormatError(f"plan set field format: expected {PLAN_SET_FORMAT!r}, found {ps.format!r}")
    if tuple(ps.schema_version[:1]) != PLAN_SET_SCHEMA_VERSION[:1]:
        raise PlanFormatError(f"plan set field schema_version: this reader supports major version "
                              f"{PLAN_SET_SCHEMA_VERSION[0]}, found {'.'.join(map(str, ps.schema_version))}")
    if not 1 <= len(ps.buckets) <= MAX_BUCKETS:
        raise PlanFormatError(f"plan set field buckets: expected 1..{MAX_BUCKETS} buckets, found {len(ps.buckets)}")
    if len(ps.plans) != len(ps.buckets):
        raise PlanFormatError(f"plan set field plans: expected one plan per bucket ({len(ps.buckets)}), found "
                              f"{len(ps.plans)}")
    for k, (bucket, plan) in enumerate(zip(ps.buckets, ps.plans)):
        where = f"plan set bucket {k}"
        try:
            validate(plan)
        except PlanFormatError as e:
            raise PlanFormatError(f"{where} (batch {bucket.batch}): {e}") from None
        if bucket_of(plan, where) != bucket:
            raise PlanFormatError(f"{where}: the descriptor says batch {bucket.batch}, inputs "
                                  f"{_specs(bucket.inputs)}; its plan takes {_specs(plan.model.inputs)}")
        if k and ps.buckets[k - 1].key >= bucket.key:
            raise PlanFormatError(f"{where}: buckets must be distinct and ordered by their inputs' other dimensions, "
                                  f"then batch; batch {bucket.batch} {_specs(bucket.inputs)} follows batch "
                                  f"{ps.buckets[k - 1].batch} {_specs(ps.buckets[k - 1].inputs)}")
        if k:
            _check_same_model(ps.plans[0], plan, where)
    outputs = ps.plans[0].model.outputs
    if list(ps.batched_outputs) != sorted(set(ps.batched_outputs)):
        raise PlanFormatError(f"plan set field batched_outputs: expected distinct output indices in ascending order, "
                              f"found {list(ps.batched_outputs)[:8]}")
    for j in ps.batched_outputs:
        if not 0 <= j < len(outputs):
            raise PlanFormatError(f"plan set field batched_outputs: {j} is not an output (0..{len(outputs) - 1})")
        for k, (bucket, plan) in enumerate(zip(ps.buckets, ps.plans)):
            if plan.model.outputs[j].shape[:1] != (bucket.batch,):
                raise PlanFormatError(f"plan set field batched_outputs: output {j} of bucket {k} is "
                                      f"{plan.model.outputs[j].dtype}{list(plan.model.outputs[j].shape)}, its leading "
                                      f"dimension is not the batch {bucket.batch}")


def _check_same_model(first: Plan, plan: Plan, where: str) -> None:
    """One model: the weights are bound once for every bucket, and every bucket answers like the others."""
    a, b = first.model, plan.model
    for field in ("source", "precision", "memory_format", "output_tree"):
        if getattr(a, field) != getattr(b, field):
            raise PlanFormatError(f"{where}: model.{field} is {getattr(b, field)!r}, bucket 0 has "
                                  f"{getattr(a, field)!r}; the buckets of a set are one model")
    if first.target != plan.target:
        raise PlanFormatError(f"{where}: target {plan.target.device_type} {plan.target.gpu_name!r} differs from "
                              f"bucket 0's {first.target.device_type} {first.target.gpu_name!r}; a set is compiled "
                              f"for one machine")
    if [(x.name, x.dtype, len(x.shape)) for x in a.inputs] != [(x.name, x.dtype, len(x.shape)) for x in b.inputs]:
        raise PlanFormatError(f"{where}: inputs {_specs(b.inputs)} are not bucket 0's {_specs(a.inputs)} (the same "
                              f"names, dtypes and ranks; only the dimensions differ)")
    if [(x.dtype, len(x.shape)) for x in a.outputs] != [(x.dtype, len(x.shape)) for x in b.outputs]:
        raise PlanFormatError(f"{where}: outputs {_specs(b.outputs)} are not bucket 0's {_specs(a.outputs)} "
                              f"(the same dtypes and ranks)")
    want, found = _params(first), _params(plan)
    for name in sorted(want.keys() | found.keys()):
        if want.get(name) != found.get(name):
            shown = lambda p: f"{p[0]}{list(p[1])}" if p else "nothing"  # noqa: E731
            raise PlanFormatError(f"{where}: parameter {name!r} is {shown(found.get(name))}, bucket 0 has "
                                  f"{shown(want.get(name))}; the buckets of a set share one set of weights")


def _params(plan: Plan) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {n.name: (n.outputs[0].dtype, n.outputs[0].shape) for n in plan.graph.nodes if n.kind == "param"}


def _specs(specs) -> str:
    return "(" + ", ".join(f"{x.name}: {x.dtype}{list(x.shape)}" for x in specs) + ")"


# ------------------------------------------------------------------ encoding

def plan_set_to_bytes(ps: PlanSet) -> bytes:
    """Deterministic bytes. Each plan is stored with the plan codec, its compiled programs moved to the set's
    table (each distinct program once) and its segments' program indices kept in the bucket's entry."""
    table: dict[bytes, int] = {}
    buckets = []
    for bucket, plan in zip(ps.buckets, ps.plans):
        f = plan.fusion
        programs = [table.setdefault(p, len(table)) for p in f.programs]
        stripped = dataclasses.replace(plan, fusion=dataclasses.replace(
            f, programs=(), segments=tuple(dataclasses.replace(s, program=-1) for s in f.segments)))
        # Keys in a fixed order, format first: a reader can tell a set from a plan by its first field.
        buckets.append({"batch": bucket.batch, "plan": plan_to_bytes(stripped), "programs": programs,
                        "segment_programs": [s.program for s in f.segments] if programs else []})
    return msgpack.packb({"format": ps.format, "schema_version": list(ps.schema_version), "buckets": buckets,
                          "batched_outputs": list(ps.batched_outputs), "programs": list(table)}, use_bin_type=True)


def save_plan_set(ps: PlanSet, path) -> None:
    """Validate, then write atomically (opara_plan.atomic) with the umask's permissions."""
    validate_plan_set(ps)
    atomic_write(Path(path), plan_set_to_bytes(ps))


# ------------------------------------------------------------------ decoding

class _Reader:
    """The set's few fields, read one msgpack value at a time: every header is checked before anything is
    built for it, so a hostile file costs no more than its plans and programs (the plan codec bounds those)."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.what = data, what
        self.unpacker = msgpack.Unpacker(io.BytesIO(data), raw=False, max_buffer_size=max(len(data), 4096),
                                         max_bin_len=len(data), max_str_len=len(data), max_array_len=len(data),
                                         max_map_len=len(data), max_ext_len=0)

    def fail(self, field: str, message: str) -> PlanFormatError:
        return PlanFormatError(f"{self.what} field {field}: {message}")

    def kind(self) -> str:
        pos = self.unpacker.tell()
        if pos >= len(self.data):
            raise PlanFormatError(f"{self.what}: not a readable plan set file: the data ends early")
        b = self.data[pos]
        if b <= 0x7f or b >= 0xe0 or 0xcc <= b <= 0xd3:
            return "an integer"
        if 0x80 <= b <= 0x8f or b in (0xde, 0xdf):
            return "a map"
        if 0x90 <= b <= 0x9f or b in (0xdc, 0xdd):
            return "an array"
        if 0xa0 <= b <= 0xbf or 0xd9 <= b <= 0xdb:
            return "a string"
        if 0xc4 <= b <= 0xc6:
            return "bytes"
        return {0xc0: "nil", 0xc2: "a boolean", 0xc3: "a boolean", 0xca: "a float", 0xcb: "a float"}.get(
            b, "a msgpack extension or an invalid byte")

    def _call(self, fn):
        try:
            return fn()
        except msgpack.OutOfData:
            raise PlanFormatError(f"{self.what}: not a readable plan set file: the data ends early") from None
        except (msgpack.UnpackException, ValueError) as e:  # msgpack's several kinds of corrupt data
            raise PlanFormatError(f"{self.what}: not a readable plan set file (msgpack {type(e).__name__}: "
                                  f"{e})") from None

    def expect(self, field: str, kind: str) -> None:
        found = self.kind()
        if found != kind:
            raise self.fail(field, f"expected {kind}, found {found}")

    def map(self, field: str) -> int:
        self.expect(field, "a map")
        n = self._call(self.unpacker.read_map_header)
        if n > MAX_KEYS:
            raise self.fail(field, f"expected a map of at most {MAX_KEYS} keys, found {n}")
        return n

    def array(self, field: str, limit: int) -> int:
        self.expect(field, "an array")
        n = self._call(self.unpacker.read_array_header)
        if n > limit:
            raise self.fail(field, f"expected at most {limit} items, found {n}")
        return n

    def key(self, field: str) -> str | None:
        self.expect(f"{field} (a key)", "a string")
        pos = self.unpacker.tell()
        key = self._call(self.unpacker.unpack)
        return key if self.unpacker.tell() - pos <= _MAX_KEY_BYTES + 2 else None

    def int(self, field: str) -> int:
        self.expect(field, "an integer")
        return self._call(self.unpacker.unpack)

    def string(self, field: str) -> str:
        self.expect(field, "a string")
        pos = self.unpacker.tell()
        text = self._call(self.unpacker.unpack)
        if self.unpacker.tell() - pos > _MAX_KEY_BYTES + 2:
            raise self.fail(field, f"expected a string of at most {_MAX_KEY_BYTES} bytes")
        return text

    def bytes(self, field: str) -> bytes:
        self.expect(field, "bytes")
        return self._call(self.unpacker.unpack)

    def ints(self, field: str, limit: int) -> list[int]:
        return [self.int(f"{field}[{i}]") for i in range(self.array(field, limit))]

    def skip(self) -> None:
        self._call(self.unpacker.skip)

    def finish(self) -> None:
        extra = len(self.data) - self.unpacker.tell()
        if extra:
            raise PlanFormatError(f"{self.what}: not a readable plan set file: {extra} bytes follow its end")


def plan_set_from_bytes(data: bytes, *, name: str | None = None) -> PlanSet:
    """Decode a plan set and rebuild each bucket's plan with its programs; PlanFormatError names the file, the
    bucket and the field. Not yet validated (load_plan_set and load_artifact validate)."""
    what = f"plan set {name}" if name else "plan set"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PlanFormatError(f"{what}: expected bytes, found {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_PLAN_SET_BYTES:
        raise PlanFormatError(f"{what} is {len(data)} bytes; the limit is {MAX_PLAN_SET_BYTES}")
    r = _Reader(data, what)
    fields: dict = {}
    for _ in range(r.map("<root>")):
        key = r.key("<root>")
        if key == "format":
            fields[key] = r.string("format")
            if fields[key] != PLAN_SET_FORMAT:
                raise PlanFormatError(f"{what}: not an Opara plan set: field format: expected "
                                      f"{PLAN_SET_FORMAT!r}, found {fields[key]!r}")
        elif key == "schema_version":
            fields[key] = tuple(r.ints("schema_version", 2))
            if len(fields[key]) != 2 or fields[key][0] != PLAN_SET_SCHEMA_VERSION[0]:
                shown = ".".join(map(str, fields[key]))
                raise PlanFormatError(f"{what} field schema_version: this reader supports major version "
                                      f"{PLAN_SET_SCHEMA_VERSION[0]}, the set has {shown}; recompile it with a "
                                      f"matching oparac")
        elif key == "buckets":
            fields[key] = [_read_bucket(r, f"buckets[{k}]") for k in range(r.array("buckets", MAX_BUCKETS))]
        elif key == "batched_outputs":
            fields[key] = tuple(r.ints("batched_outputs", MAX_NODES))
        elif key == "programs":
            n = r.array("programs", MAX_NODES)  # every program is used by a segment
            fields[key] = [r.bytes(f"programs[{i}]") for i in range(n)]
        else:
            r.skip()  # a later minor version's field
    r.finish()
    if "format" not in fields:
        raise PlanFormatError(f"{what}: not an Opara plan set: no format field")
    for key in ("schema_version", "buckets", "batched_outputs"):
        if key not in fields:
            raise r.fail(key, "missing")
    ps = _rebuild(fields["buckets"], fields.get("programs", []), fields["schema_version"], what, name)
    return dataclasses.replace(ps, batched_outputs=fields["batched_outputs"])


def _read_bucket(r: _Reader, field: str) -> dict:
    entry: dict = {}
    for _ in range(r.map(field)):
        key = r.key(field)
        if key == "batch":
            entry[key] = r.int(f"{field}.batch")
        elif key == "plan":
            entry[key] = r.bytes(f"{field}.plan")
        elif key in ("programs", "segment_programs"):
            entry[key] = r.ints(f"{field}.{key}", MAX_NODES)
        else:
            r.skip()
    for key in ("batch", "plan"):
        if key not in entry:
            raise r.fail(f"{field}.{key}", "missing")
    return entry


def _rebuild(entries: list[dict], table: list[bytes], version, what: str, name: str | None) -> PlanSet:
    """Each plan with its own program table back, exactly as the compiler wrote it."""
    used: set[int] = set()
    plans = []
    for k, entry in enumerate(entries):
        where = f"{what} bucket {k} (batch {entry['batch']})"
        plan = plan_from_bytes(entry["plan"], name=f"{name} bucket {k}" if name else f"in bucket {k}")
        f = plan.fusion
        programs, segment_programs = entry.get("programs", []), entry.get("segment_programs", [])
        if f.programs or any(s.program != -1 for s in f.segments):
            raise PlanFormatError(f"{where}: its plan stores compiled programs itself; a plan set keeps them in its "
                                  f"programs table")
        for i in programs:
            if not 0 <= i < len(table):
                raise PlanFormatError(f"{where} field programs: {i} is not an index into the set's programs "
                                      f"(0..{len(table) - 1})")
        if programs and len(segment_programs) != len(f.segments):
            raise PlanFormatError(f"{where} field segment_programs: expected one entry per fused segment "
                                  f"({len(f.segments)}), found {len(segment_programs)}")
        if not programs and segment_programs:
            raise PlanFormatError(f"{where} field segment_programs: expected none (the bucket stores no programs), "
                                  f"found {len(segment_programs)}")
        if programs:
            # Out-of-range segment indices are left for validate, which names the segment.
            plan = dataclasses.replace(plan, fusion=dataclasses.replace(
                f, programs=tuple(table[i] for i in programs),
                segments=tuple(dataclasses.replace(s, program=p) for s, p in zip(f.segments, segment_programs))))
        used.update(programs)
        plans.append(plan)
    unused = sorted(set(range(len(table))) - used)
    if unused:
        raise PlanFormatError(f"{what} field programs[{unused[0]}]: no bucket uses it")
    buckets = []
    for k, (entry, plan) in enumerate(zip(entries, plans)):
        bucket = bucket_of(plan, f"{what} bucket {k}")
        if bucket.batch != entry["batch"]:
            raise PlanFormatError(f"{what} bucket {k} field batch: the descriptor says {entry['batch']}, its plan's "
                                  f"inputs have batch {bucket.batch}")
        buckets.append(bucket)
    return PlanSet(buckets=tuple(buckets), plans=tuple(plans), schema_version=tuple(version))


# ------------------------------------------------------------------ files

def load_plan_set(path) -> PlanSet:
    """Read, decode and validate a plan set file."""
    path = Path(path)
    ps = plan_set_from_bytes(read_bounded(path, MAX_PLAN_SET_BYTES, "plan set"), name=str(path))
    validate_plan_set(ps)
    return ps


def is_plan_set(data: bytes) -> bool:
    """Whether data claims to be a plan set (its first field is format 'opara-plan-set'). Only a dispatch: the
    claim is checked in full by the decoder it picks."""
    try:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=256)
        unpacker.feed(bytes(data[:64]))
        if unpacker.read_map_header() < 1 or unpacker.unpack() != "format":
            return False
        return unpacker.unpack() == PLAN_SET_FORMAT
    except Exception:  # any unreadable start: not a set; the plan decoder reports what is wrong with it
        return False


def load_artifact(path) -> Plan | PlanSet:
    """A plan file or a plan set file, read, decoded and validated as what it says it is."""
    from opara_plan.codec import load_plan

    path = Path(path)
    with_head = _head(path)
    if not is_plan_set(with_head):
        return load_plan(path)
    return load_plan_set(path)


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(64)
    except OSError:
        return b""  # load_plan reports the file's problem
