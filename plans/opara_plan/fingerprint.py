"""The graph fingerprint: sha256 over the canonical encoding of the nodes, never over weight values."""
from __future__ import annotations

import hashlib

from opara_plan.canonical import write_each
from opara_plan.schema import Graph


def graph_fingerprint(graph: Graph) -> str:
    # Each node's canonical bytes in turn, which are exactly what the plan file stores for it.
    h = hashlib.sha256()
    write_each(graph.nodes, h.update)
    return "sha256:" + h.hexdigest()
