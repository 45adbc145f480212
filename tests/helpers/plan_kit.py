"""An attacker's kit for the security tests: a small real plan, and edits made as someone with write access to
plan storage would make them (nodes changed, schedule and specs made consistent, fingerprint recomputed)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from opara_plan import (Graph, Node, OpProfile, OutTree, Plan, Ref, Schedule, TensorMeta, TensorSpec, graph_fingerprint,
                        node_refs, plan_to_bytes)

FREE = OpProfile(ms=0.0, flops=0.0, bytes=0.0, intensity="free")


class Small(torch.nn.Module):
    """Two linear layers, a softmax, a buffer and a lifted constant: a few of every kind of node."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(6, 8), torch.nn.Linear(8, 6)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 6))

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        y = self.fc2(h).softmax(-1) * self.scale
        return y + x * torch.tensor(2.0), h.sum(-1)


def small_model():
    torch.manual_seed(0)
    return Small().eval(), (torch.randn(3, 6),)


def compiled_small() -> tuple[Plan, torch.nn.Module, tuple]:
    import oparac

    model, inputs = small_model()
    return oparac.compile(model, inputs, device="cpu"), model, inputs


def tamper(plan: Plan, nodes) -> Plan:
    """`plan` with these nodes: one stream in node order, model specs taken from the nodes, new fingerprint."""
    nodes = tuple(nodes)
    graph = Graph(nodes)
    ops = tuple(i for i, n in enumerate(nodes) if n.kind == "op")
    schedule = Schedule(plan.schedule.stream_algorithm, plan.schedule.order_algorithm, 0, 1,
                        tuple(0 if n.kind == "op" else -1 for n in nodes), ops, (), 0.0)
    inputs = tuple(TensorSpec(n.name, n.outputs[0].shape, n.outputs[0].dtype) for n in nodes
                   if n.kind == "input" and n.outputs)
    outputs = []
    for k, r in enumerate(nodes[-1].args if nodes and nodes[-1].kind == "output" else ()):
        src = nodes[r.node] if isinstance(r, Ref) and 0 <= r.node < len(nodes) else None
        meta = src.outputs[r.index] if src is not None and 0 <= r.index < len(src.outputs) else TensorMeta((), "float32")
        outputs.append(TensorSpec(f"output_{k}", meta.shape, meta.dtype))
    tree = plan.model.output_tree
    if len(outputs) != len(plan.model.outputs):
        tree = OutTree("tuple", children=tuple(OutTree("tensor", k) for k in range(len(outputs))))
    model = dataclasses.replace(plan.model, fingerprint=graph_fingerprint(graph), inputs=inputs,
                                outputs=tuple(outputs), output_tree=tree)
    profile = dataclasses.replace(plan.profile, ops=tuple(FREE for _ in nodes))
    return dataclasses.replace(plan, graph=graph, schedule=schedule, model=model, profile=profile)


def replace_node(plan: Plan, i: int, node: Node) -> Plan:
    nodes = list(plan.graph.nodes)
    nodes[i] = node
    return tamper(plan, nodes)


def append_ops(plan: Plan, ops, outputs) -> Plan:
    """New op nodes before the output node, whose args become `outputs` (Refs may name the new nodes)."""
    body = list(plan.graph.nodes[:-1]) + list(ops)
    return tamper(plan, body + [dataclasses.replace(plan.graph.nodes[-1], args=tuple(outputs))])


def write_raw(plan: Plan, path: Path) -> Path:
    """The plan's bytes written as an attacker would: straight to storage, without save_plan's validation."""
    path.write_bytes(plan_to_bytes(plan))
    return path


def meta_repair(plan: Plan) -> Plan:
    """Declared outputs of every op set to what the op produces on meta tensors (where it runs there): the
    consistent attacker, whose plan passes the meta check and reaches run time."""
    from opara_runtime.meta_pass import meta_call
    from opara_runtime.schemas import check_call
    from opara_runtime.ops import dtype_name, materialize, torch_dtype

    nodes = list(plan.graph.nodes)
    values: list = [None] * len(nodes)
    meta = torch.device("meta")
    for i, node in enumerate(nodes):
        try:
            if node.kind in ("input", "param", "constant"):
                m = node.outputs[0]
                values[i] = torch.empty(m.shape, dtype=torch_dtype(m.dtype), device=meta)
            elif node.kind == "op":
                if any(values[r.node] is None for r in node_refs(node) if 0 <= r.node < i):
                    continue
                # Only calls that fit the schema: torch takes an int where a dtype goes as an enum value and can
                # crash on a bad one; admit refuses such calls before anything runs, so the attacker cannot.
                check_call(plan, i)
                out = meta_call(node.target, [materialize(a, values, meta) for a in node.args],
                                {k: materialize(v, values, meta) for k, v in node.kwargs})
                multi = isinstance(out, (tuple, list))
                outs = tuple(out) if multi else (out,)
                if all(isinstance(t, torch.Tensor) for t in outs) and sum(t.numel() for t in outs) < 1 << 20:
                    values[i] = outs if multi else out
                    nodes[i] = dataclasses.replace(node, multi=multi, outputs=tuple(
                        TensorMeta(tuple(t.shape), dtype_name(t.dtype)) for t in outs))
        except Exception:
            values[i] = None
    return tamper(plan, nodes)
