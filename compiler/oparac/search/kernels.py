"""The kernel-level fused mode: inductor fuses the whole graph, then Opara puts inductor's kernels on streams (a
search stage: it measures several schedules of one compiled program).

Segment-level fusion (fuse.segments) cuts the schedule into stream segments first, so every stream boundary is
also a fusion boundary; on transformers and chain models that costs more than the streams win. Here the graph is
compiled once, whole (what torch.compile fuses), and its compiled call becomes a DAG of kernel launches
(opara_runtime.fused.wrapper_ir). Each kernel is timed in one eager run of the program on one stream with an
event after every kernel, queued behind a sleep kernel so that the GPU never waits for the host: the events then
time the kernels, not the launches. Opara's stream assignment and launch order run on that DAG with those times,
and a few schedules (different stream caps, and the one-stream program itself) are measured as replays of their
captured graphs (the times are first scaled to sum to the one-stream replay: eager timing charges each kernel its
event's cost too): all of them run the same compiled program, so trying one costs a capture, not a compile. Where
the critical path leaves streams less than STREAMS_MIN_BOUND to win, none is tried: one stream is kept.
"""
from __future__ import annotations

import dataclasses
import gc
import statistics
import time
from typing import NamedTuple

import torch

from opara_plan import HIGH_PRIORITY, NO_FUSION, Candidate, Fusion, KernelStreams, ModelError, Plan, Segment
from oparac.progress import Progress, as_progress
from oparac.schedule import Costs, assign_streams, critical_path, order_launches, reduce_waits, simulate
from oparac.schedule.dag import Dag

# Schedules tried on the kernel DAG: (streams, order, max_streams); one stream is always measured too. The
# uncapped one is held to the runtime's stream limit (MAX_KERNEL_STREAMS): a wide CNN's kernel DAG can ask for more
# (Inception-v3 and HRNet-W18-small on the H200), and the cap 16 one sits between it and the narrow caps, which
# were the best measured schedules on those models while the uncapped one could not be tried.
KERNEL_CANDIDATES = (("opara", "opara", 0), ("opara", "opara", 16), ("opara", "opara", 4), ("opara", "opara", 2))
# Streamed schedules are tried only where the critical path leaves them this much to win: the kernels' summed time
# over the longest path through them (on the H200 the streams realised a tenth to a third of that bound where it was
# small: ViT-B/16 fp32 batch 8, bound 1.018, best schedule 0.2% faster than one stream; Swin-T fp16, 1.08 and 1.3%).
# Below it the one-stream program is kept without capturing or timing any other schedule, which saves about a
# second a schedule on a large model.
STREAMS_MIN_BOUND = 1.03
TIMING_RUNS = 5
REPRODUCE_CALLS = 3  # calls of each schedule compared with the one-stream program's outputs
SLEEP_CYCLES = 50_000_000  # ~25 ms on a 2 GHz GPU: more than the host takes to queue a large model's kernels


@dataclasses.dataclass
class KernelDag:
    """The whole-graph program's kernels: their dependencies and measured times."""

    dag: Dag
    ms: tuple[float, ...]
    launch: tuple[str, ...]  # 'triton' or 'torch' per kernel
    digest: str
    wrapper: object = dataclasses.field(default=None, repr=False, compare=False)  # the parsed WrapperProgram

    def costs(self) -> Costs:
        # Extern calls (GEMMs, convolutions, attention) are the compute-bound kernels; inductor's Triton kernels
        # are the fused pointwise and reduction work around them.
        return Costs(ms=dict(enumerate(self.ms)),
                     intensity={k: "compute" if how == "torch" else "memory" for k, how in enumerate(self.launch)},
                     demand={k: 0.5 for k in range(len(self.ms))})

    def critical_path(self) -> tuple[tuple[int, ...], float]:
        """The longest path of kernel times: its kernels and its length (ms)."""
        return critical_path(self.dag, self.costs())

    def critical_path_ms(self) -> float:
        return self.critical_path()[1]


def whole_graph(plan: Plan, backend: str) -> Plan:
    """The plan as one segment on one stream, in the kernel-level mode (its kernel schedule still empty)."""
    from oparac.search.guard import single_stream

    one = single_stream(plan)
    ops = tuple(i for i in one.schedule.launch_order if one.graph.nodes[i].kind == "op")
    return dataclasses.replace(one, fusion=Fusion(backend=backend, segments=(Segment(stream=0, ops=ops),),
                                                  mode="kernels"))


