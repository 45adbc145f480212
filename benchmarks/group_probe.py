"""Which step of a benchmark group first hits a CUDA error: its methods built in the group's order, then run, with a
synchronize and a check after every step.

A CUDA error such as an illegal memory access is reported at whatever call happens to synchronize next, and it
poisons the process: the benchmark suite (run.py) only learns that a group's process died. Here every build, every
call of every method, the allocator's empty_cache and the calls after it are each followed by a synchronize, so
the first step that fails is the one whose work (or the work queued just before it) went wrong.

    python benchmarks/group_probe.py --model swin_t --dtype float32 --methods cudagraph,torch_compile,opara_default
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--methods", default="cudagraph,torch_compile,opara_default")
    ap.add_argument("--rounds", type=int, default=3, help="calls of every method, in turn, after all are built")
    ap.add_argument("--no-free", action="store_true",
                    help="kernel-level plans allocate every buffer up front and free none (FREE_ON_STREAMS off)")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("the group probe needs a CUDA GPU", file=sys.stderr)
        return 1
    from oparac.bench.methods import build, plan_label, zoo_model
    from results_io import new_result, write_result

    if args.no_free:
        from opara_runtime.fused import kernel_streams

        kernel_streams.FREE_ON_STREAMS = False
    device = torch.device("cuda")
    path, header = new_result(args.out, "group-probe", device, tag=f"{args.model}-{args.dtype}")
    result = dict(header, model=args.model, batch=args.batch, dtype=args.dtype, methods=args.methods,
                  free_on_streams=not args.no_free, steps=[])
    model, inputs, _ = zoo_model(args.model, args.batch, args.dtype, device)
    options = {"dtype": args.dtype} if args.dtype != "float32" else {}
    ok = probe(args.methods.split(","), lambda m: build(m, model, inputs, device, plan_options=options), inputs,
               Steps(result, lambda: torch.cuda.synchronize(device), lambda: write_result(path, result), plan_label),
               rounds=args.rounds)
    print(f"wrote {path}")
    return 0 if ok else 1


class Steps:
    """Runs one step, then `sync`; records how it went under result['steps'], `save`s the result so far and prints
    the step. `label` names an Opara runner's plan."""

    def __init__(self, result: dict, sync, save, label=None):
        self.result, self.sync, self.save, self.label, self.t0 = result, sync, save, label, time.perf_counter()

    def __call__(self, name: str, work) -> bool:
        """False where `work` or the synchronize after it raised."""
        try:
            work()
            self.sync()
        except Exception as e:  # the point is to see which step raises, and what
            error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        else:
            error = None
        self.result["steps"].append({"step": name, "ok": error is None, "error": error,
                                     "s": round(time.perf_counter() - self.t0, 2)})
        self.save()
        print(f"[{time.perf_counter() - self.t0:7.1f} s] {name}: {error or 'ok'}", flush=True)
        return error is None

    def note_plan(self, fn) -> None:
        """An Opara runner's plan label on the last step: which schedule the plan kept decides what runs."""
        if self.label is not None and getattr(fn, "plan", None) is not None:
            self.result["steps"][-1]["plan"] = self.label(fn.plan)
            self.save()
            print(f"  plan: {self.result['steps'][-1]['plan']}", flush=True)


def probe(methods: list[str], make, inputs, step: Steps, *, rounds: int) -> bool:
    """Build each method (`make(method)`) and call it once, in order; then `rounds` calls of every method in turn;
    then empty_cache and one more call of each. Stops at the first step that fails; whether none did."""
    fns: dict = {}
    for method in methods:
        if not step(f"build {method}", lambda m=method: fns.__setitem__(m, make(m))):
            return False
        step.note_plan(fns[method])
        if not step(f"first call of {method}", lambda m=method: fns[m](*inputs)):
            return False
    calls = [(f"round {r} {m}", fn) for r in range(rounds) for m, fn in fns.items()]
    calls += [("empty_cache", None)] + [(f"after empty_cache {m}", fn) for m, fn in fns.items()]
    for name, fn in calls:
        if not step(name, torch.cuda.empty_cache if fn is None else (lambda f=fn: f(*inputs))):
            return False
    return True


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
