"""compile(): the compiler pipeline as a literal sequence of stages."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from opara_plan import (Graph, ModelError, ModelInfo, Plan, Profile, Target, TensorSpec, Tool, graph_fingerprint,
                        validate)
from opara_plan.validate import require_allowed_ops
from oparac import __version__
from oparac.ingest.graph_builder import GraphBuilder
from oparac.options import CompileOptions
from oparac.profile import cost_model
from oparac.profile.gpus import gpu_spec
from oparac.profile.links import measure_links, nominal_links
from oparac.progress import Progress, StageError, Stages, as_progress
from oparac.schedule.build import make_schedule
from oparac.schedule.placement import make_device_schedule, with_placement

__all__ = ["CompileOptions", "StageError", "compile", "compile_ref"]


def compile(model, example_inputs=None, options: CompileOptions | None = None, *, progress=None,
            profile_cache=None, **keywords) -> Plan:
    """Compile a model (nn.Module, fx.GraphModule, ExportedProgram or .onnx path) into a plan.

    options: a CompileOptions; keywords (streams=, tune=, fuse=, ...) build one or replace its fields, and an
    unknown keyword is a ModelError listing the valid ones. progress: a Progress hook (oparac.progress) told of
    every stage's start, end and time, or a callable taking one line of text. profile_cache: a ProfileCache,
    or None for the default one (GPU profiles only).

    device: 'cpu' builds a preview plan from the analytic cost model; 'cuda' (default when a GPU is
    present) profiles every op on the GPU. tune=True measures candidate schedules on the GPU and keeps
    the fastest (never slower than one stream). fuse='inductor' compiles each stream segment with
    TorchInductor (measured and, with tune, chosen against the unfused plan on the GPU). cut says how a fused
    plan's schedule becomes segments: 'maximal' cuts the schedule as it is, 'coarse' first moves small side
    branches onto a neighbouring stream (fewer, bigger segments, fewer waits); with tune=True the fused tuner
    compares both itself, as it compares stream algorithms. shapes fixes the
    symbolic input dimensions of an .onnx model: 'x:1x3x224x224,ids:1x128:int64' or
    {'x': (1, 3, 224, 224), 'ids': ((1, 128), 'int64')}.

    devices: several GPUs, e.g. ['cuda:0', 'cuda:1'] (HIOS-LP maps ops onto them, streams are scheduled
    per GPU); the copy cost between each pair is measured on the GPUs, or with device='cpu' taken from
    `links` (default: a nominal NVLink-class model) for a preview plan. With tune=True the best single-GPU
    candidates are measured too and the fastest plan wins, so it uses one GPU where more do not help.

    attention: 'sdpa' keeps scaled_dot_product_attention as one fused kernel; 'math' lowers it to matrix
    products around a softmax (PyTorch models; ONNX exports already spell attention out that way).

    memory_format: 'channels_last' runs the plan with 4-D floating-point weights and inputs in NHWC (what
    cuDNN's tensor-core convolutions want); ops are profiled in that layout. Outputs stay contiguous.
    'contiguous' keeps NCHW. 'auto' (default) is channels_last for an untuned fused plan of a model with 4-D
    weights and contiguous otherwise; with tune=True and fuse the fused tuner tries both layouts.
    """
    from oparac.fuse.segments import resolve_memory_format

    opts = CompileOptions.from_keywords(options, **keywords)
    hook = as_progress(progress)
    stages = Stages(hook)
    gpus = opts.devices or ()
    dev = resolve_device(opts, hook)
    builder, source = stages.run("ingest", "exporting the model to ATen", lambda: ingest(
        model, example_inputs, opts.dtype, opts.shapes, opts.attention, merge=opts.merged_kinds))
    if opts.merged_kinds:
        note_merge(builder, hook)
    graph = builder.build()
    require_allowed_ops(graph)  # refused now, naming the op, not after profiling by the final validate()
    memory_format, why = resolve_memory_format(opts.memory_format, graph, opts.fuse, opts.tune)
    if why:
        hook.note(f"layout: {memory_format} (memory_format='auto'; {why})")
    target, profile = stages.run("profile", f"{sum(n.kind == 'op' for n in graph.nodes)} ops on {dev}", lambda: (
        profile_stage(graph, dev, opts, profile_cache, hook, memory_format)))
    if len(gpus) > 1:
        target, profile = stages.run("links", f"copy costs between {len(gpus)} GPUs", lambda: link_stage(
            gpus, dev, target, profile, opts.links, hook))
    single = stages.run("schedule", f"streams={opts.streams} order={opts.order} max_streams={opts.max_streams}",
                        lambda: make_schedule(graph, profile.ops, streams=opts.streams, order=opts.order,
                                              max_streams=opts.max_streams, gpu=gpu_spec(target)))
    if single.predicted_ms > 0:  # what the fused guard's prediction (search.guard.segments_cannot_pay) reads
        n = single.num_streams
        hook.note(f"schedule: {n} stream{'s' if n > 1 else ''}, predicted {single.predicted_ms:.4f} ms against "
                  f"{profile.sequential_ms:.4f} ms on one stream ({profile.sequential_ms / single.predicted_ms:.2f}x)")
    plan = assemble(graph, builder, source, opts.dtype, target, single, profile, memory_format)
    if len(gpus) > 1 and not opts.tune:
        plan = stages.run("devices", f"mapping ops onto {len(gpus)} GPUs (HIOS-LP)", lambda: with_placement(
            plan, make_device_schedule(graph, profile.ops, links=profile.links, num_devices=len(gpus),
                                       streams=opts.streams, order=opts.order, max_streams=opts.max_streams)))
    weights = None
    if dev.type == "cuda" and (opts.tune or opts.fuse or opts.guard):
        # Bound once: the tuner's and the fuser's runners all share this one copy on the GPU.
        weights = stages.run("bind", f"the model's weights onto {dev}", lambda: bind_weights(model, plan, dev))
    if opts.tune and len(gpus) > 1:
        from oparac.search.tune import tune_devices

        plan = stages.run("tune", f"measuring single- and {len(gpus)}-GPU candidate schedules", lambda: tune_devices(
            plan, weights, [torch.device(g) for g in gpus], hook))
    elif opts.tune:
        from oparac.search.tune import tune_plan

        plan = stages.run("tune", "measuring candidate schedules", lambda: tune_plan(plan, weights, dev, hook))
    if opts.fuse:
        plan = stages.run("fuse", fuse_detail(opts, dev), lambda: fuse_stage(plan, weights, dev, opts, hook,
                                                                              profile_cache))
    if guarded(opts, dev) and not opts.fuse:  # a fused plan is guarded inside the fuse stage, where it was timed
        from oparac.search.guard import guard_unfused

        plan = stages.run("guard", "measuring the plan against one stream", lambda: guard_unfused(
            plan, weights, dev, hook.note))
    validate(plan)
    return plan


def resolve_device(opts: CompileOptions, progress: Progress) -> torch.device:
    """The device compile() profiles on: the one named, else the first of `devices` or the GPU when there is
    one, else the CPU (a cost-model preview plan, which `progress` is told about)."""
    gpus = opts.devices or ()
    cuda = torch.cuda.is_available()
    if opts.device is None and not cuda:
        progress.note("device: no CUDA GPU here, so the plan is a preview from the analytic cost model (its "
                      "schedule is predicted, not measured); compile on a GPU to profile it, or pass --device cpu "
                      "to ask for a preview")
    name = opts.device or (gpus[0] if gpus and cuda else "cuda" if cuda else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not cuda:
        raise ModelError(f"device {name!r}: CUDA is not available here; use --device cpu for a preview plan")
    if gpus and dev.type == "cuda":
        dev = _check_gpus(gpus)
    if opts.tune and dev.type != "cuda":
        raise ModelError("--tune measures schedules on the GPU; no CUDA device is in use")
    return dev


def guarded(opts: CompileOptions, dev: torch.device) -> bool:
    """The guard runs on an untuned single-GPU plan compiled on a GPU (a tuned plan already measured one
    stream among its candidates; a multi-GPU plan is chosen against one GPU only by --tune)."""
    return opts.guard and dev.type == "cuda" and not opts.tune and len(opts.devices or ()) <= 1


def fuse_detail(opts: CompileOptions, dev: torch.device) -> str:
    if dev.type != "cuda":
        return f"cutting segments for {opts.fuse} ({opts.cut} cut; compiled when the plan is loaded on a GPU)"
    if opts.tune:
        return f"measuring fused candidates ({opts.fuse} compiles each segment)"
    if guarded(opts, dev) and opts.fuse_mode == "auto":
        return (f"compiling with {opts.fuse}: the whole graph, its kernels on streams; segments ({opts.cut} cut) "
                f"too where the profile says they could beat it")
    return f"compiling segments with {opts.fuse} ({opts.cut} cut)"


def fuse_stage(plan: Plan, weights: dict | None, dev: torch.device, opts: CompileOptions, progress: Progress,
               profile_cache=None) -> Plan:
    """Fusion of `plan`: on the CPU its segments only (they run unfused there); on the GPU compiled and measured,
    or with opts.tune chosen among fused candidates and the plan itself. An untuned 'auto' plan is guarded
    (oparac.search.guard): the whole graph is compiled first and its kernels put on streams, and segments are
    compiled too only where the profile says they could clearly beat that. weights: bound on `dev`
    (bind_weights)."""
    from oparac.fuse.segments import fuse_plan, measure_fused, measure_fused_runner
    from oparac.search.fused import tune_fused

    if dev.type != "cuda":
        if opts.fuse_mode == "kernels":
            raise ModelError("fuse_mode 'kernels' puts the compiled program's measured kernels on streams: compile "
                             "on a GPU (or use fuse_mode 'segments' for a preview plan)")
        return fuse_plan(plan, opts.fuse, cut=opts.cut)
    if opts.fuse_mode == "kernels" and not opts.tune:
        from opara_runtime.fused.wrapper_ir import WrapperFormatError
        from oparac.search.kernels import kernel_fused, unreadable_program

        try:
            return kernel_fused(plan, weights, dev, opts.fuse, progress).plan
        except WrapperFormatError as e:
            raise unreadable_program(e) from e
    if opts.tune:
        def nhwc_profile():
            progress.note("fuse: profiling the ops in channels_last for the NHWC candidates")
            return profile_graph(plan.graph, dev, plan.model.precision, profile_cache, progress, "channels_last")[1]
        # A layout the caller named is kept; 'auto' lets the tuner try NHWC too.
        return tune_fused(plan, weights, dev, opts.fuse, progress,
                          nhwc_profile if opts.memory_format == "auto" else None, mode=opts.fuse_mode)
    # The fused plan's last rival, the unfused plan on one stream, in the layout an unfused plan gets.
    unfused_layout = "contiguous" if opts.memory_format == "auto" else None
    if guarded(opts, dev) and opts.fuse_mode == "auto":
        from oparac.search.guard import guard_kernels_first, segments_cannot_pay

        kept = guard_kernels_first(plan, weights, dev, opts.fuse, progress.note, ruled_out=segments_cannot_pay(plan),
                                   cut=opts.cut, unfused_layout=unfused_layout)
        if kept is not None:
            return kept
        # else the whole graph's kernels could not be put on streams (or it failed): the segment plan is guarded,
        # and its segments are cut from a schedule on measured op times
        if plan.profile.method == "cost-model" and plan.target.device_type == "cuda":  # profile_stage's estimate
            plan = measured_profile(plan, dev, opts, profile_cache, progress)
    if not guarded(opts, dev):
        return measure_fused(fuse_plan(plan, opts.fuse, cut=opts.cut), weights, dev)[0]
    from oparac.search.guard import guard_fused

    fused, replay_ms, runner = measure_fused_runner(fuse_plan(plan, opts.fuse, cut=opts.cut), weights, dev)
    return guard_fused(fused, replay_ms, weights, dev, opts.fuse, progress.note, runner=runner,
                       unfused_layout=unfused_layout)


def link_stage(gpus, dev: torch.device, target: Target, profile: Profile, links,
               progress: Progress) -> tuple[Target, Profile]:
    """The copy cost of every GPU pair: measured on the GPUs, or given/nominal for simulated devices."""
    if dev.type == "cuda":
        if links is not None:
            raise ModelError("links: measured on the GPUs; pass links only for a preview (device='cpu')")
        progress.note(f"links: timing copies between {len(gpus)} GPUs")
        return target, dataclasses.replace(profile, links=measure_links(gpus), links_method="cuda-events")
    target = dataclasses.replace(target, device_count=len(gpus))
    links = nominal_links(len(gpus)) if links is None else tuple(links)
    return target, dataclasses.replace(profile, links=links, links_method="nominal")


def _check_gpus(gpus) -> torch.device:
    count = torch.cuda.device_count()
    for g in gpus:
        if torch.device(g).index >= count:
            raise ModelError(f"devices: {g} does not exist, this machine has {count} GPUs (cuda:0..cuda:{count - 1})")
    return torch.device(gpus[0])


def cast_model(model, example_inputs, dtype: str):
    """A copy of the model and inputs in `dtype` (floating tensors only); float32 leaves them as given."""
    if dtype == "float32":
        return model, tuple(example_inputs)
    dt = getattr(torch, dtype)
    model = copy.deepcopy(model).to(dt)
    inputs = tuple(x.to(dt) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
                   for x in example_inputs)
    return model, inputs


def compile_ref(ref: str, options: CompileOptions | None = None, *, progress=None, profile_cache=None,
                **keywords) -> Plan:
    """compile() for a model named on the command line (.pt2, .onnx or package.module:factory). options.shapes
    gives a PyTorch model's example inputs (checked against the inputs it takes) or an .onnx model's shapes."""
    from oparac.ingest.input_names import check_shapes_fit
    from oparac.models.reference import load_model, parse_shapes

    opts = CompileOptions.from_keywords(options, **keywords)
    model, inputs = load_model(ref, opts.shapes)
    if not isinstance(model, Path):  # a PyTorch model: the shapes made its example inputs
        check_shapes_fit(model, parse_shapes(opts.shapes), ref)
        opts = dataclasses.replace(opts, shapes=None)
    return compile(model, inputs, opts, progress=progress, profile_cache=profile_cache)


def note_merge(builder: GraphBuilder, hook) -> None:
    """What merge_projections did: how many projections it merged, or why it gave up (a consumer that cannot
    view a slice, torch_fx.graph_from_exported); nothing where the model has none to merge (the default)."""
    linears, groups = builder.merged_projections
    if builder.merge_refused:
        hook.note(f"ingest: projections not merged ({builder.merge_refused}); compiling them as they are")
    elif linears:
        hook.note(f"ingest: {linears} projections merged into {groups} ops over stacked weights")


def ingest(model, example_inputs, dtype: str, shapes: str | dict | None = None,
           attention: str = "sdpa", fold: bool = True, merge: tuple[str, ...] = ()) -> tuple[GraphBuilder, str]:
    """The plan graph of a model and the front end that made it. fold=False keeps input-independent values as ops
    (the allowlist generator reads every op the front ends can emit: a model over the folding budget keeps them).
    merge: the kinds of sibling ops ("linear", "convolution") merged into one (PyTorch modules and
    ExportedPrograms; ingest/merge_projections.py)."""
    from oparac.ingest.attention import decompositions
    from oparac.ingest.torch_fx import graph_from_exported, graph_from_fx, graph_from_module

    if isinstance(model, (str, Path)) and str(model).endswith(".onnx"):
        from oparac.ingest.onnx_import import graph_from_onnx
        from oparac.models.reference import parse_shapes

        return graph_from_onnx(Path(model), parse_shapes(shapes), dtype), "onnx"

    if isinstance(model, torch.export.ExportedProgram):
        if dtype != "float32":
            raise ModelError("an ExportedProgram is compiled in the dtype it was exported in; pass the "
                             "nn.Module to compile in another dtype")
        return (graph_from_exported(model.run_decompositions(decompositions(attention)), fold=fold, merge=merge),
                "torch.export")
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"model: expected an nn.Module, fx.GraphModule or ExportedProgram, "
                         f"found {type(model).__name__}")
    if example_inputs is None:
        raise ModelError("example_inputs: a PyTorch model needs example inputs to fix its shapes")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    model, example_inputs = cast_model(model, example_inputs, dtype)
    if isinstance(model, torch.fx.GraphModule):
        return graph_from_fx(model, example_inputs, decompositions=decompositions(attention), fold=fold)
    # graph_from_module exports in eval mode, warns if the model was in train mode, and restores the mode.
    return graph_from_module(model, example_inputs, decompositions=decompositions(attention), fold=fold, merge=merge)


def model_weights(model) -> dict:
    from opara_runtime.bind import weights_of

    if isinstance(model, torch.export.ExportedProgram):
        return dict(model.state_dict) | dict(model.constants)
    return weights_of(model)  # nn.Module or .onnx path


def bind_weights(model, plan: Plan, device: torch.device) -> dict:
    """The model's weights on `device` in the plan's dtype and layout, each copied once: what every runner the
    tuners and the fuser build shares."""
    from opara_runtime.bind import weights_on_device

    return weights_on_device(plan, model_weights(model), device)


def profile_stage(graph: Graph, dev: torch.device, opts: CompileOptions, cache, progress: Progress,
                  memory_format: str = "contiguous") -> tuple[Target, Profile]:
    """The op profile the compile schedules on. The default fused compile on a GPU (guarded, fuse_mode 'auto')
    needs measured op times only to forecast whether fused segments could beat the whole graph's kernels on
    streams. Where the unfused schedule on the cost model's op times already rules segments out (one stream, or
    too little predicted gain: guard.segments_ruled_out), the ops are not timed, which took 0.9-3.3 s of such a
    compile on an H100 or H200, and the plan carries the estimate (Profile.method 'cost-model'); the kernels it
    runs are measured by the kernel search either way. Everywhere else the ops are timed (docs/design.md 4)."""
    if deferred_profile(opts, dev):
        from oparac.profile.profiler import gpu_target
        from oparac.search.guard import segments_ruled_out

        target = gpu_target(dev)
        ops = cost_model.estimate(graph, gpu_spec(target), opts.dtype)
        estimate = Profile(method="cost-model", ops=ops, sequential_ms=sum(o.ms for o in ops))
        schedule = make_schedule(graph, ops, streams=opts.streams, order=opts.order, max_streams=opts.max_streams,
                                 gpu=gpu_spec(target))
        why = segments_ruled_out(schedule, estimate)
        if why is not None:
            progress.note(f"profile: ops not timed ({why}): the plan keeps the cost model's op times")
            return target, estimate
    return profile_graph(graph, dev, opts.dtype, cache, progress, memory_format)


def measured_profile(plan: Plan, dev: torch.device, opts: CompileOptions, cache, progress: Progress) -> Plan:
    """`plan` with its ops timed on `dev` and its schedule made again on those times (profile_stage left the cost
    model's)."""
    progress.note("profile: timing the ops after all: the segments are cut from their schedule")
    _, profile = profile_graph(plan.graph, dev, opts.dtype, cache, progress, plan.model.memory_format)
    schedule = make_schedule(plan.graph, profile.ops, streams=opts.streams, order=opts.order,
                             max_streams=opts.max_streams, gpu=gpu_spec(plan.target))
    return dataclasses.replace(plan, profile=profile, schedule=schedule)


def deferred_profile(opts: CompileOptions, dev: torch.device) -> bool:
    """Whether the compile times its ops only where the cost model leaves segments worth forecasting: the guarded
    default fused compile on one GPU (a tuned, unfused, segment-mode or multi-GPU compile schedules on measured
    op times)."""
    return bool(opts.fuse) and guarded(opts, dev) and opts.fuse_mode == "auto"


def profile_graph(graph: Graph, device: torch.device, dtype: str, cache, progress: Progress,
                  memory_format: str = "contiguous") -> tuple[Target, Profile]:
    if device.type == "cpu":
        target = Target(device_type="cpu", torch=torch.__version__)
        ops = cost_model.estimate(graph, gpu_spec(target), dtype)
        return target, Profile(method="cost-model", ops=ops, sequential_ms=sum(o.ms for o in ops))
    from oparac.profile.profiler import profile_on_gpu

    return profile_on_gpu(graph, device, dtype, cache, progress, memory_format)


def assemble(graph: Graph, builder: GraphBuilder, source: str, dtype: str, target: Target, schedule,
             profile: Profile, memory_format: str = "contiguous") -> Plan:
    nodes = graph.nodes
    inputs = tuple(TensorSpec(n.name, n.outputs[0].shape, n.outputs[0].dtype) for n in nodes if n.kind == "input")
    outputs = []
    for k, ref in enumerate(nodes[-1].args):
        meta = nodes[ref.node].outputs[ref.index]
        outputs.append(TensorSpec(f"output_{k}", meta.shape, meta.dtype))
    model = ModelInfo(source=source, fingerprint=graph_fingerprint(graph), inputs=inputs, outputs=tuple(outputs),
                      output_tree=builder.tree, precision=dtype, memory_format=memory_format)
    return Plan(tool=Tool("oparac", __version__), model=model, target=target, graph=graph, schedule=schedule,
                profile=profile)
