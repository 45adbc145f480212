"""The job a compile worker runs: some of a plan's segments, compiled on example inputs, as artifact bytes."""
from __future__ import annotations

import torch
import torch.fx

from opara_plan import plan_from_bytes
from opara_runtime.fused.compile import artifact_bytes, compile_one
from opara_runtime.fused.programs import segment_programs


def compile_job(job: dict) -> dict[int, bytes]:
    """A worker's share, {"plan": bytes, "device": str, "segments": [(segment, input metas)]}: {segment:
    inductor's artifact bytes}."""
    device = torch.device(job["device"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    programs = segment_programs(plan_from_bytes(job["plan"]), device)
    out = {}
    with torch.no_grad():
        for segment, meta in job["segments"]:
            example = [example_input(m, device) for m in meta]
            out[segment] = artifact_bytes(compile_one(programs[segment].module, example))
    return out


def example_input(meta: tuple, device: torch.device):
    """A tensor of the recorded size, strides, storage offset and dtype (its contents do not matter:
    compiling does not run the segment)."""
    if meta[0] == "value":
        return meta[1]
    _, shape, stride, offset, dtype, _ = meta
    dtype = getattr(torch, dtype.removeprefix("torch."))
    span = 1 + sum((s - 1) * st for s, st in zip(shape, stride)) if all(shape) else 0
    storage = torch.empty(offset + span, dtype=dtype, device=device)
    return storage.as_strided(shape, stride, offset)


def warm_up(device: torch.device) -> None:
    """Inductor's first compile in a process costs seconds that later ones do not: pay it before the first job."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    graph.output((graph.call_function(torch.relu, (graph.call_function(torch.mul, (x, 2.0)),)),))
    with torch.no_grad():
        compile_one(torch.fx.GraphModule(torch.nn.Module(), graph), [torch.randn(8, 8, device=device)])
