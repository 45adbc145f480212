"""Cross-stream synchronisation: only the waits that same-stream order and other waits do not imply."""
from __future__ import annotations


def reduce_waits(dag, stream: dict[int, int], order) -> tuple[tuple[int, int], ...]:
    """(consumer, producer) pairs, sorted.

    Vector clocks in launch order: clock[t] is how many ops of stream t are known finished when an op
    starts. A cross-stream producer needs a wait only if the clock does not already cover it; producers
    are taken latest first, since waiting on a later op of a stream covers its earlier ones.
    """
    streams = max(stream.values(), default=0) + 1
    position = {i: k for k, i in enumerate(order)}
    last: dict[int, list[int]] = {}
    done: dict[int, list[int]] = {}
    seq: dict[int, int] = {}
    count = [0] * streams
    waits = []
    for i in order:
        s = stream[i]
        clock = list(last.get(s, [0] * streams))
        for p in sorted(dag.preds[i], key=lambda p: -position[p]):
            if stream[p] != s and clock[stream[p]] < seq[p]:
                waits.append((i, p))
                clock = [max(a, b) for a, b in zip(clock, done[p])]
        count[s] += 1
        seq[i] = count[s]
        clock[s] = seq[i]
        done[i] = clock
        last[s] = clock
    return tuple(sorted(waits))
