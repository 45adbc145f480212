"""Stream assignment: opara (Opara Alg. 1), nimble (minimum chain cover), critical (list scheduling), single."""
from __future__ import annotations

from dataclasses import dataclass

from oparac.schedule.paths import bottom_levels

STREAM_ALGORITHMS = ("opara", "nimble", "critical", "single")


@dataclass(frozen=True)
class StreamAssignment:
    stream: dict[int, int]
    num_streams: int


def assign_streams(dag, costs, *, algorithm: str, max_streams: int = 0) -> StreamAssignment:
    """Stream per op, dense ids, the first op on stream 0; at most max_streams streams when > 0."""
    if algorithm not in STREAM_ALGORITHMS:
        raise ValueError(f"stream algorithm: expected one of {STREAM_ALGORITHMS}, found {algorithm!r}")
    if not dag.ops:
        return StreamAssignment({}, 1)
    if algorithm == "single" or max_streams == 1:
        return StreamAssignment({i: 0 for i in dag.ops}, 1)
    if algorithm == "opara":
        logical = _opara(dag)
    elif algorithm == "nimble":
        logical = _with_sources_on_consumers(dag, _nimble(dag))
    else:
        logical = _with_sources_on_consumers(dag, _critical(dag, costs, max_streams))
    return _fold(dag, costs, logical, max_streams)


def _with_sources_on_consumers(dag, stream: dict[int, int]) -> dict[int, int]:
    """A free op with no producer (a view of an input or weight) joins its first consumer's stream, so
    it adds no wait in front of that consumer."""
    for i in reversed(dag.ops):
        if i in dag.free and not dag.preds[i] and dag.succs[i]:
            stream[i] = stream[dag.succs[i][0]]
    return stream


def _follow_producer(dag, i: int, stream: dict[int, int]) -> int:
    """Free ops (views) stay on their first producer's stream; they never open one."""
    return stream[dag.preds[i][0]] if dag.preds[i] else 0


def _opara(dag) -> dict[int, int]:
    """Each op continues the stream of its first predecessor that has not handed its stream on yet."""
    stream: dict[int, int] = {}
    handed: set[int] = set()
    count = 0
    for i in dag.ops:
        if i in dag.free and dag.preds[i]:
            stream[i] = _follow_producer(dag, i, stream)
            continue
        for p in dag.preds[i]:
            if p not in handed:
                handed.add(p)
                stream[i] = stream[p]
                break
        else:
            stream[i] = count
            count += 1
    return stream


def _nimble(dag) -> dict[int, int]:
    """Minimum chain cover of the kernels' partial order (Dilworth via maximum bipartite matching on the
    transitive closure): as many streams as the DAG is wide, no more."""
    kernels = [i for i in dag.ops if i not in dag.free]
    index = {i: k for k, i in enumerate(kernels)}
    reach = _closure(dag, index)
    match_right: dict[int, int] = {}  # successor -> predecessor it continues
    match_left: dict[int, int] = {}
    # Greedy start along direct edges makes the augmenting searches short.
    for u in kernels:
        for v in _ordered(reach[index[u]], kernels):
            if v not in match_right:
                match_right[v], match_left[u] = u, v
                break
    for u in kernels:
        if u not in match_left:
            _augment(u, reach, index, kernels, match_left, match_right)
    stream: dict[int, int] = {}
    count = 0
    for i in dag.ops:
        if i in dag.free:
            stream[i] = _follow_producer(dag, i, stream)
        elif i in match_right:
            stream[i] = stream[match_right[i]]
        else:
            stream[i] = count
            count += 1
    return stream


def _closure(dag, index: dict[int, int]) -> list[int]:
    """Bitsets over kernel indices: reach[k] holds every kernel reachable from kernel k."""
    below: dict[int, int] = {}
    for i in reversed(dag.ops):
        bits = 0
        for s in dag.succs[i]:
            bits |= below[s]
            if s in index:
                bits |= 1 << index[s]
        below[i] = bits
    return [below[i] for i in index]


def _ordered(bits: int, kernels: list[int]):
    """Kernel ids of a bitset, nearest (lowest topological index) first."""
    while bits:
        low = bits & -bits
        yield kernels[low.bit_length() - 1]
        bits ^= low


def _augment(root: int, reach, index, kernels, match_left, match_right) -> bool:
    """Kuhn's augmenting path from `root`, iterative to stay clear of Python's recursion limit."""
    visited: set[int] = set()
    stack = [(root, _ordered(reach[index[root]], kernels))]
    path: list[tuple[int, int]] = []
    while stack:
        u, candidates = stack[-1]
        for v in candidates:
            if v in visited:
                continue
            visited.add(v)
            if v not in match_right:
                path.append((u, v))
                for a, b in path:
                    match_left[a], match_right[b] = b, a
                return True
            path.append((u, v))
            w = match_right[v]
            stack.append((w, _ordered(reach[index[w]], kernels)))
            break
        else:
            stack.pop()
            if path:
                path.pop()
    return False


def _critical(dag, costs, max_streams: int) -> dict[int, int]:
    """List scheduling by bottom level: each op goes where it can start earliest."""
    level = bottom_levels(dag, costs)
    stream: dict[int, int] = {}
    finish: dict[int, float] = {}
    free_at: list[float] = []
    waiting = {i: len(dag.preds[i]) for i in dag.ops}
    ready = [i for i in dag.ops if waiting[i] == 0]
    while ready:
        ready.sort(key=lambda i: (-level[i], i))
        i = ready.pop(0)
        est = max((finish[p] for p in dag.preds[i]), default=0.0)
        if i in dag.free:
            stream[i] = _follow_producer(dag, i, stream) if free_at else 0
            if not free_at:
                free_at.append(0.0)
            finish[i] = est
        else:
            latest = max(dag.preds[i], key=lambda p: (finish[p], -p)) if dag.preds[i] else None
            options = [(max(est, t), 0 if latest is not None and stream[latest] == s else 1, s)
                       for s, t in enumerate(free_at)]
            best = min(options) if options else None
            if best is None or (best[0] > est and (not max_streams or len(free_at) < max_streams)):
                free_at.append(0.0)
                s, start = len(free_at) - 1, est
            else:
                start, _, s = best
            stream[i] = s
            finish[i] = start + costs.ms[i]
            free_at[s] = finish[i]
        for c in dag.succs[i]:
            waiting[c] -= 1
            if waiting[c] == 0:
                ready.append(c)
    return stream


def _fold(dag, costs, logical: dict[int, int], max_streams: int) -> StreamAssignment:
    """Renumber streams densely by first use (the first op's stream becomes 0); beyond the cap, each
    logical stream joins the pool stream with the least work so far."""
    order: list[int] = []
    for i in dag.ops:
        if logical[i] not in order:
            order.append(logical[i])
    work = {s: 0.0 for s in order}
    for i in dag.ops:
        work[logical[i]] += costs.ms[i]
    if not max_streams or len(order) <= max_streams:
        mapping = {s: k for k, s in enumerate(order)}
    else:
        load = [0.0] * max_streams
        mapping = {}
        for k, s in enumerate(order):
            target = k if k < max_streams else min(range(max_streams), key=lambda t: (load[t], t))
            mapping[s] = target
            load[target] += work[s]
    stream = {i: mapping[logical[i]] for i in dag.ops}
    return StreamAssignment(stream, len(set(mapping.values())))
