"""The multi-GPU section of the suite: a 2-GPU plan against the best 1-GPU plan and a sequential CUDA graph.

    python benchmarks/multi_gpu.py                      # 2 GPUs, the default configurations (< 9 min on 2 x H200)
    python benchmarks/multi_gpu.py --configs inception_v3:1x1024 --budget-s 300

Per configuration, in one process: `cudagraph` (the model's forward as one sequential CUDA graph on GPU 0),
`opara` (the best 1-GPU plan: the fastest single-GPU finalist of the tuning below, rebuilt on the 1-GPU
graph), `opara_2gpu` (`compile(devices=..., tune=True)`: HIOS-LP mapping, per-GPU streams, and the fastest
of the single- and multi-GPU candidates, so it uses one GPU where two do not help; `devices_used` says which).
Writes benchmarks/results/multigpu-<stamp>.json and prints a table. Peak memory is GPU 0's.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# model:BATCHxSIZE, cheapest first after the two wide Inception cases; NASNet last (longest to profile).
CONFIGS = ("inception_v3:1x1024", "inception_v3:4x512", "googlenet:1x224", "nasnet:2x512")
METHODS = ("cudagraph", "opara", "opara_2gpu")


def parse_config(text: str) -> tuple[str, int, int]:
    """'inception_v3:4x512' -> ('inception_v3', 4, 512): the model, batch and square input size."""
    name, _, shape = text.partition(":")
    batch, _, size = shape.partition("x")
    if not name or not batch.isdigit() or not size.isdigit():
        raise ValueError(f"configuration {text!r}: expected MODEL:BATCHxSIZE, e.g. inception_v3:4x512")
    return name, int(batch), int(size)


def finalist_labels(said: list[str]) -> set[str]:
    """The candidates tuning measured again, from its progress line 'tune: finalists LABEL 1.2345 ms, ...'."""
    line = next((s for s in said if s.startswith("tune: finalists ")), "")
    return {f.rsplit(" ", 2)[0] for f in line.removeprefix("tune: finalists ").split(", ") if f}


def best_single(candidates, finalists: set[str] = frozenset()) -> tuple[str, str, int]:
    """The (streams, order, cap) of the fastest measured single-GPU candidate, among the `finalists` when given:
    their figures are medians of the final rounds, the others' one first-pass figure is biased low (the tuner
    itself only chooses among the finalists, and the fastest single-GPU candidate of the first pass is one)."""
    from oparac.search.tune import candidate_label

    measured = [c for c in candidates if c.num_devices == 1 and c.measured_ms > 0]
    if not measured:
        raise ValueError("the tuned plan records no measured single-GPU candidate")
    measured = [c for c in measured if candidate_label((c.streams, c.order, c.max_streams, 1)) in finalists] or measured
    best = min(measured, key=lambda c: c.measured_ms)
    return best.streams, best.order, best.max_streams


def table(records: list[dict]) -> str:
    """Rows per configuration: ms per method and the 2-GPU plan's speed-up over the others (b2b)."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in records:
        groups.setdefault((r["model"], r["batch"], r["size"]), {})[r["method"]] = r
    lines = [f"{'model':<14}{'input':>12}{'cudagraph':>11}{'opara 1GPU':>12}{'opara 2GPU':>12}{'GPUs':>6}"
             f"{'vs 1GPU':>9}{'vs graph':>10}"]
    for (model, batch, size), m in groups.items():
        ms = {k: (m[k].get("ms_b2b") if k in m else None) for k in METHODS}
        cell = lambda v: f"{v:.3f}" if v is not None else "-"
        ratio = lambda a, b: f"{a / b:.2f}x" if a is not None and b is not None else "-"
        used = m.get("opara_2gpu", {}).get("devices_used", "-")
        lines.append(f"{model:<14}{f'{batch}x3x{size}x{size}':>12}{cell(ms['cudagraph']):>11}{cell(ms['opara']):>12}"
                     f"{cell(ms['opara_2gpu']):>12}{used:>6}{ratio(ms['opara'], ms['opara_2gpu']):>9}"
                     f"{ratio(ms['cudagraph'], ms['opara_2gpu']):>10}")
    return "\n".join(lines)


