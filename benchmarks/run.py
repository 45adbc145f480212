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
    for name in args.models.split(","):
        batches = [int(b) for b in args.batches.split(",")] if args.batches else SUITE[name]
        for batch in batches:
            for dtype in args.dtypes.split(","):
                model, inputs = getattr(zoo, name)(batch)
                dt = getattr(torch, dtype)
                model = model.to(device=device, dtype=dt).eval()
                inputs = tuple((x.to(dt) if x.is_floating_point() else x).to(device) for x in inputs)
                with torch.no_grad():
                    reference = model(*inputs)
                for method in args.methods.split(","):
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
    print(f"wrote {path}")
    from report import write_markdown

    same = sorted(out.glob(f"suite-*-{args.tag}.json")) if args.tag else [path]
    write_markdown(same, HERE.parent / "BENCHMARKS.md")
    return 0


def stamped(prefix: str, t0: float):
    """A compiler progress callback printing each line with the seconds since t0."""
    def say(msg: str) -> None:
        print(f"  [{time.perf_counter() - t0:7.1f} s] {prefix}: {msg}", flush=True)
    return say


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
