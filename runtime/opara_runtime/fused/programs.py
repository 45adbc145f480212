"""Segment programs: each fused segment of a plan as an FX graph of its ATen ops, and which segments share code."""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx

from opara_plan import Plan, Ref, Segment, node_refs
from opara_runtime.ops import materialize, plan_op

Key = tuple[int, int]  # (node, output index)


@dataclass
class SegmentProgram:
    """A segment as a callable: external values in, the values other segments or outputs read, out."""

    segment: Segment
    inputs: list[Key]
    outputs: list[Key]
    module: torch.fx.GraphModule
    arity: dict[int, int]  # outputs of each multi-output op the segment produces
    fn: object = None
    program: int = -1          # which distinct compiled program runs this segment (shared by equal segments)
    blob: bytes | None = None  # that program's stored form, when it came from a file or a worker

    def __call__(self, values: list) -> None:
        outs = self.fn(*[value_of(values, k) for k in self.inputs])
        for (node, index), t in zip(self.outputs, outs):
            if node in self.arity:
                if not isinstance(values[node], list):
                    values[node] = [None] * self.arity[node]
                values[node][index] = t
            else:
                values[node] = t


def value_of(values: list, key: Key):
    """One output of a node: multi-output ops hold a list of their outputs."""
    v = values[key[0]]
    return v[key[1]] if isinstance(v, (list, tuple)) else v


def segment_programs(plan: Plan, device: torch.device) -> list[SegmentProgram]:
    """Every segment of the plan's fusion, in launch order, not yet compiled."""
    nodes = plan.graph.nodes
    owner = {i: k for k, seg in enumerate(plan.fusion.segments) for i in seg.ops}
    needed_outside: set[Key] = set()
    for i, node in enumerate(nodes):
        for ref in node_refs(node):
            if ref.node in owner and (node.kind == "output" or owner.get(i) != owner[ref.node]):
                needed_outside.add((ref.node, ref.index))
    return [_build(plan, seg, needed_outside, device) for seg in plan.fusion.segments]


def _build(plan: Plan, seg: Segment, needed_outside: set[Key], device: torch.device) -> SegmentProgram:
    nodes = plan.graph.nodes
    members = set(seg.ops)
    g = torch.fx.Graph()
    env: dict[Key, torch.fx.Node] = {}
    inputs: list[Key] = []

    def lookup(ref: Ref):
        key = (ref.node, ref.index)
        if key not in env:
            if ref.node in members:
                raise AssertionError(f"segment op {ref.node} used before it is computed")
            # Positional names, not node ids: equal segments then have equal code and share one program.
            env[key] = g.placeholder(f"in_{len(inputs)}")
            inputs.append(key)
        return env[key]

    def convert(arg):
        if isinstance(arg, Ref):
            return lookup(arg)
        if isinstance(arg, tuple):
            return [convert(a) for a in arg]
        return materialize(arg, None, device)

    for i in seg.ops:
        node = nodes[i]
        call = g.call_function(plan_op(node.target, plan.model.memory_format), tuple(convert(a) for a in node.args),
                               {k: convert(v) for k, v in node.kwargs})
        if node.multi:
            for index in range(len(node.outputs)):
                env[(i, index)] = g.call_function(operator.getitem, (call, index))
        else:
            env[(i, 0)] = call
    outputs = sorted(k for k in needed_outside if k[0] in members)
    g.output(tuple(env[k] for k in outputs))
    module = torch.fx.GraphModule(torch.nn.Module(), g)
    arity = {i: len(nodes[i].outputs) for i in seg.ops if nodes[i].multi}
    return SegmentProgram(segment=seg, inputs=inputs, outputs=outputs, module=module, arity=arity)


def input_meta(x) -> tuple:
    """What a compiled segment is specialised to for one input: inductor asserts sizes and strides, and
    its code assumes the alignment that the storage offset gives."""
    if isinstance(x, torch.Tensor):
        return ("tensor", tuple(x.shape), tuple(x.stride()), x.storage_offset(), str(x.dtype), x.device.type)
    return ("value", x)


def program_key(prog: SegmentProgram, metas) -> tuple:
    """Segments with equal keys share one compiled program: the same code on inputs of the same layout."""
    return (prog.module.code, tuple(metas))
