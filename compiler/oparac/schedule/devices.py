"""Mapping ops onto the GPUs of one host (HIOS-LP) and the device-aware makespan model it ranks with."""
from __future__ import annotations

from dataclasses import dataclass

from opara_plan import Link

# Relative margin a candidate must win by: float noise never moves work off device 0.
_EPS = 1e-9


@dataclass(frozen=True)
class TransferModel:
    """Time to copy a tensor between two GPUs: a fixed latency plus a per-byte cost (1 / bandwidth)."""

    latency_ms: float
    ms_per_byte: float

    def cost(self, nbytes: float) -> float:
        return self.latency_ms + self.ms_per_byte * nbytes

    # The interface map_devices reads, shared with Links: one model serves every pair.
    uniform = True

    def between(self, src: int, dst: int) -> TransferModel:
        return self

    def worst(self, nbytes: float) -> float:
        return self.cost(nbytes)


@dataclass(frozen=True)
class Links:
    """A transfer model per ordered device pair (measured links differ: PCIe vs NVLink, or by direction)."""

    pairs: dict[tuple[int, int], TransferModel]

    @property
    def uniform(self) -> bool:
        return len(set(self.pairs.values())) <= 1

    def between(self, src: int, dst: int) -> TransferModel:
        try:
            return self.pairs[(src, dst)]
        except KeyError:
            raise ValueError(f"no transfer model from device {src} to device {dst}") from None

    def worst(self, nbytes: float) -> float:
        """The dearest pair's cost: what the longest-path search charges an edge before it knows the devices."""
        return max((m.cost(nbytes) for m in self.pairs.values()), default=0.0)


def transfer_costs(links: tuple[Link, ...]) -> Links:
    """The plan's copy links (profile.links) as the scheduler's per-pair transfer models."""
    return Links({(k.src, k.dst): TransferModel(k.latency_ms, k.ms_per_byte) for k in links})


@dataclass(frozen=True)
class DeviceMapping:
    device: dict[int, int]  # op id -> device index, 0..num_devices-1
    num_devices: int
    predicted_ms: float     # simulate_devices of `device`, as map_devices ranked it


def simulate_devices(dag, costs, device: dict[int, int], out_bytes: dict[int, float], transfer: TransferModel | Links,
                     *, streams_per_device: int | None = None) -> float:
    """Predicted makespan of `device` placement, by list scheduling in topological (dag.ops) order.

    An op is ready when every producer has finished, plus the copy of the producer's output
    (`transfer.between(src, dst).cost(out_bytes[producer])`) when the producer sits on another device
    (copies overlap with everything: no link contention). With
    `streams_per_device=None` each device runs every ready op at once; with k it has k lanes and an op
    takes the lane where it can start first (ties: the lane that became free last, so an idle lane
    stays open for an independent op; then the lowest lane). Free ops take no lane and no time. Like `simulate`, no contention between concurrent kernels
    is modelled, so the unlimited model never rewards spreading ops over devices: rank mappings with a
    cap (map_devices uses 1, the regime HIOS targets where one large op fills a GPU).
    """
    if streams_per_device is not None and streams_per_device < 1:
        raise ValueError(f"streams_per_device: expected None or >= 1, got {streams_per_device}")
    lanes: dict[int, list[float]] = {}
    finish: dict[int, float] = {}
    for i in dag.ops:
        d = device[i]
        ready = 0.0
        for p in dag.preds[i]:
            arrival = finish[p] if device[p] == d else finish[p] + transfer.between(device[p], d).cost(out_bytes[p])
            ready = max(ready, arrival)
        if streams_per_device is None or i in dag.free:
            finish[i] = ready + costs.ms[i]
            continue
        free_at = lanes.setdefault(d, [0.0] * streams_per_device)
        lane = min(range(streams_per_device), key=lambda k: (max(ready, free_at[k]), -free_at[k], k))
        finish[i] = free_at[lane] = max(ready, free_at[lane]) + costs.ms[i]
    return max(finish.values(), default=0.0)


