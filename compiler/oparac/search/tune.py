"""--tune: measure the real replay latency of candidate schedules and keep the fastest."""
from __future__ import annotations

import dataclasses
import gc
import statistics

import torch

from opara_plan import Candidate, Plan
from oparac.options import ORDER_ALGORITHMS
from oparac.profile.gpus import gpu_spec
from oparac.profile.measure import replays_spanning, time_graph_replays, timed_runner
from oparac.progress import Progress, as_progress
from oparac.schedule.build import make_schedule
from oparac.schedule.placement import Placed, make_device_schedule, map_ops, with_placement

# The stream algorithms tried on one GPU (of oparac.options.STREAM_ALGORITHMS): 'window' is HIOS's grouping,
# tried across GPUs (DEVICE_SETTINGS), and 'single' is always a candidate of its own (SINGLE).
TUNED_STREAMS = ("opara", "nimble", "critical")
STREAM_CAPS = (0, 4, 8)
SINGLE = ("single", "topo", 0)


def candidate_settings() -> list[tuple[str, str, int]]:
    """Every tuned stream algorithm x launch order x cap, and always the single-stream schedule."""
    return [SINGLE] + [(s, o, c) for s in TUNED_STREAMS for o in ORDER_ALGORITHMS for c in STREAM_CAPS]


FINALISTS = 3       # the fastest candidates of the first pass, measured again against each other
FINAL_ROUNDS = 3    # interleaved rounds for the finalists; the median decides
SAMPLE_MS = 10.0    # what one timing sample (back-to-back replays between two events) should span at least
MAX_REPLAYS = 20
MIN_REPLAYS = 3


def replays_for(replay_ms: float) -> int:
    """Back-to-back replays per timing sample for a plan replaying in about `replay_ms`: enough that a sample
    spans SAMPLE_MS, so the events' resolution and the launch of the first replay stay well under 0.1% of it,
    and no more. A fixed 20 made the kernel-level search of ViT-B/16 fp32 at batch 8 (8 ms a replay on the H200)
    replay about 1,800 times in its final rounds, some 14 s of a 41 s compile, for a precision 3 already give."""
    return replays_spanning(SAMPLE_MS, replay_ms, least=MIN_REPLAYS, most=MAX_REPLAYS)


def tune_plan(plan: Plan, weights: dict, device: torch.device, progress: Progress | None = None) -> Plan:
    """Measure every candidate schedule once, then the few fastest again in interleaved rounds.

    weights: the model's, already on `device` in the plan's dtype (opara_runtime.bind.weights_on_device), so
    that every candidate's runner shares one copy. progress: a Progress hook or a callable taking a line.

    One pass over many candidates favours whichever was measured during a lucky moment (the minimum of
    noisy figures is biased low), so the first pass only shortlists; the finalists, always with the
    single-stream schedule, are captured side by side and timed in alternation, and the median picks."""
    return _tune(plan, _one_gpu_candidates(plan), weights, [device], as_progress(progress), repeats=7, replays=20)


# Multi-GPU candidates: every stream algorithm (HIOS's window grouping included) under the two
# profile-driven launch orders, on the one HIOS-LP mapping.
DEVICE_SETTINGS = tuple((s, o, 0) for s in ("opara", "nimble", "critical", "window") for o in ("critical", "opara"))


def tune_devices(plan: Plan, weights: dict, devices: list[torch.device], progress: Progress | None = None) -> Plan:
    """Measure the single-GPU candidates of `plan` (compiled for one GPU, profile.links set) and the
    multi-GPU candidates as tune_plan does (weights: on devices[0], as tune_plan takes them): the best
    single-GPU candidate is always a finalist, so a multi-GPU plan is chosen only where it is measured faster
    than that one in the same rounds, and a narrow model or a small input stays on one GPU."""
    progress = as_progress(progress)
    n = len(devices)
    device_of = map_ops(plan.graph, plan.profile.ops, plan.profile.links, n)
    candidates = _one_gpu_candidates(plan)
    if any(device_of.values()):
        for streams, order, cap in DEVICE_SETTINGS:
            candidates[(streams, order, cap, n)] = make_device_schedule(
                plan.graph, plan.profile.ops, links=plan.profile.links, num_devices=n, streams=streams, order=order,
                max_streams=cap, device_of=device_of)
    else:
        progress.note("tune: HIOS-LP keeps every op on one GPU; measuring single-GPU candidates only")
    # About 50 ms of replays per sample (at least 2): large inputs make a replay take tens of ms, and
    # several GPUs double the candidates, so tuning stays in seconds to a minute.
    replays = max(2, min(10, int(50.0 / max(plan.profile.sequential_ms, 1e-3))))
    return _tune(plan, candidates, weights, devices, progress, repeats=5, replays=replays)


