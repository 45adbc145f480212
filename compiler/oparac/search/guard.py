"""The never-lose guard: an untuned plan is written only where it is measured at least as fast as one stream.

The simulator that picks an untuned schedule models no contention between concurrent kernels, so on models
with many small branches it can choose dozens of streams that run slower than one (Swin-T on the H200: 68
streams, 0.86x the sequential CUDA graph). The guard measures the chosen plan against the single-stream plan
on the GPU before the plan is written, keeps the faster, and records both measurements and the decision in the
plan's profile (`Profile.candidates`, `Profile.guard`), which `oparac inspect` shows.

Unfused plans: a few interleaved replays of two captured graphs (about a second). Fused plans (fuse_mode 'auto'):
first a prediction from the profile, before anything is compiled. Where the unfused schedule is one stream, or the
simulator (which models no contention, so it errs towards streams) predicts its streams at less than 1/CLEAR_WIN
times one stream, a segment-level plan cannot clearly pay: it would also lose fusion at every segment boundary.
Its segments are then not compiled at all, and the plan is the kernel-level search's pick (the whole graph
compiled once, its kernels on streams or on one stream, oparac.search.kernels), which is what the guard below
would have compared it with. That saves the segment compile (and its worker processes) on transformers and chain
CNNs, where the kernel-level plan won every measured head-to-head. Otherwise the alternative is
the whole graph compiled by inductor as one program, which is what torch.compile fuses: with fuse_mode 'auto' its
kernels are put on streams too (oparac.search.kernels, which keeps one stream where that is faster, and times the
fused plan against its pick on the runners it has already captured), with 'segments' it runs as one segment on
one stream. Compiling it costs about as much as torch.compile's own compile,
so it is done only when the fused plan's streams do not clearly pay: when its replay is not at least CLEAR_WIN
faster than its segments run one after another (their measured times, which `measure_fused` records). Where
streams buy that much, merging the segments could only win back the fusion lost at segment boundaries, which on
the models measured cost less than that.

Whichever fused plan that keeps, it is last timed against the unfused plan on one stream (the sequential CUDA
graph of the model's own ATen kernels, in the layout an unfused plan gets: unfused_rival), in the same rounds as
its final measurement where there is one, and the unfused plan is written where it is faster: inductor's program
can be slower than the eager kernels (docs/design.md, section 5), and a fused default must not lose to a plan
that needs no compiler at all.
"""
from __future__ import annotations

import dataclasses
import gc

import torch

from opara_plan import NO_FUSION, Candidate, Plan
from oparac.fuse.segments import fuse_plan, measure_fused
from oparac.schedule.build import make_schedule
from oparac.search.tune import FINAL_ROUNDS, SINGLE, measure_rounds

# A fused plan whose replay takes at most this fraction of its segments' summed times is kept unmeasured.
CLEAR_WIN = 0.85
# Below this predicted speedup of the unfused streams over one stream, segments are not compiled (fuse_mode 'auto').
SEGMENTS_PREDICTED_GAIN = 1 / CLEAR_WIN


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the guard measured and kept: ms are median replay times; None where it did not measure."""

    kept: str            # 'chosen' or 'single'
    chosen_ms: float | None
    single_ms: float | None
    reason: str


def single_stream(plan: Plan) -> Plan:
    """The same plan on one stream in graph order (no fusion)."""
    sched = make_schedule(plan.graph, plan.profile.ops, streams=SINGLE[0], order=SINGLE[1], max_streams=SINGLE[2])
    return dataclasses.replace(plan, schedule=sched, fusion=NO_FUSION)


def guard_unfused(plan: Plan, weights: dict, device: torch.device, say=None) -> Plan:
    """`plan` or its single-stream plan, whichever replays faster on `device` (a tie keeps `plan`)."""
    single = single_stream(plan)
    if _same_schedule(plan, single):
        return _record(plan, plan, single, Verdict("chosen", None, None, "the schedule already is one stream"))
    times = measure_rounds({"chosen": plan, "single": single}, weights, [device], rounds=FINAL_ROUNDS, repeats=5,
                           replays=20)
    return _decide(plan, single, times["chosen"], times["single"], say)


def segments_cannot_pay(plan: Plan) -> str | None:
    """Why the unfused `plan`'s profile rules out a segment-level plan that clearly pays, or None where it may."""
    s = plan.schedule
    if s.num_streams == 1:
        return "the schedule is one stream, so its one segment would be the whole graph"
    gain = plan.profile.sequential_ms / s.predicted_ms if s.predicted_ms > 0 else float("inf")
    if gain < SEGMENTS_PREDICTED_GAIN:
        return (f"the profile predicts the {s.num_streams}-stream schedule at {gain:.2f}x one stream, less than the "
                f"{SEGMENTS_PREDICTED_GAIN:.2f}x its segments would need to clearly pay")
    return None


