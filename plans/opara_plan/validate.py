"""Semantic checks of a decoded plan: graph well-formed, schedule complete, topological and race-free."""
from __future__ import annotations

import math

from opara_plan.allowlist import ALLOWED_OPS
from opara_plan.clocks import iter_clocks
from opara_plan.errors import PlanFormatError, UnsupportedOpError
from opara_plan.fingerprint import graph_fingerprint
from opara_plan.schema import (CONCAT_PARAM, FUSION_MODES, HIGH_PRIORITY, MAX_CONCAT_PARTS, MEMORY_FORMATS,
                               NO_KERNEL_STREAMS, NODE_KINDS, Graph, Plan, Ref, Sym)

DTYPE_SIZES = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
    "int8": 1, "uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "bool": 1, "complex64": 8, "complex128": 16,
}
MAX_NODES = 1_000_000
MAX_STREAMS = 1024
MAX_DEVICES = 64
# The op that moves a value to another GPU: `aten._to_copy.default(x, device=<Sym device>)` on the destination.
COPY_TARGET = "aten._to_copy.default"


def node_label(plan: Plan, i: int) -> str:
    node = plan.graph.nodes[i]
    return f"node {i} ({node.target or node.kind} {node.name!r})"


def iter_refs(arg):
    """Every Ref inside an argument tree."""
    if isinstance(arg, Ref):
        yield arg
    elif isinstance(arg, tuple):
        for a in arg:
            yield from iter_refs(a)


def node_refs(node):
    yield from iter_refs(node.args)
    for _, v in node.kwargs:
        yield from iter_refs(v)


def is_copy(node) -> bool:
    """A cross-device copy node: _to_copy of one value with a device argument (placed on the destination)."""
    return (node.kind == "op" and node.target == COPY_TARGET and sum(1 for _ in iter_refs(node.args)) == 1
            and any(k == "device" and isinstance(v, Sym) and v.kind == "device" for k, v in node.kwargs))


def require_allowed_ops(graph: Graph) -> None:
    """Compile time: UnsupportedOpError at the first op that Opara's allowlist lacks, saying what to do."""
    for i, node in enumerate(graph.nodes):
        if node.kind == "op" and node.target not in ALLOWED_OPS:
            raise UnsupportedOpError(
                f"node {i} ({node.name!r}): {node.target} is not on Opara's allowlist of the ATen ops a plan may run "
                f"(opara_plan/allowlist.py); plans are untrusted input, so the runtime refuses any other op. Rewrite "
                f"that part of the model with ops the zoo uses, or, if the op is functional and safe, add a model "
                f"that emits it to tools/gen_allowlist.py and regenerate the list")


def validate(plan: Plan) -> None:
    """Raise PlanFormatError naming the field or node at the first inconsistency."""
    _check_graph(plan)
    _check_model(plan)
    if plan.model.fingerprint != graph_fingerprint(plan.graph):
        raise PlanFormatError("plan field model.fingerprint: does not match the plan's graph "
                              "(the file was altered or corrupted)")
    _check_schedule(plan)
    _check_devices(plan)
    _check_links(plan)
    f = plan.fusion
    if f.backend or f.segments or f.mode != "segments" or f.kernels != NO_KERNEL_STREAMS:
        _check_fusion(plan)
    if len(plan.profile.ops) != len(plan.graph.nodes):
        raise PlanFormatError(f"plan field profile.ops: expected {len(plan.graph.nodes)} entries "
                              f"(one per node), found {len(plan.profile.ops)}")


