"""The never-lose guard: an untuned plan is written only where it is measured at least as fast as one stream.

The simulator that picks an untuned schedule models no contention between concurrent kernels, so on models
with many small branches it can choose dozens of streams that run slower than one (Swin-T on the H200: 68
streams, 0.86x the sequential CUDA graph). The guard measures the chosen plan against the single-stream plan
on the GPU before the plan is written, keeps the faster, and records both measurements and the decision in the
plan's profile (`Profile.candidates`, `Profile.guard`), which `oparac inspect` shows.

Unfused plans: a few interleaved replays of two captured graphs (about a second).

Fused plans (fuse_mode 'auto') are built whole graph first. Inductor compiles the whole graph once (what
torch.compile fuses) and the kernel-level search puts its kernels on streams or keeps one stream
(oparac.search.kernels): that is one compile, about as long as torch.compile's own. Segments (fuse.segments, a
compile of their own, in worker processes) are compiled as well only where the profile says they could clearly
beat that plan:
- not at all where the unfused schedule is one stream, or the simulator predicts its streams at less than
  1/CLEAR_WIN times one stream (segments_cannot_pay): they would also lose fusion at every segment boundary;
- otherwise once the kernel plan is measured, where the unfused schedule's predicted gain, discounted by how far
  the simulator overrated streams on this model's kernels, is at least 1/SEGMENTS_CLEAR_WIN times the gain the
  kernels on streams measured (segments_may_beat). Where segments were compiled first they lost or tied on every
  model measured on the H200 (a Llama-style decoder: 21 s compiling a 43-stream plan 10% slower); the rule skips
  them on all of those (docs/design.md, section 5).
Both fused plans are then timed against each other in the same rounds. Segments that fail to compile leave the
kernel plan, which is already measured; a whole graph that fails to compile or run leaves the segments.

fuse_mode 'segments', and 'auto' where the whole graph's kernels could not be put on streams (guard_fused): the
segment plan, and the whole graph as one segment on one stream where the segments' streams do not clearly pay
(their replay is not at least CLEAR_WIN faster than the segments run one after another, their measured times,
which `measure_fused` records).

Whichever fused plan that keeps, it is last timed against the unfused plan on one stream (the sequential CUDA
graph of the model's own ATen kernels, in the layout an unfused plan gets: unfused_rival), in the same rounds as
its final measurement, and the unfused plan is written where it is faster: inductor's program can be slower than
the eager kernels (docs/design.md, section 5), and a fused default must not lose to a plan that needs no
compiler at all.
"""
from __future__ import annotations

import dataclasses
import gc

import torch

from opara_plan import NO_FUSION, Candidate, Plan
from oparac.fuse.segments import fuse_plan, measure_fused
from oparac.schedule.build import make_schedule
from oparac.search.tune import FINAL_ROUNDS, SINGLE, measure_rounds

# A clear win: at most this fraction of the time of the alternative. A fused plan whose replay takes at most this
# fraction of its segments' summed times is kept unmeasured.
CLEAR_WIN = 0.85
# Segments are compiled next to the measured kernel plan only where they are forecast to take at most this fraction
# of its time (segments_may_beat). The margin stands for the fusion segments lose at their boundaries and for what
# the forecast still overstates, and it is wide because a segment compile about doubles the default compile: on the
# H200, forecasts at 1.00-1.08x of what the narrower margins 0.85 and 0.8 needed foretold two losses of 2% and
# wins of 3% and 7%, in an order the forecast did not tell (docs/design.md section 5 has the runs).
SEGMENTS_CLEAR_WIN = 0.7
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
    return segments_ruled_out(plan.schedule, plan.profile)


def segments_ruled_out(s, profile) -> str | None:
    """segments_cannot_pay for the unfused schedule `s` made on `profile`'s op times: measured ones, or the cost
    model's where the compile decides from them whether measuring is worth it (pipeline.profile_stage)."""
    if s.num_streams == 1:
        return "the schedule is one stream, so its one segment would be the whole graph"
    gain = profile.sequential_ms / s.predicted_ms if s.predicted_ms > 0 else float("inf")
    if gain < SEGMENTS_PREDICTED_GAIN:
        source = "the cost model" if profile.method == "cost-model" else "the profile"
        return (f"{source} predicts the {s.num_streams}-stream schedule at {gain:.2f}x one stream, less than the "
                f"{SEGMENTS_PREDICTED_GAIN:.2f}x its segments would need to clearly pay")
    return None


