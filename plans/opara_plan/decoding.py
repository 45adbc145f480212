"""msgpack bytes -> the schema's frozen records, streamed value by value, so a file costs only what its plan holds.

Nothing is unpacked into generic objects first. Each value's msgpack header is checked against its schema type
(the first mismatch fails, naming the field) and the value is built straight into its final record. Unknown keys
(a later minor version's fields) are skipped unread. Arrays, strings and records are bounded by what the schema
can hold, and everything built is charged to a budget proportional to the file's size: no file of any shape makes
decoding take more than a fixed multiple of its size in memory.
"""
from __future__ import annotations

import dataclasses
import io
import math
import sys
import typing

import msgpack

from opara_plan import schema
from opara_plan.errors import PlanFormatError
from opara_plan.schema import FORMAT, SCHEMA_VERSION, Arg, Plan, Ref, Sym
from opara_plan.validate import MAX_DEVICES, MAX_NODES

# Limits sized to what a plan can legitimately hold (validate's MAX_NODES and MAX_DEVICES, torch's dimensions,
# ATen's arity), so no real plan meets them, and a header claiming more is refused before anything is built.
MAX_ITEMS = 4 * MAX_NODES  # any array: per-node tables hold MAX_NODES entries, waits a few per node
MAX_DIMS = 64  # a shape: torch tensors have far fewer dimensions
MAX_KWARGS = 256  # an ATen schema names far fewer parameters
MAX_SIGNATURES = 16
MAX_SMALL = 8  # compute capability, grid, block, schema version
MAX_STRING_BYTES = 64 * 1024  # names, targets, versions, string arguments: all far shorter
MAX_KEY_BYTES = 64  # field names are short; a longer key is not one of ours and is skipped unread
MAX_RECORD_KEYS = 256  # a record has about ten fields; later minor versions add a few, never hundreds
MAX_RECORD_DEPTH = 40  # OutTree nests up to 32 deep (validate) below Plan.model.output_tree
MAX_ARG_DEPTH = 16
SYM_KINDS = ("dtype", "device", "layout", "memory_format")

# Decoding may take MEMORY_FACTOR times the file's size (plus MEMORY_SLACK) for what it builds: plans oparac
# writes take about 2.6 times their size by the charges below, while dense hostile files (a million empty
# arrays, deep nesting, tiny nodes) would take up to fifty. With the file itself and the unpacker's buffer,
# load_plan then stays under 10x the file's size, whatever the file.
MEMORY_FACTOR = 6
MEMORY_SLACK = 1 << 20

# What building each object costs, a little over CPython's own sizes (64-bit): a tuple is 40 bytes plus a
# slot per item, plus up to a quarter more while tuple() grows it; a slotted record 32 plus a slot per field.
_INT_BYTES = 36
_FLOAT_BYTES = 32
_MEMO_ENTRY_BYTES = 160  # a dict entry and its share of the table, with the table's growth
_INTERN_MAX = 256  # shorter strings of the same text are shared
_READ_SIZE = 64 * 1024
_ZERO = 0.0


def _tuple_bytes(n: int) -> int:
    return 48 + 10 * n


# ------------------------------------------------------------------ msgpack headers

_NIL, _BOOL, _INT, _FLOAT, _STR, _BIN, _ARRAY, _MAP, _EXT, _BAD = (
    "nil", "boolean", "integer", "float", "string", "bytes", "array", "map", "a msgpack extension type",
    "an invalid byte")


def _header_table() -> tuple[tuple, tuple[int, ...]]:
    """Per first byte: (family, length bytes that follow: 0 in the byte itself, -1 a scalar), and a scalar's
    whole size in bytes."""
    head, size = [(_INT, -1)] * 256, [1] * 256
    for b in range(0x80, 0xc0):
        head[b] = ((_MAP if b < 0x90 else _ARRAY if b < 0xa0 else _STR), 0)
    special = {0xc0: (_NIL, -1), 0xc1: (_BAD, -1), 0xc2: (_BOOL, -1), 0xc3: (_BOOL, -1),
               0xc4: (_BIN, 1), 0xc5: (_BIN, 2), 0xc6: (_BIN, 4), 0xca: (_FLOAT, -1), 0xcb: (_FLOAT, -1),
               0xd9: (_STR, 1), 0xda: (_STR, 2), 0xdb: (_STR, 4), 0xdc: (_ARRAY, 2), 0xdd: (_ARRAY, 4),
               0xde: (_MAP, 2), 0xdf: (_MAP, 4)}
    special.update({b: (_EXT, -1) for b in (0xc7, 0xc8, 0xc9, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8)})
    for b, entry in special.items():
        head[b] = entry
    for b, n in {0xca: 5, 0xcb: 9, 0xcc: 2, 0xcd: 3, 0xce: 5, 0xcf: 9, 0xd0: 2, 0xd1: 3, 0xd2: 5, 0xd3: 9}.items():
        size[b] = n
    return tuple(head), tuple(size)


