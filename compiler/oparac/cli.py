"""The `oparac` command line: parse options, call one library function, print. No logic lives here."""
from __future__ import annotations

import json
import sys

import click

from oparac import __version__
from oparac.options import (ATTENTION_MODES, CUTS, DTYPES, FUSE_BACKENDS, FUSE_MODES, MAX_STREAMS_RANGE, MEMORY_FORMATS,
                            ORDER_ALGORITHMS, STREAM_ALGORITHMS, CompileOptions, parse_device)


def _err(message: str) -> None:
    click.echo(f"error: {message}", err=True)


def _progress(message: str) -> None:
    click.echo(f"[oparac] {message}", err=True)


class _Group(click.Group):
    """A user's mistake prints one `error:` line and exits 1: a bad flag or value (click's usage errors) and an
    OparaError alike. Anything else is a bug and keeps its traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from opara_plan import OparaError

        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            # Not standalone, so that click raises its usage errors here rather than printing them its way.
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:
            hint = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) is not None else ""
            _err(f"{e.format_message().rstrip('.')}{hint}")
        except OparaError as e:
            _err(str(e))
        except click.Abort:
            _err("aborted")
        sys.exit(1)


def _device(ctx, param, value):
    from opara_plan import ModelError

    try:
        return parse_device(value)
    except ModelError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None


def device_option(help_text: str):
    return click.option("--device", default=None, callback=_device, help=help_text)


def shapes_option(help_text: str = "input shapes when the model factory gives no example inputs"):
    return click.option("--shapes", help=help_text)


def trust_options(fn):
    """The flags of every command that loads a plan to run it: whether its stored compiled code may run."""
    fn = click.option("--trusted-key", "trusted_keys", multiple=True, type=click.Path(dir_okay=False),
                      help="public key (PEM) whose signature makes a plan's stored programs trusted; repeatable "
                           "(default: the keys in $OPARA_TRUSTED_KEYS)")(fn)
    return click.option("--trust-compiled-code", is_flag=True,
                        help="run a fused plan's stored programs without a trusted signature (only for plans "
                             "from storage you trust as you trust the model's code)")(fn)


def _trust(trust_compiled_code: bool, trusted_keys: tuple[str, ...]) -> dict:
    """What opara_runtime.load takes; no --trusted-key leaves the keys to $OPARA_TRUSTED_KEYS."""
    return {"trust_compiled_code": trust_compiled_code, "trusted_keys": trusted_keys or None}


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="oparac")
def main() -> None:
    """Opara: compile a model into a multi-stream CUDA-graph plan, inspect and verify it."""


def _load_model(ref: str, shapes: str | None):
    from oparac.models.reference import load_model

    return load_model(ref, shapes)


@main.command("compile")
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="plan file to write")
@click.option("--shapes", multiple=True,
              help="input shapes, e.g. x:1x3x224x224 or ids:1x128:int64 (comma-separated, in the model's input "
                   "order); given several times, one bucket per shape set (other dynamic dimensions, e.g. "
                   "sequence length) in one plan set")
@click.option("--batch", "batches", default=None, metavar="1,2,4,8",
              help="shape buckets: one plan per batch size (every input's leading dimension) in one plan set; the "
                   "runtime runs the smallest that fits a call and pads its batch")
@click.option("--streams", type=click.Choice(STREAM_ALGORITHMS), default="opara", show_default=True)
@click.option("--order", type=click.Choice(ORDER_ALGORITHMS), default="opara", show_default=True)
@click.option("--max-streams", type=click.IntRange(*MAX_STREAMS_RANGE), default=0, show_default=True,
              help="0: no cap")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True)
@device_option("cuda[:N] (profile on the GPU) or cpu (cost-model preview plan); default: the GPU if there is one")
@click.option("--tune", is_flag=True, help="measure candidate schedules on the GPU and keep the fastest")
@click.option("--fuse", type=click.Choice(FUSE_BACKENDS), default=None,
              help="compile each stream segment with TorchInductor (fused and parallel)")
@click.option("--cut", type=click.Choice(CUTS), default="maximal", show_default=True,
              help="fused segments: cut the schedule as it is, or first move small side branches onto a "
                   "neighbouring stream (fewer, bigger segments); --tune compares both")
@click.option("--fuse-mode", type=click.Choice(FUSE_MODES), default="auto", show_default=True,
              help="segments: inductor fuses inside each stream segment; kernels: inductor fuses the whole graph "
                   "and its kernels go on streams; auto: kernels, and segments too where the profile says they "
                   "could clearly beat them; the faster is kept (GPU)")
@click.option("--devices", default=None, metavar="cuda:0,cuda:1",
              help="several GPUs (HIOS); with --device cpu they are simulated for a preview plan")
@click.option("--attention", type=click.Choice(ATTENTION_MODES), default="sdpa", show_default=True,
              help="attention as one fused SDPA kernel, or as matrix products around a softmax")
@click.option("--memory-format", type=click.Choice(MEMORY_FORMATS), default="auto",
              show_default=True, help="channels_last: 4-D weights and inputs in NHWC (convolution models); auto: "
                                      "channels_last for a --fuse plan of a convolution model, contiguous otherwise "
                                      "(with --fuse --tune the tuner tries both)")
@click.option("--sign-key", type=click.Path(dir_okay=False), envvar="OPARA_SIGNING_KEY", show_envvar=True,
              help="Ed25519 private key (PEM, from `oparac keygen`) to sign the plan with")
@click.option("--no-guard", is_flag=True,
              help="skip measuring the plan against one stream before writing it (GPU; untuned plans)")
@click.option("--merge-projections/--no-merge-projections", default=True, show_default=True,
              help="linears reading the same activation (BERT's Q/K/V, Llama's gate and up) as one GEMM over "
                   "their weights, stacked at load (PyTorch models)")
@click.option("--merge-convolutions/--no-merge-convolutions", default=True, show_default=True,
              help="convolutions reading the same activation with the same kernel size, stride and padding (an "
                   "Inception block's 1x1 convs) as one over their weights, stacked at load (PyTorch models)")
def compile_cmd(model, output, shapes, batches, streams, order, max_streams, dtype, device, tune, fuse, cut, fuse_mode,
                devices, attention, memory_format, sign_key, no_guard, merge_projections, merge_convolutions) -> None:
    """Compile MODEL (.pt2, .onnx or package.module:factory) into a plan file (a plan set with --batch or several
    --shapes)."""
    from oparac.pipeline import compile_ref

    shape_sets, shapes = shapes, (shapes[0] if shapes else None)
    options = CompileOptions(streams=streams, order=order, max_streams=max_streams, dtype=dtype, device=device,
                             tune=tune, shapes=shapes, fuse=fuse, cut=cut, fuse_mode=fuse_mode, devices=devices,
                             attention=attention,
                             memory_format=memory_format, guard=not no_guard, merge_projections=merge_projections,
                             merge_convolutions=merge_convolutions)
    key = None
    if sign_key:
        from opara_plan.signing import load_private_key

        key = load_private_key(sign_key)  # before compiling: a bad key fails now, not after a long tune
    if batches is not None or len(shape_sets) > 1:
        from oparac.buckets import compile_buckets_ref, sign_plan_set
        from oparac.observe.buckets import describe_set

        plan_set = compile_buckets_ref(model, options, batches=batches, shapes=shape_sets, progress=_progress)
        if key is not None:
            plan_set = sign_plan_set(plan_set, key)
        plan_set.save(output)
        click.echo(f"wrote {output}: {describe_set(plan_set)}{', signed' if key is not None else ''}")
        return
    plan = compile_ref(model, options, progress=_progress)
    signed = ""
    if key is not None:
        from opara_plan.signing import sign_plan

        plan = sign_plan(plan, key)
        signed = f", signed by key {plan.signature[0].key_id}"
    plan.save(output)
    s = plan.schedule
    gpus = f"{s.num_devices} GPUs, " if s.num_devices > 1 else ""
    fused = f"{len(plan.fusion.segments)} fused segments, " if plan.fusion.backend else ""
    if plan.fusion.mode == "kernels":
        k = plan.fusion.kernels
        fused = f"whole graph fused, {len(k.stream)} kernels on {k.num_streams} streams, "
    click.echo(f"wrote {output}: {gpus}{s.num_streams} streams, {len(s.waits)} waits, {fused}predicted "
               f"{s.predicted_ms:.3f} ms vs {plan.profile.sequential_ms:.3f} ms sequential ({plan.profile.method})"
               f"{signed}")


@main.command()
@click.argument("private_key", type=click.Path(dir_okay=False))
@click.argument("public_key", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="replace existing key files (plans signed with the old key stop "
                                            "being trusted)")
def keygen(private_key, public_key, force) -> None:
    """Write a new Ed25519 key pair: PRIVATE_KEY signs plans (`compile --sign-key`), PUBLIC_KEY goes to the
    machines that load them (`--trusted-key`, $OPARA_TRUSTED_KEYS)."""
    from opara_plan.signing import generate_key

    key_id = generate_key(private_key, public_key, overwrite=force)
    click.echo(f"wrote {private_key} (private, keep it secret) and {public_key} (public): key {key_id}")


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
@click.option("--trusted-key", "trusted_keys", multiple=True, type=click.Path(dir_okay=False),
              help="public key (PEM) to check the plan's signature against; repeatable (default: $OPARA_TRUSTED_KEYS)")
@click.option("--bucket", type=click.IntRange(min=0), default=None,
              help="a plan set: show bucket INDEX's plan (as a plain plan) instead of the set")
@click.option("--measure", "measure_model", default=None, metavar="MODEL",
              help="a plan set: load it for MODEL on the GPU and show each bucket's measured graph memory")
def inspect(plan, as_json, timeline, svg, dot, aggregate, zoom, measured, trusted_keys, bucket, measure_model) -> None:
    """Summarise PLAN: nodes, kernels, streams, waits, predicted latency, target, candidates, digest, signature;
    for a plan set, its buckets and their graph memory."""
    from opara_plan import PlanSet, load_artifact
    from oparac.observe.summary import summarize
    from oparac.observe.trust import integrity, integrity_lines

    loaded = load_artifact(plan)
    if bucket is not None or measure_model:
        from oparac.buckets import bucket_plan, measure_set
    if isinstance(loaded, PlanSet) and bucket is None:
        from oparac.observe.buckets import print_set_summary, summarize_set

        set_info = summarize_set(loaded, measure_set(loaded, measure_model) if measure_model else None,
                                 integrity=lambda p: integrity(p, trusted_keys))
        if as_json:
            click.echo(json.dumps(set_info, indent=2))
        else:
            print_set_summary(set_info)
        return
    if bucket is not None:
        loaded = bucket_plan(loaded, bucket)
    elif measure_model:
        measure_set(loaded, measure_model)  # refuses a single plan
    info = summarize(loaded)
    info["integrity"] = integrity(loaded, trusted_keys)
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
    for line in integrity_lines(info["integrity"], bool(loaded.fusion.programs)):
        click.echo(line)


@main.command()
@click.argument("plan", type=click.Path())
@click.argument("model")
@shapes_option()
@device_option("cpu or cuda[:N] to run the plan on (default: the plan's target kind)")
@click.option("--tolerance", type=float, default=None, help="relative tolerance (default per dtype)")
@click.option("--seed", type=int, default=0, show_default=True)
@trust_options
def verify(plan, model, shapes, device, tolerance, seed, trust_compiled_code, trusted_keys) -> None:
    """Run PLAN and MODEL on the same random inputs; judge the plan against a float64 reference relative to
    eager's own error (the rule is printed); exit 1 beyond it."""
    from opara_plan import load_plan
    from oparac.verify import verify as run_verify

    loaded = load_plan(plan)
    model_obj, _ = _load_model(model, shapes)
    verdict = run_verify(loaded, model_obj, device=device, seed=seed, tolerance=tolerance,
                         **_trust(trust_compiled_code, trusted_keys))
    click.echo(verdict.describe())
    if not verdict.ok:
        sys.exit(1)