def _one_gpu_candidates(plan: Plan) -> dict[tuple, Placed]:
    gpu = gpu_spec(plan.target)
    return {(s, o, c, 1): Placed(plan.graph, plan.profile.ops, make_schedule(
        plan.graph, plan.profile.ops, streams=s, order=o, max_streams=c, gpu=gpu)) for s, o, c in candidate_settings()}


def _tune(plan: Plan, candidates: dict[tuple, Placed], weights: dict, devices: list[torch.device],
          progress: Progress, *, repeats: int, replays: int) -> Plan:
    """Measure each distinct schedule once, re-measure the finalists in FINAL_ROUNDS interleaved rounds and keep
    the fastest finalist by its median; every candidate (streams, order, max_streams, num_devices) is recorded.

    The finalists: the FINALISTS fastest of the first pass, the fastest one-GPU candidate and the single-stream
    schedule. Ties go to fewer GPUs, then to the single stream."""
    first: dict[tuple, tuple[tuple, Plan]] = {}  # signature -> its first candidate's key and plan
    for key, placed in candidates.items():
        first.setdefault(_sig(placed.schedule), (key, with_placement(plan, placed)))
    measured: dict[tuple, float] = {}
    for signature, (key, candidate) in first.items():
        measured.update(measure_rounds({signature: candidate}, weights, devices, rounds=1, repeats=repeats,
                                       replays=replays))
        progress.note(f"tune: {candidate_label(key)}: {measured[signature]:.4f} ms")
    ranked = sorted(measured, key=measured.get)
    one_gpu = next(sig for sig in ranked if first[sig][0][3] == 1)
    single = _sig(candidates[SINGLE + (1,)].schedule)
    finalists = list(dict.fromkeys(ranked[:FINALISTS] + [one_gpu, single]))
    measured.update(measure_rounds({sig: first[sig][1] for sig in finalists}, weights, devices,
                                   rounds=FINAL_ROUNDS, repeats=5, replays=replays))
    progress.note("tune: finalists " + ", ".join(f"{candidate_label(first[sig][0])} {measured[sig]:.4f} ms"
                                                 for sig in finalists))
    best = min(candidates, key=lambda k: (_sig(candidates[k].schedule) not in finalists,
                                          measured[_sig(candidates[k].schedule)], k[3], k[:3] != SINGLE))
    recorded = tuple(Candidate(streams=s, order=o, max_streams=c, predicted_ms=p.schedule.predicted_ms,
                               measured_ms=measured[_sig(p.schedule)], chosen=(s, o, c, d) == best, num_devices=d)
                     for (s, o, c, d), p in candidates.items())
    torch.cuda.empty_cache()
    chosen = with_placement(plan, candidates[best])
    return dataclasses.replace(chosen, profile=dataclasses.replace(chosen.profile, candidates=recorded))


def measure_rounds(plans: dict, weights: dict, devices: list[torch.device], *, rounds: int, repeats: int,
                   replays: int) -> dict:
    """The median replay time of each plan over `rounds` rounds that time every plan in turn (all captured at
    once, so each round sees the same GPU state); a plan for N GPUs runs on the first N of `devices`. An entry
    may also be a runner already captured for its plan (timed_runner): it is timed as it is, not captured again."""
    runners = {sig: timed_runner(p, weights, devices[0], devices[:p.schedule.num_devices]) if isinstance(p, Plan)
               else p for sig, p in plans.items()}
    try:
        return time_rounds(runners, devices[0], rounds=rounds, repeats=repeats, replays=replays)
    finally:
        del runners
        gc.collect()


def time_rounds(runners: dict, device: torch.device, *, rounds: int, repeats: int, replays: int) -> dict:
    """measure_rounds for runners already captured (a caller that has used them for something else first)."""
    samples: dict = {sig: [] for sig in runners}
    for _ in range(rounds):
        for sig, runner in runners.items():
            samples[sig].append(time_graph_replays(runner.captured.graph, device, repeats=repeats, replays=replays))
    return {sig: statistics.median(times) for sig, times in samples.items()}


def candidate_label(key: tuple) -> str:
    """How tuning names a candidate (streams, order, max_streams, num_devices) in its progress lines; the
    multi-GPU benchmark reads the finalists back by these names."""
    streams, order, cap, num_devices = key
    return f"{streams}/{order}/cap {cap or '-'}" + (f" on {num_devices} GPUs" if num_devices > 1 else "")


def _sig(sched) -> tuple:
    return (sched.stream, sched.launch_order, sched.waits)