def compile_whole(plan: Plan, weights: dict, device: torch.device, config: dict | None = None):
    """Compile the whole-graph program (INDUCTOR_KERNEL_CONFIG, or `config`: benchmarks/program_variants.py
    compares inductor options); its SegmentProgram and the base values."""
    from opara_runtime.fused import segment_programs
    from opara_runtime.fused.compile import INDUCTOR_KERNEL_CONFIG, compile_here
    from opara_runtime.runner import Runner
    from oparac.profile.measure import fill_random

    base = Runner(dataclasses.replace(plan, fusion=NO_FUSION), weights, device, capture=False).base_values
    fill_random([v for i, v in enumerate(base) if plan.graph.nodes[i].kind == "input"])
    programs = segment_programs(plan, device)
    compile_here(programs, base, INDUCTOR_KERNEL_CONFIG if config is None else config)
    return programs, base


def kernel_dag(programs, base: list, device: torch.device) -> KernelDag:
    """The program's kernel DAG with each kernel's time (median of TIMING_RUNS timed runs)."""
    from opara_runtime.fused.kernel_mode import KernelProgram
    from opara_runtime.fused.programs import value_of

    prog = programs[0]
    opened = KernelProgram(prog.fn)
    wrapper = opened.wrapper
    n = wrapper.num_kernels
    launcher = opened.install((0,) * n, tuple(range(n)), device, timed=True)
    example = [value_of(base, k) for k in prog.inputs]
    samples: list[list[float]] = [[] for _ in range(n)]
    try:
        with torch.no_grad(), torch.cuda.device(device):
            prog.fn(*example)  # warm: the first run may autotune or load kernels
            torch.cuda.synchronize(device)
            for _ in range(TIMING_RUNS):
                torch.cuda._sleep(SLEEP_CYCLES)
                prog.fn(*example)
                torch.cuda.synchronize(device)
                ticks = launcher.ticks
                for k in range(n):
                    samples[k].append(ticks[k].elapsed_time(ticks[k + 1]))
    finally:
        opened.restore()
    ms = tuple(max(0.0, statistics.median(s)) for s in samples)
    dag = Dag.from_edges(n, wrapper.edges())
    return KernelDag(dag=dag, ms=ms, launch=tuple(s.launch for s in wrapper.kernels), digest=wrapper.digest,
                     wrapper=wrapper)


def calibrated(kd: KernelDag, single_ms: float) -> KernelDag:
    """The kernel times scaled so that they sum to the one-stream program's replay time."""
    total = sum(kd.ms)
    if total <= 0 or single_ms <= 0:
        return kd
    return dataclasses.replace(kd, ms=tuple(t * single_ms / total for t in kd.ms))


def kernel_schedule(kd: KernelDag, streams: str, order: str, max_streams: int) -> KernelStreams:
    """`streams`/`order` on the kernel DAG with at most `max_streams` streams (0: as many as the algorithm opens,
    up to MAX_KERNEL_STREAMS, the most a plan may carry)."""
    from opara_plan.validate import MAX_KERNEL_STREAMS

    costs = kd.costs()
    assignment = assign_streams(kd.dag, costs, algorithm=streams, max_streams=max_streams)
    if assignment.num_streams > MAX_KERNEL_STREAMS:
        max_streams = MAX_KERNEL_STREAMS
        assignment = assign_streams(kd.dag, costs, algorithm=streams, max_streams=max_streams)
    launch = order_launches(kd.dag, assignment, costs, algorithm=order)
    stream = tuple(assignment.stream[k] for k in range(len(kd.ms)))
    waits = reduce_waits(kd.dag, assignment.stream, launch)
    predicted = simulate(kd.dag, assignment.stream, launch, waits, costs).makespan_ms
    return KernelStreams(call_digest=kd.digest, stream=stream, launch_order=tuple(launch), ms=kd.ms,
                         algorithm=f"{streams}/{order}" + (f"/cap {max_streams}" if max_streams else ""),
                         critical_path_ms=kd.critical_path_ms(), predicted_ms=float(predicted))


