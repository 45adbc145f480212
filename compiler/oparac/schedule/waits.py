"""Cross-stream synchronisation: only the waits that same-stream order and other waits do not imply."""
from __future__ import annotations

from opara_plan.clocks import needed_waits


def reduce_waits(dag, stream: dict[int, int], order) -> tuple[tuple[int, int], ...]:
    """(consumer, producer) pairs, sorted: the waits the launch order needs (opara_plan.clocks.needed_waits)."""
    return needed_waits(dag.preds, stream, order)
