"""The `oparac` command line: parse options, call one library function, print. No logic lives here."""
from __future__ import annotations

import json
import sys

import click

STREAMS = ("opara", "nimble", "critical", "window", "single")
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
    from oparac.models.reference import load_model

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
@click.option("--fuse", type=click.Choice(("inductor",)), default=None,
              help="compile each stream segment with TorchInductor (fused and parallel)")
@click.option("--cut", type=click.Choice(("maximal", "coarse")), default="maximal", show_default=True,
              help="fused segments: cut the schedule as it is, or first move small side branches onto a "
                   "neighbouring stream (fewer, bigger segments); --tune compares both")
@click.option("--devices", default=None, metavar="cuda:0,cuda:1",
              help="several GPUs (HIOS); with --device cpu they are simulated for a preview plan")
@click.option("--attention", type=click.Choice(("sdpa", "math")), default="sdpa", show_default=True,
              help="attention as one fused SDPA kernel, or as matrix products around a softmax")
@click.option("--memory-format", type=click.Choice(("auto", "contiguous", "channels_last")), default="auto",
              show_default=True, help="channels_last: 4-D weights and inputs in NHWC (convolution models); auto: "
                                      "channels_last for a --fuse plan of a convolution model, contiguous otherwise "
                                      "(with --fuse --tune the tuner tries both)")
def compile_cmd(model, output, shapes, streams, order, max_streams, dtype, device, tune, fuse, cut, devices,
                attention, memory_format) -> None:
    """Compile MODEL (.pt2, .onnx or package.module:factory) into a plan file."""
    from oparac.pipeline import compile_ref

    plan = compile_ref(model, shapes=shapes, streams=streams, order=order, max_streams=max_streams,
                       dtype=dtype, device=device, tune=tune, fuse=fuse or "", cut=cut, devices=devices,
                       attention=attention, memory_format=memory_format, progress=_progress)
    plan.save(output)
    s = plan.schedule
    gpus = f"{s.num_devices} GPUs, " if s.num_devices > 1 else ""
    fused = f"{len(plan.fusion.segments)} fused segments, " if plan.fusion.backend else ""
    click.echo(f"wrote {output}: {gpus}{s.num_streams} streams, {len(s.waits)} waits, {fused}predicted "
               f"{s.predicted_ms:.3f} ms vs {plan.profile.sequential_ms:.3f} ms sequential ({plan.profile.method})")


@main.command()
@click.argument("plan", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="machine-readable summary")
@click.option("--timeline", type=click.Path(dir_okay=False), help="Gantt chart of the schedule (.png or .svg)")
@click.option("--svg", type=click.Path(dir_okay=False), help="the Gantt chart as SVG (with or without --timeline)")
@click.option("--dot", type=click.Path(dir_okay=False), help="the op DAG as Graphviz DOT, coloured by stream")
@click.option("--aggregate", type=click.FloatRange(min=0), default=None,
              help="merge a stream's consecutive ops shorter than MS (default: automatic for big graphs; 0: off)")
@click.option("--zoom", metavar="START_MS:END_MS", help="draw only this time window")
@click.option("--measured", type=click.Path(dir_okay=False), help="draw measured times from an `oparac trace` file")
def inspect(plan, as_json, timeline, svg, dot, aggregate, zoom, measured) -> None:
    """Summarise PLAN: nodes, kernels, streams, waits, predicted latency, target, candidates."""
    from opara_plan import load_plan
    from oparac.observe.summary import summarize

    loaded = load_plan(plan)
    info = summarize(loaded)
    if timeline or svg or dot or measured or zoom or aggregate is not None:
        from pathlib import Path

        from oparac.observe.timeline import write_pictures

        written = write_pictures(loaded, timeline=timeline, svg=svg, dot=dot, aggregate_ms=aggregate, zoom=zoom,
                                 measured=measured, title=Path(plan).stem)
        click.echo(f"wrote {', '.join(written)}", err=as_json)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    from oparac.observe.report import print_summary

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
@click.option("--model", "name", default="googlenet", show_default=True, help="a model of oparac.models.zoo")
@click.option("-o", "--output", default="demo.plan", show_default=True, type=click.Path(dir_okay=False))
@click.option("--device", default=None)
def demo(name, output, device) -> None:
    """Compile a built-in model (random weights), load the plan, check it against eager, summarise."""
    from oparac.demo import run_demo

    run_demo(name, output, device=device, progress=_progress)


@main.command()
@click.argument("plan", type=click.Path())
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Chrome/Perfetto trace to write")
@click.option("--shapes", help="input shapes when the model factory gives no example inputs")
@click.option("--device", default=None, help="CUDA device, e.g. cuda:1")
@click.option("--replays", type=click.IntRange(min=1), default=20, show_default=True, help="graph replays timed")
@click.option("--timeline", type=click.Path(dir_okay=False), help="also draw the measured timeline (.png or .svg)")
def trace(plan, model, output, shapes, device, replays, timeline) -> None:
    """Replay PLAN for MODEL on the GPU under torch.profiler, a range per plan node; write a trace."""
    from oparac.observe.trace import print_trace_report, trace_plan

    print_trace_report(trace_plan(plan, model, output, shapes=shapes, device=device, replays=replays,
                                  timeline=timeline, progress=_progress))


@main.command()
@click.argument("plan_a", type=click.Path())
@click.argument("plan_b", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="machine-readable diff")
def diff(plan_a, plan_b, as_json) -> None:
    """Compare two plans: model, target, schedule, profile, predicted and measured latency."""
    from oparac.observe.diff import diff_files

    info = diff_files(plan_a, plan_b)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    from pathlib import Path

    from oparac.observe.diff import print_diff

    print_diff(info, (f"A {Path(plan_a).name}", f"B {Path(plan_b).name}"))


@main.command()
@click.argument("plan", type=click.Path())
@click.argument("model")
@click.option("--shapes", help="input shapes when the model factory gives no example inputs")
@click.option("--device", default=None, help="CUDA device, e.g. cuda:1")
@click.option("--iters", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True)
@click.option("--baselines", help="comma-separated subset of eager,cudagraph,torch_compile,ort_cuda (default: all)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable records")
def bench(plan, model, shapes, device, iters, warmup, baselines, as_json) -> None:
    """Time PLAN (as the runtime loads it) against the baselines for MODEL on the GPU."""
    from oparac.bench.cli import bench_plan, print_bench

    result = bench_plan(plan, model, shapes=shapes, device=device, iters=iters, warmup=warmup, baselines=baselines)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    print_bench(result)


if __name__ == "__main__":
    main()
