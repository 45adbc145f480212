"""Does putting a compiled program's kernels on streams change its outputs? The one-stream program against each
kernel schedule, bit for bit, and both against eager; JSON to --out.

For a reduced precision it also places every method against the float32 model (the truth): eager, torch.compile,
the unfused plan and the kernel schedules, so a difference to eager can be told apart from an error. --probe
bisects a schedule that differs for the kernel whose placement makes it differ and writes the wrapper's source.

    python benchmarks/kernel_streams_check.py --model llama --dtype float16 --out benchmarks/results
"""
from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import sys
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    import opara_runtime
    import oparac
    from opara_runtime.fused import artifact_bytes, cache_key
    from opara_runtime.fused.kernel_mode import KernelProgram
    from oparac.models import zoo
    from oparac.pipeline import bind_weights
    from results_io import write_result
    from oparac.search.kernels import (KERNEL_CANDIDATES, compile_whole, kernel_dag, kernel_schedule, one_stream,
                                       whole_graph, with_kernels)

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--probe", action="store_true", help="bisect a schedule that differs; write the wrapper source")
    ap.add_argument("--quick", action="store_true", help="skip the float32, torch.compile and unfused comparisons")
    ap.add_argument("--no-cudnn-sdp", action="store_true", help="keep attention off cuDNN's kernels")
    ap.add_argument("--free", action="store_true",
                    help="run each schedule on several streams both with buffers freed during the call and "
                         "without (kernel_streams.FREE_ON_STREAMS, on by default), and compare the two")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    device = torch.device("cuda")
    if args.no_cudnn_sdp:
        torch.backends.cuda.enable_cudnn_sdp(False)
    dt = getattr(torch, args.dtype)
    model, inputs = getattr(zoo, args.model)(1)
    model = model.to(device=device, dtype=dt).eval()
    inputs = tuple((x.to(dt) if x.is_floating_point() else x).to(device) for x in inputs)
    with torch.no_grad():
        eager = model(*inputs).float()
    plan = oparac.compile(model, inputs, device="cuda", dtype=args.dtype, guard=False)
    errors, truth = ({}, None) if args.quick else reference_errors(model, inputs, eager, plan)
    print(errors, flush=True)
    weights = bind_weights(model, plan, device)
    one = whole_graph(plan, "inductor")
    programs, base = compile_whole(one, weights, device)
    kd = kernel_dag(programs, base, device)
    blob = artifact_bytes(programs[0].fn)
    opened = KernelProgram(programs[0].fn)
    stamp = time.strftime('%Y%m%dT%H%M%S')
    name = (f"{stamp}-{args.model}-{args.dtype}" + ("-no-cudnn-sdp" if args.no_cudnn_sdp else "")
            + ("-free" if args.free else ""))
    if args.probe:
        (Path(args.out) / f"wrapper-{name}.py").write_text(opened.graph.source_code)

    peaks: dict[str, float] = {}

    from opara_runtime.fused import kernel_streams

    default_free = kernel_streams.FREE_ON_STREAMS

    def outputs(ks, free: bool = default_free):
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        kernel_streams.FREE_ON_STREAMS = free  # read when the runner writes its call, at load
        try:
            runner = opara_runtime.load(with_kernels(one, ks, blob, cache_key(device)), model,
                                        trust_compiled_code=True)
        finally:
            kernel_streams.FREE_ON_STREAMS = default_free
        outs = [runner(*inputs).float().clone() for _ in range(args.calls)]
        peaks[ks.algorithm + (" free" if free else "")] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        del runner
        return outs

    # the kernel search's candidates: uncapped, then caps of 16, 4 and 2 streams
    schedules = [one_stream(kd)] + [kernel_schedule(kd, *candidate) for candidate in KERNEL_CANDIDATES]
    # The one-stream program in its own order is inductor's call verbatim, `del`s and all; every other schedule
    # is rewritten (all buffers allocated up front). A one-stream schedule in another order (Opara's, capped at
    # one stream) is rewritten too: it tells a difference of the rewrite from one of the streams.
    rewritten = dataclasses.replace(kernel_schedule(kd, "opara", "opara", 1), algorithm="single/rewritten")
    if any(rewritten.stream) or tuple(rewritten.launch_order) == tuple(range(len(kd.ms))):
        rewritten = None
    records, first, unfreed = [], None, {}
    out = Path(args.out) / f"kernel-streams-check-{name}.json"

    def save():  # after every schedule: a CUDA error that kills the process leaves the schedules before it
        write_result(out, {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__,
                           "model": args.model, "dtype": args.dtype, "cudnn_sdp": not args.no_cudnn_sdp,
                           "free_compared": args.free, "free_on_streams_default": default_free,
                           "errors_to_float32": errors, "records": records})
    for ks, free in ([(s, default_free) for s in schedules[:1]] + ([(rewritten, default_free)] if rewritten else [])
                     + [(s, f) for s in schedules[1:] for f in ((False, True) if args.free else (default_free,))]):
        print(f"{ks.algorithm} on {ks.num_streams} streams, freeing {free}", flush=True)
        outs = outputs(ks, free)
        first = outs[0] if first is None else first
        rec = {"schedule": ks.algorithm, "streams": ks.num_streams, "free_on_streams": free,
               "bitwise_equal_to_one_stream": all(torch.equal(o, first) for o in outs),
               "max_abs_diff_to_one_stream": max((o - first).abs().max().item() for o in outs),
               "max_abs_diff_to_eager": max((o - eager).abs().max().item() for o in outs),
               "eager_max_abs": eager.abs().max().item(),
               "peak_mib": peaks.get(ks.algorithm + (" free" if free else ""))}
        if free and ks.algorithm in unfreed:  # the same schedule without freeing ran just before
            rec["bitwise_equal_without_free"] = all(torch.equal(o, u) for o, u in zip(outs, unfreed[ks.algorithm]))
        elif not free:
            unfreed[ks.algorithm] = outs
        if truth is not None:
            rec["max_abs_diff_to_float32"] = max((o - truth).abs().max().item() for o in outs)
        print(rec, flush=True)
        if args.probe and not rec["bitwise_equal_to_one_stream"] and not any("probe" in r for r in records):
            rec["probe"] = probe(ks, lambda k: all(torch.equal(o, first) for o in outputs(k)), opened,
                                 Path(args.out) / f"streamed-{name}.py")
            print(rec["probe"], flush=True)
        records.append(rec)
        save()
    save()
    print(f"wrote {out}")
    return 0


