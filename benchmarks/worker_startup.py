"""What a fresh segment-compile worker spends before its first real segment: imports, CUDA init, inductor warm-up.

    python benchmarks/worker_startup.py --workers 1,16

Each worker is started the way opara_runtime.fused.parallel starts them (a fresh interpreter, one compile
thread) and times: importing torch and the runtime, creating the CUDA context, compiling a first tiny graph
with inductor's standalone entry point, and compiling a second one. Fused compiles start a set of workers per
candidate plan, so this is what keeping workers alive across candidates would save.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from opara_runtime.fused import compile_one
t1 = time.perf_counter()
torch.cuda.init(); torch.zeros(1, device="cuda"); torch.cuda.synchronize()
t2 = time.perf_counter()

def tiny(k):
    g = torch.fx.Graph()
    x = g.placeholder("x")
    y = g.call_function(torch.relu, (g.call_function(torch.mul, (x, float(k))),))
    g.output((y,))
    return torch.fx.GraphModule(torch.nn.Module(), g)

with torch.no_grad():
    compile_one(tiny(2), [torch.randn(64, 64, device="cuda")])
    t3 = time.perf_counter()
    compile_one(tiny(3), [torch.randn(32, 64, device="cuda")])
    t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "cuda_init_s": t2 - t1, "first_compile_s": t3 - t2,
                  "second_compile_s": t4 - t3}))
"""


def start_workers(n: int) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_COMPILE_THREADS="1", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(n)]
    outs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - t0
    stages = [json.loads(o.strip().splitlines()[-1]) for o in outs]
    mean = {k: sum(s[k] for s in stages) / n for k in stages[0]}
    return {"workers": n, "wall_s": wall, "mean": mean}


def main(argv=None) -> int:
    from results_io import new_result, write_result

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,16")
    ap.add_argument("--out", default=str(HERE / "results" / "probes"))
    args = ap.parse_args(argv)
    path, header = new_result(Path(args.out), "worker-startup")
    rows = []
    for n in (int(w) for w in args.workers.split(",")):
        rows.append(start_workers(n))
        r = rows[-1]
        print(f"{n} workers: {r['wall_s']:.1f} s wall; each: " +
              ", ".join(f"{k} {v:.2f}" for k, v in r["mean"].items()), flush=True)
    write_result(path, dict(header, runs=rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