def prioritized(kd: KernelDag, ks: KernelStreams) -> KernelStreams | None:
    """`ks` with the streams that run its critical path at HIGH_PRIORITY (KernelStreams.priority), or None where
    every stream runs part of the path (raising them all would change nothing). Stream 0 is the caller's, whose
    priority is not set, so a stream off the path becomes stream 0 (the two swap numbers; the schedule is the
    same)."""
    path, _ = kd.critical_path()
    on_path = {ks.stream[k] for k in path}
    off = next((s for s in range(ks.num_streams) if s not in on_path), None)
    if off is None:
        return None
    swap = {0: off, off: 0}
    stream = tuple(swap.get(s, s) for s in ks.stream)
    raised = {swap.get(s, s) for s in on_path}
    return dataclasses.replace(ks, stream=stream, algorithm=f"{ks.algorithm}/prio",
                               priority=tuple(HIGH_PRIORITY if s in raised else 0 for s in range(ks.num_streams)))


def one_stream(kd: KernelDag) -> KernelStreams:
    n = len(kd.ms)
    return KernelStreams(call_digest=kd.digest, stream=(0,) * n, launch_order=tuple(range(n)), ms=kd.ms,
                         algorithm="single/program", critical_path_ms=kd.critical_path_ms(),
                         predicted_ms=float(sum(kd.ms)))


class KernelSearch(NamedTuple):
    """What kernel_fused found: the fastest kernel-level plan (its profile records every schedule tried), its
    replay time in the final rounds, and a head-to-head of it ('kernels') against each rival plan the caller
    passed (timed against each other only, so that picking the fastest of several schedules does not favour
    the kernel-level side). schedules: each schedule kept, by name ('single' the one-stream program), as
    (measured ms, the simulator's predicted ms on the calibrated kernel times)."""

    plan: Plan
    ms: float
    head_to_head: dict[str, float]
    schedules: dict[str, tuple[float, float]]


