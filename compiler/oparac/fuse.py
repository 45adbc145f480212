"""--fuse inductor: cut the schedule into segments, measure them fused, embed their compiled artifacts."""
from __future__ import annotations

import dataclasses
import gc
import warnings

import torch

from opara_plan import Candidate, Fusion, Graph, Plan, cut_segments
from oparac.coarsen import coarsen_streams
from oparac.measure import time_graph_replays, timed_runner
from oparac.scheduling import make_schedule
from oparac.tune import candidate_label

BACKENDS = ("inductor",)
# How a schedule becomes segments. maximal: cut the schedule as it is. coarse: first move small side
# branches onto a neighbouring stream (oparac.coarsen), for fewer, bigger segments and fewer waits.
CUTS = ("maximal", "coarse")
# Fused tuning compiles every candidate's segments with inductor (seconds each), so it tries a few
# schedules that cut differently, always with the single-stream fused plan and the unfused plan:
# (streams, order, max_streams, cut).
FUSED_CANDIDATES = (("single", "topo", 0, "maximal"), ("opara", "opara", 0, "maximal"),
                    ("opara", "opara", 4, "maximal"), ("opara", "opara", 0, "coarse"))
# Convolution models are also tried NHWC (channels_last): cuDNN's tensor-core convolutions want that layout, and
# inductor's kernels around them then need no layout conversions. On the H100 the NHWC fused plan beat every NCHW
# fused plan in each CNN group where both ran (benchmarks/results/suite-*-s12.json).
NHWC_CANDIDATES = (("opara", "opara", 0, "maximal"),)


def fuse_plan(plan: Plan, backend: str, *, cut: str = "maximal", max_ops: int = 0) -> Plan:
    """The plan with its schedule cut into segments (no GPU work); the coarse cut also changes the schedule
    (its stream_algorithm then says so, e.g. 'opara+coarse')."""
    if cut not in CUTS:
        raise ValueError(f"cut: expected one of {CUTS}, found {cut!r}")
    if cut == "coarse":
        plan = dataclasses.replace(plan, schedule=coarsen_streams(plan.schedule, plan.graph, plan.profile.ops))
    return dataclasses.replace(plan, fusion=Fusion(backend=backend, segments=cut_segments(plan.schedule, max_ops)))


def measure_fused(plan: Plan, weights: dict, device: torch.device) -> tuple[Plan, float]:
    """Compile and capture the fused plan; measured segment times, replay latency and compiled programs."""
    from opara_runtime.fused import cache_key

    runner = timed_runner(plan, weights, device)
    replay_ms = time_graph_replays(runner.captured.graph, device, repeats=7, replays=20)
    seg_ms = segment_times(runner, device)
    blobs, index = stored_programs(runner.programs)
    segments = tuple(dataclasses.replace(s, ms=ms, program=k)
                     for s, ms, k in zip(plan.fusion.segments, seg_ms, index))
    fusion = dataclasses.replace(plan.fusion, segments=segments, programs=blobs, cache_key=cache_key(device))
    del runner
    gc.collect()
    return dataclasses.replace(plan, fusion=fusion), replay_ms


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
        g = torch.cuda.CUDAGraph()
        scratch = list(values)
        with torch.cuda.graph(g, stream=stream):
            for _ in range(10):
                program(scratch)
        times.append(time_graph_replays(g, device) / 10)
        del g
    return times