def reference_errors(model, inputs, eager, plan):
    """Max abs errors against the float32 model of eager, torch.compile and the unfused plan."""
    import opara_runtime

    reference = copy.deepcopy(model).float()
    with torch.no_grad():
        truth = reference(*(x.float() if x.is_floating_point() else x for x in inputs)).float()
        compiled = torch.compile(model, mode="reduce-overhead")
        tc = [compiled(*inputs).float().clone() for _ in range(3)][-1]
    del reference
    unfused = opara_runtime.load(plan, model)(*inputs).float()
    return {"eager": (eager - truth).abs().max().item(), "torch_compile": (tc - truth).abs().max().item(),
            "torch_compile_vs_eager": (tc - eager).abs().max().item(), "truth_max_abs": truth.abs().max().item(),
            "opara_unfused": (unfused - truth).abs().max().item(),
            "opara_unfused_vs_eager": (unfused - eager).abs().max().item()}, truth


def probe(ks, same, opened, streamed_path: Path) -> dict:
    """Bisect a schedule whose outputs differ from the one-stream program's: the shortest prefix of its launch
    order that, kept on its streams with the rest on stream 0, already differs (its last kernel is one side of
    the race), and likewise the shortest suffix; then whether that kernel alone off stream 0 differs. Writes
    the streamed source of the smallest differing schedule."""
    from opara_runtime.fused.kernel_streams import streamed_source

    order = ks.launch_order
    n = len(order)
    wrapper = opened.wrapper

    def keep(positions):
        chosen = {order[i] for i in positions}
        return dataclasses.replace(ks, stream=tuple(s if k in chosen else 0 for k, s in enumerate(ks.stream)))

    def shortest(make):  # smallest m with make(m) differing; make(n) differs
        lo, hi = 0, n
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if same(make(mid)):
                lo = mid
            else:
                hi = mid
        return hi

    m_prefix = shortest(lambda m: keep(range(m)))
    m_suffix = shortest(lambda m: keep(range(n - m, n)))
    culprit = order[m_prefix - 1]
    alone = dataclasses.replace(ks, stream=tuple(1 if k == culprit else 0 for k in range(n)))
    alone_same = same(alone)
    smallest = keep(range(m_prefix)) if alone_same else alone
    streamed_path.write_text(streamed_source(wrapper, smallest.stream, smallest.launch_order))

    def describe(k):
        st = wrapper.kernels[k]
        return {"kernel": k, "stream": ks.stream[k], "position": order.index(k), "preds": list(wrapper.preds[k]),
                "reads": sorted(st.reads), "writes": sorted(st.writes), "source": ast.unparse(st.node)[:400]}

    consumers = [c for c, ps in wrapper.preds.items() if culprit in ps]
    return {"prefix_kernel": describe(culprit), "suffix_kernel": describe(order[n - m_suffix]),
            "prefix_len": m_prefix, "suffix_len": m_suffix, "alone_on_a_side_stream_differs": not alone_same,
            "consumers": [describe(c) for c in consumers[:12]],
            "stream": list(ks.stream), "launch_order": list(order)}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # results_io
    sys.exit(main())
