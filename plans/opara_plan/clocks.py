"""Vector clocks of a schedule: which ops of every stream are known finished when an op starts."""
from __future__ import annotations


def vector_clocks(launch_order, stream, num_streams: int, waits) -> tuple[dict[int, int], dict[int, list[int]]]:
    """(seq, start): seq[i] is i's 1-based position on its stream; start[i][t] is how many ops of stream t
    are ordered before i starts, through same-stream order and (transitively) waits.

    Assumes every wait's producer launches before its consumer (validate checks that first).
    """
    waits_of: dict[int, list[int]] = {}
    for consumer, producer in waits:
        waits_of.setdefault(consumer, []).append(producer)
    seq: dict[int, int] = {}
    start: dict[int, list[int]] = {}
    done: dict[int, list[int]] = {}
    last_on: dict[int, list[int]] = {}
    count = [0] * num_streams
    for i in launch_order:
        s = stream[i]
        clock = list(last_on.get(s, [0] * num_streams))
        for p in waits_of.get(i, ()):
            clock = [max(a, b) for a, b in zip(clock, done[p])]
        start[i] = clock
        count[s] += 1
        seq[i] = count[s]
        finished = list(clock)
        finished[s] = seq[i]
        done[i] = finished
        last_on[s] = finished
    return seq, start
