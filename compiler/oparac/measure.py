"""Timing on the GPU, one method for every variant (DESIGN section 8)."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch


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


def time_graph_replays(graph: torch.cuda.CUDAGraph, device: torch.device, *, repeats: int = 5,
                       replays: int = 10) -> float:
    """Median over `repeats` of the mean time of `replays` back-to-back replays, in ms."""
    samples = []
    with torch.cuda.device(device):
        graph.replay()
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(replays):
                graph.replay()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / replays)
    return statistics.median(samples)


def fill_random(tensors) -> None:
    """Random data into floating-point buffers (integer inputs such as token ids stay as they are)."""
    with torch.no_grad():
        for t in tensors:
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, dtype=torch.float32, device=t.device).to(t.dtype))


def timed_runner(plan, weights: dict, device: torch.device, devices=None):
    """A captured runner of `plan` for timing, its static inputs filled with random data (never time on
    zeros: they can run faster than real inputs). devices: one per plan device, for multi-GPU plans."""
    from opara_runtime.runner import Runner

    runner = Runner(plan, weights, device, devices=devices)
    fill_random(runner.captured.static_inputs)
    return runner
