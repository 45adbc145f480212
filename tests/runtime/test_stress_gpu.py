"""Race freedom on a real GPU: random DAGs of real kernels under every schedule are bitwise sequential."""
from __future__ import annotations

import dataclasses
import random

import pytest
import torch

import opara_runtime
from oparac.profile import cost_model
from oparac.ingest.graph_builder import GraphBuilder
from oparac.pipeline import assemble
from oparac.schedule.build import make_schedule
from opara_plan import OutTree, Profile

aten = torch.ops.aten
SHAPE = (1, 8, 24, 24)
STREAMS = ("opara", "nimble", "critical")
ORDERS = ("topo", "opara", "critical")

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("no_tf32")]


def random_dag_plan(seed: int, size: int):
    """A random DAG over same-shaped activations using convolutions, matmuls, elementwise ops,
    reductions and concatenations; returns (plan, weights)."""
    rng = random.Random(seed)
    b = GraphBuilder()
    weights = {}
    acts = [b.input("x", SHAPE, torch.float32)]

    def param(name, shape):
        weights[name] = torch.randn(shape) * 0.2
        return b.param(name, shape, torch.float32)

    for k in range(size):
        pick = lambda: acts[max(0, len(acts) - 1 - int(rng.expovariate(0.3)))]
        kind = rng.choice(["conv", "matmul", "add", "mul", "act", "reduce", "cat"])
        # Every op keeps values in [-1, 1] (tanh, averages, products of bounded values), so deep random
        # graphs stay finite and a comparison with torch.equal is meaningful.
        if kind == "conv":
            y = b.op(aten.convolution.default, (pick(), param(f"w{k}", (8, 8, 3, 3)), None, [1, 1], [1, 1],
                                                [1, 1], False, [0, 0], 1))
            y = b.op(aten.tanh.default, (y,))
        elif kind == "matmul":
            y = b.op(aten.matmul.default, (pick(), pick()))
            y = b.op(aten.tanh.default, (b.op(aten.mul.Tensor, (y, 0.05)),))
        elif kind == "add":
            y = b.op(aten.mul.Tensor, (b.op(aten.add.Tensor, (pick(), pick())), 0.5))
        elif kind == "mul":
            y = b.op(aten.mul.Tensor, (pick(), pick()))
        elif kind == "act":
            y = b.op(rng.choice([aten.relu.default, aten.sigmoid.default, aten.tanh.default]), (pick(),))
        elif kind == "reduce":
            r = b.op(aten.mean.dim, (pick(), [2, 3], True))
            y = b.op(aten.mul.Tensor, (b.op(aten.add.Tensor, (pick(), r)), 0.5))
        else:
            c = b.op(aten.cat.default, ([pick(), pick()], 1))
            y = b.op(aten.convolution.default, (c, param(f"w{k}", (8, 16, 1, 1)), None, [1, 1], [0, 0], [1, 1],
                                                False, [0, 0], 1))
            y = b.op(aten.tanh.default, (y,))
        acts.append(y)
    sinks = acts[-3:]
    b.output(sinks, OutTree("tuple", children=tuple(OutTree("tensor", i) for i in range(len(sinks)))))
    graph = b.build()
    ops = cost_model.estimate(graph)
    profile = Profile(method="cost-model", ops=ops, sequential_ms=sum(o.ms for o in ops))
    schedule = make_schedule(graph, ops, streams="single", order="topo", max_streams=0)
    from oparac.profile.profiler import gpu_target
    plan = assemble(graph, b, "fx", "float32", gpu_target(torch.device("cuda")), schedule, profile)
    return plan, weights


@pytest.mark.parametrize("seed", range(12))
def test_every_schedule_is_bitwise_sequential(seed):
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    plan, weights = random_dag_plan(seed, size=40 + 5 * seed)
    sequential = opara_runtime.load(plan, weights, device="cuda", capture=False)
    inputs = [torch.randn(SHAPE, device="cuda") for _ in range(3)]
    wants = [sequential(x) for x in inputs]
    for streams in STREAMS:
        for order in ORDERS:
            for cap in (0, 2, 4):
                schedule = make_schedule(plan.graph, plan.profile.ops, streams=streams, order=order, max_streams=cap)
                runner = opara_runtime.load(dataclasses.replace(plan, schedule=schedule), weights, device="cuda")
                for x, want in zip(inputs, wants):
                    for a, w in zip(runner(x), want):
                        assert torch.isfinite(w).all()
                        assert torch.equal(a, w), f"{streams}/{order}/cap {cap} differs from sequential"