def _check_graph(plan: Plan) -> None:
    nodes = plan.graph.nodes
    if not nodes or len(nodes) > MAX_NODES:
        raise PlanFormatError(f"plan field graph.nodes: expected 1..{MAX_NODES} nodes, found {len(nodes)}")
    if nodes[-1].kind != "output" or sum(n.kind == "output" for n in nodes) != 1:
        raise PlanFormatError("plan field graph.nodes: expected exactly one 'output' node, the last")
    params: dict[str, tuple] = {}  # name -> what it binds: weights are placed once per name
    for i, node in enumerate(nodes):
        where = f"plan node {i} ({node.target or node.kind} {node.name!r})"
        if node.kind == "param" and params.setdefault(node.name, (node.target, node.args, node.outputs)) != (
                node.target, node.args, node.outputs):
            raise PlanFormatError(f"{where}: another param of this name binds something else; a name binds one "
                                  f"weight")
        if node.kind not in NODE_KINDS:
            raise PlanFormatError(f"{where}: kind must be one of {NODE_KINDS}, found {node.kind!r}")
        if node.kind == "op" and node.target.count(".") != 2:
            raise PlanFormatError(f"{where}: target must be 'namespace.op.overload', found {node.target!r}")
        if node.kind == "op" and node.target not in ALLOWED_OPS:
            raise PlanFormatError(f"{where}: op {node.target} is not on Opara's allowlist (opara_plan/allowlist.py); "
                                  f"a plan may run only the ATen ops Opara's front ends emit")
        if node.kind == "param" and node.target == CONCAT_PARAM:
            _check_concat_param(node, where)
        elif node.kind not in ("op", "output") and (node.args or node.kwargs):
            raise PlanFormatError(f"{where}: a {node.kind} node takes no arguments")
        elif node.kind in ("input", "param", "constant") and node.target:
            raise PlanFormatError(f"{where}: {'an' if node.kind == 'input' else 'a'} {node.kind} node has no target"
                                  + (f" ('{CONCAT_PARAM}' is a param's only one)" if node.kind == "param" else ""))
        if node.kind != "output" and not node.outputs:
            raise PlanFormatError(f"{where}: output metadata missing")
        for o, meta in enumerate(node.outputs):
            if meta.dtype not in DTYPE_SIZES:
                raise PlanFormatError(f"{where} output {o}: unknown dtype {meta.dtype!r}")
            if any(d < 0 for d in meta.shape):
                raise PlanFormatError(f"{where} output {o}: negative dimension in shape {list(meta.shape)}")
        if node.kind == "constant":
            meta = node.outputs[0]
            numel = 1
            for d in meta.shape:
                numel *= d
            if numel * DTYPE_SIZES[meta.dtype] != len(node.data):
                raise PlanFormatError(f"{where}: constant holds {len(node.data)} bytes, its shape "
                                      f"{list(meta.shape)} {meta.dtype} needs {numel * DTYPE_SIZES[meta.dtype]}")
        for ref in node_refs(node):
            if not 0 <= ref.node < i:
                raise PlanFormatError(f"{where}: refers to node {ref.node}, expected an earlier node (0..{i - 1})")
            src = nodes[ref.node]
            if src.kind == "output" or not 0 <= ref.index < len(src.outputs):
                raise PlanFormatError(f"{where}: refers to output {ref.index} of node {ref.node}, "
                                      f"which has {len(src.outputs)} outputs")
        _check_syms(node.args, where)


def _check_concat_param(node, where: str) -> None:
    """A merged weight: 2..MAX_CONCAT_PARTS distinct weight names, nothing else (the runtime checks each part's
    shape against the model and the declared output when it binds them)."""
    parts = node.args
    if node.kwargs or not 2 <= len(parts) <= MAX_CONCAT_PARTS or not all(isinstance(p, str) and p for p in parts):
        raise PlanFormatError(f"{where}: a '{CONCAT_PARAM}' param names 2..{MAX_CONCAT_PARTS} weights, found "
                              f"{len(parts)} arguments{' and keyword arguments' if node.kwargs else ''}"
                              f"{'' if all(isinstance(p, str) and p for p in parts) else ', not all of them names'}")
    if len(set(parts)) != len(parts):
        raise PlanFormatError(f"{where}: a '{CONCAT_PARAM}' param names a weight twice")
    if not node.outputs or not node.outputs[0].shape:
        raise PlanFormatError(f"{where}: a '{CONCAT_PARAM}' param needs at least one dimension to stack along")