@main.command()
@click.option("--model", "name", default="googlenet", show_default=True, help="a model of oparac.models.zoo")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="plan file to write (default: MODEL.plan in a new temporary folder, named in the output)")
@device_option("cpu or cuda[:N] (default: the GPU if there is one)")
def demo(name, output, device) -> None:
    """Compile a built-in model (random weights), load the plan, check it against eager, summarise."""
    from oparac.demo import run_demo

    run_demo(name, output, device=device, progress=_progress)


@main.command()
@click.argument("plan", type=click.Path())
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Chrome/Perfetto trace to write")
@shapes_option()
@device_option("CUDA device, e.g. cuda:1")
@click.option("--replays", type=click.IntRange(min=1), default=20, show_default=True, help="graph replays timed")
@click.option("--timeline", type=click.Path(dir_okay=False), help="also draw the measured timeline (.png or .svg)")
@trust_options
def trace(plan, model, output, shapes, device, replays, timeline, trust_compiled_code, trusted_keys) -> None:
    """Replay PLAN for MODEL on the GPU under torch.profiler, a range per plan node; write a trace."""
    from oparac.observe.trace import print_trace_report, trace_plan

    print_trace_report(trace_plan(plan, model, output, shapes=shapes, device=device, replays=replays,
                                  timeline=timeline, progress=_progress, **_trust(trust_compiled_code, trusted_keys)))


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
@shapes_option()
@device_option("CUDA device, e.g. cuda:1")
@click.option("--iters", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True)
@click.option("--baselines", help="comma-separated subset of eager,cudagraph,torch_compile,ort_cuda (default: all)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable records")
@trust_options
def bench(plan, model, shapes, device, iters, warmup, baselines, as_json, trust_compiled_code, trusted_keys) -> None:
    """Time PLAN (as the runtime loads it) against the baselines for MODEL on the GPU."""
    from oparac.bench.cli import bench_plan, print_bench

    result = bench_plan(plan, model, shapes=shapes, device=device, iters=iters, warmup=warmup, baselines=baselines,
                        **_trust(trust_compiled_code, trusted_keys))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    print_bench(result)


if __name__ == "__main__":
    main()
