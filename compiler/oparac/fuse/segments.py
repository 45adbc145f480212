"""--fuse inductor: cut the schedule into segments, measure them fused, embed their compiled artifacts."""
from __future__ import annotations

import dataclasses
import gc
import warnings

import torch

from opara_plan import Fusion, Graph, Plan, cut_segments
from oparac.options import CUTS, FUSE_BACKENDS
from oparac.schedule.coarsen import coarsen_streams
from oparac.profile.measure import time_graph_replays, time_in_graph, timed_runner


def fuse_plan(plan: Plan, backend: str, *, cut: str = "maximal", max_ops: int = 0) -> Plan:
    """The plan with its schedule cut into segments (no GPU work). cut 'maximal' cuts the schedule as it is;
    'coarse' first moves small side branches onto a neighbouring stream (oparac.schedule.coarsen), for fewer,
    bigger segments and fewer waits, and so changes the schedule (its stream_algorithm then says so,
    e.g. 'opara+coarse')."""
    if backend not in FUSE_BACKENDS:
        raise ValueError(f"fuse backend: expected one of {FUSE_BACKENDS}, found {backend!r}")
    if cut not in CUTS:
        raise ValueError(f"cut: expected one of {CUTS}, found {cut!r}")
    if cut == "coarse":
        plan = dataclasses.replace(plan, schedule=coarsen_streams(plan.schedule, plan.graph, plan.profile.ops))
    return dataclasses.replace(plan, fusion=Fusion(backend=backend, segments=cut_segments(plan.schedule, max_ops)))


def measure_fused(plan: Plan, weights: dict, device: torch.device) -> tuple[Plan, float]:
    """Compile and capture the fused plan; measured segment times, replay latency and compiled programs."""
    fused, replay_ms, runner = measure_fused_runner(plan, weights, device)
    del runner
    gc.collect()
    return fused, replay_ms


def measure_fused_runner(plan: Plan, weights: dict, device: torch.device):
    """measure_fused, and the captured runner it measured (a caller that times the plan again, such as the
    guard's head-to-head, uses it rather than loading every compiled segment and capturing a second time)."""
    from opara_runtime.fused import cache_key

    runner = timed_runner(plan, weights, device)
    replay_ms = time_graph_replays(runner.captured.graph, device, repeats=7, replays=20)
    seg_ms = segment_times(runner, device)
    blobs, index = stored_programs(runner.programs)
    segments = tuple(dataclasses.replace(s, ms=ms, program=k)
                     for s, ms, k in zip(plan.fusion.segments, seg_ms, index))
    fusion = dataclasses.replace(plan.fusion, segments=segments, programs=blobs, cache_key=cache_key(device))
    return dataclasses.replace(plan, fusion=fusion), replay_ms, runner


def stored_programs(programs) -> tuple[tuple[bytes, ...], list[int]]:
    """Each distinct compiled program once (in order of first use) and every segment's index into them; or
    nothing at all: a plan whose segments are only partly stored would compile at load anyway."""
    from opara_runtime.fused import artifact_bytes

    blobs: dict[int, bytes] = {}
    try:
        for p in programs:
            if p.program not in blobs:
                blobs[p.program] = p.blob if p.blob is not None else artifact_bytes(p.fn)
    except Exception as e:  # inductor could not serialise a segment: the plan still works, loading compiles
        warnings.warn(f"fuse: compiled segments could not be saved into the plan ({type(e).__name__}: {e}); "
                      f"loading it will compile them", stacklevel=2)
        return (), [-1] * len(programs)
    renumber = {u: k for k, u in enumerate(blobs)}
    return tuple(blobs.values()), [renumber[p.program] for p in programs]


def segment_times(runner, device: torch.device) -> list[float]:
    """Each compiled segment alone, 10 times inside a small CUDA graph, from the runner's live values."""
    values = list(runner.captured.base_values)
    runner.captured.launcher.launch(values)  # eager run on the plan's streams fills every segment's inputs
    torch.cuda.synchronize(device)
    times = []
    stream = torch.cuda.Stream(device=device)
    for program in runner.programs:
        scratch = list(values)
        times.append(time_in_graph(lambda: program(scratch), device, stream, 10))
    return times


def has_nhwc_weights(plan: Plan) -> bool:
    """An NCHW plan that channels_last would change: it has 4-D floating-point weights (convolutions)."""
    return plan.model.memory_format == "contiguous" and has_4d_weights(plan.graph)


def has_4d_weights(graph: Graph) -> bool:
    """The graph has 4-D floating-point weights: convolutions, which channels_last changes."""
    return count_4d_weights(graph) > 0


def count_4d_weights(graph: Graph) -> int:
    """The 4-D floating-point weights of the graph: one per convolution."""
    return sum(n.kind == "param" and len(n.outputs[0].shape) == 4 and n.outputs[0].dtype.startswith(("float", "bfloat"))
               for n in graph.nodes)


def auto_layout(graph: Graph) -> tuple[str, str | None]:
    """What memory_format='auto' gives an untuned fused plan of `graph`, and why (for the progress line; None for
    a model without convolutions, where the layout changes nothing)."""
    convs = count_4d_weights(graph)
    if not convs:
        return "contiguous", None
    return "channels_last", f"a fused plan of a model with {convs} convolution{'s' if convs > 1 else ''}"


def resolve_memory_format(requested: str, graph: Graph, fuse: str, tune: bool) -> tuple[str, str | None]:
    """The layout a plan is built in, and why where 'auto' chose it for a convolution model (else None).

    'auto' picks NHWC for an untuned fused plan of a convolution model: on the H100 the NHWC fused plan beat every
    NCHW fused plan in every convolution group where both ran, and the NCHW one lost to torch.compile in five
    (BENCHMARKS.md). That holds for a transformer whose one convolution embeds patches too, although inductor
    itself leaves such a graph NCHW: on the H200 (fp16, both layouts in the same process) the NHWC default plan
    of ViT-B/16 was 7% faster at batch 1 and 3% at batch 8, Swin-T's 0.5% and 2%. Unfused plans stay NCHW,
    running eager's own kernels bit for bit; a tuned fused plan starts NCHW and its tuner tries NHWC itself."""
    if requested != "auto":
        return requested, None
    return auto_layout(graph) if fuse and not tune else ("contiguous", None)

