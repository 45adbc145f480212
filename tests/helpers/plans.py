"""Hand-built plans of the tiny fork-join (one device and two), and what they compute in eager PyTorch."""
from __future__ import annotations

import torch

from opara_plan import (COPY_TARGET, Graph, Link, ModelInfo, Node, OpProfile, OutTree, Plan, Profile, Ref, Schedule,
                        Sym, Target, TensorMeta, TensorSpec, Tool, graph_fingerprint)

FREE = OpProfile(ms=0.0, flops=0.0, bytes=0.0, intensity="free")
OP = OpProfile(ms=0.01, flops=36.0, bytes=96.0, intensity="memory")
F32 = "float32"


def fork_join(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """What both fork-join plans compute, in eager PyTorch."""
    y = x @ w
    return torch.relu(y) + torch.sigmoid(y)


def make_tiny_plan() -> Plan:
    """x[2,3] @ w[3,3] -> relu (stream 1) and sigmoid (stream 0) -> add (stream 0). A fork-join."""
    m = TensorMeta((2, 3), F32)
    nodes = (
        Node(kind="input", name="x", outputs=(m,)),
        Node(kind="param", name="w", outputs=(TensorMeta((3, 3), F32),)),
        Node(kind="op", name="mm", target="aten.mm.default", args=(Ref(0), Ref(1)), outputs=(m,)),
        Node(kind="op", name="relu", target="aten.relu.default", args=(Ref(2),), outputs=(m,)),
        Node(kind="op", name="sigmoid", target="aten.sigmoid.default", args=(Ref(2),), outputs=(m,)),
        Node(kind="op", name="add", target="aten.add.Tensor", args=(Ref(3), Ref(4)), kwargs=(("alpha", 1),),
             outputs=(m,)),
        Node(kind="output", name="output", args=(Ref(5),)),
    )
    graph = Graph(nodes)
    schedule = Schedule(stream_algorithm="opara", order_algorithm="topo", max_streams=0, num_streams=2,
                        stream=(-1, -1, 0, 1, 0, 0, -1), launch_order=(2, 3, 4, 5),
                        waits=((3, 2), (5, 3)), predicted_ms=0.03)
    return Plan(tool=Tool("oparac", "0.1.0"), model=fork_join_model(graph),
                target=Target(device_type="cpu", torch=torch.__version__), graph=graph, schedule=schedule,
                profile=Profile(method="cost-model", ops=(FREE, FREE, OP, OP, OP, OP, FREE), sequential_ms=0.04))


def make_two_device_plan() -> Plan:
    """The tiny fork-join on two devices: mm (device 0) -> copy -> relu (device 1) -> copy back -> add with
    sigmoid (device 0). Streams 0 (device 0, capture stream) and 1 (device 1)."""
    m = TensorMeta((2, 3), F32)

    def copy(name, src, device):
        return Node(kind="op", name=name, target=COPY_TARGET, args=(Ref(src),),
                    kwargs=(("device", Sym("device", f"cuda:{device}")), ("non_blocking", True)), outputs=(m,))
    nodes = (
        Node(kind="input", name="x", outputs=(m,)),
        Node(kind="param", name="w", outputs=(TensorMeta((3, 3), F32),)),
        Node(kind="op", name="mm", target="aten.mm.default", args=(Ref(0), Ref(1)), outputs=(m,)),
        copy("copy_mm_to_1", 2, 1),
        Node(kind="op", name="relu", target="aten.relu.default", args=(Ref(3),), outputs=(m,)),
        copy("copy_relu_to_0", 4, 0),
        Node(kind="op", name="sigmoid", target="aten.sigmoid.default", args=(Ref(2),), outputs=(m,)),
        Node(kind="op", name="add", target="aten.add.Tensor", args=(Ref(5), Ref(6)), kwargs=(("alpha", 1),),
             outputs=(m,)),
        Node(kind="output", name="output", args=(Ref(7),)),
    )
    graph = Graph(nodes)
    schedule = Schedule(stream_algorithm="opara", order_algorithm="topo", max_streams=0, num_streams=2,
                        stream=(-1, -1, 0, 1, 1, 0, 0, 0, -1), launch_order=(2, 3, 4, 6, 5, 7),
                        waits=((3, 2), (5, 4)), predicted_ms=0.05, num_devices=2,
                        device=(0, 0, 0, 1, 1, 0, 0, 0, 0), device_algorithm="hios-lp")
    links = (Link(0, 1, 0.01, 5e-9), Link(1, 0, 0.01, 5e-9))
    return Plan(tool=Tool("oparac", "0.1.0"), model=fork_join_model(graph),
                target=Target(device_type="cpu", device_count=2, torch=torch.__version__), graph=graph,
                schedule=schedule, profile=Profile(method="cost-model", ops=(FREE, FREE, OP, OP, OP, OP, OP, OP, FREE),
                                                   sequential_ms=0.06, links=links, links_method="nominal"))


def fork_join_model(graph: Graph) -> ModelInfo:
    """The ModelInfo both fork-join plans carry: one input x[2,3], one output, fingerprinted from `graph`."""
    return ModelInfo(source="fx", fingerprint=graph_fingerprint(graph), inputs=(TensorSpec("x", (2, 3), F32),),
                     outputs=(TensorSpec("output_0", (2, 3), F32),), output_tree=OutTree("tensor", 0),
                     precision=F32)