def kernel_fused(plan: Plan, weights: dict, device: torch.device, backend: str,
                 progress: Progress | None = None, *, rivals: dict | None = None,
                 config: dict | None = None) -> KernelSearch:
    """The fastest kernel-level plan of `plan`'s graph (its streams or one stream, measured); with `rivals`
    (name -> plan, e.g. the guard's unfused plan on one stream) also each rival's time against it.

    Every plan is captured once: the one-stream program's runner serves the calibration, the bit-for-bit check
    and the timing, each schedule's runner the check and the timing, and a rival's runner the head-to-head.

    config: inductor options for the whole-graph compile instead of INDUCTOR_KERNEL_CONFIG, for measuring only
    (benchmarks/program_variants.py): a plan's programs are recompiled at load with the mode's own options, so
    such a plan is only faithful where its stored programs are loaded."""
    from opara_runtime.fused import artifact_bytes, cache_key
    from oparac.profile.measure import timed_runner
    from oparac.search.tune import FINAL_ROUNDS, replays_for, time_rounds

    progress = as_progress(progress)
    base_plan = whole_graph(plan, backend)
    programs, base = compile_whole(base_plan, weights, device, config)
    kd = kernel_dag(programs, base, device)
    blob = artifact_bytes(programs[0].fn)
    # Every schedule's runner runs this program as compiled here instead of loading `blob` afresh: a load writes
    # and imports every kernel again (about 2 s a schedule for DenseNet-121's 371 kernels on the H200).
    compiled = [programs[0].fn]
    del programs, base
    gc.collect()
    width = _max_width(kd.dag)
    progress.note(f"fuse: whole graph compiled, {len(kd.ms)} kernels, {sum(kd.ms):.4f} ms of kernels, critical "
                  f"path {kd.critical_path_ms():.4f} ms, widest level {width}")
    key = cache_key(device)
    started = time.perf_counter()
    # The one-stream runner is built before calibration; calibrating changes the recorded times only, not what
    # the program runs, so the same runner stands for the calibrated plan.
    runners = {"single": timed_runner(with_kernels(base_plan, one_stream(kd), blob, key), weights, device,
                                      compiled=compiled)}
    try:
        # Eager timing charges each kernel its event's cost as well; the one-stream program's replay has the
        # kernels' true total, so every time is scaled by it before it is scheduled on, stored, or summed into
        # the critical path.
        single_ms = time_rounds({"single": runners["single"]}, device, rounds=1, repeats=5, replays=20)["single"]
        kd = calibrated(kd, single_ms)
        replays = replays_for(single_ms)  # every schedule replays in about the one-stream time
        schedules = {"single": one_stream(kd)}
        bound = streams_bound(kd)
        skipped = None
        if bound < STREAMS_MIN_BOUND:
            skipped = (f"the critical path allows streams at most {bound:.3f}x one stream, less than the "
                       f"{STREAMS_MIN_BOUND:.2f}x worth trying")
            progress.note(f"fuse: kernel schedules on streams not tried: {skipped}")
        for streams, order, cap in () if skipped else KERNEL_CANDIDATES:
            ks = kernel_schedule(kd, streams, order, cap)
            if ks.stream not in {s.stream for s in schedules.values()} and _streamable(kd, ks, progress):
                schedules[ks.algorithm] = ks
        # The widest schedule once more with its critical path's streams raised: the simulator has the kernels
        # side by side run at their one-stream speed, and where they contend instead (the wide CNNs at batch 8
        # measured 1.26-1.41x slower than predicted) the path's kernels are served first.
        widest = next((ks for name, ks in schedules.items() if name != "single"), None)
        raised = prioritized(kd, widest) if widest is not None else None
        if raised is not None and _streamable(kd, raised, progress):
            schedules[raised.algorithm] = raised
        plans = {name: with_kernels(base_plan, ks, blob, key) for name, ks in schedules.items()}
        for name, p in plans.items():
            if name not in runners:
                try:
                    runners[name] = timed_runner(p, weights, device, compiled=compiled)
                except Exception as e:  # a schedule that cannot be captured is one fewer candidate
                    progress.note(f"fuse: kernel schedule {name} dropped: it failed to run ({type(e).__name__}: {e})")
        if len(runners) > 1:  # nothing to check the one-stream program against otherwise
            kept = reproducing(runners, plans["single"], progress)
            dropped = [n for n in runners if n not in kept]
            for name in dropped:
                del runners[name]
            if dropped:  # a full collection costs about 0.3 s after inductor's compile: only to free graphs
                gc.collect()
            schedules = {name: schedules[name] for name in kept}
        captured_s = time.perf_counter() - started
        # The one-stream program alone needs no rounds of its own where it is timed against the rivals anyway.
        times = (time_rounds(runners, device, rounds=FINAL_ROUNDS, repeats=5, replays=replays)
                 if len(runners) > 1 or not rivals else {})
        # a tie keeps one stream
        best = min(times, key=lambda name: (times[name], name != "single")) if times else "single"
        head_to_head: dict[str, float] = {}
        if rivals:
            if "kernels" in rivals:
                raise ValueError("a rival plan may not be named 'kernels': that name is the kernel-level plan's")
            pair = {f"rival {name}": timed_runner(p, weights, device) for name, p in rivals.items()}
            pair["kernels"] = runners[best]
            timed = time_rounds(pair, device, rounds=FINAL_ROUNDS, repeats=5, replays=replays)
            head_to_head = {name.removeprefix("rival "): ms for name, ms in timed.items()}
            del pair
            times = times or {"single": head_to_head["kernels"]}
    finally:
        del runners, compiled
        gc.collect()
    # Measured against predicted (the simulator on the calibrated kernel times): the same simulator's forecast for
    # the unfused schedule is what the guard's segment prediction reads (schedule stage's note).
    progress.note("fuse: kernel schedules " + ", ".join(
        f"{name} ({ks.num_streams} streams) {times[name]:.4f} ms (predicted {ks.predicted_ms:.4f})"
        for name, ks in schedules.items())
        + f"; {captured_s:.1f} s capturing and checking them, {time.perf_counter() - started - captured_s:.1f} s "
          f"timing them" + (" and the rivals" if rivals else ""))
    candidates = tuple(Candidate(streams=f"{name}+kernels", order=ks.algorithm.split("/")[1] if "/" in ks.algorithm
                                 else "", max_streams=0, predicted_ms=ks.predicted_ms, measured_ms=times[name],
                                 chosen=name == best) for name, ks in schedules.items())
    winner = plans[best]
    guard = (f"guard: kernel schedules {f'on streams not tried ({skipped})' if skipped else 'measured'}, kept "
             f"{best} ({schedules[best].num_streams} streams): "
             + ", ".join(f"{name} {times[name]:.4f} ms" for name in schedules))
    profile = dataclasses.replace(winner.profile, candidates=winner.profile.candidates + candidates, guard=guard)
    return KernelSearch(dataclasses.replace(winner, profile=profile), times[best], head_to_head,
                        {name: (times[name], ks.predicted_ms) for name, ks in schedules.items()})