def _check_syms(arg, where):
    if isinstance(arg, Sym) and arg.kind == "dtype" and arg.value not in DTYPE_SIZES:
        raise PlanFormatError(f"{where}: unknown dtype argument {arg.value!r}")
    if isinstance(arg, tuple):
        for a in arg:
            _check_syms(a, where)


def _check_model(plan: Plan) -> None:
    if plan.model.memory_format not in MEMORY_FORMATS:
        raise PlanFormatError(f"plan field model.memory_format: expected one of {MEMORY_FORMATS}, found "
                              f"{plan.model.memory_format!r}")
    inputs = [n for n in plan.graph.nodes if n.kind == "input"]
    specs = plan.model.inputs
    if len(inputs) != len(specs):
        raise PlanFormatError(f"plan field model.inputs: {len(specs)} specs for {len(inputs)} input nodes")
    for spec, node in zip(specs, inputs):
        meta = node.outputs[0]
        if (spec.name, tuple(spec.shape), spec.dtype) != (node.name, meta.shape, meta.dtype):
            raise PlanFormatError(f"plan field model.inputs: spec {spec.name!r} does not match input node "
                                  f"{node.name!r} {meta.dtype}{list(meta.shape)}")
    flat = len(plan.graph.nodes[-1].args)
    _check_tree(plan.model.output_tree, flat, "model.output_tree", 0)


def _check_tree(tree, flat: int, path: str, depth: int) -> None:
    if depth > 32:
        raise PlanFormatError(f"plan field {path}: nested deeper than 32")
    if tree.kind == "tensor":
        if not 0 <= tree.index < flat:
            raise PlanFormatError(f"plan field {path}.index: expected 0..{flat - 1}, found {tree.index}")
    elif tree.kind == "dict":
        if len(tree.keys) != len(tree.children):
            raise PlanFormatError(f"plan field {path}: {len(tree.keys)} keys for {len(tree.children)} values")
    elif tree.kind not in ("tuple", "list", "none"):
        raise PlanFormatError(f"plan field {path}.kind: expected tensor/tuple/list/dict/none, found {tree.kind!r}")
    for i, child in enumerate(tree.children):
        _check_tree(child, flat, f"{path}.children[{i}]", depth + 1)


def _check_schedule(plan: Plan) -> None:
    nodes, s = plan.graph.nodes, plan.schedule
    n = len(nodes)
    ops = [i for i, node in enumerate(nodes) if node.kind == "op"]
    if not 1 <= s.num_streams <= MAX_STREAMS:
        raise PlanFormatError(f"plan field schedule.num_streams: expected 1..{MAX_STREAMS}, found {s.num_streams}")
    if not 1 <= s.num_devices <= MAX_DEVICES:
        raise PlanFormatError(f"plan field schedule.num_devices: expected 1..{MAX_DEVICES}, found {s.num_devices}")
    if len(s.stream) != n:
        raise PlanFormatError(f"plan field schedule.stream: expected {n} entries (one per node), found {len(s.stream)}")
    if s.device and len(s.device) != n:
        raise PlanFormatError(f"plan field schedule.device: expected {n} entries or none, found {len(s.device)}")
    for i, node in enumerate(nodes):
        if node.kind == "op" and not 0 <= s.stream[i] < s.num_streams:
            raise PlanFormatError(f"plan {node_label(plan, i)}: stream {s.stream[i]} out of range 0..{s.num_streams - 1}")
        if s.device and not 0 <= s.device[i] < s.num_devices:
            raise PlanFormatError(f"plan {node_label(plan, i)}: device {s.device[i]} out of range 0..{s.num_devices - 1}")

    position = {}
    for pos, i in enumerate(s.launch_order):
        if not 0 <= i < n or nodes[i].kind != "op":
            raise PlanFormatError(f"plan field schedule.launch_order[{pos}]: {i} is not an op node")
        if i in position:
            raise PlanFormatError(f"plan {node_label(plan, i)} appears twice in the launch order")
        position[i] = pos
    if len(position) != len(ops):
        missing = next(i for i in ops if i not in position)
        raise PlanFormatError(f"plan {node_label(plan, missing)} is missing from the launch order")

    for k, (consumer, producer) in enumerate(s.waits):
        for v in (consumer, producer):
            if v not in position:
                raise PlanFormatError(f"plan field schedule.waits[{k}]: {v} is not a launched op")
        if position[producer] >= position[consumer]:
            raise PlanFormatError(f"plan {node_label(plan, consumer)} waits on node {producer}, "
                                  f"which launches later")

    _check_coverage(plan, position)


