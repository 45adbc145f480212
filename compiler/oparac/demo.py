"""`oparac demo`: the whole job on a built-in model, end to end."""
from __future__ import annotations

import time

import torch

from opara_plan import ModelError


def run_demo(name: str, output: str, *, device=None, progress=None) -> None:
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
    start = time.perf_counter()
    plan = compile(model, inputs, device=dev, progress=progress)
    plan.save(output)
    console.print(f"compiled {name} in {time.perf_counter() - start:.1f} s -> {output}")
    verdict = verify(plan, model, device=dev)
    console.print(f"[{'green' if verdict.ok else 'red'}]verify: {'OK' if verdict.ok else 'MISMATCH'}[/] "
                  f"max rel diff {verdict.max_rel:.2e} (tolerance {verdict.tolerance:.0e}) against eager PyTorch")
    print_summary(summarize(plan), console)
    if dev.type == "cuda":
        from oparac.bench.methods import measure_pair

        seq_ms, plan_ms = measure_pair(plan, model, dev)
        console.print(f"on {torch.cuda.get_device_name(dev)}: sequential CUDA graph {seq_ms:.3f} ms, Opara plan "
                      f"{plan_ms:.3f} ms, speed-up {seq_ms / plan_ms:.2f}x (back-to-back replay)")
    if not verdict.ok:
        raise ModelError(f"the plan's outputs differ from eager PyTorch by {verdict.max_rel:.2e} relative")
