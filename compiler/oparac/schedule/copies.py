"""Cross-device edges made explicit: a copy node on the reader's device; params and constants replicated."""
from __future__ import annotations

from opara_plan import COPY_TARGET, Graph, Node, OpProfile, Ref, Sym
from oparac.profile.cost_model import tensor_bytes

_REPLICATED = ("param", "constant")


def split_across_devices(graph: Graph, ops: tuple[OpProfile, ...], device_of: dict[int, int],
                         transfer) -> tuple[Graph, tuple[OpProfile, ...], tuple[int, ...]]:
    """The graph with ops placed by `device_of` (op id -> device): (graph, per-node profile, per-node device).

    Inputs and the output node live on device 0. Every op or output that reads an op's or input's value
    from another device reads a copy node instead (aten._to_copy to the reader's device, one per value
    and destination however many readers it has), emitted just before its first reader; its cost is the
    transfer model's (`transfer.between(src, dst)`). Params and constants are replicated: a node per
    device that reads them, so the runtime places a weight once per device and no edge crosses devices
    without a copy. Node ids change; the relative order of the original nodes is kept.
    """
    nodes = graph.nodes
    home_device = {i: device_of.get(i, 0) for i, n in enumerate(nodes) if n.kind == "op"}
    first_reader = _first_reader_device(graph, home_device)
    new_nodes: list[Node] = []
    new_ops: list[OpProfile] = []
    new_device: list[int] = []
    at: dict[tuple[int, int], int] = {}  # (original node, device) -> new id of the node holding its value there
    copies: dict[tuple[int, int, int], int] = {}  # (original node, output, destination) -> new id of its copy

    def emit(node: Node, profile: OpProfile, device: int) -> int:
        new_nodes.append(node)
        new_ops.append(profile)
        new_device.append(device)
        return len(new_nodes) - 1

    def on(device: int, ref: Ref) -> Ref:
        p, src = ref.node, nodes[ref.node]
        if src.kind in _REPLICATED:
            if (p, device) not in at:
                at[(p, device)] = emit(src, ops[p], device)
            return Ref(at[(p, device)], ref.index)
        home = home_device.get(p, 0)
        if home == device:
            return Ref(at[(p, home)], ref.index)
        key = (p, ref.index, device)
        if key not in copies:
            meta = src.outputs[ref.index]
            copy = Node(kind="op", name=f"copy_{src.name}_{ref.index}_to_{device}", target=COPY_TARGET,
                        args=(Ref(at[(p, home)], ref.index),),
                        kwargs=(("device", Sym("device", f"cuda:{device}")), ("non_blocking", True)),
                        outputs=(meta,))
            nbytes = tensor_bytes(meta)
            cost = OpProfile(ms=transfer.between(home, device).cost(nbytes), flops=0.0, bytes=nbytes,
                             intensity="memory")
            copies[key] = emit(copy, cost, device)
        return Ref(copies[key], 0)

    for i, node in enumerate(nodes):
        if node.kind in _REPLICATED:
            device = first_reader.get(i, 0)  # an unread weight stays on device 0
            at[(i, device)] = emit(node, ops[i], device)
            continue
        device = home_device.get(i, 0)
        moved = node
        if node.kind in ("op", "output"):
            moved = Node(kind=node.kind, name=node.name, target=node.target,
                         args=_rewrite(node.args, lambda r: on(device, r)),
                         kwargs=tuple((k, _rewrite(v, lambda r: on(device, r))) for k, v in node.kwargs),
                         outputs=node.outputs, multi=node.multi, data=node.data)
        at[(i, device)] = emit(moved, ops[i], device)
    return Graph(tuple(new_nodes)), tuple(new_ops), tuple(new_device)


def _first_reader_device(graph: Graph, home_device: dict[int, int]) -> dict[int, int]:
    """Param/constant id -> the device of its first reader (where its own node goes; others get replicas)."""
    from opara_plan import node_refs

    out: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        for ref in node_refs(node):
            if graph.nodes[ref.node].kind in _REPLICATED:
                out.setdefault(ref.node, home_device.get(i, 0))
    return out


def _rewrite(arg, fn):
    if isinstance(arg, Ref):
        return fn(arg)
    if isinstance(arg, tuple):
        return tuple(_rewrite(a, fn) for a in arg)
    return arg
