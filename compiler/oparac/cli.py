"""The `oparac` command line: parse options, call one library function, print. No logic lives here."""
from __future__ import annotations

import json
import sys

import click

STREAMS = ("opara", "nimble", "critical", "single")
ORDERS = ("topo", "opara", "critical")


def _err(message: str) -> None:
    click.echo(f"error: {message}", err=True)


def _progress(message: str) -> None:
    click.echo(f"[oparac] {message}", err=True)


class _Group(click.Group):
    """User errors (OparaError) print one line and exit 1; anything else is a bug and keeps its traceback."""

    def invoke(self, ctx):
        from opara_plan import OparaError

        try:
            return super().invoke(ctx)
        except OparaError as e:
            _err(str(e))
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option("0.1.0", prog_name="oparac")
def main() -> None:
    """Opara: compile a model into a multi-stream CUDA-graph plan, inspect and verify it."""


def _load_model(ref: str, shapes: str | None):
    from oparac.model_ref import load_model

    return load_model(ref, shapes)


@main.command("compile")
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="plan file to write")
@click.option("--shapes", help="input shapes, e.g. x:1x3x224x224 or ids:1x128:int64 (comma-separated)")
@click.option("--streams", type=click.Choice(STREAMS), default="opara", show_default=True)
@click.option("--order", type=click.Choice(ORDERS), default="opara", show_default=True)
@click.option("--max-streams", type=click.IntRange(min=0), default=0, show_default=True, help="0: no cap")
@click.option("--dtype", type=click.Choice(("float32", "float16", "bfloat16")), default="float32", show_default=True)
@click.option("--device", default=None, help="cuda (profile on the GPU) or cpu (cost-model preview plan)")
@click.option("--tune", is_flag=True, help="measure candidate schedules on the GPU and keep the fastest")
def compile_cmd(model, output, shapes, streams, order, max_streams, dtype, device, tune) -> None:
    """Compile MODEL (.pt2, .onnx or package.module:factory) into a plan file."""
    from oparac.pipeline import compile_ref

    plan = compile_ref(model, shapes=shapes, streams=streams, order=order, max_streams=max_streams,
                       dtype=dtype, device=device, tune=tune, progress=_progress)
    plan.save(output)
    s = plan.schedule
    click.echo(f"wrote {output}: {s.num_streams} streams, {len(s.waits)} waits, predicted "
               f"{s.predicted_ms:.3f} ms vs {plan.profile.sequential_ms:.3f} ms sequential ({plan.profile.method})")


@main.command()
@click.argument("plan", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="machine-readable summary")
def inspect(plan, as_json) -> None:
    """Summarise PLAN: nodes, kernels, streams, waits, predicted latency, target, candidates."""
    from opara_plan import load_plan
    from oparac.summary import summarize

    info = summarize(load_plan(plan))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    from oparac.report import print_summary

    print_summary(info)


@main.command()
@click.argument("plan", type=click.Path())
@click.argument("model")
@click.option("--shapes", help="input shapes when the model factory gives no example inputs")
@click.option("--device", default=None)
@click.option("--tolerance", type=float, default=None, help="relative tolerance (default per dtype)")
@click.option("--seed", type=int, default=0, show_default=True)
def verify(plan, model, shapes, device, tolerance, seed) -> None:
    """Run PLAN and MODEL on the same random inputs; exit 1 beyond tolerance."""
    from opara_plan import load_plan
    from oparac.verify import verify as run_verify

    loaded = load_plan(plan)
    model_obj, _ = _load_model(model, shapes)
    verdict = run_verify(loaded, model_obj, device=device, seed=seed, tolerance=tolerance)
    status = "OK" if verdict.ok else "MISMATCH"
    click.echo(f"{status}: {verdict.outputs} outputs, max abs diff {verdict.max_abs:.3e}, max rel diff "
               f"{verdict.max_rel:.3e} (tolerance {verdict.tolerance:.1e}, {loaded.model.precision})")
    if not verdict.ok:
        sys.exit(1)


@main.command()
@click.option("--model", "name", default="googlenet", show_default=True, help="a model of oparac.zoo")
@click.option("-o", "--output", default="demo.plan", show_default=True, type=click.Path(dir_okay=False))
@click.option("--device", default=None)
def demo(name, output, device) -> None:
    """Compile a built-in model (random weights), load the plan, check it against eager, summarise."""
    from oparac.demo import run_demo

    run_demo(name, output, device=device, progress=_progress)


if __name__ == "__main__":
    main()
