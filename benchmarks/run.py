"""The benchmark suite: every model x batch x dtype x method; writes JSON + BENCHMARKS.md.

Each model x batch x dtype is a group: every method of it is built first, then all are timed together in
interleaved rounds (--timing sequential: each method timed alone right after it was built, as runs before
2026-12-01T19:00 did). Each group runs in a process of its own (--in-process: all in this one, as runs before
2026-12-02T02:00 did): every compile in it is cold, nothing one group leaves behind (dynamo's or inductor's
in-memory state, CUDA graph pools, a corrupted CUDA context) reaches the next, and a group whose process dies is
recorded with how it ended while the run goes on. On the H200 two in-process runs died inside a group, once
silently (2026-12-02, in groups measured after another batch of the same model).

    python benchmarks/run.py                      # the full suite (GPU)
    python benchmarks/run.py --models googlenet --batches 1 --methods cudagraph,opara
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the sibling modules (results_io, report) import by name, run as a script or not
    sys.path.insert(0, str(HERE))
SUITE = {  # model -> batches
    "googlenet": (1, 8, 32), "inception_v3": (1, 8, 32), "densenet121": (1,), "resnet50": (1,),
    "nasnet": (1,), "bert": (1,),
    # the never-lose suite (oparac.models.zoo.EXTENDED)
    "gpt2": (1, 8), "vit_b16": (1, 8), "swin_t": (1, 8), "llama": (1, 8), "efficientnet_b0": (1, 8),
    "convnext_t": (1, 8), "hrnet_w18_small": (1, 8),
}


def main(argv=None) -> int:
    from oparac.bench.methods import METHODS
    from results_io import new_result, write_result

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(SUITE))
    ap.add_argument("--batches", default="", help="override the batches of every model, e.g. 1,8")
    ap.add_argument("--dtypes", default="float32")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--iters", type=int, default=0,
                    help="back-to-back calls timed (default: 200 sequential, 100 per interleaved round)")
    ap.add_argument("--timing", choices=("interleaved", "sequential"), default="interleaved")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--tag", default="", help="session name: BENCHMARKS.md merges every result file with this tag")
    ap.add_argument("--skip-measured", default="", metavar="DIR",
                    help="skip each model x batch x dtype that a suite-*.json in DIR already measured on this GPU "
                         "with every requested method (and no error): a matrix run across several device calls")
    ap.add_argument("--budget", type=float, default=0.0, metavar="S",
                    help="start no new model x batch x dtype once S seconds have passed, or when the longest one "
                         "so far would not fit in what is left (0: no limit)")
    ap.add_argument("--progress", action="store_true",
                    help="print the compiler's progress lines (tuning candidates...) with the seconds since each "
                         "method began: where an Opara method's compile time goes")
    ap.add_argument("--in-process", action="store_true",
                    help="run every group in this process instead of one process per group")
    ap.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)  # a group's own process
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("the benchmark suite needs a CUDA GPU", file=sys.stderr)
        return 1
    from oparac.bench.methods import free_cached_memory

    device = torch.device("cuda")
    records = []
    out = Path(args.out)
    path, header = new_result(out, "suite", device, tag=args.tag)
    methods = args.methods.split(",")
    done = measured(Path(args.skip_measured), header["gpu"], methods, args.timing) if args.skip_measured else set()
    iters = args.iters or (200 if args.timing == "sequential" else 100)
    began, longest = time.perf_counter(), 0.0
    for name in args.models.split(","):
        batches = [int(b) for b in args.batches.split(",")] if args.batches else SUITE[name]
        for batch in batches:
            for dtype in args.dtypes.split(","):
                if (name, batch, dtype) in done:
                    print(f"{name} b{batch} {dtype}: already measured in {args.skip_measured}", flush=True)
                    continue
                left = args.budget - (time.perf_counter() - began)
                if args.budget and left < longest:
                    print(f"{name} b{batch} {dtype}: not started, {left:.0f} s of the budget left and the longest "
                          f"group so far took {longest:.0f} s", flush=True)
                    continue
                group_began = time.perf_counter()
                if args.in_process:
                    for rec in run_group(name, batch, dtype, methods, device, args, iters):
                        records.append(rec.as_dict())
                        write_result(path, dict(header, records=records))
                        print(f"{name} b{batch} {dtype} {rec.method}: {shown(rec)}", flush=True)
                    if not free_cached_memory([]):  # the process's CUDA context is gone: no later group can run
                        print(f"wrote {path}; stopped after {name} b{batch} {dtype}: a CUDA error left the process "
                              "unusable", flush=True)
                        return 1
                else:
                    records += run_isolated(name, batch, dtype, methods, group_argv(args, name, batch, dtype))
                    write_result(path, dict(header, records=records))
                longest = max(longest, time.perf_counter() - group_began)
    print(f"wrote {path}")
    if args.no_report:
        return 0
    from report import write_markdown

    same = sorted(out.glob(f"suite-*-{args.tag}.json")) if args.tag else [path]
    write_markdown(same, HERE.parent / "BENCHMARKS.md")
    return 0


def group_argv(args, name: str, batch: int, dtype: str) -> list[str]:
    """This script's arguments for one group in a process of its own (its results go to --out, added later)."""
    argv = ["--models", name, "--batches", str(batch), "--dtypes", dtype, "--methods", args.methods,
            "--timing", args.timing, "--rounds", str(args.rounds), "--in-process", "--no-report"]
    if args.iters:
        argv += ["--iters", str(args.iters)]
    if args.progress:
        argv.append("--progress")
    return argv