def guard_whole_graph(plan: Plan, reason: str, weights: dict, device: torch.device, backend: str,
                      say=None, *, unfused_layout: str | None = None) -> Plan | None:
    """The kernel-level search's pick for the unfused `plan` (segments not compiled, for `reason`), its guard line
    saying why; None where the compiled program cannot be put on streams (the caller then fuses segments).
    unfused_layout: the memory format of the unfused rival (default: the plan's)."""
    from opara_runtime.fused.wrapper_ir import WrapperFormatError
    from oparac.search.kernels import kernel_fused

    if say:
        say(f"guard: segments not compiled: {reason}; compiling the whole graph once")
    unfused = unfused_rival(plan, unfused_layout)
    try:
        search = kernel_fused(plan, weights, device, backend, say, rivals={UNFUSED: unfused})
    except WrapperFormatError as e:
        if say:
            say(f"guard: the whole graph's kernels cannot be put on streams ({e}); fusing segments instead")
        return None
    kept = search.plan
    line = f"guard: segments not compiled ({reason}); " + kept.profile.guard.removeprefix("guard: ")
    kept = dataclasses.replace(kept, profile=dataclasses.replace(kept.profile, guard=line))
    return against_unfused(kept, search.head_to_head["kernels"], unfused, search.head_to_head[UNFUSED], say)


def guard_fused(fused: Plan, fused_ms: float, weights: dict, device: torch.device, backend: str, say=None, *,
                kernels: bool = False, runner=None, unfused_layout: str | None = None) -> Plan:
    """`fused` (already compiled and measured: `fused_ms`) or the whole graph as one fused program: its kernels
    on streams where that measures faster (kernels=True), else as one segment on one stream. runner: `fused`'s
    captured runner where the caller has it (measure_fused_runner); the head-to-head then times it instead of
    capturing `fused` again. It is released here. unfused_layout: as for guard_whole_graph."""
    try:
        return _guard_fused(fused, fused_ms, weights, device, backend, say, kernels, runner, unfused_layout)
    finally:
        del runner
        gc.collect()


def _guard_fused(fused: Plan, fused_ms: float, weights: dict, device: torch.device, backend: str, say,
                 kernels: bool, runner, unfused_layout: str | None) -> Plan:
    serial_ms = sum(s.ms for s in fused.fusion.segments if s.ms > 0)
    unfused = unfused_rival(fused, unfused_layout)
    reason = None
    if len(fused.fusion.segments) == 1:
        reason = "the plan already is one segment"
    elif serial_ms > 0 and fused_ms <= CLEAR_WIN * serial_ms:
        reason = (f"streams clearly pay: {fused_ms:.4f} ms against {serial_ms:.4f} ms for its segments one after "
                  f"another (at most {CLEAR_WIN:.2f}x); the one-segment plan was not compiled")
    if reason is not None:  # no other fused plan to compile: only the unfused one to time it against
        timed = measure_rounds({"chosen": fused if runner is None else runner, UNFUSED: unfused}, weights, [device],
                               rounds=FINAL_ROUNDS, repeats=5, replays=20)
        kept = _record(fused, fused, fused, Verdict("chosen", timed["chosen"], None, reason))
        return against_unfused(kept, timed["chosen"], unfused, timed[UNFUSED], say)
    if say:
        say("guard: compiling the whole graph as one program (the plan's streams do not clearly pay)")
    if kernels:
        from opara_runtime.fused.wrapper_ir import WrapperFormatError
        from oparac.search.kernels import kernel_fused

        try:
            # The head-to-head runs inside the kernel search, on runners it has already captured.
            search = kernel_fused(fused, weights, device, backend, say,
                                  rivals={"chosen": fused if runner is None else runner, UNFUSED: unfused})
        except WrapperFormatError as e:  # a program the kernel-level mode cannot read: the plain one segment
            if say:
                say(f"guard: the whole graph's kernels cannot be put on streams ({e}); measuring it as one segment")
        else:
            h2h = search.head_to_head
            kept = _decide(fused, search.plan, h2h["chosen"], h2h["kernels"], say)
            return against_unfused(kept, min(h2h["chosen"], h2h["kernels"]), unfused, h2h[UNFUSED], say)
    one, _ = measure_fused(fuse_plan(single_stream(fused), backend), weights, device)
    times = measure_rounds({"chosen": fused if runner is None else runner, "single": one, UNFUSED: unfused},
                           weights, [device], rounds=FINAL_ROUNDS, repeats=5, replays=20)
    kept = _decide(fused, one, times["chosen"], times["single"], say)
    return against_unfused(kept, min(times["chosen"], times["single"]), unfused, times[UNFUSED], say)