def _check_coverage(plan: Plan, position: dict[int, int]) -> None:
    """Every dependency is ordered: same stream (launch order) or a chain of waits across streams."""
    nodes, s = plan.graph.nodes, plan.schedule
    seq: dict[int, int] = {}
    for i, k, start in iter_clocks(s.launch_order, s.stream, s.num_streams, s.waits):
        seq[i] = k
        for ref in node_refs(nodes[i]):
            p = ref.node
            if nodes[p].kind != "op":
                continue
            if position[p] >= position[i]:
                raise PlanFormatError(f"plan launch order is not topological: {node_label(plan, i)} "
                                      f"launches before its input node {p}")
            if s.stream[p] != s.stream[i] and start[s.stream[p]] < seq[p]:
                raise PlanFormatError(f"plan {node_label(plan, i)} on stream {s.stream[i]} reads node {p} of stream "
                                      f"{s.stream[p]} without waiting for it")

def _check_devices(plan: Plan) -> None:
    """Inputs and outputs on device 0, one device per stream (stream 0 is device 0's capture stream), and
    every edge between devices goes through a copy node on the reader's device. Params and constants read
    on several devices have a node per device (the runtime places a weight once per device)."""
    nodes, s = plan.graph.nodes, plan.schedule
    device = s.device
    if not device:
        return
    stream_device: dict[int, tuple[int, int]] = {0: (0, -1)}
    for i, node in enumerate(nodes):
        where = f"plan {node_label(plan, i)}"
        if node.kind in ("input", "output") and device[i] != 0:
            raise PlanFormatError(f"{where}: on device {device[i]}, expected 0 (inputs and outputs live on the "
                                  f"first device)")
        if node.kind == "op":
            first, by = stream_device.setdefault(s.stream[i], (device[i], i))
            if first != device[i]:
                owner = "device 0's capture stream" if by < 0 else f"on device {first} (node {by})"
                raise PlanFormatError(f"{where}: on device {device[i]}, but its stream {s.stream[i]} is {owner}; "
                                      f"a stream belongs to one device")
        if node.kind not in ("op", "output"):
            continue
        for ref in node_refs(node):
            if device[ref.node] == device[i] or (is_copy(node) and nodes[ref.node].kind in ("op", "input")):
                continue
            raise PlanFormatError(f"{where} on device {device[i]} reads node {ref.node} on device "
                                  f"{device[ref.node]} without a copy; an edge between devices must go through "
                                  f"an {COPY_TARGET} node on the reader's device")


def _check_links(plan: Plan) -> None:
    n = plan.schedule.num_devices
    for k, link in enumerate(plan.profile.links):
        where = f"plan field profile.links[{k}]"
        if not (0 <= link.src < MAX_DEVICES and 0 <= link.dst < MAX_DEVICES) or link.src == link.dst:
            raise PlanFormatError(f"{where}: expected two different devices, found {link.src} -> {link.dst}")
        if n > 1 and max(link.src, link.dst) >= n:
            raise PlanFormatError(f"{where}: device {max(link.src, link.dst)} out of range 0..{n - 1}")
        if not (link.latency_ms >= 0 and link.ms_per_byte >= 0):
            raise PlanFormatError(f"{where}: expected non-negative latency and cost per byte, found "
                                  f"{link.latency_ms} ms + {link.ms_per_byte} ms/B")


