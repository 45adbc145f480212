"""On-disk cache of per-op profiles, keyed by graph fingerprint + GPU + torch version + dtype + memory format.

An entry is checked before use: its checksum, its key, its node count and every cost (finite, not negative). A
damaged entry is ignored with a warning and the graph is profiled again, so a bad entry costs time, never a
schedule built on nonsense. The checksum catches corruption (a torn disk, a truncated copy), not an attacker:
the cache folder is the user's own, and a profile only steers the schedule, never what a plan computes.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import warnings
from pathlib import Path

import msgpack

from opara_plan import OpProfile, PlanFormatError, Target
from opara_plan.atomic import atomic_write
from opara_plan.canonical import canonical_bytes
from opara_plan.decoding import decode_value

ENTRY_FORMAT = "opara-profile-cache"
ENTRY_VERSION = 1
MAX_ENTRY_BYTES = 256 * 1024 * 1024
INTENSITIES = ("compute", "memory", "free")
_KEY = re.compile(r"[0-9a-f]{64}")
_OPS = tuple[OpProfile, ...]


class ProfileCacheWarning(UserWarning):
    """A cache entry was damaged (ignored, the graph is profiled again) or could not be written."""


class ProfileCache:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @staticmethod
    def default() -> ProfileCache | None:
        """$OPARA_CACHE_DIR or ~/.cache/opara/profiles; OPARA_CACHE_DIR=off disables caching."""
        where = os.environ.get("OPARA_CACHE_DIR")
        if where == "off":
            return None
        return ProfileCache(Path(where) if where else Path.home() / ".cache" / "opara" / "profiles")

    @staticmethod
    def key(fingerprint: str, target: Target, dtype: str, memory_format: str = "contiguous") -> str:
        parts = [fingerprint, target.gpu_name, ".".join(map(str, target.compute_capability)), target.torch,
                 target.cuda, dtype]
        if memory_format != "contiguous":  # the contiguous key is the one caches held before the option
            parts.append(memory_format)
        text = "|".join(parts)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, key: str) -> Path:
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"profile cache key: expected 64 hex digits (ProfileCache.key), found {key!r:.80}")
        return self.folder / f"{key}.msgpack"

    def get(self, key: str, num_nodes: int) -> tuple[OpProfile, ...] | None:
        """The cached profile of a graph of num_nodes nodes, or None (missing, or damaged: then with a warning)."""
        path = self.path(key)
        try:
            size = path.stat().st_size
            if size > MAX_ENTRY_BYTES:
                raise _Damaged(f"it is {size} bytes, more than the {MAX_ENTRY_BYTES} an entry may hold")
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            return _ignored(path, f"it cannot be read ({e.strerror or e})")
        except _Damaged as e:
            return _ignored(path, str(e))
        try:
            return entry_ops(data, key, num_nodes)
        except _Damaged as e:
            return _ignored(path, str(e))

    def put(self, key: str, ops: tuple[OpProfile, ...]) -> None:
        """Store ops atomically (readers see the old entry or the new one); bad costs are refused, not stored."""
        path = self.path(key)
        problem = cost_problem(ops)
        if problem:
            warnings.warn(f"profile cache: not storing {path.name}: {problem}", ProfileCacheWarning, stacklevel=2)
            return
        try:
            atomic_write(path, entry_bytes(key, ops))
        except OSError as e:  # a read-only home must not fail the compile
            warnings.warn(f"profile cache: cannot write {path}: {e.strerror or e}; the profile is not cached",
                          ProfileCacheWarning, stacklevel=2)


class _Damaged(Exception):
    """Why an entry cannot be used."""


def _ignored(path: Path, why: str) -> None:
    warnings.warn(f"profile cache entry {path} is ignored and the graph profiled again: {why}",
                  ProfileCacheWarning, stacklevel=3)
    return None


def entry_bytes(key: str, ops: tuple[OpProfile, ...]) -> bytes:
    """The file of one entry: the ops in the plan's own encoding, their sha256 and the key they belong to."""
    payload = canonical_bytes(tuple(ops))
    return msgpack.packb({"format": ENTRY_FORMAT, "version": ENTRY_VERSION, "key": key,
                          "sha256": hashlib.sha256(payload).hexdigest(), "ops": payload}, use_bin_type=True)


def entry_ops(data: bytes, key: str, num_nodes: int) -> tuple[OpProfile, ...]:
    """The ops of an entry file, every check passed; _Damaged says which failed."""
    unreadable = _Damaged(f"not a profile cache entry of format {ENTRY_FORMAT!r} (written before entries "
                          f"carried checksums, or another file)")
    try:
        entry = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=MAX_ENTRY_BYTES,
                                max_array_len=0, max_map_len=8)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise unreadable from None
    if not isinstance(entry, dict) or entry.get("format") != ENTRY_FORMAT:
        raise unreadable
    if entry.get("version") != ENTRY_VERSION:
        raise _Damaged(f"expected entry version {ENTRY_VERSION}, found {entry.get('version')!r:.40}")
    if entry.get("key") != key:
        raise _Damaged(f"it holds the entry of key {str(entry.get('key'))[:16]!r}, not {key[:16]!r}")
    payload, checksum = entry.get("ops"), entry.get("sha256")
    if not isinstance(payload, bytes) or not isinstance(checksum, str):
        raise _Damaged("expected 'ops' bytes and a 'sha256' string")
    found = hashlib.sha256(payload).hexdigest()
    if found != checksum:
        raise _Damaged(f"checksum mismatch (stored sha256 {checksum[:16]}..., the ops hash to {found[:16]}...)")
    try:
        ops = decode_value(payload, _OPS, what="profile cache ops")
    except PlanFormatError as e:
        raise _Damaged(str(e)) from None
    if len(ops) != num_nodes:
        raise _Damaged(f"expected {num_nodes} op profiles (one per node), found {len(ops)}")
    problem = cost_problem(ops)
    if problem:
        raise _Damaged(problem)
    return ops


def cost_problem(ops: tuple[OpProfile, ...]) -> str:
    """'' when every cost is a finite, non-negative number, else what the first bad one is and where."""
    for i, op in enumerate(ops):
        for name in ("ms", "flops", "bytes"):
            value = getattr(op, name)
            if not math.isfinite(value) or value < 0:
                return f"node {i}: {name} must be a finite number >= 0, found {value!r}"
        if op.intensity not in INTENSITIES:
            return f"node {i}: intensity must be one of {INTENSITIES}, found {op.intensity!r:.40}"
        for k, kernel in enumerate(op.kernels):
            numbers = (*kernel.grid, *kernel.block, kernel.registers_per_thread, kernel.shared_memory)
            if any(n < 0 for n in numbers) or not (math.isfinite(kernel.occupancy) and kernel.occupancy >= 0):
                return f"node {i} kernel {k} ({kernel.name[:40]!r}): sizes and occupancy must be finite and >= 0"
    return ""
