"""Timing on the GPU, one method for every variant (docs/design.md, section 8)."""
from __future__ import annotations

import contextlib
import functools
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch


# torch.profiler (2.11, seen on the H200) says this once per process when a profiler starts, whatever its
# schedule: it concerns profiling over several cycles, which a one-cycle `with profile(...)` never has, and it
# read as if `oparac compile` had misused the profiler.
_PROFILER_CYCLES = "Warning: Profiler clears events at the end of each cycle"


@contextlib.contextmanager
def cuda_profile():
    """torch.profiler over the CPU and CUDA for one cycle (yielded), without torch's warning about cycles."""
    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PROFILER_CYCLES)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            yield prof


@dataclass(frozen=True)
class Timing:
    ms_b2b: float      # back-to-back: N calls between two CUDA events, mean per call
    ms_latency: float  # median wall time of one call followed by synchronize


def time_gpu(fn, device: torch.device, *, iters: int = 200, warmup: int = 20, latency_iters: int = 100) -> Timing:
    with torch.cuda.device(device):
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        b2b = start.elapsed_time(end) / iters
        walls = []
        for _ in range(latency_iters):
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize(device)
            walls.append((time.perf_counter() - t0) * 1e3)
    return Timing(b2b, statistics.median(walls))


def time_interleaved(fns: dict[str, Callable[[], object]], device: torch.device, *, rounds: int = 15,
                     iters: int = 100, warmup: int = 20) -> dict[str, list[float]]:
    """Back-to-back time per call (ms) of every fn in `fns`, in interleaved rounds: round k runs `iters` calls of
    each fn in turn, between two CUDA events, and records their mean. Returns each fn's per-round times.

    Methods timed one after the other, each once, each see their own few seconds of the machine and their own
    place in the order; a few percent between two of them can be that, not their kernels (docs/design.md,
    section 8). The median of interleaved rounds compares the methods at the same moments."""
    out: dict[str, list[float]] = {name: [] for name in fns}
    with torch.cuda.device(device):
        for fn in fns.values():  # every fn warm before the first round
            for _ in range(warmup):
                fn()
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(rounds):
            for name, fn in fns.items():
                start.record()
                for _ in range(iters):
                    fn()
                end.record()
                end.synchronize()
                out[name].append(start.elapsed_time(end) / iters)
    return out


def time_alternating(fns: dict[str, Callable[[], object]], device: torch.device | None, *, iters: int = 200,
                     warmup: int = 20, lead_in: int = 0,
                     sync: Callable[[], object] | None = None) -> dict[str, list[float]]:
    """Wall time of one call followed by `sync`, in ms, for every fn in `fns`, taken in strict alternation:
    iteration k times each fn once, in the dict's order. Returns the samples per fn, in iteration order.

    The VM's synchronisation latency drifts over seconds by more than a runner call costs, so two medians taken
    one after the other compare two moments of the machine. Sample k of one fn and sample k of another are
    taken a call or two apart, not seconds: their difference (`median_paired_diff_us`) cancels the drift.

    Each fn is warmed up `warmup` times first, in order, so the first iteration sees the state the last fn
    leaves, as every later one does. A fn that changes state another reads (a runner's in-graph input copy is
    switched on or off by the call) is timed after the previous fn's state: `lead_in` untimed calls of the same
    fn, each followed by `sync`, ahead of every timed one make each sample see the state its own calls leave.
    sync: defaults to torch.cuda.synchronize(device); pass another to time without CUDA.
    """
    if sync is None:
        ctx, sync = torch.cuda.device(device), functools.partial(torch.cuda.synchronize, device)
    else:
        ctx = contextlib.nullcontext()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    with ctx:
        for fn in fns.values():
            for _ in range(warmup):
                fn()
            sync()
        for _ in range(iters):
            for name, fn in fns.items():
                for _ in range(lead_in):
                    fn()
                    sync()
                t0 = time.perf_counter()
                fn()
                sync()
                samples[name].append((time.perf_counter() - t0) * 1e3)
    return samples


