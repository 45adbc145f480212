"""`oparac demo`: the whole job on a built-in model, end to end."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from opara_plan import ModelError


def demo_output(name: str, output=None) -> Path:
    """Where the demo writes its plan: `output`, or <name>.plan in a new temporary folder, so that a demo run
    from a checkout leaves the tree as it was."""
    if output:
        return Path(output)
    return Path(tempfile.mkdtemp(prefix="opara-demo-")) / f"{name}.plan"


def run_demo(name: str, output=None, *, device=None, progress=None) -> Path:
    """Compile, save, verify and summarise zoo model `name`; return the plan's path."""
    from rich.console import Console

    from oparac.models import zoo
    from oparac.pipeline import compile
    from oparac.observe.report import print_summary
    from oparac.observe.summary import summarize
    from oparac.verify import verify

    console = Console()
    if name not in zoo.MODELS:
        raise ModelError(f"--model {name!r}: expected one of {', '.join(zoo.MODELS)}")
    model, inputs = getattr(zoo, name)()
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    path = demo_output(name, output)
    start = time.perf_counter()
    plan = compile(model, inputs, device=dev, progress=progress)
    plan.save(path)
    console.print(f"compiled {name} in {time.perf_counter() - start:.1f} s; plan written to {path}", soft_wrap=True)
    verdict = verify(plan, model, device=dev)
    console.print(f"[{'green' if verdict.ok else 'red'}]verify:[/] {verdict.describe()}", soft_wrap=True,
                  markup=True, highlight=False)
    print_summary(summarize(plan), console)
    if dev.type == "cuda":
        from oparac.bench.methods import measure_pair

        seq_ms, plan_ms = measure_pair(plan, model, dev)
        console.print(f"measured on {torch.cuda.get_device_name(dev)}: sequential CUDA graph {seq_ms:.3f} ms, "
                      f"Opara plan {plan_ms:.3f} ms, speed-up {seq_ms / plan_ms:.2f}x (back-to-back replay)")
    else:
        console.print(prediction_line(plan), soft_wrap=True)
    if not verdict.ok:
        raise ModelError(f"the plan's outputs are further from float64 than allowed: {verdict.rule()}")
    return path


def prediction_line(plan) -> str:
    """What a CPU demo can say about speed: the cost model's estimate, labelled as one (nothing ran on a GPU)."""
    s, p = plan.schedule, plan.profile
    speedup = p.sequential_ms / s.predicted_ms if s.predicted_ms > 0 else 1.0
    return (f"predicted, not measured: the cost model (no GPU here) estimates {s.predicted_ms:.3f} ms on "
            f"{s.num_streams} streams vs {p.sequential_ms:.3f} ms sequential, a predicted speed-up of {speedup:.2f}x "
            f"on a GPU; run the demo on a CUDA machine to measure it")