def tune_fused(plan: Plan, weights: dict, device: torch.device, backend: str, say=None, nhwc_profile=None) -> Plan:
    """Measure a few fused schedules against the given (unfused) plan; keep the fastest.

    Each fused candidate is compiled and timed once as it is built; then every candidate, the unfused plan
    included, is timed again side by side in interleaved rounds (their compiled programs are reloaded, not
    recompiled) and the median decides, as in the unfused tuner.

    nhwc_profile(): the ops profiled in channels_last. When given and the plan is an NCHW one with 4-D
    floating-point weights, NHWC_CANDIDATES are tried in that layout too, scheduled from that profile; a plan
    chosen from them carries it."""
    from opara_runtime.bind import weights_on_device
    from opara_runtime.segment_workers import compile_pool
    from oparac.tune import FINAL_ROUNDS, measure_rounds

    placed = weights_on_device(plan, weights, device)
    plans = [plan]
    candidates = [Candidate(streams=plan.schedule.stream_algorithm, order=plan.schedule.order_algorithm,
                            max_streams=plan.schedule.max_streams, predicted_ms=plan.schedule.predicted_ms)]
    variants = [(plan, FUSED_CANDIDATES, "")]
    if nhwc_profile is not None and has_nhwc_weights(plan):
        nhwc = nhwc_profile()
        variants.append((dataclasses.replace(
            plan, model=dataclasses.replace(plan.model, memory_format="channels_last"),
            profile=dataclasses.replace(plan.profile, ops=nhwc.ops, sequential_ms=nhwc.sequential_ms)),
            NHWC_CANDIDATES, "+channels_last"))
    # One set of segment-compile workers for every candidate: a fresh set spends ~18-20 s starting (imports,
    # inductor's warm-up) on the H100 (benchmarks/worker_startup.py). It closes before the final rounds, which
    # reload the compiled programs, so its idle workers hold no GPU memory while the candidates are timed.
    with compile_pool(device):
        for fused, candidate in _fused_candidates(variants, placed, device, backend, say):
            plans.append(fused)
            candidates.append(candidate)
    final = measure_rounds(dict(enumerate(plans)), placed, [device], rounds=FINAL_ROUNDS, repeats=5, replays=20)
    candidates = [dataclasses.replace(c, measured_ms=final[k]) for k, c in enumerate(candidates)]
    if say:
        say("tune: fused finalists " + ", ".join(f"{_label(c)} {c.measured_ms:.4f} ms" for c in candidates))
    winner = min(range(len(plans)), key=lambda k: (final[k], k))  # a tie keeps the unfused plan
    # Earlier (unfused) tuning candidates stay on record; exactly one candidate ends up chosen. When the
    # unfused plan wins and was itself tuned, its own candidate entry is already the chosen one.
    if winner == 0 and any(c.chosen for c in plan.profile.candidates):
        earlier = plan.profile.candidates
    else:
        earlier = tuple(dataclasses.replace(c, chosen=False) for c in plan.profile.candidates)
        candidates[winner] = dataclasses.replace(candidates[winner], chosen=True)
    best = plans[winner]
    return dataclasses.replace(best, profile=dataclasses.replace(best.profile, candidates=earlier + tuple(candidates)))


def _fused_candidates(variants, placed: dict, device: torch.device, backend: str, say):
    """Each fused candidate compiled and timed once: (its plan, its Candidate record)."""
    for base, table, layout in variants:
        for streams, order, cap, cut in table:
            sched = make_schedule(base.graph, base.profile.ops, streams=streams, order=order, max_streams=cap)
            fused, ms = measure_fused(fuse_plan(dataclasses.replace(base, schedule=sched), backend, cut=cut),
                                      placed, device)
            # The recorded name carries the cut and the layout ('opara+coarse+inductor', 'opara+inductor+
            # channels_last'), so the plan tells the candidates apart without a schema change.
            candidate = Candidate(streams=f"{fused.schedule.stream_algorithm}+{backend}{layout}", order=order,
                                  max_streams=cap, predicted_ms=fused.schedule.predicted_ms)
            if say:
                say(f"tune: fused {_label(candidate)}: {len(fused.fusion.segments)} segments, "
                    f"{len(fused.fusion.programs)} programs, {ms:.4f} ms")
            yield fused, candidate


def has_nhwc_weights(plan: Plan) -> bool:
    """An NCHW plan that channels_last would change: it has 4-D floating-point weights (convolutions)."""
    return plan.model.memory_format == "contiguous" and has_4d_weights(plan.graph)


def has_4d_weights(graph: Graph) -> bool:
    """The graph has 4-D floating-point weights: convolutions, which channels_last changes."""
    return any(n.kind == "param" and len(n.outputs[0].shape) == 4 and n.outputs[0].dtype.startswith(("float", "bfloat"))
               for n in graph.nodes)


def resolve_memory_format(requested: str, graph: Graph, fuse: str, tune: bool) -> str:
    """The layout a plan is built in. 'auto' picks NHWC for an untuned fused plan of a convolution model: on the
    H100 the NHWC fused plan beat every NCHW fused plan in every convolution group where both ran, and the
    NCHW one lost to torch.compile in five (BENCHMARKS.md). Unfused plans stay NCHW, running eager's own
    kernels bit for bit; a tuned fused plan starts NCHW and its tuner tries NHWC itself."""
    if requested != "auto":
        return requested
    return "channels_last" if fuse and not tune and has_4d_weights(graph) else "contiguous"


def _label(c: Candidate) -> str:
    return candidate_label((c.streams, c.order, c.max_streams, c.num_devices))
