"""Load time of fused plans in a fresh process with an empty inductor cache: with the plan's compiled
segments (what deployment pays) and without them (cold: every segment compiled at load).

    python benchmarks/fused_load.py --models googlenet,inception_v3      # GPU; writes results/fused-load-*.json
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Runs in the child: load the plan (weights from the zoo factory), one synchronised call, print seconds.
_CHILD = ("import sys, time, torch, opara_runtime; from oparac.models import zoo; "
          "m, xs = getattr(zoo, sys.argv[2])(); m = m.cuda(); xs = [x.cuda() for x in xs]; "
          "t = time.perf_counter(); r = opara_runtime.load(sys.argv[1], m, trust_compiled_code=True); "
          "torch.cuda.synchronize(); load = time.perf_counter() - t; r(*xs); torch.cuda.synchronize(); "
          "print(f'{load:.3f} {time.perf_counter() - t:.3f}')")


def load_seconds(plan_path: Path, model: str) -> tuple[float, float]:
    """(load, load + first call) in a fresh process whose inductor cache starts empty."""
    with tempfile.TemporaryDirectory(prefix="opara-inductor-") as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        out = subprocess.run([sys.executable, "-c", _CHILD, str(plan_path), model], env=env,
                             capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"loading {plan_path.name} failed: {out.stderr[-1500:]}")
    load, first = (float(v) for v in out.stdout.split()[-2:])
    return load, first


def measure(model: str, workdir: Path) -> dict:
    import torch

    import oparac
    from oparac.models import zoo
    net, inputs = getattr(zoo, model)()
    start = time.perf_counter()
    plan = oparac.compile(net.cuda(), tuple(x.cuda() for x in inputs), device="cuda", fuse="inductor")
    compile_s = time.perf_counter() - start
    with_artifacts, cold = workdir / f"{model}.plan", workdir / f"{model}-cold.plan"
    plan.save(with_artifacts)
    bare = tuple(dataclasses.replace(s, program=-1) for s in plan.fusion.segments)
    dataclasses.replace(plan, fusion=dataclasses.replace(plan.fusion, segments=bare, programs=())).save(cold)
    load_s, first_s = load_seconds(with_artifacts, model)
    cold_s, cold_first_s = load_seconds(cold, model)
    del net
    torch.cuda.empty_cache()
    return {"model": model, "batch": 1, "dtype": "float32", "segments": len(plan.fusion.segments),
            "programs": len(plan.fusion.programs),
            "plan_mb": with_artifacts.stat().st_size / 2**20, "compile_s": compile_s,
            "load_s": load_s, "load_first_call_s": first_s, "cold_load_s": cold_s,
            "cold_load_first_call_s": cold_first_s}


def main(argv=None) -> int:
    import torch

    from results_io import new_result, write_result

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="googlenet,inception_v3")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("fused load times need a CUDA GPU", file=sys.stderr)
        return 1
    path, result = new_result(args.out, "fused-load")
    result["records"] = []
    with tempfile.TemporaryDirectory(prefix="opara-plans-") as tmp:
        for model in args.models.split(","):
            rec = measure(model, Path(tmp))
            result["records"].append(rec)
            write_result(path, result)
            print(f"{model}: {rec['segments']} segments, plan {rec['plan_mb']:.1f} MiB, compile {rec['compile_s']:.1f} s, "
                  f"load with artifacts {rec['load_s']:.1f} s, cold load {rec['cold_load_s']:.1f} s", flush=True)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
