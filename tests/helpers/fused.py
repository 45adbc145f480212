"""Small fused-plan cases on the CPU, shared by the tests of compiled segments and of their compile workers."""
from __future__ import annotations

import dataclasses

import torch

from oparac.fuse.segments import fuse_plan
from opara_runtime.runner import Runner

CPU = torch.device("cpu")


class TwoBranches(torch.nn.Module):
    """Two equal branches on two streams: their segments have the same code on inputs of the same layout. Compile it
    with merge_projections=False: merged, its two linears would be one GEMM (ingest/merge_projections.py)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(16, 16), torch.nn.Linear(16, 16)

    def forward(self, x):
        return torch.relu(self.a(x)).sigmoid() + torch.relu(self.b(x)).sigmoid()


def two_branches():
    """The fused TwoBranches plan (three segments, two distinct programs), its base values, the model's output."""
    import oparac

    model = TwoBranches().eval()
    x = torch.randn(4, 16)
    plan = fuse_plan(oparac.compile(model, (x,), device="cpu", merge_projections=False), "inductor")
    runner = Runner(plan, dict(model.named_parameters()), CPU, capture=False)
    base = list(runner._base)
    base[runner._input_ids[0]] = x
    return plan, base, model(x).detach()


def run_segments(plan, programs, base) -> torch.Tensor:
    """The plan's output from its compiled segments, run in launch order."""
    values = list(base)
    with torch.no_grad():
        for prog in programs:
            prog(values)
    out = plan.graph.nodes[-1].args[0]
    return values[out.node]


def measured_fused(plan, seg_ms: float):
    """The fused plan of `plan` with every segment measured at seg_ms (what measure_fused records)."""
    fused = fuse_plan(plan, "inductor")
    segs = tuple(dataclasses.replace(s, ms=seg_ms) for s in fused.fusion.segments)
    return dataclasses.replace(fused, fusion=dataclasses.replace(fused.fusion, segments=segs))
