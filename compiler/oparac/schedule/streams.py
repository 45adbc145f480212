"""Stream assignment: opara (Opara Alg. 1), nimble (minimum chain cover), critical (list scheduling), window
(HIOS's sliding-window grouping), single."""
from __future__ import annotations

import heapq
from dataclasses import dataclass

from oparac.options import STREAM_ALGORITHMS
from oparac.schedule.simulate import bottom_levels

WINDOW = 8  # ops the window algorithm looks ahead


@dataclass(frozen=True)
class StreamAssignment:
    stream: dict[int, int]
    num_streams: int


def assign_streams(dag, costs, *, algorithm: str, max_streams: int = 0) -> StreamAssignment:
    """A stream per op: dense ids, the first op in topological order on stream 0, at most `max_streams`
    streams when it is > 0. Kernels are placed by the algorithm, free ops ride along (_place_free_ops)."""
    if algorithm not in STREAM_ALGORITHMS:
        raise ValueError(f"stream algorithm: expected one of {STREAM_ALGORITHMS}, found {algorithm!r}")
    if max_streams < 0:
        raise ValueError(f"max_streams: expected 0 (no cap) or a positive count, found {max_streams}")
    if not dag.ops:
        return StreamAssignment({}, 1)
    if algorithm == "single" or max_streams == 1:
        return StreamAssignment({i: 0 for i in dag.ops}, 1)
    place = {"opara": _opara, "nimble": _nimble, "critical": _critical, "window": _window}[algorithm]
    logical = _place_free_ops(dag, place(dag, costs, max_streams))
    return _fold(dag, costs, logical, max_streams)


def _rider(dag, i: int, stream: dict[int, int]) -> int | None:
    """The stream a free op rides on: its first producer that has one (None for a view of an input)."""
    return next((stream[p] for p in dag.preds[i] if p in stream), None)


def _place_free_ops(dag, kernel_stream: dict[int, int]) -> dict[int, int]:
    """Free ops never open a stream. A view of a producer stays on the producer's stream; a view of an
    input or weight (no producer) joins its first consumer's stream, so that consumer needs no wait
    for it (on stream 0 it would make the consumer wait for all of stream 0's earlier work)."""
    stream = dict(kernel_stream)
    for i in dag.ops:
        if i in dag.free:
            rider = _rider(dag, i, stream)
            if rider is not None:
                stream[i] = rider
    # What is left sees no kernel behind it: views of inputs and weights, and views of those. Free ops linked by
    # their edges share one stream, that of the first consumer outside the group with one (in program order), so
    # that every such view sits with a neighbour: placed one by one, a view of an input could join a consumer
    # view that then moved to ride on another input view's stream, and be left on a stream of its own.
    left = [i for i in dag.ops if i not in stream]
    group = {i: i for i in left}

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i
    for i in left:
        for p in dag.preds[i]:
            if p in group:
                group[root(i)] = root(p)
    joined: dict[int, int] = {}
    for i in left:
        r = root(i)
        if r not in joined:
            consumer = next((stream[c] for c in dag.succs[i] if c in stream), None)
            if consumer is not None:
                joined[r] = consumer
    for i in left:
        stream[i] = joined.get(root(i), 0)
    return stream


def _opara(dag, costs, max_streams) -> dict[int, int]:
    """Each kernel continues the stream of its first predecessor that has not handed its stream on to
    another successor yet; otherwise it opens a stream. A free op passes its producer's stream through:
    whoever consumes the view takes the producer's hand-off."""
    stream: dict[int, int] = {}
    owner: dict[int, int | None] = {}  # op -> the kernel whose hand-off continues its stream
    handed: set[int] = set()
    opened = 0
    for i in dag.ops:
        if i in dag.free:
            owner[i] = next((owner[p] for p in dag.preds[i] if owner[p] is not None), None)
            continue
        owner[i] = i
        for p in dag.preds[i]:
            k = owner[p]
            if k is not None and k not in handed:
                handed.add(k)
                stream[i] = stream[k]
                break
        else:
            stream[i] = opened
            opened += 1
    return stream


