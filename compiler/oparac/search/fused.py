"""The fused tuner: compile a few fused schedules, time them against the unfused plan, keep the fastest."""
from __future__ import annotations

import dataclasses

import torch

from opara_plan import Candidate, Plan
from oparac.fuse.segments import fuse_plan, has_nhwc_weights, measure_fused
from oparac.profile.gpus import gpu_spec
from oparac.progress import Progress, as_progress
from oparac.schedule.build import make_schedule
from oparac.search.tune import candidate_label

# Fused tuning compiles every candidate's segments with inductor (seconds each), so it tries a few
# schedules that cut differently, always with the single-stream fused plan and the unfused plan:
# (streams, order, max_streams, cut).
FUSED_CANDIDATES = (("single", "topo", 0, "maximal"), ("opara", "opara", 0, "maximal"),
                    ("opara", "opara", 4, "maximal"), ("opara", "opara", 0, "coarse"))
# Convolution models are also tried NHWC (channels_last): cuDNN's tensor-core convolutions want that layout, and
# inductor's kernels around them then need no layout conversions. On the H100 the NHWC fused plan beat every NCHW
# fused plan in each CNN group where both ran (benchmarks/results/suite-*-s12.json).
NHWC_CANDIDATES = (("opara", "opara", 0, "maximal"),)


def tune_fused(plan: Plan, weights: dict, device: torch.device, backend: str, progress: Progress | None = None,
               nhwc_profile=None, *, mode: str = "auto") -> Plan:
    """Measure a few fused schedules against the given (unfused) plan; keep the fastest.

    weights: the model's, already on `device` in the plan's dtype (opara_runtime.bind.weights_on_device).
    progress: a Progress hook or a callable taking a line.

    Each fused candidate is compiled and timed once as it is built; then every candidate, the unfused plan
    included, is timed again side by side in interleaved rounds (their compiled programs are reloaded, not
    recompiled) and the median decides, as in the unfused tuner.

    nhwc_profile(): the ops profiled in channels_last. When given and the plan is an NCHW one with 4-D
    floating-point weights, NHWC_CANDIDATES are tried in that layout too, scheduled from that profile; a plan
    chosen from them carries it.

    mode: 'segments' tries segment-level candidates only, 'kernels' only the kernel-level plan (the whole graph
    fused, its kernels on streams, oparac.search.kernels), 'auto' both."""
    from opara_runtime.fused import compile_pool
    from oparac.search.tune import FINAL_ROUNDS, measure_rounds

    progress = as_progress(progress)
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
    if mode != "kernels":
        with compile_pool(device):
            for fused, candidate in _fused_candidates(variants, weights, device, backend, progress):
                plans.append(fused)
                candidates.append(candidate)
    if mode != "segments":
        from opara_runtime.fused.wrapper_ir import WrapperFormatError
        from oparac.search.kernels import kernel_fused, unreadable_program

        try:
            kernel_plan = kernel_fused(plan, weights, device, backend, progress).plan
        except WrapperFormatError as e:
            if mode == "kernels":
                raise unreadable_program(e) from e
            progress.note(f"tune: no kernel-level candidate: {e}")
        else:
            plans.append(kernel_plan)
            candidates.append(Candidate(streams=f"kernels {kernel_plan.fusion.kernels.algorithm}+{backend}",
                                        order="", max_streams=0,
                                        predicted_ms=kernel_plan.fusion.kernels.predicted_ms))
    final = measure_rounds(dict(enumerate(plans)), weights, [device], rounds=FINAL_ROUNDS, repeats=5, replays=20)
    candidates = [dataclasses.replace(c, measured_ms=final[k]) for k, c in enumerate(candidates)]
    progress.note("tune: fused finalists " + ", ".join(f"{_label(c)} {c.measured_ms:.4f} ms" for c in candidates))
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


def _fused_candidates(variants, placed: dict, device: torch.device, backend: str, progress: Progress):
    """Each fused candidate compiled and timed once: (its plan, its Candidate record)."""
    for base, table, layout in variants:
        gpu = gpu_spec(base.target)
        for streams, order, cap, cut in table:
            sched = make_schedule(base.graph, base.profile.ops, streams=streams, order=order, max_streams=cap,
                                  gpu=gpu)
            fused, ms = measure_fused(fuse_plan(dataclasses.replace(base, schedule=sched), backend, cut=cut),
                                      placed, device)
            # The recorded name carries the cut and the layout ('opara+coarse+inductor', 'opara+inductor+
            # channels_last'), so the plan tells the candidates apart without a schema change.
            candidate = Candidate(streams=f"{fused.schedule.stream_algorithm}+{backend}{layout}", order=order,
                                  max_streams=cap, predicted_ms=fused.schedule.predicted_ms)
            progress.note(f"tune: fused {_label(candidate)}: {len(fused.fusion.segments)} segments, "
                          f"{len(fused.fusion.programs)} programs, {ms:.4f} ms")
            yield fused, candidate


def _label(c: Candidate) -> str:
    return candidate_label((c.streams, c.order, c.max_streams, c.num_devices))