def map_devices(dag, costs, out_bytes: dict[int, float], *, num_devices: int, transfer: TransferModel | Links,
                streams_per_device: int | None = 1) -> DeviceMapping:
    """HIOS-LP: place ops on `num_devices` GPUs one longest path at a time.

    Repeat until every op is placed: take the longest path through the not yet placed ops (op times
    plus, on each edge, the copy of the producer's output that splitting the edge would cost, as in
    CPOP/HEFT), try the whole path on each device, and keep the device whose placement
    `simulate_devices` predicts fastest (ties: the lowest device id).

    Choices:
    - Not yet placed ops sit provisionally on device 0 while a candidate is evaluated, so every
      candidate is timed on the whole graph, and "this path on device 0" is exactly the current
      mapping: the prediction never gets worse from one step to the next, so the result is never
      predicted slower than everything on device 0. A final comparison with the all-on-device-0
      mapping (which wins ties) states that guarantee explicitly.
    - Free ops (views) follow their first producer's device (dag.preds order); a free op with no
      producer (a view of a graph input) follows its first consumer. Where a path would put a free
      op elsewhere, this rule wins, in every candidate as in the result.
    - Ranking uses `streams_per_device` lanes per device (default 1, see simulate_devices); the
      streams inside each GPU are scheduled afterwards by the single-GPU algorithms.
    - With one transfer model for every pair (devices interchangeable) devices are renumbered in order
      of first use along dag.ops, so the first op (which reads the inputs) is on device 0; that changes
      no prediction. With per-pair Links that differ, renumbering would change the copies' costs, so the
      mapping is kept as predicted.
    - The path search weighs an edge by `transfer.worst` (the dearest pair), as the devices are not known yet.
    Deterministic: ties in the path go to the lowest op id, ties between devices to the lowest id.
    """
    if num_devices < 1:
        raise ValueError(f"num_devices: expected >= 1, got {num_devices}")
    missing = [i for i in dag.ops if i not in out_bytes]
    if missing:
        raise ValueError(f"out_bytes: expected an output size for every op, missing ops {missing[:5]}")

    def predict(device: dict[int, int]) -> float:
        return simulate_devices(dag, costs, device, out_bytes, transfer, streams_per_device=streams_per_device)

    single = dict.fromkeys(dag.ops, 0)
    single_ms = predict(single)
    if num_devices == 1:
        return DeviceMapping(single, 1, single_ms)

    placed: dict[int, int] = {}
    current, current_ms = single, single_ms
    while len(placed) < len(dag.ops):
        path = _longest_unplaced_path(dag, costs, out_bytes, transfer, placed)
        best_device, best, best_ms = 0, None, 0.0
        for d in range(num_devices):
            candidate = _follow_producers(dag, {i: placed.get(i, 0) for i in dag.ops} | dict.fromkeys(path, d))
            ms = predict(candidate)
            if best is None or ms < best_ms - _EPS * max(1.0, best_ms):
                best_device, best, best_ms = d, candidate, ms
        placed.update(dict.fromkeys(path, best_device))
        current, current_ms = best, best_ms

    if single_ms <= current_ms + _EPS * max(1.0, single_ms):
        return DeviceMapping(single, num_devices, single_ms)
    return DeviceMapping(_first_use_order(dag, current) if transfer.uniform else current, num_devices, current_ms)


def _longest_unplaced_path(dag, costs, out_bytes, transfer, placed) -> tuple[int, ...]:
    """The longest path through unplaced ops, edges weighted by the producer's copy cost; ties: lowest id."""
    level: dict[int, float] = {}
    nxt: dict[int, int | None] = {}
    for i in reversed(dag.ops):
        if i in placed:
            continue
        after = max((s for s in dag.succs[i] if s in level), key=lambda s: (level[s], -s), default=None)
        nxt[i] = after
        level[i] = costs.ms[i] + (0.0 if after is None else transfer.worst(out_bytes[i]) + level[after])
    start = max(level, key=lambda i: (level[i], -i))
    path = [start]
    while nxt[path[-1]] is not None:
        path.append(nxt[path[-1]])
    return tuple(path)


def _first_use_order(dag, device: dict[int, int]) -> dict[int, int]:
    rename: dict[int, int] = {}
    for i in dag.ops:
        rename.setdefault(device[i], len(rename))
    return {i: rename[d] for i, d in device.items()}


def _follow_producers(dag, device: dict[int, int]) -> dict[int, int]:
    """`device` with every free op moved to its first producer's device (or first consumer's, or 0)."""
    out = dict(device)
    for i in reversed(dag.ops):  # views of graph inputs first, so a view of one of them follows it below
        if i in dag.free and not dag.preds[i]:
            out[i] = out[dag.succs[i][0]] if dag.succs[i] else 0
    for i in dag.ops:
        if i in dag.free and dag.preds[i]:
            out[i] = out[dag.preds[i][0]]
    return out