FUSION_BACKENDS = ("inductor",)


def _check_fusion(plan: Plan) -> None:
    """Segments partition the ops, follow their stream's order, and sync only at their ends."""
    f, s = plan.fusion, plan.schedule
    if f.backend not in FUSION_BACKENDS:
        raise PlanFormatError(f"plan field fusion.backend: expected one of {FUSION_BACKENDS}, found {f.backend!r}")
    position = {i: p for p, i in enumerate(s.launch_order)}
    stream_seq: dict[int, list[int]] = {}
    for i in s.launch_order:
        stream_seq.setdefault(s.stream[i], []).append(i)
    index_on_stream = {i: k for seq in stream_seq.values() for k, i in enumerate(seq)}
    owner: dict[int, int] = {}
    last_first = -1
    for k, seg in enumerate(f.segments):
        where = f"plan fusion.segments[{k}]"
        if not seg.ops:
            raise PlanFormatError(f"{where}: empty segment")
        for j, i in enumerate(seg.ops):
            if i not in position:
                raise PlanFormatError(f"{where}: {i} is not a launched op")
            if i in owner:
                raise PlanFormatError(f"{where}: {node_label(plan, i)} is already in segment {owner[i]}")
            owner[i] = k
            if s.stream[i] != seg.stream:
                raise PlanFormatError(f"{where}: {node_label(plan, i)} runs on stream {s.stream[i]}, "
                                      f"the segment on {seg.stream}")
            if j and index_on_stream[i] != index_on_stream[seg.ops[j - 1]] + 1:
                raise PlanFormatError(f"{where}: ops must be consecutive on stream {seg.stream}")
        if position[seg.ops[0]] <= last_first:
            raise PlanFormatError(f"{where}: segments must be in the launch order of their first ops")
        last_first = position[seg.ops[0]]
    missing = [i for i in s.launch_order if i not in owner]
    if missing:
        raise PlanFormatError(f"plan {node_label(plan, missing[0])} is in no fusion segment")
    for c, p in s.waits:
        seg_c, seg_p = f.segments[owner[c]], f.segments[owner[p]]
        if seg_c.ops[0] != c:
            raise PlanFormatError(f"plan {node_label(plan, c)} waits on another stream inside fusion segment "
                                  f"{owner[c]}; it must start a segment")
        if seg_p.ops[-1] != p:
            raise PlanFormatError(f"plan {node_label(plan, p)} is waited on inside fusion segment {owner[p]}; "
                                  f"it must end a segment")
        if owner[p] not in seg_c.waits:
            raise PlanFormatError(f"plan fusion.segments[{owner[c]}]: waits must include segment {owner[p]}")
    for k, seg in enumerate(f.segments):
        for w in seg.waits:
            if not 0 <= w < k:
                raise PlanFormatError(f"plan fusion.segments[{k}]: waits on segment {w}, expected an earlier one")
    _check_programs(f)
    _check_kernel_streams(f)


MAX_KERNEL_STREAMS = 64  # far more than any schedule uses; the runtime's check_schedule applies it too


