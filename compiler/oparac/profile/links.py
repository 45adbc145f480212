"""Copy cost between the GPUs of one host: measured per ordered pair and fitted, or nominal for previews."""
from __future__ import annotations

import statistics

from opara_plan import Link

# Simulated devices (no GPU at hand): an NVLink-class peer copy, 10 us to start and 200 GB/s.
NOMINAL_LATENCY_MS = 0.01
NOMINAL_MS_PER_BYTE = 1e3 / 200e9
# Sizes timed per pair: from latency-bound to bandwidth-bound.
SIZES = (4 << 10, 64 << 10, 1 << 20, 8 << 20, 64 << 20)
COPIES_PER_SAMPLE = 10
SAMPLES = 5


def nominal_links(num_devices: int, *, latency_ms: float = NOMINAL_LATENCY_MS,
                  ms_per_byte: float = NOMINAL_MS_PER_BYTE) -> tuple[Link, ...]:
    return tuple(Link(a, b, latency_ms, ms_per_byte) for a in range(num_devices) for b in range(num_devices)
                 if a != b)


def fit_line(samples: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares ms = latency + ms_per_byte * bytes over (bytes, ms) samples; neither may be negative."""
    n = len(samples)
    if n < 2:
        raise ValueError(f"fit_line: expected at least 2 samples, found {n}")
    mx = sum(b for b, _ in samples) / n
    my = sum(t for _, t in samples) / n
    sxx = sum((b - mx) ** 2 for b, _ in samples)
    slope = sum((b - mx) * (t - my) for b, t in samples) / sxx if sxx else 0.0
    slope = max(slope, 0.0)
    return max(my - slope * mx, 0.0), slope


def measure_links(devices) -> tuple[Link, ...]:
    """Time peer copies of several sizes between every ordered pair with CUDA events and fit a line each.

    A copy runs on the source device's stream (as the runtime's copies do); COPIES_PER_SAMPLE copies
    between two events, median of SAMPLES, so launch overhead is spread as inside a CUDA graph.
    """
    import torch

    out = []
    for a, src in enumerate(devices):
        for b, dst in enumerate(devices):
            if a == b:
                continue
            samples = [(float(size), _time_copy(torch, size, torch.device(src), torch.device(dst)))
                       for size in SIZES]
            latency, per_byte = fit_line(samples)
            out.append(Link(a, b, latency, per_byte))
    return tuple(out)


def _time_copy(torch, size: int, src, dst) -> float:
    x = torch.empty(size, dtype=torch.uint8, device=src)
    y = torch.empty(size, dtype=torch.uint8, device=dst)
    with torch.cuda.device(src):
        y.copy_(x, non_blocking=True)  # enables peer access and warms the path
        torch.cuda.synchronize(src)
        torch.cuda.synchronize(dst)
        times = []
        for _ in range(SAMPLES):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(COPIES_PER_SAMPLE):
                y.copy_(x, non_blocking=True)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / COPIES_PER_SAMPLE)
        torch.cuda.synchronize(dst)
    return statistics.median(times)