def _nimble(dag, costs, max_streams) -> dict[int, int]:
    """Minimum chain cover of the kernels' partial order (Dilworth via maximum bipartite matching on the
    transitive closure): as many streams as the DAG is wide, no more. A matched pair u -> v puts v right
    after u on u's stream; v may skip ops that run elsewhere, which is fine since u precedes v."""
    kernels = [i for i in dag.ops if i not in dag.free]
    index = {i: k for k, i in enumerate(kernels)}
    reach = _closure(dag, index)
    after: dict[int, int] = {}   # kernel -> kernel it follows on the same stream
    before: dict[int, int] = {}  # kernel -> kernel that follows it
    # A greedy start along the nearest successor makes the augmenting searches short.
    for k, u in enumerate(kernels):
        for v in _members(reach[k], kernels):
            if v not in after:
                after[v], before[u] = u, v
                break
    for u in kernels:
        if u not in before:
            _augment(u, reach, kernels, index, before, after)
    stream: dict[int, int] = {}
    chains = 0
    for i in kernels:
        if i in after:
            stream[i] = stream[after[i]]
        else:
            stream[i] = chains
            chains += 1
    return stream


def _closure(dag, index: dict[int, int], *, ancestors: bool = False) -> list[int]:
    """Bitsets over kernel indices: entry k holds every kernel reachable from kernel k (through free ops too),
    or with `ancestors` every kernel that kernel k depends on."""
    edges, walk = (dag.preds, dag.ops) if ancestors else (dag.succs, tuple(reversed(dag.ops)))
    reach: dict[int, int] = {}
    for i in walk:
        bits = 0
        for j in edges[i]:
            bits |= reach[j]
            if j in index:
                bits |= 1 << index[j]
        reach[i] = bits
    return [reach[i] for i in index]


def _members(bits: int, kernels: list[int]):
    """Kernels of a bitset, nearest (lowest topological index) first."""
    while bits:
        low = bits & -bits
        yield kernels[low.bit_length() - 1]
        bits ^= low


def _augment(root: int, reach: list[int], kernels: list[int], index: dict[int, int],
             before: dict[int, int], after: dict[int, int]) -> bool:
    """Kuhn's augmenting path from kernel `root`; iterative to stay clear of the recursion limit."""
    visited: set[int] = set()
    stack = [(root, _members(reach[index[root]], kernels))]
    path: list[tuple[int, int]] = []
    while stack:
        u, candidates = stack[-1]
        for v in candidates:
            if v in visited:
                continue
            visited.add(v)
            path.append((u, v))
            if v not in after:
                for a, b in path:
                    before[a], after[b] = b, a
                return True
            w = after[v]
            stack.append((w, _members(reach[index[w]], kernels)))
            break
        else:
            stack.pop()
            if path:
                path.pop()
    return False


def _critical(dag, costs, max_streams: int) -> dict[int, int]:
    """List scheduling by bottom level (ties: lowest op id): each kernel goes to the stream on which it
    can start earliest; ties prefer a stream holding one of its producers (saves a wait), then the lowest
    stream. A stream is opened only when that starts the kernel strictly earlier and the cap allows."""
    level = bottom_levels(dag, costs)
    stream: dict[int, int] = {}   # kernels, and free ops that ride on a producer's stream
    finish: dict[int, float] = {}
    free_at: list[float] = []     # per stream: when its last kernel finishes
    waiting = {i: len(dag.preds[i]) for i in dag.ops}
    ready = [(-level[i], i) for i in dag.ops if not waiting[i]]
    heapq.heapify(ready)
    while ready:
        _, i = heapq.heappop(ready)
        est = max((finish[p] for p in dag.preds[i]), default=0.0)
        if i in dag.free:
            finish[i] = est
            rider = _rider(dag, i, stream)
            if rider is not None:
                stream[i] = rider
        else:
            homes = {stream[p] for p in dag.preds[i] if p in stream}
            options = [(max(est, t), s not in homes, s) for s, t in enumerate(free_at)]
            best = min(options, default=None)
            can_open = not max_streams or len(free_at) < max_streams
            if best is None or (best[0] > est and can_open):
                free_at.append(est)
                best = (est, False, len(free_at) - 1)
            start, _, s = best
            stream[i] = s
            finish[i] = start + costs.ms[i]
            free_at[s] = finish[i]
        for c in dag.succs[i]:
            waiting[c] -= 1
            if not waiting[c]:
                heapq.heappush(ready, (-level[c], c))
    return {i: s for i, s in stream.items() if i not in dag.free}