UNFUSED = "unfused one stream"


def unfused_rival(plan: Plan, layout: str | None) -> Plan:
    """The unfused plan on one stream that a fused plan is last timed against, in `layout` where given: under
    memory_format 'auto' that is NCHW, the layout an unfused plan has (eager's kernels, bit for bit), although
    the fused plan of a convolution model is built NHWC. Its profile stays the fused plan's (op times taken in
    that plan's layout): it is what was profiled, and a one-stream schedule does not depend on it."""
    single = single_stream(plan)
    if layout is None or layout == plan.model.memory_format:
        return single
    return dataclasses.replace(single, model=dataclasses.replace(single.model, memory_format=layout))


def against_unfused(kept: Plan, kept_ms: float, unfused: Plan, unfused_ms: float, say) -> Plan:
    """`kept` (a fused plan measured at kept_ms) or `unfused` (its model's unfused plan on one stream, measured
    in the same rounds), whichever is faster (a tie keeps `kept`); both stay on record as candidates and the
    guard line says what was compared."""
    if unfused_ms < kept_ms:
        line = (f"guard: the unfused plan on one stream is faster: {unfused_ms:.4f} ms against {kept_ms:.4f} ms "
                f"for the fused plan ({kept.profile.guard.removeprefix('guard: ')})")
        winner = unfused
    else:
        line = f"{kept.profile.guard}; the unfused plan on one stream: {unfused_ms:.4f} ms"
        winner = kept
    if say:
        say(line)
    earlier = tuple(dataclasses.replace(c, chosen=c.chosen and winner is kept) for c in kept.profile.candidates)
    records = earlier + (_candidate(unfused, unfused_ms, winner is unfused),)
    return dataclasses.replace(winner, profile=dataclasses.replace(winner.profile, candidates=records, guard=line))


def _decide(chosen: Plan, single: Plan, chosen_ms: float, single_ms: float, say) -> Plan:
    if chosen_ms <= single_ms:
        verdict = Verdict("chosen", chosen_ms, single_ms,
                          f"kept: {chosen_ms:.4f} ms against {single_ms:.4f} ms on one stream")
        winner = chosen
    else:
        verdict = Verdict("single", chosen_ms, single_ms,
                          f"{describe(single)} is faster: {single_ms:.4f} ms against {chosen_ms:.4f} ms for the "
                          f"{chosen.schedule.num_streams}-stream plan")
        winner = single
    if say:
        say(f"guard: {verdict.reason}")
    return _record(winner, chosen, single, verdict)


def _record(winner: Plan, chosen: Plan, single: Plan, verdict: Verdict) -> Plan:
    """The winner, its profile carrying both alternatives as candidates and the guard's one-line decision."""
    records = (_candidate(chosen, verdict.chosen_ms, verdict.kept == "chosen"),)
    if single is not chosen:
        records += (_candidate(single, verdict.single_ms, verdict.kept == "single"),)
    earlier = tuple(dataclasses.replace(c, chosen=False) for c in winner.profile.candidates)
    profile = dataclasses.replace(winner.profile, candidates=earlier + records, guard=f"guard: {verdict.reason}")
    return dataclasses.replace(winner, profile=profile)


def _candidate(p: Plan, ms: float | None, is_winner: bool) -> Candidate:
    s = p.schedule
    streams = s.stream_algorithm + (f"+{p.fusion.backend}" if p.fusion.backend else "")
    if p.fusion.mode == "kernels":
        streams += f"+kernels {p.fusion.kernels.algorithm}"
    return Candidate(streams=streams, order=s.order_algorithm, max_streams=s.max_streams,
                     predicted_ms=s.predicted_ms, measured_ms=-1.0 if ms is None else ms, chosen=is_winner)


def describe(plan: Plan) -> str:
    """The alternative in a few words: 'one stream', or the whole graph's kernels on N streams."""
    if plan.fusion.mode == "kernels":
        n = plan.fusion.kernels.num_streams
        return "the whole graph on one stream" if n == 1 else f"the whole graph's kernels on {n} streams"
    return "one stream"


def _same_schedule(a: Plan, b: Plan) -> bool:
    return (a.schedule.stream, a.schedule.launch_order, a.schedule.waits) == \
        (b.schedule.stream, b.schedule.launch_order, b.schedule.waits)