def build_model(name: str, batch: int, size: int):
    """A zoo model (BatchNorm calibrated at its usual size, as the suite does) and an input of the given size."""
    import torch

    from oparac.models import zoo
    model, _ = getattr(zoo, name)(1)
    torch.manual_seed(1)
    return model, (torch.randn(batch, 3, size, size),)


def run_config(name: str, batch: int, size: int, gpus: list[str], iters: int, warmup: int) -> list[dict]:
    import dataclasses

    import torch

    import opara_runtime
    import oparac
    from oparac.bench.methods import Record, SequentialGraph, measure_into
    from oparac.schedule.build import make_schedule

    device = torch.device(gpus[0])
    model, inputs = build_model(name, batch, size)
    model = model.to(device).eval()
    inputs = tuple(x.to(device) for x in inputs)
    with torch.no_grad():
        reference = model(*inputs)
    records = []

    def record(method: str, make) -> Record:
        rec = Record(model=name, batch=batch, dtype="float32", method=method)
        measure_into(rec, make, inputs, reference, device, iters=iters, warmup=warmup)
        records.append(dict(rec.as_dict(), size=size))
        return rec

    record("cudagraph", lambda: SequentialGraph(model, inputs))
    plans = {}

    said: list[str] = []

    def compile_two():
        plans["two"] = oparac.compile(model, inputs, device=device, devices=gpus, tune=True, progress=said.append)
        return opara_runtime.load(plans["two"], model, device=device)

    def compile_one():
        # The 1-GPU graph and profile (cached by the compile above), with the best single-GPU candidate
        # that the 2-GPU tuning measured: the best 1-GPU plan of the same run.
        plan = oparac.compile(model, inputs, device=device)
        streams, order, cap = best_single(plans["two"].profile.candidates, finalist_labels(said))
        plan = dataclasses.replace(plan, schedule=make_schedule(plan.graph, plan.profile.ops, streams=streams,
                                                                order=order, max_streams=cap))
        return opara_runtime.load(plan, model, device=device)

    two = record("opara_2gpu", compile_two)
    if "two" in plans:
        records[-1]["devices_used"] = plans["two"].schedule.num_devices
        record("opara", compile_one)
    else:
        records.append(dict(Record(model=name, batch=batch, dtype="float32", method="opara",
                                   error=f"not run: the 2-GPU compile failed ({two.error})").as_dict(), size=size))
    records.sort(key=lambda r: METHODS.index(r["method"]))
    del model, inputs, reference
    torch.cuda.empty_cache()
    return records


def main(argv=None) -> int:
    import torch
    from results_io import new_result, write_result

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=",".join(CONFIGS), help="MODEL:BATCHxSIZE, comma-separated")
    ap.add_argument("--devices", default="cuda:0,cuda:1")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--budget-s", type=float, default=480.0,
                    help="start no configuration after this many seconds (the run stays under 9 minutes)")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    configs = [parse_config(c) for c in args.configs.split(",")]
    gpus = [d.strip() for d in args.devices.split(",")]
    if torch.cuda.device_count() < len(gpus):
        print(f"the multi-GPU benchmark needs {len(gpus)} GPUs, this machine has {torch.cuda.device_count()}",
              file=sys.stderr)
        return 1
    path, header = new_result(args.out, "multigpu", torch.device(gpus[0]), gpus=len(gpus))
    records: list[dict] = []
    start = time.perf_counter()
    for name, batch, size in configs:
        if time.perf_counter() - start > args.budget_s:
            for method in METHODS:
                records.append({"model": name, "batch": batch, "dtype": "float32", "method": method, "size": size,
                                "error": f"skipped: past the {args.budget_s:.0f} s budget"})
            continue
        t0 = time.perf_counter()
        records.extend(run_config(name, batch, size, gpus, args.iters, args.warmup))
        write_result(path, dict(header, records=records))
        print(f"{name} {batch}x3x{size}x{size}: {time.perf_counter() - t0:.0f} s", flush=True)
    write_result(path, dict(header, records=records))
    print(table(records))
    print(f"wrote {path} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