def streams_bound(kd: KernelDag) -> float:
    """The most any schedule of `kd` can gain over one stream by its own times: their sum over the critical path."""
    path = kd.critical_path_ms()
    return sum(kd.ms) / path if path > 0 else 1.0


def reproducing(runners: dict, single: Plan, progress: Progress) -> list[str]:
    """The names of the runners whose outputs equal the one-stream program's ("single") bit for bit, over
    REPRODUCE_CALLS calls on the same inputs (random, for `single`'s model inputs). Every schedule runs the same
    kernels on the same data, so any difference means an ordering the kernel DAG missed, or memory changing
    hands between streams (opara_runtime.fused.kernel_streams): such a schedule is dropped (and said), never
    written."""
    import torch.utils._pytree as pytree

    from opara_runtime.ops import torch_dtype
    from oparac.models.reference import random_input

    g = torch.Generator().manual_seed(0)
    device = runners["single"].device
    inputs = [random_input(s.shape, torch_dtype(s.dtype), g).to(device) for s in single.model.inputs]

    def outputs(runner) -> list[list[torch.Tensor]]:
        return [[t.clone() for t in pytree.tree_leaves(runner(*inputs))] for _ in range(REPRODUCE_CALLS)]

    try:
        want = outputs(runners["single"])[0]
    except Exception as e:  # nothing to check against: only the one-stream program is kept
        progress.note(f"fuse: kernel schedules dropped: the one-stream program could not be run to check them "
                      f"({type(e).__name__}: {e})")
        return ["single"]
    kept = ["single"]
    for name, runner in runners.items():
        if name == "single":
            continue
        try:
            same = all(len(o) == len(want) and all(torch.equal(a, b) for a, b in zip(o, want))
                       for o in outputs(runner))
        except Exception as e:
            same, why = False, f"it failed to run ({type(e).__name__}: {e})"
        else:
            why = "its outputs differ from the one-stream program's"
        if same:
            kept.append(name)
        else:
            progress.note(f"fuse: kernel schedule {name} dropped: {why}")
    return kept


def unreadable_program(e: Exception) -> ModelError:
    """The error for fuse_mode 'kernels' on a compiled program whose wrapper wrapper_ir cannot read."""
    return ModelError(f"fuse_mode 'kernels': {e}; the kernel-level mode cannot read this compiled program "
                      f"(use fuse_mode 'segments' or 'auto')")


def _streamable(kd: KernelDag, ks: KernelStreams, progress: Progress) -> bool:
    """Whether the runtime can write the program's streamed call for `ks` (it refuses, for one, a program that
    sizes a buffer by a kernel's result); a schedule it would refuse is not tried."""
    from opara_runtime.fused.kernel_streams import KernelScheduleError, streamed_code

    if kd.wrapper is None:
        return True
    try:  # compiled once here: the schedule's runner, opening the same parsed program, reuses it
        streamed_code(kd.wrapper, ks.stream, ks.launch_order)
    except KernelScheduleError as e:
        progress.note(f"fuse: kernel schedule {ks.algorithm} not tried: {e}")
        return False
    return True


def with_kernels(plan: Plan, ks: KernelStreams, blob: bytes, key: str) -> Plan:
    seg = dataclasses.replace(plan.fusion.segments[0], program=0)
    fusion = dataclasses.replace(plan.fusion, segments=(seg,), programs=(blob,), cache_key=key, kernels=ks)
    return dataclasses.replace(plan, fusion=fusion)


def _max_width(dag: Dag) -> int:
    level: dict[int, int] = {}
    for k in dag.ops:
        level[k] = 1 + max((level[p] for p in dag.preds[k]), default=0)
    counts: dict[int, int] = {}
    for v in level.values():
        counts[v] = counts.get(v, 0) + 1
    return max(counts.values(), default=0)
