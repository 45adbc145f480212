"""On-disk cache of per-op profiles, keyed by graph fingerprint + GPU + torch version + dtype + memory format."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import msgpack

from opara_plan import OpProfile, PlanFormatError, Target
from opara_plan.codec import _atomic_write, _decode, _encode

_HINT = tuple[OpProfile, ...]


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

    def get(self, key: str, num_nodes: int) -> tuple[OpProfile, ...] | None:
        path = self.folder / f"{key}.msgpack"
        try:
            obj = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=True)
            ops = _decode(obj, _HINT, "profile_cache")
        except (OSError, ValueError, PlanFormatError, msgpack.UnpackException):
            return None  # a missing or damaged cache entry just means profiling again
        return ops if len(ops) == num_nodes else None

    def put(self, key: str, ops: tuple[OpProfile, ...]) -> None:
        try:
            _atomic_write(self.folder / f"{key}.msgpack", msgpack.packb(_encode(ops, _HINT), use_bin_type=True))
        except OSError:
            pass  # a read-only home must not fail the compile
