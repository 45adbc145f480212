"""The memory a plan's captured CUDA graph holds, predicted from its tensor sizes and lifetimes (no GPU needed).

The capture allocates every op's outputs from the graph's private pool in launch order and frees them at the
release points of opara_runtime.lifetimes. The caching allocator reuses a freed block only for later work of the
stream that freed it, so the pool grows to the sum over streams of each stream's peak of live bytes. Views
allocate nothing; inputs and weights live outside the pool. What the prediction leaves out: the allocator's
rounding and fragmentation, library workspaces, and the insides of fused segments (their outputs are counted).
So it is a lower bound: GoogLeNet at batch 8 on an H200 predicts 127 MiB of live tensors, and its graph's pool
measures 592 MiB (allocator segments per stream, cuDNN workspaces). Ratios between buckets hold better: 1.00x
predicted, 1.08x measured for batches 1, 2, 4 and 8 in one shared pool.
"""
from __future__ import annotations

from dataclasses import dataclass

from opara_plan import DTYPE_SIZES, Plan, Ref
from opara_runtime.devices import node_device
from opara_runtime.lifetimes import release_points
from opara_runtime.ops import aliased_input


@dataclass(frozen=True)
class GraphMemory:
    """Per plan stream: the peak of live bytes during the capture, and the bytes still held after it."""

    peak: tuple[int, ...]
    held: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.peak)


def value_bytes(plan: Plan, i: int) -> int:
    """What node i's outputs take (0 for a view, which shares its input's memory)."""
    node = plan.graph.nodes[i]
    if node.kind != "op" or aliased_input(node.target) is not None:
        return 0
    total = 0
    for meta in node.outputs:
        numel = 1
        for d in meta.shape:
            numel *= d
        total += numel * DTYPE_SIZES[meta.dtype]
    return total


def predict_graph_memory(plan: Plan) -> GraphMemory:
    """The pool of one capture of `plan` on its first device (values of other devices live in their own pools)."""
    s = plan.schedule
    # Fused segments keep their outputs for the whole graph (execute._launch_segments); inductor owns the rest.
    release = {} if plan.fusion.backend else release_points(plan, sequential=False)
    live = [0] * s.num_streams
    peak = [0] * s.num_streams
    home: dict[int, int] = {}
    size: dict[int, int] = {}
    for i in s.launch_order:
        if node_device(plan, i) != 0:
            continue
        b = value_bytes(plan, i)
        if b:
            st = s.stream[i]
            home[i], size[i] = st, b
            live[st] += b
            peak[st] = max(peak[st], live[st])
        for j in release.get(i, ()):
            if j in size:
                live[home[j]] -= size.pop(j)
    # Once captured, only the graph's outputs stay allocated: its other values are dropped with the capture's
    # list, and their blocks go back to the pool for the next capture to reuse.
    held = [0] * s.num_streams
    for r in {_root(plan, ref.node) for ref in plan.graph.nodes[-1].args}:
        if r in home:
            held[home[r]] += value_bytes(plan, r)
    return GraphMemory(peak=tuple(peak), held=tuple(held))


def _root(plan: Plan, i: int) -> int:
    """The node whose memory node i's value is (a view's base, through chains of views)."""
    nodes = plan.graph.nodes
    while nodes[i].kind == "op":
        k = aliased_input(nodes[i].target)
        if k is None or k >= len(nodes[i].args) or not isinstance(nodes[i].args[k], Ref):
            break
        i = nodes[i].args[k].node
    return i


def capture_order(memories: list[GraphMemory]) -> list[int]:
    """Largest first: it sizes the shared pool, and each later capture fits into the blocks it freed."""
    return sorted(range(len(memories)), key=lambda k: -memories[k].total)


def predict_shared_pool(memories: list[GraphMemory]) -> tuple[list[int], int]:
    """(what each capture adds to a pool shared by all, in the given list's order; the pool's total), capturing
    in capture_order with shared streams: on each stream a capture needs its own peak on top of what the
    captures before it still hold there."""
    width = max(len(m.peak) for m in memories)
    reserved, held = [0] * width, [0] * width
    added = [0] * len(memories)
    for k in capture_order(memories):
        m = memories[k]
        before = sum(reserved)
        for st in range(len(m.peak)):
            reserved[st] = max(reserved[st], held[st] + m.peak[st])
            held[st] += m.held[st]
        added[k] = sum(reserved) - before
    return added, sum(reserved)