def median_paired_diff_us(samples: dict[str, list[float]], name: str, baseline: str) -> float:
    """Median over iterations of `name`'s sample minus `baseline`'s, in us (samples from `time_alternating`)."""
    return statistics.median(a - b for a, b in zip(samples[name], samples[baseline], strict=True)) * 1e3


EMPTY_GRAPH = "The CUDA Graph is empty"


def time_in_graph(fn, device: torch.device, stream, repeats: int) -> float:
    """fn() captured `repeats` times in a small CUDA graph of its own, timed per call (ms); 0.0 for work that
    launches nothing on the GPU (views, and segments made only of them). Such a capture would otherwise print
    torch's "The CUDA Graph is empty" warning, which reads like a capture on the wrong stream."""
    # Each small graph gets its own memory pool, released with it: a pool shared across graphs that are created
    # and dropped one after another trips the caching allocator's pool bookkeeping.
    g = torch.cuda.CUDAGraph()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.cuda.device(device), torch.cuda.graph(g, stream=stream):
            for _ in range(repeats):
                fn()
    empty = False
    for w in caught:
        if EMPTY_GRAPH in str(w.message):
            empty = True
        else:  # everything else is the caller's to see
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return 0.0 if empty else time_graph_replays(g, device, sample_ms=PROFILE_SAMPLE_MS) / repeats


# An op's timing sample spans at least this long, or 10 replays of its small graph where that is longer: a GEMM
# of ViT-B/16 fp32 at batch 8 needs no averaging over 200 runs, and at 10 replays (each of 20 runs) its profile
# took 10.9 s on the H200.
PROFILE_SAMPLE_MS = 2.0


def replays_spanning(sample_ms: float, replay_ms: float, *, least: int, most: int) -> int:
    """Back-to-back replays that span `sample_ms` at `replay_ms` each, kept within [least, most] (`most` where
    the replay time is not a positive number)."""
    if not replay_ms > 0:
        return most
    return max(least, min(most, math.ceil(sample_ms / replay_ms)))


def time_graph_replays(graph: torch.cuda.CUDAGraph, device: torch.device, *, repeats: int = 5,
                       replays: int = 10, sample_ms: float | None = None) -> float:
    """Median over `repeats` of the mean time of `replays` back-to-back replays, in ms. sample_ms: fewer replays
    (at least one) where `replays` of them would take longer than that, judged by one timed replay."""
    with torch.cuda.device(device):
        graph.replay()
        torch.cuda.synchronize(device)
        if sample_ms is not None:
            replays = replays_spanning(sample_ms, _replays_ms(graph, 1), least=1, most=replays)
        samples = [_replays_ms(graph, replays) / replays for _ in range(repeats)]
    return statistics.median(samples)


def _replays_ms(graph: torch.cuda.CUDAGraph, replays: int) -> float:
    """The time of `replays` back-to-back replays between two events on the current stream, in ms."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def fill_random(tensors) -> None:
    """Random data into floating-point buffers (integer inputs such as token ids stay as they are)."""
    with torch.no_grad():
        for t in tensors:
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, dtype=torch.float32, device=t.device).to(t.dtype))


def timed_runner(plan, weights: dict, device: torch.device, devices=None, *, compiled=None):
    """A captured runner of `plan` for timing, its static inputs filled with random data (never time on
    zeros: they can run faster than real inputs). devices: one per plan device, for multi-GPU plans. A fused
    plan's stored programs are trusted: this process compiled them a moment ago (the tuner and the guard time
    the plans they are about to write). compiled: those programs as this process holds them, run instead of
    loading the stored copies (Runner)."""
    from opara_runtime.runner import Runner

    runner = Runner(plan, weights, device, devices=devices, trust_compiled_code=True, compiled=compiled)
    fill_random(runner.captured.static_inputs)
    return runner
