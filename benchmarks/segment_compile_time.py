"""Where a segment-level fused compile spends its time: the worker processes, loading their programs, the first
run of every segment, the capture, timing the replay and each segment, storing the programs.

Where segments are compiled (`--fuse-mode segments`, `--tune`, and a default plan whose profile says they could
clearly beat the whole graph's kernels on streams) they are most of the compile: on the H200 at batch 8 in fp16,
25-28 s of a 54-55 s default compile of GoogLeNet, Inception-v3 and HRNet-W18-small, before the guard stopped
compiling them on those models (docs/design.md, section 5). This compiles one model with `--fuse-mode segments` and
every step of the fuse stage timed (a wall-clock total per step, and its count of calls), so the step to make
cheaper is measured, not guessed. Not run on a GPU yet.

    python benchmarks/segment_compile_time.py --model googlenet --batch 8 --dtype float16
"""
from __future__ import annotations

import argparse
import functools
import importlib
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent

# (module, function): each is looked up where it is called from, so it is wrapped in that module.
STEPS = (
    ("oparac.fuse.segments", "timed_runner"),                    # Runner: compile, load, first run, capture
    ("opara_runtime.fused.prepare", "compile_in_workers"),       # all of the parallel compile
    ("opara_runtime.fused.parallel", "_input_metas"),            # an eager pass for the segments' input layouts
    ("opara_runtime.fused.parallel", "_run_one_shot"),           # the worker processes, start to last reply
    ("opara_runtime.fused.parallel", "load_artifact"),           # each program loaded back in this process
    ("opara_runtime.fused.parallel", "_bind_checked"),           # every segment's first run, recompiles
    ("opara_runtime.fused.prepare", "compile_here"),             # in-process compiles (fallback, kernels mode)
    ("oparac.fuse.segments", "time_graph_replays"),              # the whole replay, timed
    ("oparac.fuse.segments", "segment_times"),                   # each segment alone, in a small graph
    ("oparac.fuse.segments", "stored_programs"),                 # the programs serialised into the plan
)


def install(totals: dict) -> None:
    for module_name, name in STEPS:
        module = importlib.import_module(module_name)
        fn = getattr(module, name)

        @functools.wraps(fn)
        def timed(*args, _fn=fn, _key=f"{module_name.rsplit('.', 1)[-1]}.{name}", **kwargs):
            t0 = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                seconds, calls = totals.get(_key, (0.0, 0))
                totals[_key] = (seconds + time.perf_counter() - t0, calls + 1)

        setattr(module, name, timed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("the segment compile timing needs a CUDA GPU", file=sys.stderr)
        return 1
    import oparac
    from oparac.bench.methods import cold_compile_caches, plan_label, zoo_model
    from results_io import new_result, write_result

    device = torch.device("cuda")
    path, header = new_result(args.out, "segment-compile-time", device,
                              tag=f"{args.model}-{args.batch}-{args.dtype}")
    model, inputs, _ = zoo_model(args.model, args.batch, args.dtype, device)
    totals: dict[str, tuple[float, int]] = {}
    install(totals)
    notes: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    with cold_compile_caches():
        plan = oparac.compile(model, inputs, device="cuda", dtype=args.dtype, fuse="inductor", fuse_mode="segments",
                              progress=lambda line: notes.append((round(time.perf_counter() - t0, 3), line)))
    total = time.perf_counter() - t0
    steps = {k: {"seconds": round(s, 3), "calls": n} for k, (s, n) in totals.items()}
    result = dict(header, model=args.model, batch=args.batch, dtype=args.dtype, plan=plan_label(plan),
                  segments=len(plan.fusion.segments), programs=len(plan.fusion.programs),
                  compile_s=round(total, 3), steps=steps, notes=notes)
    write_result(path, result)
    print(f"{args.model} b{args.batch} {args.dtype}: {plan_label(plan)}, {len(plan.fusion.segments)} segments, "
          f"{len(plan.fusion.programs)} programs, compile {total:.1f} s")
    for k, v in steps.items():
        print(f"  {k:40s} {v['seconds']:8.2f} s  x{v['calls']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
