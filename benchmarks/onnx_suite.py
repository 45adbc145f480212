"""The ONNX front end on the GPU: per model, the sequential CUDA graph, the plan compiled from the PyTorch module
and the plan compiled from its ONNX export, timed in one process; the ONNX plan checked against eager.

    python benchmarks/onnx_suite.py                          # H100: all six models, about 6 minutes
    python benchmarks/onnx_suite.py --models resnet50 --exporters dynamo
    python benchmarks/onnx_suite.py --device cpu --models resnet50     # CPU pieces only: no timings

Writes benchmarks/results/onnx-suite-<stamp>.json after every record (a killed run keeps its rows). TF32 is off
for the whole run, so float32 means float32 and the 1e-4 relative check holds. The legacy exporter runs in a
second pass, model by model, while the run is under --budget-s.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # for results_io
MODELS = {  # benchmark name -> oparac.models.zoo factory (batch 1, float32, random weights, calibrated batch norm)
    name: name for name in ("googlenet", "inception_v3", "resnet50", "densenet121", "mobilenet_v3_large", "bert")
}
INPUT_NAMES = {"bert": ["input_ids", "attention_mask"]}
TOLERANCE = 1e-4  # relative, float32 with TF32 off
EXPORTERS = ("dynamo", "legacy")


def make_model(name: str):
    factory = MODELS[name]
    if callable(factory):
        return factory()
    from oparac.models import zoo
    return getattr(zoo, factory)(1)


def export(model, inputs, path: Path, exporter: str, names: list[str]) -> Path:
    """The module as an .onnx file (CPU tensors in, so the file does not depend on the device)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(inputs), str(path), input_names=names, dynamo=exporter == "dynamo")
    return path


def onnx_plan_runner(path: Path, device: torch.device):
    import opara_runtime
    import oparac

    plan = oparac.compile(path, device=device.type)
    return opara_runtime.load(plan, path, device=device)


