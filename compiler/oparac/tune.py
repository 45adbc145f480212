"""--tune: measure the real replay latency of candidate schedules and keep the fastest."""
from __future__ import annotations

import dataclasses
import gc

import torch

from opara_plan import Candidate, Plan
from oparac.measure import time_graph_replays
from oparac.scheduling import make_schedule

STREAM_ALGORITHMS = ("opara", "nimble", "critical")
ORDER_ALGORITHMS = ("topo", "opara", "critical")
STREAM_CAPS = (0, 4, 8)
SINGLE = ("single", "topo", 0)


def candidate_settings() -> list[tuple[str, str, int]]:
    """Every stream algorithm x launch order x cap, and always the single-stream schedule."""
    return [SINGLE] + [(s, o, c) for s in STREAM_ALGORITHMS for o in ORDER_ALGORITHMS for c in STREAM_CAPS]


def tune_plan(plan: Plan, weights: dict, device: torch.device, say=None) -> Plan:
    from opara_runtime.bind import weights_on_device
    from opara_runtime.runner import Runner

    placed = weights_on_device(plan, weights, device)
    schedules = {}
    for streams, order, cap in candidate_settings():
        sched = make_schedule(plan.graph, plan.profile.ops, streams=streams, order=order, max_streams=cap)
        schedules[(streams, order, cap)] = sched
    measured: dict[tuple, float] = {}
    for setting, sched in schedules.items():
        signature = _sig(sched)
        if signature in measured:
            continue
        runner = Runner(dataclasses.replace(plan, schedule=sched), placed, device)
        measured[signature] = time_graph_replays(runner.captured.graph, device, repeats=7, replays=20)
        del runner
        gc.collect()
        if say:
            say(f"tune: {setting[0]}/{setting[1]}/cap {setting[2] or '-'}: {measured[signature]:.4f} ms")
    best = min(schedules, key=lambda k: (measured[_sig(schedules[k])], k != SINGLE))
    candidates = tuple(Candidate(streams=s, order=o, max_streams=c, predicted_ms=sched.predicted_ms,
                                 measured_ms=measured[_sig(sched)], chosen=(s, o, c) == best)
                       for (s, o, c), sched in schedules.items())
    torch.cuda.empty_cache()
    profile = dataclasses.replace(plan.profile, candidates=candidates)
    return dataclasses.replace(plan, schedule=schedules[best], profile=profile)


def _sig(sched) -> tuple:
    return (sched.stream, sched.launch_order, sched.waits)
