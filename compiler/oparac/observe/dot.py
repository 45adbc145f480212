"""A plan's op DAG as Graphviz DOT text: nodes coloured by stream, waits drawn bold, one cluster per GPU."""
from __future__ import annotations

from pathlib import Path

from opara_plan import Plan, node_refs

# Qualitative palette (Tableau 20 without the greys); streams beyond it reuse colours.
PALETTE = ("#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F", "#EDC948", "#B07AA1", "#FF9DA7",
           "#9C755F", "#A0CBE8", "#FFBE7D", "#FF9D9A", "#86BCB6", "#8CD17D", "#F1CE63", "#D4A6C8")


def stream_colour(stream: int) -> str:
    return PALETTE[stream % len(PALETTE)]


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _op_label(plan: Plan, i: int) -> str:
    node, prof = plan.graph.nodes[i], plan.profile.ops[i]
    target = node.target.removeprefix("aten.").rsplit(".", 1)[0]
    shape = "x".join(map(str, node.outputs[0].shape)) if node.outputs else ""
    time = "free" if prof.intensity == "free" else f"{prof.ms * 1e3:.1f} us {prof.intensity}"
    return f"{i} {target}\n{shape}\n{time} · s{plan.schedule.stream[i]}"


def plan_to_dot(plan: Plan) -> str:
    """Ops, model inputs and the output node; weights and constants are left out (they carry no order)."""
    nodes, s = plan.graph.nodes, plan.schedule
    shown = {i for i, n in enumerate(nodes) if n.kind in ("op", "input", "output")}
    device = {i: (s.device[i] if s.device else 0) for i in shown if nodes[i].kind == "op"}
    lines = ["digraph opara {",
             f"  graph [rankdir=TB, fontname=Helvetica, label={_quote(_caption(plan))}, labelloc=t];",
             "  node [shape=box, style=\"rounded,filled\", fontname=Helvetica, fontsize=9];",
             "  edge [color=\"#777777\", arrowsize=0.6];"]
    for d in sorted(set(device.values())):
        members = [i for i in sorted(device) if device[i] == d]
        indent = "    " if s.num_devices > 1 else "  "
        if s.num_devices > 1:
            lines.append(f"  subgraph cluster_gpu{d} {{")
            lines.append(f"    label={_quote(f'GPU {d}')}; style=dashed;")
        lines.extend(indent + _op_node(plan, i) for i in members)
        if s.num_devices > 1:
            lines.append("  }")
    for i in sorted(shown - set(device)):
        lines.append(f"  n{i} [label={_quote(nodes[i].name)}, shape=ellipse, fillcolor=\"#EEEEEE\"];")
    lines.extend(_edges(plan, shown))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _op_node(plan: Plan, i: int) -> str:
    colour = stream_colour(plan.schedule.stream[i])
    style = ', style="rounded,filled,dashed", fillcolor="#FFFFFF", color=' + _quote(colour) \
        if plan.profile.ops[i].intensity == "free" else f", fillcolor={_quote(colour)}"
    return f"n{i} [label={_quote(_op_label(plan, i))}{style}];"


def _edges(plan: Plan, shown: set[int]) -> list[str]:
    nodes = plan.graph.nodes
    waits = set(plan.schedule.waits)
    lines = []
    edges = set()
    for i in sorted(shown):
        for p in sorted({r.node for r in node_refs(nodes[i])} & shown):
            edges.add((i, p))
            attrs = ' [penwidth=2, color="#D62728"]' if (i, p) in waits else ""
            lines.append(f"  n{p} -> n{i}{attrs};")
    for c, p in sorted(waits - edges):
        # A wait that is not a direct data edge (ordering only): show it without moving the layout.
        lines.append(f"  n{p} -> n{c} [style=dashed, color=\"#D62728\", constraint=false];")
    return lines


def _caption(plan: Plan) -> str:
    s = plan.schedule
    return f"{s.num_streams} streams ({s.stream_algorithm} / order {s.order_algorithm}), {len(s.waits)} waits " \
           f"(red), predicted {s.predicted_ms:.3f} ms vs {plan.profile.sequential_ms:.3f} ms sequential; " \
           f"fill colour = stream"


def write_dot(plan: Plan, path) -> None:
    Path(path).write_text(plan_to_dot(plan))