def measure(method: str, name: str, make, inputs, reference, device: torch.device, iters: int,
            exporter: str | None = None) -> dict:
    """One record: on CUDA through oparac.bench.methods's timing; on the CPU build and check only (no timings)."""
    from oparac.bench.methods import Record, measure_into
    from oparac.verify import judge

    rec = Record(model=name, batch=int(inputs[0].shape[0]), dtype="float32", method=method)
    built = {}

    def build():
        built["fn"] = make()
        return built["fn"]

    if device.type == "cuda":
        measure_into(rec, build, inputs, reference, device, iters=iters, warmup=max(iters // 10, 1))
    else:
        try:
            t0 = time.perf_counter()
            build()
            rec.compile_s = time.perf_counter() - t0
        except Exception as e:  # reported like measure_into does on the GPU
            rec.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
    out = rec.as_dict()
    out["exporter"] = exporter
    if "fn" in built and rec.error is None:
        try:
            verdict = judge(built["fn"](*inputs), reference, None, TOLERANCE, "float32")  # against eager
        except Exception as e:  # e.g. another number of outputs: a row, not the end of the run
            out["error"] = f"comparing with eager: {type(e).__name__}: {e}"[:300]
            return out
        out["max_abs_diff"], out["max_rel_diff"] = verdict.max_abs, verdict.max_rel
        if method == "opara_onnx" and not verdict.ok:
            out["error"] = f"output differs from eager: max relative diff {verdict.max_rel:.3g} > {TOLERANCE:g}"
    return out


def methods_for(device: torch.device) -> tuple[str, ...]:
    # The sequential CUDA graph is the baseline on the GPU; without one there is nothing to capture.
    return ("cudagraph", "opara_torch") if device.type == "cuda" else ("opara_torch",)


def main(argv=None) -> int:
    from oparac.bench.methods import build
    from results_io import new_result, write_result

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--exporters", default=",".join(EXPORTERS), help="dynamo, legacy or both")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--budget-s", type=float, default=240.0,
                    help="the legacy-exporter pass starts a model only while the run is younger than this")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--report", metavar="JSON", help="print the markdown tables of a result file and exit")
    args = ap.parse_args(argv)
    if args.report:
        records = json.loads(Path(args.report).read_text())["records"]
        print(table(records) + "\n\n" + speedups(records))
        return 0
    exporters = [e for e in args.exporters.split(",") if e]
    unknown = sorted(set(exporters) - set(EXPORTERS)) + sorted(set(args.models.split(",")) - set(MODELS))
    if unknown:
        print(f"unknown exporters or models: {unknown}", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA GPU here (use --device cpu for a check without timings)", file=sys.stderr)
        return 1
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    start = time.perf_counter()
    path, header = new_result(args.out, "onnx-suite", device, tf32=False)
    records: list[dict] = []

    def add(rec: dict) -> None:
        records.append(rec)
        write_result(path, dict(header, records=records))
        shown = rec.get("error") or f"{_ms(rec.get('ms_b2b'))} b2b, compile {rec['compile_s']:.1f} s"
        print(f"{rec['model']} {rec['method']}{' (' + rec['exporter'] + ')' if rec['exporter'] else ''}: {shown}",
              flush=True)

    with tempfile.TemporaryDirectory(prefix="opara-onnx-suite-") as tmp:
        for pass_no, exporter in enumerate(exporters):
            for name in args.models.split(","):
                if pass_no > 0 and time.perf_counter() - start > args.budget_s:
                    print(f"{name} ({exporter}): left out, the run is past --budget-s {args.budget_s:g}")
                    continue
                model, inputs = make_model(name)
                onnx_path = Path(tmp) / f"{name}-{exporter}.onnx"
                try:
                    export(model, inputs, onnx_path, exporter, INPUT_NAMES.get(name, ["x"]))
                    export_error = None
                except Exception as e:  # an export failure is a row of its own, not the end of the run
                    export_error = f"export: {type(e).__name__}: {str(e).strip().splitlines()[0]}"[:300]
                model = model.to(device).eval()
                inputs = tuple(x.to(device) for x in inputs)
                with torch.no_grad():
                    reference = model(*inputs)
                if pass_no == 0:  # the PyTorch-side rows once per model
                    for method in methods_for(device):
                        kind = "opara" if method == "opara_torch" else method
                        add(measure(method, name, lambda k=kind: build(k, model, inputs, device), inputs, reference,
                                    device, args.iters))
                if export_error:
                    add({"model": name, "batch": 1, "dtype": "float32", "method": "opara_onnx",
                         "exporter": exporter, "error": export_error})
                else:
                    add(measure("opara_onnx", name, lambda: onnx_plan_runner(onnx_path, device), inputs, reference,
                                device, args.iters, exporter))
                del model, inputs, reference
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    print(table(records))
    print(f"wrote {path}")
    return 0


def _ms(v) -> str:
    return "-" if v is None else f"{v:.3f} ms"


def table(records: list[dict]) -> str:
    """model | cudagraph | opara_torch | opara_onnx per exporter: back-to-back ms (or the error), rel diff."""
    cols = ["cudagraph", "opara_torch"] + sorted({f"opara_onnx ({r['exporter']})" for r in records
                                                   if r["method"] == "opara_onnx"})
    cell: dict[tuple[str, str], str] = {}
    for r in records:
        col = r["method"] if r["method"] != "opara_onnx" else f"opara_onnx ({r['exporter']})"
        if r.get("error"):
            cell[r["model"], col] = "error"
        else:
            rel = f" rel {r['max_rel_diff']:.1e}" if r.get("max_rel_diff") is not None else ""
            cell[r["model"], col] = f"{_ms(r.get('ms_b2b'))}{rel}"
    models = list(dict.fromkeys(r["model"] for r in records))
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += ["| " + m + " | " + " | ".join(cell.get((m, c), "") for c in cols) + " |" for m in models]
    return "\n".join(lines)


def speedups(records: list[dict]) -> str:
    """Each plan against the sequential CUDA graph of the same run (back-to-back), per model."""
    base = {r["model"]: r["ms_b2b"] for r in records if r["method"] == "cudagraph" and r.get("ms_b2b")}
    cols = ["opara_torch"] + sorted({f"opara_onnx ({r['exporter']})" for r in records if r["method"] == "opara_onnx"})
    cell = {}
    for r in records:
        col = r["method"] if r["method"] != "opara_onnx" else f"opara_onnx ({r['exporter']})"
        if r["model"] in base and r.get("ms_b2b") and not r.get("error"):
            cell[r["model"], col] = f"{base[r['model']] / r['ms_b2b']:.2f}x"
    lines = ["| model (vs cudagraph) | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += ["| " + m + " | " + " | ".join(cell.get((m, c), "") for c in cols) + " |" for m in base]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
