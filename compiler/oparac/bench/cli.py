"""`oparac bench PLAN MODEL`: the plan as it ships against the benchmark suite's baselines, one table."""
from __future__ import annotations

from pathlib import Path

from opara_plan import ModelError, OparaError

BASELINES = ("eager", "cudagraph", "torch_compile", "ort_cuda")


def parse_methods(text: str | None) -> tuple[str, ...]:
    """'eager,cudagraph' -> ('eager', 'cudagraph'); None -> every baseline. The plan's row is always there."""
    if not text:
        return BASELINES
    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in methods if m not in BASELINES]
    if unknown:
        raise OparaError(f"--baselines {text!r}: unknown {unknown[0]!r}; expected some of {', '.join(BASELINES)}")
    return methods


def _torch_module(model, ref: str):
    """bench_method's baselines call the model directly: an nn.Module (an ExportedProgram's module())."""
    import torch

    if isinstance(model, Path):
        raise ModelError(f"model {ref!r}: oparac bench needs a PyTorch model (.pt2 or package.module:factory) "
                         f"for its baselines, not an ONNX file")
    if isinstance(model, torch.export.ExportedProgram):
        return model.module()
    return model


def bench_plan(plan_path, model_ref: str, *, shapes: str | None = None, device=None, iters: int = 200,
               warmup: int = 20, baselines: str | None = None, console=None, trust_compiled_code: bool = False,
               trusted_keys=None) -> dict:
    """Measure the plan (loaded, not recompiled) and the baselines; a rich progress bar goes to stderr.
    trust_compiled_code, trusted_keys: whether its stored programs may run, as opara_runtime.load takes them."""
    from opara_plan import load_plan
    from oparac.observe.trace import require_cuda

    plan = load_plan(plan_path)
    methods = parse_methods(baselines)
    dev = require_cuda("bench", device)
    import torch

    from oparac.bench.methods import bench_method
    from oparac.models.reference import load_model
    from oparac.pipeline import cast_model
    from oparac.verify import inputs_for, reference

    model, _ = load_model(model_ref, shapes)
    module = _torch_module(model, model_ref)
    inputs = inputs_for(plan, dev)
    want = reference(plan, module, inputs, dev)
    cast, _ = cast_model(module, (), plan.model.precision)
    cast = cast.to(dev).eval()
    name, dtype = Path(str(plan_path)).stem, plan.model.precision
    records = []
    with _progress(console) as bar:
        task = bar.add_task("opara plan", total=len(methods) + 1)
        records.append(_bench_plan_row(plan, module, name, inputs, dtype, dev, want, iters=iters, warmup=warmup,
                                       trust={"trust_compiled_code": trust_compiled_code,
                                              "trusted_keys": trusted_keys}))
        bar.advance(task)
        for method in methods:
            bar.update(task, description=method)
            records.append(bench_method(method, name, cast, inputs, dtype, dev, want, iters=iters, warmup=warmup))
            bar.advance(task)
    return {"model": name, "plan": str(plan_path), "gpu": torch.cuda.get_device_name(dev),
            "torch": torch.__version__, "cuda": torch.version.cuda, "dtype": dtype, "iters": iters,
            "warmup": warmup, "predicted_ms": plan.schedule.predicted_ms,
            "records": [r.as_dict() for r in records]}


def _progress(console):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description:>14}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console or Console(stderr=True), transient=True)


def _bench_plan_row(plan, module, name, inputs, dtype, dev, want, *, iters: int, warmup: int, trust: dict):
    """The 'opara' row: the plan file loaded by the runtime, timed exactly like bench_method times a baseline."""
    import opara_runtime
    from opara_plan import OparaError
    from oparac.bench.methods import Record, measure_into

    rec = Record(model=name, batch=int(inputs[0].shape[0]) if inputs[0].dim() else 1, dtype=dtype, method="opara")
    measure_into(rec, lambda: opara_runtime.load(plan, module, device=dev, **trust), inputs, want, dev, iters=iters,
                 warmup=warmup)
    if rec.error is not None:
        raise OparaError(f"the plan could not run: {rec.error}")
    return rec


def print_bench(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    rows = result["records"]
    ref = {r["method"]: r.get("ms_b2b") for r in rows}
    table = Table(title=f"{result['model']} on {result['gpu']} ({result['dtype']}, torch {result['torch']}, "
                        f"CUDA {result['cuda']}, {result['iters']} iters)")
    for col in ("method", "b2b ms", "latency ms", "vs cudagraph", "vs eager", "setup s", "peak MB", "max abs diff"):
        table.add_column(col, justify="left" if col == "method" else "right")
    errors = []
    for r in rows:
        if "error" in r:
            table.add_row(r["method"], *["-"] * 7)
            errors.append(f"{r['method']}: {r['error']}")
            continue
        table.add_row(r["method"], f"{r['ms_b2b']:.4f}", f"{r['ms_latency']:.4f}", _speedup(ref.get("cudagraph"), r),
                      _speedup(ref.get("eager"), r), f"{r['compile_s']:.1f}", f"{r['peak_mem_mb']:.0f}",
                      f"{r['max_abs_diff']:.2e}")
    console.print(table)
    for line in errors:
        console.print(f"[red]not measured[/] {line}")
    console.print(f"predicted by the plan: {result['predicted_ms']:.4f} ms; speed-ups are back-to-back time ratios "
                  f"(above 1: faster than the baseline)")


def _speedup(base_ms, record: dict) -> str:
    if not base_ms or not record.get("ms_b2b"):
        return "-"
    return f"{base_ms / record['ms_b2b']:.2f}x"
