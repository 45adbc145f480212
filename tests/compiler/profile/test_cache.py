"""The profile cache: entries round-trip, carry a checksum, and a damaged or nonsensical entry is never used."""
from __future__ import annotations

import dataclasses
import hashlib
import warnings

import msgpack
import pytest

from opara_plan import KernelInfo, OpProfile, Target
from opara_plan.canonical import canonical_bytes
from oparac.profile.cache import ProfileCache, ProfileCacheWarning, entry_bytes

TARGET = Target(device_type="cuda", gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0), torch="2.x", cuda="12.x")
KERNEL = KernelInfo(name="gemm", grid=(4, 1, 1), block=(128, 1, 1), registers_per_thread=64, shared_memory=4096,
                    occupancy=0.5)
OPS = (OpProfile(ms=0.0, flops=0.0, bytes=0.0, intensity="free"),
       OpProfile(ms=0.125, flops=2e6, bytes=4096.0, intensity="compute", kernels=(KERNEL,)),
       OpProfile(ms=0.0, flops=0.0, bytes=0.0, intensity="free"))


@pytest.fixture
def cache(tmp_path):
    return ProfileCache(tmp_path / "profiles")


@pytest.fixture
def key():
    return ProfileCache.key("fingerprint", TARGET, "float32")


def _get_quietly(cache, key, n):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good entry or a missing one warns about nothing
        return cache.get(key, n)


def test_round_trip_and_missing_entry(cache, key):
    assert _get_quietly(cache, key, 3) is None
    cache.put(key, OPS)
    assert _get_quietly(cache, key, 3) == OPS


def test_write_is_atomic_and_leaves_no_temp(cache, key, monkeypatch):
    cache.put(key, OPS)
    before = cache.path(key).read_bytes()

    def disk_full(fd):  # the new entry is written but never reaches the disk
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("opara_plan.atomic.os.fsync", disk_full)
    with pytest.warns(ProfileCacheWarning, match="cannot write .*No space left on device"):
        cache.put(key, OPS[:2] + (dataclasses.replace(OPS[2], ms=1.0),))
    monkeypatch.undo()
    assert cache.path(key).read_bytes() == before  # the old entry is whole
    assert [p.name for p in cache.folder.iterdir()] == [cache.path(key).name]  # no temp left behind
    assert _get_quietly(cache, key, 3) == OPS


@pytest.mark.parametrize("field, value", [("ms", float("nan")), ("ms", float("inf")), ("ms", -0.5),
                                          ("flops", float("-inf")), ("bytes", -1.0)])
def test_nonsense_costs_are_neither_stored_nor_used(cache, key, field, value):
    bad = OPS[:1] + (dataclasses.replace(OPS[1], **{field: value}),) + OPS[2:]
    with pytest.warns(ProfileCacheWarning, match=f"node 1: {field} must be a finite number >= 0"):
        cache.put(key, bad)
    assert not cache.path(key).exists()
    # Written by hand with a valid checksum: still refused, with a warning naming the node and the field.
    cache.folder.mkdir(parents=True, exist_ok=True)
    cache.path(key).write_bytes(entry_bytes(key, bad))
    with pytest.warns(ProfileCacheWarning, match=f"ignored and the graph profiled again: node 1: {field}"):
        assert cache.get(key, 3) is None


def _entry(for_key, **changes):
    payload = canonical_bytes(OPS)
    entry = {"format": "opara-profile-cache", "version": 1, "key": for_key,
             "sha256": hashlib.sha256(payload).hexdigest(), "ops": payload} | changes
    return msgpack.packb(entry, use_bin_type=True)


