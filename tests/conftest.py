"""Shared fixtures; GPU tests are skipped where CUDA is absent."""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

# CI replays the same generated examples on every run, so a red build always means a code change;
# local runs keep exploring new examples (and the failures they find are kept in .hypothesis/).
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

from opara_plan import (Graph, ModelInfo, Node, OpProfile, OutTree, Plan, Profile, Ref, Schedule, Target,
                        TensorMeta, TensorSpec, Tool, graph_fingerprint)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def make_tiny_plan() -> Plan:
    """x[2,3] @ w[3,3] -> relu (stream 1) and sigmoid (stream 0) -> add (stream 0). A fork-join."""
    f32 = "float32"
    m = TensorMeta((2, 3), f32)
    nodes = (
        Node(kind="input", name="x", outputs=(m,)),
        Node(kind="param", name="w", outputs=(TensorMeta((3, 3), f32),)),
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
    return Plan(tool=Tool("oparac", "0.1.0"), model=_fork_join_model(graph),
                target=Target(device_type="cpu", torch=torch.__version__), graph=graph, schedule=schedule,
                profile=Profile(method="cost-model", ops=(FREE, FREE, OP, OP, OP, OP, FREE), sequential_ms=0.04))


def fork_join(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """What both fork-join plans compute, in eager PyTorch."""
    y = x @ w
    return torch.relu(y) + torch.sigmoid(y)


FREE = OpProfile(ms=0.0, flops=0.0, bytes=0.0, intensity="free")
OP = OpProfile(ms=0.01, flops=36.0, bytes=96.0, intensity="memory")


def _fork_join_model(graph: Graph) -> ModelInfo:
    f32 = "float32"
    return ModelInfo(source="fx", fingerprint=graph_fingerprint(graph), inputs=(TensorSpec("x", (2, 3), f32),),
                     outputs=(TensorSpec("output_0", (2, 3), f32),), output_tree=OutTree("tensor", 0),
                     precision=f32)


@pytest.fixture
def tiny_plan() -> Plan:
    return make_tiny_plan()


@pytest.fixture
def no_tf32():
    """GPU tests compare against eager PyTorch with TF32 off, so a fused or reordered plan is held to 1e-4."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def make_two_device_plan() -> Plan:
    """The tiny fork-join on two devices: mm (device 0) -> copy -> relu (device 1) -> copy back -> add with
    sigmoid (device 0). Streams 0 (device 0, capture stream) and 1 (device 1)."""
    from opara_plan import COPY_TARGET, Link, Sym

    f32 = "float32"
    m = TensorMeta((2, 3), f32)

    def copy(name, src, device):
        return Node(kind="op", name=name, target=COPY_TARGET, args=(Ref(src),),
                    kwargs=(("device", Sym("device", f"cuda:{device}")), ("non_blocking", True)), outputs=(m,))
    nodes = (
        Node(kind="input", name="x", outputs=(m,)),
        Node(kind="param", name="w", outputs=(TensorMeta((3, 3), f32),)),
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
    return Plan(tool=Tool("oparac", "0.1.0"), model=_fork_join_model(graph),
                target=Target(device_type="cpu", device_count=2, torch=torch.__version__), graph=graph,
                schedule=schedule, profile=Profile(method="cost-model", ops=(FREE, FREE, OP, OP, OP, OP, OP, OP, FREE),
                                                   sequential_ms=0.06, links=links, links_method="nominal"))


@pytest.fixture
def two_device_plan() -> Plan:
    return make_two_device_plan()