def run_isolated(name: str, batch: int, dtype: str, methods: list[str], argv: list[str], *,
                 spawn=subprocess.run) -> list[dict]:
    """One group's records, measured by this script in a child process (`argv`, with --out a fresh folder);
    each method the child did not record (it died, or was killed) gets a record saying how its process ended."""
    with tempfile.TemporaryDirectory(prefix="opara-bench-") as folder:
        rc = spawn([sys.executable, str(Path(__file__).resolve()), *argv, "--out", folder]).returncode
        records = [r for f in sorted(Path(folder).glob("suite-*.json"))
                   for r in json.loads(f.read_text()).get("records", [])]
    got = {r["method"] for r in records}
    for method in methods:
        if method not in got:
            error = f"not measured: the group's process {ended(rc)} before this method's figures were written"
            records.append({"model": name, "batch": batch, "dtype": dtype, "method": method, "error": error})
            print(f"{name} b{batch} {dtype} {method}: {error}", flush=True)
    return records


def ended(rc: int) -> str:
    """How a child process ended, from its return code, in words."""
    if rc < 0:
        try:
            return f"was killed by signal {-rc} ({signal.Signals(-rc).name})"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with status {rc}"


def run_group(name: str, batch: int, dtype: str, methods: list[str], device: torch.device, args, iters: int):
    """Each method's Record for one model, batch and dtype: built and timed together (interleaved), or each
    timed alone right after it was built (sequential: yielded as it is measured)."""
    from oparac.bench.methods import (CompileLog, Record, bench_method, build, compiles, measure_group, warm_imports,
                                      zoo_model)

    model, inputs, reference = zoo_model(name, batch, dtype, device)
    warmed = any(map(compiles, methods))
    if warmed:  # no method's compile time carries the process's first imports of dynamo, inductor and Triton
        warm_imports(device)

    logs: dict[str, CompileLog] = {}

    def options(method: str) -> dict:
        o = {"dtype": dtype} if dtype != "float32" else {}
        if method.startswith("opara"):  # made as the method is built, so its clock starts with the compile
            echo = stamped(f"{name} b{batch} {dtype} {method}", time.perf_counter()) if args.progress else None
            o["progress"] = logs[method] = CompileLog(echo)
        return o

    def with_logs(rec: Record) -> Record:
        if rec.method in logs:
            logs[rec.method].fill(rec)
        if warmed and compiles(rec.method):
            rec.imports = "warm"
        return rec

    if args.timing == "sequential":
        for method in methods:
            yield with_logs(bench_method(method, name, model, inputs, dtype, device, reference, iters=iters,
                                         plan_options=options(method)))
        return
    recs = [Record(model=name, batch=batch, dtype=dtype, method=m, caches="empty" if compiles(m) else None)
            for m in methods]
    makes = [lambda m=m: build(m, model, inputs, device, plan_options=options(m)) for m in methods]
    yield from map(with_logs, measure_group(recs, makes, inputs, reference, device, rounds=args.rounds, iters=iters,
                                            warmup=20))


def measured(results: Path, gpu: str, methods: list[str], timing: str = "sequential") -> set[tuple[str, int, str]]:
    """(model, batch, dtype) groups that one suite-*.json under `results` measured on `gpu` with every one of
    `methods`, no error, a cold torch.compile, and `timing` (one file: a comparison is only made within one run;
    a record without a 'timing' was timed sequentially)."""
    from report import mark_warm_dynamo

    done = set()
    for f in sorted(results.glob("suite-*.json")):
        result = json.loads(f.read_text())
        if result.get("gpu") != gpu:
            continue
        # A torch.compile that recompiled with a symbolic batch (report.mark_warm_dynamo) is no baseline: its group
        # is measured again.
        records = result.get("records", [])
        mark_warm_dynamo(records)
        seen: dict[tuple[str, int, str], set[str]] = {}
        for r in records:
            if r.get("error") is None and not r.get("warm_dynamo") and r.get("timing", "sequential") == timing:
                seen.setdefault((r["model"], r["batch"], r["dtype"]), set()).add(r["method"])
        done |= {group for group, got in seen.items() if set(methods) <= got}
    return done


def shown(rec) -> str:
    """A record's figures in a line, or its error."""
    if rec.error is not None:
        return rec.error
    return f"{rec.ms_b2b:.3f} ms b2b, {rec.ms_latency:.3f} ms latency, built in {rec.compile_s:.0f} s"


def stamped(prefix: str, t0: float):
    """A compiler progress callback printing each line with the seconds since t0."""
    def say(msg: str) -> None:
        print(f"  [{time.perf_counter() - t0:7.1f} s] {prefix}: {msg}", flush=True)
    return say


if __name__ == "__main__":
    sys.exit(main())
