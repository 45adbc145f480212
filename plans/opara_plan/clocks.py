"""Vector clocks of a schedule: which ops of every stream are known finished when an op starts."""
from __future__ import annotations

from array import array

from opara_plan.errors import PlanFormatError

# What checking a schedule may hold at once: a clock is one counter per stream, kept for every op another op still
# waits on. Plans the compiler writes need well under a MiB; this bounds what a hostile schedule (many streams,
# every op waited on at the end) can make validation allocate, whatever the file's size.
MAX_CLOCK_BYTES = 64 << 20


def iter_clocks(launch_order, stream, num_streams: int, waits):
    """(i, seq_i, start_i) for each op i in launch order: seq_i is i's 1-based position on its stream; start_i[t] is
    how many ops of stream t are ordered before i starts, through same-stream order and (transitively) waits.
    start_i is valid only until the next item.

    Assumes every wait's producer launches before its consumer (validate checks that first). A producer's clock is
    kept only until its last waiter has read it, and PlanFormatError is raised before the clocks kept at once would
    exceed MAX_CLOCK_BYTES.
    """
    waits_of: dict[int, list[int]] = {}
    pending: dict[int, int] = {}  # producer -> waits on it not yet read
    for consumer, producer in waits:
        waits_of.setdefault(consumer, []).append(producer)
        pending[producer] = pending.get(producer, 0) + 1
    clock_bytes = 8 * max(num_streams, 1)  # array("q"): one int64 counter per stream
    done: dict[int, array] = {}
    last_on: dict[int, array] = {}
    count = [0] * num_streams
    for i in launch_order:
        s = stream[i]
        clock = array("q", last_on[s]) if s in last_on else array("q", bytes(8 * num_streams))
        for p in waits_of.get(i, ()):
            other = done[p]
            for t in range(num_streams):
                if other[t] > clock[t]:
                    clock[t] = other[t]
            pending[p] -= 1
            if not pending[p]:
                del done[p]
        count[s] += 1
        seq = count[s]
        yield i, seq, clock
        finished = clock  # the caller is done with `clock`: it becomes i's finished clock
        finished[s] = seq
        last_on[s] = finished
        if pending.get(i):
            done[i] = finished
            if (len(done) + len(last_on)) * clock_bytes > MAX_CLOCK_BYTES:
                raise PlanFormatError(
                    f"plan schedule: too large to check, {len(done)} ops waited on at once across {num_streams} "
                    f"streams need more than {MAX_CLOCK_BYTES >> 20} MiB of clocks")


def vector_clocks(launch_order, stream, num_streams: int, waits) -> tuple[dict[int, int], dict[int, list[int]]]:
    """(seq, start) of every op at once, as iter_clocks gives them one by one (for plans already validated)."""
    seq: dict[int, int] = {}
    start: dict[int, list[int]] = {}
    for i, k, clock in iter_clocks(launch_order, stream, num_streams, waits):
        seq[i], start[i] = k, clock.tolist()
    return seq, start


def needed_waits(preds, stream, order) -> tuple[tuple[int, int], ...]:
    """The cross-stream waits a launch order needs: (consumer, producer) pairs, sorted, only those that same-stream
    order and earlier waits do not already imply. preds[i]: what op i depends on; stream[i]: its stream (a mapping
    or a sequence indexed by op).

    Vector clocks in launch order: clock[t] is how many ops of stream t are known finished when an op starts. A
    cross-stream producer needs a wait only if the clock does not already cover it; producers are taken latest
    first, since waiting on a later op of a stream covers its earlier ones. The compiler's schedules and the
    runtime's kernel streams both derive their waits here."""
    streams = max((stream[i] for i in order), default=0) + 1
    position = {i: k for k, i in enumerate(order)}
    last: dict[int, list[int]] = {}
    done: dict[int, list[int]] = {}
    seq: dict[int, int] = {}
    count = [0] * streams
    waits = []
    for i in order:
        s = stream[i]
        clock = list(last.get(s, [0] * streams))
        for p in sorted(preds[i], key=lambda p: -position[p]):
            if stream[p] != s and clock[stream[p]] < seq[p]:
                waits.append((i, p))
                clock = [max(a, b) for a, b in zip(clock, done[p])]
        count[s] += 1
        seq[i] = count[s]
        clock[s] = seq[i]
        done[i] = clock
        last[s] = clock
    return tuple(sorted(waits))