@pytest.mark.parametrize("damage, why", [
    (lambda key, good: good[:-7], "not a profile cache entry"),
    (lambda key, good: b"", "not a profile cache entry"),
    (lambda key, good: b"\x00" * 64, "not a profile cache entry"),
    (lambda key, good: msgpack.packb([{"ms": 0.1}]), "not a profile cache entry"),  # written before checksums
    (lambda key, good: msgpack.packb({"ops": []}), "not a profile cache entry"),
    (lambda key, good: _entry(key, sha256="0" * 64), "checksum mismatch"),
    (lambda key, good: _entry(key, ops=canonical_bytes(OPS[:2] + (dataclasses.replace(OPS[2], ms=9.0),))),
     "checksum mismatch"),
    (lambda key, good: _entry(key, version=99), "expected entry version 1"),
    (lambda key, good: _entry(key, key="f" * 64), "holds the entry of key"),
    (lambda key, good: _entry(key, ops=b"\x93\x01\x02\x03", sha256=hashlib.sha256(b"\x93\x01\x02\x03").hexdigest()),
     "profile cache ops"),
])
def test_damaged_entry_is_ignored_with_a_warning(cache, key, damage, why):
    cache.put(key, OPS)
    cache.path(key).write_bytes(damage(key, cache.path(key).read_bytes()))
    with pytest.warns(ProfileCacheWarning, match=why):
        assert cache.get(key, 3) is None
    cache.put(key, OPS)  # profiled again: the entry is rewritten and good
    assert _get_quietly(cache, key, 3) == OPS


def test_entry_of_another_graph_size_is_ignored(cache, key):
    cache.put(key, OPS)
    with pytest.warns(ProfileCacheWarning, match="expected 4 op profiles"):
        assert cache.get(key, 4) is None


def test_keys_are_checked_before_they_become_paths(cache):
    with pytest.raises(ValueError, match="64 hex digits"):
        cache.get("../../etc/passwd", 3)


def test_an_unwritable_folder_does_not_fail_the_compile(tmp_path, key):
    (tmp_path / "home").write_text("a file where the cache folder would go")
    with pytest.warns(ProfileCacheWarning, match="cannot write"):
        ProfileCache(tmp_path / "home" / "profiles").put(key, OPS)


def test_compile_profiles_again_after_a_damaged_entry(tmp_path, monkeypatch):
    """Through the real profiler path: the profile stage asks the cache, gets None for a damaged entry, and
    stores a fresh one. The GPU timing itself is replaced (no GPU here); the cache logic is what runs."""
    import torch

    from opara_plan import Graph, Node, Ref, TensorMeta
    from oparac.profile import profiler

    m = TensorMeta((2,), "float32")
    graph = Graph((Node(kind="input", name="x", outputs=(m,)),
                   Node(kind="op", name="relu", target="aten.relu.default", args=(Ref(0),), outputs=(m,)),
                   Node(kind="output", name="output", args=(Ref(1),))))
    calls = []
    monkeypatch.setattr(profiler, "gpu_target", lambda device: TARGET)
    monkeypatch.setattr(profiler, "materialize", lambda *a, **k: calls.append("profiled") or [None] * 3)
    monkeypatch.setattr(profiler, "time_ops", lambda *a, **k: {1: 0.25})
    monkeypatch.setattr(profiler, "kernel_records", lambda *a, **k: {})
    store = ProfileCache(tmp_path)
    fresh = profiler.profile_on_gpu(graph, torch.device("cuda"), "float32", store, _Quiet())[1]
    assert calls == ["profiled"]
    [entry] = tmp_path.iterdir()
    assert profiler.profile_on_gpu(graph, torch.device("cuda"), "float32", store, _Quiet())[1].ops == fresh.ops
    assert calls == ["profiled"]  # a cache hit
    data = bytearray(entry.read_bytes())
    data[-3] ^= 0xFF
    entry.write_bytes(bytes(data))
    with pytest.warns(ProfileCacheWarning, match="ignored and the graph profiled again"):
        again = profiler.profile_on_gpu(graph, torch.device("cuda"), "float32", store, _Quiet())[1]
    assert calls == ["profiled", "profiled"] and again.ops == fresh.ops
    assert _get_quietly(store, entry.stem, 3) == fresh.ops  # the damaged entry was replaced


class _Quiet:
    def note(self, message: str) -> None:
        pass

    def __call__(self, message: str) -> None:
        pass