def _window(dag, costs, max_streams: int) -> dict[int, int]:
    """HIOS's intra-GPU grouping: slide a window of WINDOW kernels along a longest-path-first topological
    order; the kernels of the window whose every ancestor is already grouped form the next group (they are
    mutually independent) and run side by side, one stream each. A member continues the stream of one of
    its producers when that stream is still free in the group (saves a wait), else takes the lowest free
    one. HIOS chooses the partition of each window by measurement; taking the largest ready group is the
    greedy form of it. Groups hold at most `max_streams` kernels when a cap is given."""
    from oparac.schedule.order import order_launches

    kernels = [i for i in order_launches(dag, None, costs, algorithm="critical") if i not in dag.free]
    index = {i: k for k, i in enumerate(kernels)}
    ancestors = _closure(dag, index, ancestors=True)
    width = min(WINDOW, max_streams) if max_streams else WINDOW
    stream: dict[int, int] = {}
    done = 0  # bitset of grouped kernels
    remaining = kernels
    while remaining:
        group = [i for i in remaining[:WINDOW] if ancestors[index[i]] & ~done == 0][:width]
        taken: set[int] = set()
        for i in group:
            homes = [stream[p] for p in _kernel_preds(dag, i, index) if stream[p] not in taken]
            s = homes[0] if homes else min(t for t in range(len(group) + len(taken) + 1) if t not in taken)
            stream[i] = s
            taken.add(s)
        for i in group:
            done |= 1 << index[i]
        grouped = set(group)
        remaining = [i for i in remaining if i not in grouped]
    return stream


def _kernel_preds(dag, i: int, index: dict[int, int]) -> list[int]:
    """The kernels an op reads, looking through free ops (views) to the kernels behind them."""
    out, stack, seen = [], list(dag.preds[i]), set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        if p in index:
            out.append(p)
        else:
            stack.extend(dag.preds[p])
    return sorted(out)


def _fold(dag, costs, logical: dict[int, int], max_streams: int) -> StreamAssignment:
    """Renumber streams densely by first use in topological order, so the first op's stream becomes 0.

    Beyond the cap, the first `max_streams` logical streams keep a pool stream each, and every later
    one (in first-use order) joins the pool stream with the least total work so far (ties: lowest id).
    Any folding is valid: waits are derived afterwards from the final streams and launch order.
    """
    first_use = list(dict.fromkeys(logical[i] for i in dag.ops))
    if not max_streams or len(first_use) <= max_streams:
        mapping = {s: k for k, s in enumerate(first_use)}
    else:
        work = dict.fromkeys(first_use, 0.0)
        for i in dag.ops:
            work[logical[i]] += costs.ms[i]
        load = [0.0] * max_streams
        mapping = {}
        for k, s in enumerate(first_use):
            target = k if k < max_streams else min(range(max_streams), key=lambda t: (load[t], t))
            mapping[s] = target
            load[target] += work[s]
    return StreamAssignment({i: mapping[logical[i]] for i in dag.ops}, len(set(mapping.values())))
