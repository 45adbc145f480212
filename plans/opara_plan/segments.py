"""Segments of a schedule: cut each stream's ops wherever a cross-stream dependency enters or leaves."""
from __future__ import annotations

from opara_plan.schema import Schedule, Segment


def cut_segments(schedule: Schedule, max_ops: int = 0) -> tuple[Segment, ...]:
    """Segments in the launch order of their first op.

    An op that waits on another stream starts a segment; an op another stream waits on ends one. So a
    segment's inputs from other streams are ready when its first op's waits are, and its outputs are
    signalled once the whole segment is done; the segments form a DAG. max_ops > 0 also cuts long runs.
    """
    consumers = {c for c, _ in schedule.waits}
    producers = {p for _, p in schedule.waits}
    open_on: dict[int, int] = {}  # stream -> index of its open segment
    groups: list[tuple[int, list[int]]] = []
    for i in schedule.launch_order:
        st = schedule.stream[i]
        k = open_on.get(st)
        if k is None or i in consumers or (max_ops and len(groups[k][1]) >= max_ops):
            groups.append((st, []))
            k = open_on[st] = len(groups) - 1
        groups[k][1].append(i)
        if i in producers:
            del open_on[st]
    owner = {i: k for k, (_, ops) in enumerate(groups) for i in ops}
    waits_of: dict[int, set[int]] = {}
    for c, p in schedule.waits:
        waits_of.setdefault(owner[c], set()).add(owner[p])
    return tuple(Segment(stream=st, ops=tuple(ops), waits=tuple(sorted(waits_of.get(k, ()))))
                 for k, (st, ops) in enumerate(groups))
