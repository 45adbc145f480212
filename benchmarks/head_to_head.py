"""Why one method is faster than another on a model: interleaved timing, and where each one's GPU time goes.

A method a few percent behind another may be behind the machine's drift or the order it was timed in, not its
kernels. This script builds every method first, then:
- times them in interleaved rounds (oparac.profile.measure.time_interleaved, as benchmarks/run.py now does),
  and records every round's per-call time;
- profiles `--profile` calls of each (torch.profiler, CUPTI: the kernels inside a CUDA graph's replay are
  recorded one by one) and records, per call, the sum of kernel times, the GPU's busy time (the union of the
  kernels' intervals), the span from the first kernel's start to the last one's end, the number of kernels,
  and the kernels whose total time differs most between the first two methods.

    python benchmarks/head_to_head.py --models gpt2,vit_b16 --dtype float16 --out $OUT
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CALL_GAP_S = 0.002


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gpt2")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--methods", default="torch_compile,opara_default")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=100, help="back-to-back calls per method per round")
    ap.add_argument("--profile", type=int, default=20, help="calls profiled per method")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("the head-to-head needs a CUDA GPU", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    for name in args.models.split(","):
        print(f"wrote {measure_model(name, args)}", flush=True)
        torch._dynamo.reset()
        torch.cuda.empty_cache()
    return 0


def measure_model(name: str, args) -> Path:
    from oparac.bench.methods import Record, build, build_into, zoo_model
    from oparac.profile.measure import time_interleaved
    from results_io import new_result, write_result

    device = torch.device("cuda")
    model, inputs, reference = zoo_model(name, args.batch, args.dtype, device)
    methods = args.methods.split(",")
    path, header = new_result(args.out, "head-to-head", device, tag=f"{name}-{args.dtype}")
    result = dict(header, model=name, batch=args.batch, dtype=args.dtype, rounds=args.rounds, iters=args.iters,
                  methods={})
    fns = {}
    for method in methods:
        rec = Record(model=name, batch=args.batch, dtype=args.dtype, method=method)
        fn = build_into(rec, lambda m=method: build(m, model, inputs, device), inputs, reference, device)
        result["methods"][method] = {k: v for k, v in rec.as_dict().items() if k in ("max_abs_diff", "plan", "error",
                                                                                   "compile_s")}
        print(f"{name} {method}: {rec.error or 'built'}", flush=True)
        if fn is not None:  # a method that cannot be built is recorded with its error and left out
            fns[method] = fn
    calls = {m: (lambda f=fn: f(*inputs)) for m, fn in fns.items()}
    for method, ms in time_interleaved(calls, device, rounds=args.rounds, iters=args.iters).items():
        result["methods"][method].update(rounds_ms=ms, median_ms=statistics.median(ms), min_ms=min(ms))
        print(f"{name} {method}: median of {args.rounds} rounds {statistics.median(ms):.4f} ms, "
              f"min {min(ms):.4f} ms", flush=True)
    write_result(path, result)
    per_name = {}
    for method, fn in fns.items():
        summary, per_name[method] = profiled(fn, inputs, device, args.profile)
        result["methods"][method]["profile"] = summary
        print(f"{name} {method}: {summary}", flush=True)
    if len(fns) >= 2:
        a, b = list(fns)[:2]
        result["kernel_differences"] = kernel_differences(per_name[a], per_name[b], a, b)
    write_result(path, result)
    return path


def profiled(fn, inputs, device: torch.device, calls: int) -> tuple[dict, dict[str, float]]:
    """(per-call summary of the GPU's kernels, total kernel µs per kernel name) over `calls` calls."""
    from oparac.profile.measure import cuda_profile

    for _ in range(5):
        fn(*inputs)
    torch.cuda.synchronize(device)
    with cuda_profile() as prof:
        for _ in range(calls):
            fn(*inputs)
            torch.cuda.synchronize(device)
            time.sleep(CALL_GAP_S)  # an idle gap no call has inside it, to tell the calls apart below
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_name: dict[str, float] = defaultdict(float)
    for e in kernels:
        by_name[e.name] += (e.time_range.end - e.time_range.start)
    summary = summarize([(e.time_range.start, e.time_range.end) for e in kernels], calls)
    return summary, {k: v / calls for k, v in by_name.items()}


def summarize(intervals: list[tuple[float, float]], calls: int) -> dict:
    """Per call, from the kernels' (start, end) in µs over `calls` calls CALL_GAP_S apart: their number, the sum of
    their times, the GPU's busy time (the union of the intervals: kernels on several streams overlap), and the
    median span from a call's first kernel start to its last kernel end."""
    spans = sorted(intervals)
    busy, last = 0.0, float("-inf")
    for s, t in spans:
        if t > last:
            busy += t - max(s, last)
            last = t
    summary = {"kernels_per_call": len(spans) / calls, "kernel_sum_ms": sum(t - s for s, t in spans) / calls / 1e3,
               "busy_ms": busy / calls / 1e3, "calls": calls}
    if spans:
        call_spans, first, last_end = [], spans[0][0], spans[0][1]
        for s, t in spans[1:]:
            if s - last_end > CALL_GAP_S * 1e6 / 2:  # an idle gap of at least half the gap between calls
                call_spans.append(last_end - first)
                first = s
            last_end = max(last_end, t)
        call_spans.append(last_end - first)
        summary["span_ms"] = statistics.median(call_spans) / 1e3
        summary["spans_found"] = len(call_spans)
    return summary


def kernel_differences(a: dict[str, float], b: dict[str, float], name_a: str, name_b: str, top: int = 15) -> list:
    """The kernels (by name) whose per-call µs differ most between two methods; inductor names its Triton
    kernels by what they fuse, so the same fusion has the same name on both sides."""
    rows = [{"kernel": k[:160], f"{name_a}_us": round(a.get(k, 0.0), 2), f"{name_b}_us": round(b.get(k, 0.0), 2),
             "diff_us": round(b.get(k, 0.0) - a.get(k, 0.0), 2)} for k in set(a) | set(b)]
    rows.sort(key=lambda r: -abs(r["diff_us"]))
    return rows[:top]


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
