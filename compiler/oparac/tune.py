"""--tune: measure the real replay latency of candidate schedules and keep the fastest."""
from __future__ import annotations

import dataclasses
import gc
import statistics

import torch

from opara_plan import Candidate, Plan
from oparac.measure import time_graph_replays, timed_runner
from oparac.scheduling import make_schedule

STREAM_ALGORITHMS = ("opara", "nimble", "critical")
ORDER_ALGORITHMS = ("topo", "opara", "critical")
STREAM_CAPS = (0, 4, 8)
SINGLE = ("single", "topo", 0)


def candidate_settings() -> list[tuple[str, str, int]]:
    """Every stream algorithm x launch order x cap, and always the single-stream schedule."""
    return [SINGLE] + [(s, o, c) for s in STREAM_ALGORITHMS for o in ORDER_ALGORITHMS for c in STREAM_CAPS]


FINALISTS = 3       # the fastest candidates of the first pass, measured again against each other
FINAL_ROUNDS = 3    # interleaved rounds for the finalists; the median decides


def tune_plan(plan: Plan, weights: dict, device: torch.device, say=None) -> Plan:
    """Measure every candidate schedule once, then the few fastest again in interleaved rounds.

    One pass over many candidates favours whichever was measured during a lucky moment (the minimum of
    noisy figures is biased low), so the first pass only shortlists; the finalists, always with the
    single-stream schedule, are captured side by side and timed in alternation, and the median picks."""
    from opara_runtime.bind import weights_on_device

    placed = weights_on_device(plan, weights, device)
    schedules = {}
    for streams, order, cap in candidate_settings():
        sched = make_schedule(plan.graph, plan.profile.ops, streams=streams, order=order, max_streams=cap)
        schedules[(streams, order, cap)] = sched
    by_sig = {}
    for setting, sched in schedules.items():
        by_sig.setdefault(_sig(sched), (setting, sched))
    measured: dict[tuple, float] = {}
    for signature, (setting, sched) in by_sig.items():
        runner = timed_runner(dataclasses.replace(plan, schedule=sched), placed, device)
        measured[signature] = time_graph_replays(runner.captured.graph, device, repeats=7, replays=20)
        del runner
        gc.collect()
        if say:
            say(f"tune: {setting[0]}/{setting[1]}/cap {setting[2] or '-'}: {measured[signature]:.4f} ms")
    finalists = sorted(measured, key=measured.get)[:FINALISTS]
    single = _sig(schedules[SINGLE])
    if single not in finalists:
        finalists.append(single)
    measured.update(_final_rounds({sig: by_sig[sig][1] for sig in finalists}, plan, placed, device))
    if say:
        say("tune: finalists " + ", ".join(f"{'/'.join(map(str, by_sig[sig][0]))} {measured[sig]:.4f} ms"
                                           for sig in finalists))
    best = min(schedules, key=lambda k: (_sig(schedules[k]) not in finalists, measured[_sig(schedules[k])],
                                         k != SINGLE))
    candidates = tuple(Candidate(streams=s, order=o, max_streams=c, predicted_ms=sched.predicted_ms,
                                 measured_ms=measured[_sig(sched)], chosen=(s, o, c) == best)
                       for (s, o, c), sched in schedules.items())
    torch.cuda.empty_cache()
    profile = dataclasses.replace(plan.profile, candidates=candidates)
    return dataclasses.replace(plan, schedule=schedules[best], profile=profile)


def _final_rounds(finalists: dict, plan: Plan, placed: dict, device: torch.device) -> dict[tuple, float]:
    runners = {sig: timed_runner(dataclasses.replace(plan, schedule=sched), placed, device)
               for sig, sched in finalists.items()}
    samples: dict[tuple, list[float]] = {sig: [] for sig in runners}
    for _ in range(FINAL_ROUNDS):
        for sig, runner in runners.items():
            samples[sig].append(time_graph_replays(runner.captured.graph, device, repeats=5, replays=20))
    del runners
    gc.collect()
    return {sig: statistics.median(times) for sig, times in samples.items()}


def _sig(sched) -> tuple:
    return (sched.stream, sched.launch_order, sched.waits)


# Multi-GPU candidates: every stream algorithm (HIOS's window grouping included) under the two
# profile-driven launch orders, on the one HIOS-LP mapping.
DEVICE_SETTINGS = tuple((s, o, 0) for s in ("opara", "nimble", "critical", "window") for o in ("critical", "opara"))


def tune_devices(plan: Plan, weights: dict, devices: list[torch.device], say=None) -> Plan:
    """Measure the single-GPU candidates of `plan` (compiled for one GPU, profile.links set) and the
    multi-GPU candidates, and keep the fastest: a multi-GPU plan is chosen only where it is measured faster
    than every single-GPU one, so a narrow model or a small input stays on one GPU."""
    from opara_runtime.bind import weights_on_device
    from oparac.device_scheduling import Placed, make_device_schedule, map_ops, with_placement

    n = len(devices)
    placed_weights = weights_on_device(plan, weights, devices[0])
    device_of = map_ops(plan.graph, plan.profile.ops, plan.profile.links, n)
    candidates: dict[tuple, Placed] = {}
    for streams, order, cap in candidate_settings():
        candidates[(streams, order, cap, 1)] = Placed(plan.graph, plan.profile.ops, make_schedule(
            plan.graph, plan.profile.ops, streams=streams, order=order, max_streams=cap))
    if any(device_of.values()):
        for streams, order, cap in DEVICE_SETTINGS:
            candidates[(streams, order, cap, n)] = make_device_schedule(
                plan.graph, plan.profile.ops, links=plan.profile.links, num_devices=n, streams=streams, order=order,
                max_streams=cap, device_of=device_of)
    elif say:
        say("tune: HIOS-LP keeps every op on one GPU; measuring single-GPU candidates only")
    measured: dict[tuple, float] = {}
    for key, placed in candidates.items():
        signature = _sig(placed.schedule)
        if signature not in measured:
            measured[signature] = _measure(with_placement(plan, placed), placed_weights, devices)
            if say:
                say(f"tune: {key[3]} GPU {key[0]}/{key[1]}/cap {key[2] or '-'}: {measured[signature]:.4f} ms")
    best = min(candidates, key=lambda k: (measured[_sig(candidates[k].schedule)], k[3], k[:3] != SINGLE))
    recorded = tuple(Candidate(streams=s, order=o, max_streams=c, predicted_ms=p.schedule.predicted_ms,
                               measured_ms=measured[_sig(p.schedule)], chosen=(s, o, c, d) == best, num_devices=d)
                     for (s, o, c, d), p in candidates.items())
    torch.cuda.empty_cache()
    chosen = with_placement(plan, candidates[best])
    return dataclasses.replace(chosen, profile=dataclasses.replace(chosen.profile, candidates=recorded))


def _measure(plan: Plan, weights: dict, devices: list[torch.device]) -> float:
    runner = timed_runner(plan, weights, devices[0], devices)
    # About 50 ms of replays per sample (at least 2): large inputs make a replay take tens of ms, and
    # several GPUs double the candidates, so tuning stays in seconds to a minute.
    replays = max(2, min(10, int(50.0 / max(plan.profile.sequential_ms, 1e-3))))
    ms = time_graph_replays(runner.captured.graph, devices[0], repeats=5, replays=replays)
    del runner
    gc.collect()
    return ms