_HEAD, _SCALAR_BYTES = _header_table()
_ENDS_EARLY = "the data ends early"


class _Bad(Exception):
    """A decoding failure; the field path is added (innermost first) as it unwinds."""

    def __init__(self, message: str, *, unreadable: bool = False) -> None:
        super().__init__(message)
        self.message, self.unreadable, self.path = message, unreadable, []

    def at(self, segment: str) -> _Bad:
        self.path.append(segment)
        return self

    def field(self) -> str:
        return "".join(reversed(self.path)).lstrip(".")


class _Stream:
    """One pass over the bytes: peek at the next header, then read, skip or refuse the value.

    peek checks that the whole header (and a scalar's whole value) is in the file, so reading what it saw
    cannot fail, and unpack and the header reads are msgpack's own, called bare; only strings (UTF-8) and
    skips (of values never looked at) can still turn out corrupt, and those are caught.
    """

    def __init__(self, data: bytes, budget: int) -> None:
        self.data, self.size = data, len(data)
        read_size = max(4096, min(_READ_SIZE, self.size))
        limit = max(self.size, read_size)
        # file_like, not feed(): the unpacker then buffers a chunk at a time, not a copy of the whole file.
        u = msgpack.Unpacker(
            io.BytesIO(data), raw=False, strict_map_key=False, read_size=read_size, max_buffer_size=limit,
            max_str_len=limit, max_bin_len=limit, max_array_len=limit, max_map_len=limit, max_ext_len=limit)
        self.unpacker, self.tell = u, u.tell
        self.unpack, self.array_header, self.map_header = u.unpack, u.read_array_header, u.read_map_header
        self.budget = self.left = budget
        self.strings: dict[str, str] = {}
        self.shared: dict = {}
        self.depth = 0

    def peek(self) -> tuple[str, int, int]:
        """(family, length, header bytes) of the next value; a length the rest of the file cannot hold is refused."""
        pos = self.tell()
        try:
            b = self.data[pos]
        except IndexError:
            raise _Bad(_ENDS_EARLY, unreadable=True) from None
        family, k = _HEAD[b]
        if k < 0:
            if pos + _SCALAR_BYTES[b] > self.size:
                raise _Bad(_ENDS_EARLY, unreadable=True)
            if family is _BAD:
                raise _Bad(f"byte {pos} (0xc1) is not msgpack", unreadable=True)
            return family, 0, 1
        if k == 0:
            n = b & (0x1f if family is _STR else 0x0f)
        else:
            if pos + 1 + k > self.size:
                raise _Bad(_ENDS_EARLY, unreadable=True)
            n = int.from_bytes(self.data[pos + 1:pos + 1 + k], "big")
        room = self.size - pos - 1 - k
        if (2 * n if family is _MAP else n) > room:
            unit = "bytes" if family in (_STR, _BIN) else "items" if family is _ARRAY else "entries"
            raise _Bad(f"{family} at byte {pos} claims {n} {unit}, but only {room} bytes follow", unreadable=True)
        return family, n, 1 + k

    def text(self) -> str:
        """The string peek saw."""
        try:
            return self.unpack()
        except UnicodeDecodeError:
            raise _Bad("expected a UTF-8 string, found invalid UTF-8") from None

    def skip(self) -> None:
        try:
            self.unpacker.skip()
        except msgpack.OutOfData:
            raise _Bad(_ENDS_EARLY, unreadable=True) from None
        except msgpack.StackError:
            raise _Bad("values nested too deeply to read", unreadable=True) from None
        except (msgpack.UnpackException, ValueError) as e:  # msgpack's several kinds of "corrupt"
            raise _Bad(f"msgpack {type(e).__name__}: {e}", unreadable=True) from None

    def raw(self, n: int) -> bytes:
        # read_bytes, not unpack: a large payload then bypasses the unpacker's buffer.
        out = self.unpacker.read_bytes(n)
        if len(out) != n:
            raise _Bad(_ENDS_EARLY, unreadable=True)
        return out

    def charge(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise _Bad(f"decoding needs more memory than the limit of {MEMORY_FACTOR}x the plan's size "
                       f"({self.size} bytes); oparac writes no plan this dense")

    def intern(self, text: str) -> str:
        known = self.strings.get(text)
        if known is not None:
            return known
        self.charge(sys.getsizeof(text) + _MEMO_ENTRY_BYTES)
        self.strings[text] = text
        return text

    def share(self, obj, left_before: int):
        """The equal record decoded before, if any (its cost refunded), else obj, remembered."""
        known = self.shared.get(obj)
        if known is not None:
            self.left = left_before
            return known
        self.charge(_MEMO_ENTRY_BYTES)
        self.shared[obj] = obj
        return obj

    def key(self) -> str | None:
        """The next map key; None (already skipped) for a string too long to be a field name."""
        family, n, _ = self.peek()
        if family is not _STR:
            raise _Bad(f"expected string keys, found {self.shown(family, n)}")
        if n > MAX_KEY_BYTES:
            self.skip()
            return None
        return self.text()

    def mismatch(self, expected: str, family: str, n: int) -> _Bad:
        return _Bad(f"expected {expected}, found {self.shown(family, n)}")

    def shown(self, family: str, n: int) -> str:
        """The value about to be refused, in words; short scalars are shown."""
        if family is _ARRAY:
            return f"an array of {n} items"
        if family is _MAP:
            return f"a map of {n} entries"
        if family is _BIN:
            return f"bytes ({n})"
        if family in (_INT, _FLOAT, _BOOL) or (family is _STR and n <= 60):
            try:
                value = self.text()
            except _Bad:
                return family
            return f"{family} {value!r}"
        if family is _STR:
            return f"a string of {n} bytes"
        return family

    def finish(self) -> None:
        extra = self.size - self.tell()
        if extra:
            raise _Bad(f"{extra} bytes follow the end of the plan", unreadable=True)


# ------------------------------------------------------------------ readers

def _int_value(s: _Stream) -> int:
    """The integer peek saw."""
    value = s.unpack()
    if not -5 <= value <= 256:  # CPython shares the small ones
        s.charge(_INT_BYTES)
    return value


def _read_int(s: _Stream) -> int:
    family, n, _ = s.peek()
    if family is not _INT:
        raise s.mismatch("an integer", family, n)
    return _int_value(s)


def _read_float(s: _Stream) -> float:
    family, n, _ = s.peek()
    if family is not _FLOAT and family is not _INT:
        raise s.mismatch("a number", family, n)
    value = float(s.unpack())
    if value == 0.0 and math.copysign(1.0, value) > 0:
        return _ZERO  # the cost of every free op: shared, as small ints are
    s.charge(_FLOAT_BYTES)
    return value


def _read_bool(s: _Stream) -> bool:
    family, n, _ = s.peek()
    if family is not _BOOL:
        raise s.mismatch("a boolean", family, n)
    return s.unpack()


def _text_value(s: _Stream, n: int, limit: int, interned: bool) -> str:
    """The string of n bytes peek saw."""
    if n > limit:
        raise _Bad(f"expected a string of at most {limit} bytes, found {n} bytes")
    text = s.text()
    if interned and n <= _INTERN_MAX:
        return s.intern(text)
    s.charge(sys.getsizeof(text))
    return text


def _string_reader(limit: int, interned: bool):
    def read(s: _Stream) -> str:
        family, n, _ = s.peek()
        if family is not _STR:
            raise s.mismatch("a string", family, n)
        return _text_value(s, n, limit, interned)
    return read


def _bytes_reader(limit: int | None):
    def read(s: _Stream) -> bytes:
        family, n, header = s.peek()
        if family is not _BIN:
            raise s.mismatch("bytes", family, n)
        if limit is not None and n > limit:
            raise _Bad(f"expected at most {limit} bytes, found {n}")
        if n:  # b"" is shared
            s.charge(48 + n)
        s.raw(header)
        return s.raw(n)
    return read


def _items(s: _Stream, n: int, read):
    i = 0
    try:
        for i in range(n):
            yield read(s)
    except _Bad as e:
        raise e.at(f"[{i}]")


def _int_items(s: _Stream, n: int):
    """_items(s, n, _read_int) with the reader inlined: per-node tables and shapes are most of a plan's values."""
    peek, unpack = s.peek, s.unpack
    i = 0
    try:
        for i in range(n):
            family, m, _ = peek()
            if family is not _INT:
                raise s.mismatch("an integer", family, m)
            value = unpack()
            if not -5 <= value <= 256:
                s.charge(_INT_BYTES)
            yield value
    except _Bad as e:
        raise e.at(f"[{i}]")


def _array_reader(read_item, limit: int):
    def read(s: _Stream) -> tuple:
        family, n, _ = s.peek()
        if family is not _ARRAY:
            raise s.mismatch("an array", family, n)
        if n > limit:
            raise _Bad(f"expected at most {limit} items, found {n}")
        s.array_header()
        if not n:
            return ()
        s.charge(_tuple_bytes(n))
        return tuple(_int_items(s, n) if read_item is _read_int else _items(s, n, read_item))
    return read


def _fixed_reader(readers: tuple):
    k = len(readers)

    def each(s):
        i = 0
        try:
            for i, read_item in enumerate(readers):
                yield read_item(s)
        except _Bad as e:
            raise e.at(f"[{i}]")

    def read(s: _Stream) -> tuple:
        family, n, _ = s.peek()
        if family is not _ARRAY or n != k:
            raise s.mismatch(f"an array of {k} items", family, n)
        s.array_header()
        s.charge(_tuple_bytes(k))
        return tuple(each(s))
    return read


_ARG = "an argument (literal, array, {ref} or {sym})"


def _read_arg(s: _Stream, depth: int = 0):
    family, n, _ = s.peek()
    if family is _INT:
        return _int_value(s)
    if family is _STR:
        return _text_value(s, n, MAX_STRING_BYTES, True)
    if family is _FLOAT:
        s.charge(_FLOAT_BYTES)
        return s.unpack()
    if family is _NIL or family is _BOOL:
        return s.unpack()
    if family is _ARRAY:
        if n and depth >= MAX_ARG_DEPTH:
            raise _Bad(f"argument nested deeper than {MAX_ARG_DEPTH}")
        if n > MAX_ITEMS:
            raise _Bad(f"expected at most {MAX_ITEMS} items, found {n}")
        s.array_header()
        if not n:
            return ()
        s.charge(_tuple_bytes(n))
        return tuple(_arg_items(s, n, depth + 1))
    if family is _MAP and n == 1:
        s.map_header()
        key = s.key()
        if key == "ref":
            return _read_ref(s)
        if key == "sym":
            return _read_sym(s)
        raise _Bad(f"expected {_ARG}, found a map with key {key!r}")
    raise s.mismatch(_ARG, family, n)


def _arg_items(s: _Stream, n: int, depth: int):
    i = 0
    try:
        for i in range(n):
            yield _read_arg(s, depth)
    except _Bad as e:
        raise e.at(f"[{i}]")


def _pair(s: _Stream, expected: str) -> None:
    family, n, _ = s.peek()
    if family is not _ARRAY or n != 2:
        raise s.mismatch(expected, family, n)
    s.array_header()


def _read_ref(s: _Stream) -> Ref:
    expected = "[node, index] integers"
    try:
        _pair(s, expected)
        family, n, _ = s.peek()
        if family is not _INT:
            raise s.mismatch(expected, family, n)
        node = _int_value(s)
        family, n, _ = s.peek()
        if family is not _INT:
            raise s.mismatch(expected, family, n)
        index = _int_value(s)
    except _Bad as e:
        raise e.at(".ref")
    s.charge(48)
    return Ref(node, index)  # not shared: most outputs are read once or twice, a table entry costs more


def _read_sym(s: _Stream) -> Sym:
    expected = f"[kind in {SYM_KINDS}, value string]"
    left = s.left
    try:
        _pair(s, expected)
        family, n, _ = s.peek()
        kind = s.text() if family is _STR and n <= MAX_KEY_BYTES else None
        if kind not in SYM_KINDS:
            raise _Bad(f"expected {expected}, found kind {kind!r}")
        family, n, _ = s.peek()
        if family is not _STR:
            raise s.mismatch(expected, family, n)
        value = _text_value(s, n, MAX_STRING_BYTES, True)
    except _Bad as e:
        raise e.at(".sym")
    s.charge(48)
    return s.share(Sym(SYM_KINDS[SYM_KINDS.index(kind)], value), left)  # the constant kind: shared


# ------------------------------------------------------------------ records

_MISSING = object()
# Per field: a tighter array or string bound than the defaults, whether its strings repeat (and are shared).
_ARRAY_LIMITS = {
    ("TensorMeta", "shape"): MAX_DIMS, ("TensorSpec", "shape"): MAX_DIMS, ("Node", "kwargs"): MAX_KWARGS,
    ("Target", "compute_capability"): MAX_SMALL, ("KernelInfo", "grid"): MAX_SMALL,
    ("KernelInfo", "block"): MAX_SMALL, ("Plan", "schema_version"): MAX_SMALL,
    ("Plan", "signature"): MAX_SIGNATURES, ("Profile", "links"): MAX_DEVICES * MAX_DEVICES,
}
_STRING_LIMITS = {("Signature", "key_id"): MAX_KEY_BYTES, ("Signature", "algorithm"): MAX_KEY_BYTES}
_BYTES_LIMITS = {("Signature", "value"): 1024}  # an Ed25519 signature is 64 bytes
_UNIQUE_STRINGS = {("Node", "name")}  # sharing would only add a table entry per node
_SHARED_RECORDS = ("TensorMeta",)  # the same shape and dtype recur all over a graph


class _Record:
    """Reads one record type: a map of its fields, in any order, unknown keys skipped."""

    def __init__(self, cls) -> None:
        self.cls = cls

    def build(self, schema_: _Schema) -> None:
        cls, hints = self.cls, typing.get_type_hints(self.cls, globalns=vars(schema))
        fields = dataclasses.fields(cls)
        self.index, self.defaults, self.required = {}, [], 0
        for i, f in enumerate(fields):
            where = (cls.__name__, f.name)
            self.index[f.name] = (i, schema_.reader(hints[f.name], where), f.name)
            if f.default is not dataclasses.MISSING:
                self.defaults.append(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                self.defaults.append(f.default_factory())
            else:
                self.defaults.append(_MISSING)
                self.required |= 1 << i
        self.names = tuple(f.name for f in fields)
        self.bytes = 32 + 8 * len(fields)
        self.shared = cls.__name__ in _SHARED_RECORDS

    def __call__(self, s: _Stream):
        family, n, _ = s.peek()
        if family is not _MAP:
            raise s.mismatch(f"a map ({self.cls.__name__})", family, n)
        if n > MAX_RECORD_KEYS:
            raise _Bad(f"expected a {self.cls.__name__} of at most {MAX_RECORD_KEYS} keys, found {n}")
        if s.depth >= MAX_RECORD_DEPTH:
            raise _Bad(f"records nested deeper than {MAX_RECORD_DEPTH}")
        s.map_header()
        s.depth += 1
        left, values, seen = s.left, list(self.defaults), 0
        for _ in range(n):
            key = s.key()
            entry = self.index.get(key) if key is not None else None
            if entry is None:
                s.skip()  # a later minor version's field
                continue
            i, read, name = entry
            if seen >> i & 1:
                raise _Bad("appears twice").at("." + name)
            seen |= 1 << i
            try:
                values[i] = read(s)
            except _Bad as e:
                raise e.at("." + name)
        s.depth -= 1
        missing = self.required & ~seen
        if missing:
            raise _Bad("missing").at("." + self.names[(missing & -missing).bit_length() - 1])
        s.charge(self.bytes)
        obj = self.cls(*values)
        return s.share(obj, left) if self.shared else obj


class _Schema:
    """The readers of every schema type, built once."""

    def __init__(self) -> None:
        self.records: dict = {}
        for cls in vars(schema).values():
            if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls not in (Ref, Sym):
                self.record(cls)

    def record(self, cls) -> _Record:
        if cls not in self.records:
            self.records[cls] = rec = _Record(cls)  # registered first: OutTree holds OutTrees
            rec.build(self)
        return self.records[cls]

    def reader(self, hint, where=("", "")):
        if hint == Arg:
            return _read_arg
        if hint is int:
            return _read_int
        if hint is float:
            return _read_float
        if hint is bool:
            return _read_bool
        if hint is str:
            return _string_reader(_STRING_LIMITS.get(where, MAX_STRING_BYTES), where not in _UNIQUE_STRINGS)
        if hint is bytes:
            return _bytes_reader(_BYTES_LIMITS.get(where))  # constants and programs: bounded by the file alone
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return self.record(hint)
        args = typing.get_args(hint)
        if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
            return _array_reader(self.reader(args[0]), _ARRAY_LIMITS.get(where, MAX_ITEMS))
        if typing.get_origin(hint) is tuple and args:
            return _fixed_reader(tuple(self.reader(a) for a in args))
        raise TypeError(f"no reader for schema type {hint!r} ({'.'.join(where)})")


_SCHEMA = _Schema()
_READ_PLAN = _SCHEMA.record(Plan)


# ------------------------------------------------------------------ entry points

def _budget(size: int) -> int:
    return MEMORY_FACTOR * size + MEMORY_SLACK


def _error(e: _Bad, what: str, name: str | None) -> PlanFormatError:
    field = e.field()
    if e.unreadable:
        head = f"{what} {name}: not a readable {what} file" if name else f"not a readable {what} file"
        return PlanFormatError(f"{head}: {e.message}" + (f" (in field {field})" if field else ""))
    head = f"{what} {name}: field" if name else f"{what} field"
    return PlanFormatError(f"{head} {field or '<root>'}: {e.message}")


def decode_plan(data: bytes, *, name: str | None = None) -> Plan:
    """The plan in data; any problem is a PlanFormatError naming the file (when name is given) and the field."""
    if not data:
        raise PlanFormatError(f"plan {name}: not a readable plan file: it is empty" if name
                              else "not a readable plan file: it is empty")
    try:
        _check_header(_Stream(data, 0), name)
        s = _Stream(data, _budget(len(data)))
        plan = _READ_PLAN(s)
        s.finish()
    except _Bad as e:
        raise _error(e, "plan", name) from None
    except RecursionError:
        raise PlanFormatError(f"plan {name}: nested too deeply" if name else "plan is nested too deeply") from None
    return plan


def decode_value(data: bytes, hint, *, what: str = "value", name: str | None = None):
    """A value of schema type hint (e.g. tuple[OpProfile, ...]) decoded as strictly as a plan."""
    reader = _SCHEMA.reader(hint)
    try:
        s = _Stream(bytes(data), _budget(len(data)))
        value = reader(s)
        s.finish()
    except _Bad as e:
        raise _error(e, what, name) from None
    return value


def _check_header(s: _Stream, name: str | None) -> None:
    """format and schema_version first, so a plan of another major version is refused as that, whatever it holds."""
    prefix = f"plan {name}: " if name else ""
    family, n, _ = s.peek()
    if family is not _MAP:
        raise PlanFormatError(f"{prefix}not an Opara plan: expected a map at the top, found {s.shown(family, n)}")
    if n > MAX_RECORD_KEYS:
        raise _Bad(f"expected a Plan of at most {MAX_RECORD_KEYS} keys, found {n}")
    s.map_header()
    fmt = version = None
    for _ in range(n):
        key = s.key()
        try:
            if key == "format":
                family, n, _ = s.peek()
                if family is _STR and n <= MAX_KEY_BYTES:
                    fmt = repr(s.text())
                else:
                    pos, fmt = s.tell(), s.shown(family, n)
                    if s.tell() == pos:  # shown reads only the short scalars it shows
                        s.skip()
            elif key == "schema_version":
                version = _read_version(s)
            else:
                s.skip()
        except _Bad as e:
            raise e.at(f".{key}" if key else "")
    s.finish()
    if fmt != repr(FORMAT):
        raise PlanFormatError(f"{prefix}not an Opara plan: field format: expected {FORMAT!r}, found "
                              f"{fmt or 'no format field'}")
    if version is None:
        raise _Bad("expected [major, minor], found nothing").at(".schema_version")
    if version[0] != SCHEMA_VERSION[0]:
        raise PlanFormatError(
            f"{prefix or 'plan '}field schema_version: this reader supports major version {SCHEMA_VERSION[0]}, "
            f"the plan has {version[0]}.{version[1]}; recompile the plan with a matching oparac")


def _read_version(s: _Stream) -> tuple[int, int]:
    family, n, _ = s.peek()
    if family is not _ARRAY or n != 2:
        raise s.mismatch("[major, minor]", family, n)
    s.array_header()
    parts = []
    for _ in range(2):
        family, n, _h = s.peek()
        if family is not _INT:
            raise s.mismatch("[major, minor] integers", family, n)
        parts.append(s.unpack())
    return parts[0], parts[1]
