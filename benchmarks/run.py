"""The benchmark suite: every model x batch x dtype x method, timed in one process; writes JSON + BENCHMARKS.md.

    python benchmarks/run.py                      # the full suite (GPU)
    python benchmarks/run.py --models googlenet --batches 1 --methods cudagraph,opara
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SUITE = {  # model -> batches
    "googlenet": (1, 8, 32), "inception_v3": (1, 8, 32), "densenet121": (1,), "resnet50": (1,),
    "nasnet": (1,), "bert": (1,),
    # the never-lose suite (oparac.models.zoo.EXTENDED)
    "gpt2": (1, 8), "vit_b16": (1, 8), "swin_t": (1, 8), "llama": (1, 8), "efficientnet_b0": (1, 8),
    "convnext_t": (1, 8), "hrnet_w18_small": (1, 8),
}


def main(argv=None) -> int:
    from oparac.models import zoo
    from oparac.bench.methods import METHODS, bench_method
    from results_io import new_result, write_result

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(SUITE))
    ap.add_argument("--batches", default="", help="override the batches of every model, e.g. 1,8")
    ap.add_argument("--dtypes", default="float32")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--iters", type=int, default=200)
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
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("the benchmark suite needs a CUDA GPU", file=sys.stderr)
        return 1
    device = torch.device("cuda")
    records = []
    out = Path(args.out)
    path, header = new_result(out, "suite", device, tag=args.tag)
    methods = args.methods.split(",")
    done = measured(Path(args.skip_measured), header["gpu"], methods) if args.skip_measured else set()
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
                model, inputs = getattr(zoo, name)(batch)
                dt = getattr(torch, dtype)
                model = model.to(device=device, dtype=dt).eval()
                inputs = tuple((x.to(dt) if x.is_floating_point() else x).to(device) for x in inputs)
                with torch.no_grad():
                    reference = model(*inputs)
                for method in methods:
                    t0 = time.perf_counter()
                    options = {"dtype": dtype} if dtype != "float32" else {}
                    if args.progress:
                        options["progress"] = stamped(f"{name} b{batch} {dtype} {method}", t0)
                    rec = bench_method(method, name, model, inputs, dtype, device, reference, iters=args.iters,
                                       plan_options=options)
                    records.append(rec.as_dict())
                    write_result(path, dict(header, records=records))
                    shown = f"{rec.ms_b2b:.3f} ms b2b, {rec.ms_latency:.3f} ms latency" if rec.error is None \
                        else rec.error
                    print(f"{name} b{batch} {dtype} {method}: {shown} ({time.perf_counter() - t0:.0f} s)", flush=True)
                del model, inputs, reference
                torch.cuda.empty_cache()
                longest = max(longest, time.perf_counter() - group_began)
    print(f"wrote {path}")
    from report import write_markdown

    same = sorted(out.glob(f"suite-*-{args.tag}.json")) if args.tag else [path]
    write_markdown(same, HERE.parent / "BENCHMARKS.md")
    return 0


def measured(results: Path, gpu: str, methods: list[str]) -> set[tuple[str, int, str]]:
    """(model, batch, dtype) groups that one suite-*.json under `results` measured on `gpu` with every one of
    `methods` and no error (one file: a comparison is only made within one run)."""
    import json

    done = set()
    for f in sorted(results.glob("suite-*.json")):
        result = json.loads(f.read_text())
        if result.get("gpu") != gpu:
            continue
        seen: dict[tuple[str, int, str], set[str]] = {}
        for r in result.get("records", []):
            if r.get("error") is None:
                seen.setdefault((r["model"], r["batch"], r["dtype"]), set()).add(r["method"])
        done |= {group for group, got in seen.items() if set(methods) <= got}
    return done


def stamped(prefix: str, t0: float):
    """A compiler progress callback printing each line with the seconds since t0."""
    def say(msg: str) -> None:
        print(f"  [{time.perf_counter() - t0:7.1f} s] {prefix}: {msg}", flush=True)
    return say


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
