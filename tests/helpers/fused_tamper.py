"""Tampering with a fused plan's stored programs as an attacker with write access to plan storage would: the
artifact is decompressed and re-framed with its CRCs recomputed, so it still loads."""
from __future__ import annotations

import dataclasses
import pickle
import zlib

from torch.compiler._cache import CacheArtifactFactory, CacheArtifactManager, _serialize_single_cache
from torch.utils._appending_byte_serializer import AppendingByteSerializer, BytesReader, BytesWriter


def tamper_source(plan, marker):
    """Every stored program's wrapper source first writes `marker` when it is called."""
    return _tamper(plan, "inductor", lambda content: _inject(content, marker))


def tamper_pickle(plan, marker):
    """Unpickling every stored program's AOTAutograd entry writes `marker` (then yields the real entry)."""
    return _tamper(plan, "aot_autograd", lambda content: pickle.dumps(_Payload(str(marker), content)))


def _tamper(plan, kind: str, change):
    programs = tuple(_edit(blob, kind, change) for blob in plan.fusion.programs)
    return dataclasses.replace(plan, fusion=dataclasses.replace(plan.fusion, programs=programs))


def _edit(blob: bytes, kind: str, change) -> bytes:
    r = BytesReader(zlib.decompress(blob))
    header, torch_key, key, inner = r.read_bytes(), r.read_bytes(), r.read_str(), r.read_bytes()
    artifacts = CacheArtifactManager.deserialize(inner)
    assert artifacts and artifacts.get(kind), f"no {kind} entry in the artifact"
    artifacts[kind] = [CacheArtifactFactory.create(kind, a.key, change(a.content)) for a in artifacts[kind]]
    entries = AppendingByteSerializer(serialize_fn=_serialize_single_cache)
    entries.extend(artifacts.items())
    w = BytesWriter()
    w.write_bytes(header)
    w.write_bytes(torch_key)
    w.write_str(key)
    w.write_bytes(entries.to_bytes())
    return zlib.compress(w.to_bytes())


def _inject(content: bytes, marker) -> bytes:
    graph = pickle.loads(content)  # inductor's CompiledFxGraph: the wrapper's Python source is a field
    head = "    def call(self, args):\n"
    assert head in graph.source_code
    graph.source_code = graph.source_code.replace(head, head + f"        __import__('pathlib').Path({str(marker)!r}).write_text('source')\n", 1)
    return pickle.dumps(graph)


class _Payload:
    """Pickles as a call of eval: what any pickle inside an artifact can do."""

    def __init__(self, marker: str, original: bytes):
        self.marker, self.original = marker, original

    def __reduce__(self):
        return (eval, (f"(__import__('pathlib').Path({self.marker!r}).write_text('pickle'), "
                       f"__import__('pickle').loads({self.original!r}))[1]",))
