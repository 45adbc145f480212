"""The graph fingerprint: sha256 over the canonical encoding of the nodes, never over weight values."""
from __future__ import annotations

import hashlib

import msgpack

from opara_plan.schema import Graph


def graph_fingerprint(graph: Graph) -> str:
    # Encoded through the plan codec so the fingerprint is exactly what the file stores.
    from opara_plan.codec import _encode

    h = hashlib.sha256()
    for node in graph.nodes:
        h.update(msgpack.packb(_encode(node, type(node)), use_bin_type=True))
    return "sha256:" + h.hexdigest()