def _check_kernel_streams(f) -> None:
    """The kernel-level mode: one segment (the whole graph) and a stream per kernel with a launch order. Only
    the shape is checked here: that the order respects the program's dependencies is checked against the
    program at load (opara_runtime.fused.kernel_streams.check_schedule), and waits are derived from it there."""
    if f.mode not in FUSION_MODES:
        raise PlanFormatError(f"plan field fusion.mode: expected one of {FUSION_MODES}, found {f.mode!r}")
    k = f.kernels
    if f.mode == "segments":
        if k != NO_KERNEL_STREAMS:
            raise PlanFormatError("plan field fusion.kernels: only a plan of fusion.mode 'kernels' has kernel streams")
        return
    if len(f.segments) != 1:
        raise PlanFormatError(f"plan fusion.segments: a plan of fusion.mode 'kernels' has one segment (the whole "
                              f"graph), found {len(f.segments)}")
    n = len(k.stream)
    if n > MAX_NODES:
        raise PlanFormatError(f"plan fusion.kernels.stream: at most {MAX_NODES} kernels, found {n}")
    bad = next((s for s in k.stream if not 0 <= s < MAX_KERNEL_STREAMS), None)
    if bad is not None:
        raise PlanFormatError(f"plan fusion.kernels.stream: expected streams 0..{MAX_KERNEL_STREAMS - 1}, found {bad}")
    if len(k.launch_order) != n or set(k.launch_order) != set(range(n)):
        raise PlanFormatError(f"plan fusion.kernels.launch_order: expected a permutation of the {n} kernels")
    if k.ms and len(k.ms) != n:
        raise PlanFormatError(f"plan fusion.kernels.ms: expected one time per kernel ({n}), found {len(k.ms)}")
    _check_priorities(k)
    for name in ("critical_path_ms", "predicted_ms"):
        v = getattr(k, name)
        if not math.isfinite(v):
            raise PlanFormatError(f"plan fusion.kernels.{name}: expected a finite number, found {v}")
    if any(not (math.isfinite(t) and t >= 0) for t in k.ms):
        raise PlanFormatError("plan fusion.kernels.ms: expected finite, non-negative times")
    if len(k.call_digest) != 64 or any(c not in "0123456789abcdef" for c in k.call_digest):
        raise PlanFormatError(f"plan fusion.kernels.call_digest: expected a sha256 hex digest, found "
                              f"{k.call_digest[:80]!r}")


def _check_priorities(k) -> None:
    """A kernel schedule's stream priorities: none, or one per stream, each normal (0) or HIGH_PRIORITY, and
    stream 0 normal: it is the caller's stream, whose priority the runtime does not set."""
    if not k.priority:
        return
    if len(k.priority) != k.num_streams:
        raise PlanFormatError(f"plan fusion.kernels.priority: expected one priority per stream ({k.num_streams}), "
                              f"found {len(k.priority)}")
    bad = next((p for p in k.priority if p not in (0, HIGH_PRIORITY)), None)
    if bad is not None:
        raise PlanFormatError(f"plan fusion.kernels.priority: expected 0 or {HIGH_PRIORITY}, found {bad!r}")
    if k.priority[0] != 0:
        raise PlanFormatError(f"plan fusion.kernels.priority[0]: expected 0 (stream 0 is the caller's stream), "
                              f"found {k.priority[0]}")


def _check_programs(f) -> None:
    """Stored code is all or nothing: every segment names a program, and every program is used."""
    if not f.programs:
        for k, seg in enumerate(f.segments):
            if seg.program != -1:
                raise PlanFormatError(f"plan fusion.segments[{k}].program: expected -1 (the plan stores no "
                                      f"compiled programs), found {seg.program}")
        return
    used = set()
    for k, seg in enumerate(f.segments):
        if not 0 <= seg.program < len(f.programs):
            raise PlanFormatError(f"plan fusion.segments[{k}].program: expected an index into fusion.programs "
                                  f"(0..{len(f.programs) - 1}), found {seg.program}")
        used.add(seg.program)
    unused = sorted(set(range(len(f.programs))) - used)
    if unused:
        raise PlanFormatError(f"plan fusion.programs[{unused[0]}]: no segment uses it")
    if not f.cache_key:
        raise PlanFormatError("plan fusion.cache_key: missing; stored programs must say what they were compiled for")