def guard_kernels_first(plan: Plan, weights: dict, device: torch.device, backend: str, say=None, *,
                        ruled_out: str | None = None, cut: str = "maximal",
                        unfused_layout: str | None = None) -> Plan | None:
    """The default fused plan of the unfused `plan`: the kernel-level search's pick, and the segment plan (`cut`)
    only where segments_may_beat says it could clearly beat that (never where the profile has `ruled_out`
    segments: segments_cannot_pay's reason); the faster of the two, last against the unfused plan on one stream.
    Its guard line says why segments were or were not compiled. None where the compiled program cannot be put on
    streams, or the whole graph fails to compile or run (the caller then fuses segments). unfused_layout: the
    memory format of the unfused rival (default: the plan's)."""
    from opara_runtime.fused.wrapper_ir import WrapperFormatError
    from oparac.fuse.segments import measure_fused_runner
    from oparac.search.kernels import kernel_fused

    if say:
        say(f"guard: segments not compiled: {ruled_out}; compiling the whole graph once" if ruled_out else
            "guard: compiling the whole graph first, to put its kernels on streams")
    unfused = unfused_rival(plan, unfused_layout)
    try:
        search = kernel_fused(plan, weights, device, backend, say, rivals={UNFUSED: unfused})
    except WrapperFormatError as e:
        if say:
            say(f"guard: the whole graph's kernels cannot be put on streams ({e}); fusing segments instead")
        return None
    except Exception as e:  # inductor failing on the whole graph need not fail a model whose segments compile
        if say:
            say(f"guard: the whole graph failed to compile or run ({type(e).__name__}: {e}); fusing segments "
                f"instead")
        return None
    worth, why = (False, ruled_out) if ruled_out else segments_may_beat(plan, search)
    if not worth:
        return _kernels_kept(search, why, unfused, say)
    if say:
        say(f"guard: compiling the segments too ({why})")
    try:
        fused, _, runner = measure_fused_runner(fuse_plan(plan, backend, cut=cut), weights, device)
    except Exception as e:  # the kernel plan is measured already: a segment compile that fails is one rival fewer
        return _kernels_kept(search, f"{type(e).__name__}: {e}", unfused, say, what="segments failed to compile")
    try:
        times = measure_rounds({"chosen": runner, "kernels": search.plan, UNFUSED: unfused}, weights, [device],
                               rounds=FINAL_ROUNDS, repeats=5, replays=20)
    finally:
        del runner
        gc.collect()
    kept = _decide(fused, search.plan, times["chosen"], times["kernels"], say)
    return against_unfused(kept, min(times["chosen"], times["kernels"]), unfused, times[UNFUSED], say)


def _kernels_kept(search, why: str, unfused: Plan, say, *, what: str = "segments not compiled") -> Plan:
    """The kernel search's pick, its guard line saying what became of the segments and why, against the unfused
    plan."""
    kept = search.plan
    line = f"guard: {what} ({why}); " + kept.profile.guard.removeprefix("guard: ")
    kept = dataclasses.replace(kept, profile=dataclasses.replace(kept.profile, guard=line))
    return against_unfused(kept, search.head_to_head["kernels"], unfused, search.head_to_head[UNFUSED], say)


def segments_may_beat(plan: Plan, search) -> tuple[bool, str]:
    """Whether the unfused `plan`'s segments could clearly beat the kernel-level plan that `search`
    (oparac.search.kernels.KernelSearch) measured, and why, in a few words.

    Both run the same fused work on streams; what differs is the schedule, and the fusion that segments lose at
    their boundaries. The segments' gain over one stream is forecast as the unfused schedule's predicted gain,
    divided by the simulator's error on this model's kernels: how much slower than predicted the kernel schedule
    it rated fastest measured (at least 1: it models no contention, so it overrates streams, more the more of
    them run at once). They are compiled where that forecast is at least 1/SEGMENTS_CLEAR_WIN times the gain that
    the kernels on streams measured over their own one stream."""
    predicted = plan.profile.sequential_ms / plan.schedule.predicted_ms if plan.schedule.predicted_ms > 0 else 1.0
    single_ms = search.schedules["single"][0]
    realised = single_ms / search.ms if search.ms > 0 else 1.0
    streamed = [v for name, v in search.schedules.items() if name != "single" and v[1] > 0]
    error = 1.0
    if streamed:
        measured, forecast = min(streamed, key=lambda v: v[1])
        error = max(1.0, measured / forecast)
    forecast_gain, need = predicted / error, realised / SEGMENTS_CLEAR_WIN
    why = (f"the profile predicts the {plan.schedule.num_streams}-stream schedule at {predicted:.2f}x one stream, "
           f"{forecast_gain:.2f}x after the simulator's {error:.2f}x error on the kernels; beating the kernels on "
           f"streams ({realised:.2f}x their one stream) clearly needs {need:.2f}x")
    return forecast_gain >= need, why


def guard_fused(fused: Plan, fused_ms: float, weights: dict, device: torch.device, backend: str, say=None, *,
                runner=None, unfused_layout: str | None = None) -> Plan:
    """`fused` (already compiled and measured: `fused_ms`) or the whole graph as one segment on one stream.
    runner: `fused`'s captured runner where the caller has it (measure_fused_runner); the head-to-head then times
    it instead of capturing `fused` again. It is released here. unfused_layout: as for guard_kernels_first."""
    try:
        return _guard_fused(fused, fused_ms, weights, device, backend, say, runner, unfused_layout)
    finally:
        del runner
        gc.collect()


def _guard_fused(fused: Plan, fused_ms: float, weights: dict, device: torch.device, backend: str, say, runner,
                 unfused_layout: str | None) -> Plan:
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
                          f"kept: {chosen_ms:.4f} ms against {single_ms:.4f} ms for {describe(single)}")
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
