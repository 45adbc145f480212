"""Analytic per-op cost (FLOPs and bytes against nominal throughput): the profile when no GPU is at hand."""
from __future__ import annotations

import math

from opara_plan import DTYPE_SIZES, Graph, Node, OpProfile, Ref, node_refs
from oparac.profile.gpus import PREVIEW, GpuSpec

# The peaks come from a GpuSpec (PREVIEW for a CPU preview plan); only the relative costs matter.
KERNEL_OVERHEAD_MS = 0.002

# Ops that launch no kernel although their schema does not declare an alias.
FREE_WITHOUT_ALIAS = frozenset({"aten._unsafe_view.default"})


def numel(shape) -> int:
    return math.prod(shape) if shape else 1


def tensor_bytes(meta) -> float:
    return float(numel(meta.shape) * DTYPE_SIZES[meta.dtype])


def op_bytes(graph: Graph, node: Node) -> float:
    """Bytes read and written: every tensor argument once, every output once."""
    total = 0
    seen = set()
    for ref in node_refs(node):
        if (ref.node, ref.index) in seen:
            continue
        seen.add((ref.node, ref.index))
        meta = graph.nodes[ref.node].outputs[ref.index]
        total += numel(meta.shape) * DTYPE_SIZES[meta.dtype]
    for meta in node.outputs:
        total += numel(meta.shape) * DTYPE_SIZES[meta.dtype]
    return float(total)


def op_flops(graph: Graph, node: Node) -> float:
    """Multiply-adds count twice. Convolutions and matrix products by formula, everything else per element."""
    name = node.target.split(".")[1]
    out = node.outputs[0].shape
    refs = [a for a in node.args if isinstance(a, Ref)]
    shape_of = (lambda r: graph.nodes[r.node].outputs[r.index].shape)
    if name in ("convolution", "_convolution", "cudnn_convolution", "conv2d") and len(refs) >= 2:
        w = shape_of(refs[1])
        per_output = numel(w[1:])  # in_channels/groups * kernel elements
        return 2.0 * numel(out) * per_output
    if name in ("mm", "addmm", "bmm", "baddbmm", "matmul", "linear") and refs:
        a = shape_of(refs[1] if name in ("addmm", "baddbmm") and len(refs) > 2 else refs[0])
        k = a[-1] if a else 1
        return 2.0 * numel(out) * k
    return float(sum(numel(m.shape) for m in node.outputs))


def is_free(node: Node) -> bool:
    from opara_runtime.ops import aliased_input

    return node.target in FREE_WITHOUT_ALIAS or aliased_input(node.target) is not None


def estimate(graph: Graph, gpu: GpuSpec = PREVIEW, dtype: str = "float32") -> tuple[OpProfile, ...]:
    """One OpProfile per node from `gpu`'s peaks for `dtype`; non-ops and free ops cost nothing."""
    peak, bandwidth, ridge = gpu.flops(dtype), gpu.bytes_per_s, gpu.ridge(dtype)
    out = []
    for node in graph.nodes:
        if node.kind != "op":
            out.append(OpProfile(ms=0.0, flops=0.0, bytes=0.0, intensity="free"))
            continue
        if is_free(node):
            out.append(OpProfile(ms=0.0, flops=0.0, bytes=0.0, intensity="free"))
            continue
        flops, nbytes = op_flops(graph, node), op_bytes(graph, node)
        ms = max(flops / peak, nbytes / bandwidth) * 1e3 + KERNEL_OVERHEAD_MS
        out.append(OpProfile(ms=ms, flops=flops, bytes=nbytes, intensity=classify(flops, nbytes, ridge)))
    return tuple(out)


def classify(flops: float, nbytes: float, ridge: float = PREVIEW.ridge()) -> str:
    """Compute- or memory-intensive by arithmetic intensity (FLOPs per byte) against the ridge point."""
    return "compute" if nbytes > 0 and flops / nbytes >= ridge else "memory"
