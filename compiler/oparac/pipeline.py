"""compile(): the compiler pipeline as a literal sequence of stages."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Callable

import torch

from opara_plan import (MEMORY_FORMATS, Graph, Link, ModelError, ModelInfo, OparaError, Plan, Profile, Target,
                        TensorSpec, Tool, graph_fingerprint, validate)
from oparac.profile import cost_model
from oparac.schedule.placement import make_device_schedule, with_placement
from oparac.ingest.graph_builder import GraphBuilder
from oparac.ingest.attention import ATTENTION
from oparac.profile.links import measure_links, nominal_links, parse_devices
from oparac.schedule.build import make_schedule

TOOL_VERSION = "0.1.0"
DTYPES = ("float32", "float16", "bfloat16")
MEMORY_FORMAT_CHOICES = ("auto",) + MEMORY_FORMATS  # what compile() takes; a plan records a resolved one


class StageError(OparaError):
    """A stage failed; the message says which and what came before."""


def compile(model, example_inputs=None, *, streams: str = "opara", order: str = "opara", max_streams: int = 0,
            dtype: str = "float32", device=None, tune: bool = False, progress: Callable[[str], None] | None = None,
            profile_cache=None, shapes: str | dict | None = None, fuse: str = "", cut: str = "maximal", devices=None,
            links: tuple[Link, ...] | None = None, attention: str = "sdpa", memory_format: str = "auto") -> Plan:
    """Compile a model (nn.Module, fx.GraphModule, ExportedProgram or .onnx path) into a plan.

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
    from oparac.fuse.segments import BACKENDS, CUTS, resolve_memory_format

    say = progress or (lambda msg: None)
    if dtype not in DTYPES:
        raise ModelError(f"dtype: expected one of {DTYPES}, found {dtype!r}")
    if fuse and fuse not in BACKENDS:
        raise ModelError(f"fuse: expected one of {BACKENDS}, found {fuse!r}")
    if cut not in CUTS:
        raise ModelError(f"cut: expected one of {CUTS}, found {cut!r}")
    if cut != "maximal" and not fuse:
        raise ModelError(f"cut {cut!r}: applies to fused plans only; add fuse='inductor' (--fuse inductor)")
    if attention not in ATTENTION:
        raise ModelError(f"attention: expected one of {ATTENTION}, found {attention!r}")
    if memory_format not in MEMORY_FORMAT_CHOICES:
        raise ModelError(f"memory_format: expected one of {MEMORY_FORMAT_CHOICES}, found {memory_format!r}")
    gpus = parse_devices(devices) if devices is not None else ()
    if gpus and fuse and len(gpus) > 1:
        raise ModelError("fuse: fused plans run on one GPU; compile with one device or without --fuse")
    dev = _device(device if device is not None or not gpus or not torch.cuda.is_available() else gpus[0])
    if gpus and dev.type == "cuda":
        dev = _check_gpus(gpus)
    if tune and dev.type != "cuda":
        raise ModelError("--tune measures schedules on the GPU; no CUDA device is in use")
    say("ingest: exporting the model to ATen")
    builder, source = _stage("ingest", "", lambda: ingest(model, example_inputs, dtype, shapes, attention))
    graph = builder.build()
    requested, memory_format = memory_format, resolve_memory_format(memory_format, graph, fuse, tune)
    if requested == "auto" and memory_format == "channels_last":
        say(f"layout: {memory_format} (memory_format='auto'; a fused plan of a model with 4-D weights)")
    say(f"profile: {sum(n.kind == 'op' for n in graph.nodes)} ops on {dev}")
    target, profile = _stage("profile", "ingest", lambda: profile_graph(graph, dev, dtype, profile_cache, say,
                                                                        memory_format))
    if len(gpus) > 1:
        target, profile = _stage("links", "ingest, profile", lambda: link_stage(gpus, dev, target, profile, links, say))
    say(f"schedule: streams={streams} order={order} max_streams={max_streams}")
    single = _stage("schedule", "ingest, profile", lambda: make_schedule(
        graph, profile.ops, streams=streams, order=order, max_streams=max_streams))
    plan = assemble(graph, builder, source, dtype, target, single, profile, memory_format)
    if len(gpus) > 1 and not tune:
        say(f"devices: mapping ops onto {len(gpus)} GPUs (HIOS-LP)")
        plan = _stage("devices", "ingest, profile", lambda: with_placement(plan, make_device_schedule(
            graph, profile.ops, links=profile.links, num_devices=len(gpus), streams=streams, order=order,
            max_streams=max_streams)))
    if tune and len(gpus) > 1:
        from oparac.search.tune import tune_devices

        say(f"tune: measuring single- and {len(gpus)}-GPU candidate schedules")
        plan = _stage("tune", "ingest, profile, schedule", lambda: tune_devices(
            plan, model_weights(model), [torch.device(g) for g in gpus], say))
    elif tune:
        from oparac.search.tune import tune_plan

        say("tune: measuring candidate schedules")
        plan = _stage("tune", "ingest, profile, schedule", lambda: tune_plan(plan, model_weights(model),
                                                                             dev, say))
    if fuse:
        plan = _stage("fuse", "ingest, profile, schedule", lambda: fuse_stage(plan, model, dev, fuse, cut, tune, say,
                                                                              profile_cache, requested == "auto"))
    validate(plan)
    return plan


def fuse_stage(plan: Plan, model, dev: torch.device, backend: str, cut: str, tune: bool, say,
               profile_cache=None, try_nhwc: bool = True) -> Plan:
    from oparac.fuse.segments import fuse_plan, measure_fused
    from oparac.search.fused import tune_fused

    if dev.type != "cuda":
        return fuse_plan(plan, backend, cut=cut)  # segments recorded; the CPU path runs them unfused
    weights = model_weights(model)
    if tune:
        say("fuse: measuring fused candidates (inductor compiles each segment)")

        def nhwc_profile():
            say("fuse: profiling the ops in channels_last for the NHWC candidates")
            return profile_graph(plan.graph, dev, plan.model.precision, profile_cache, say, "channels_last")[1]
        # A layout the caller named is kept; 'auto' lets the tuner try NHWC too.
        return tune_fused(plan, weights, dev, backend, say, nhwc_profile if try_nhwc else None)
    say(f"fuse: compiling segments with inductor ({cut} cut)")
    return measure_fused(fuse_plan(plan, backend, cut=cut), weights, dev)[0]


def _stage(name: str, before: str, fn):
    try:
        return fn()
    except OparaError:
        raise
    except Exception as e:
        done = f" (after {before})" if before else ""
        raise StageError(f"stage {name!r} failed{done}: {type(e).__name__}: {e}") from e


def link_stage(gpus, dev: torch.device, target: Target, profile: Profile, links, say) -> tuple[Target, Profile]:
    """The copy cost of every GPU pair: measured on the GPUs, or given/nominal for simulated devices."""
    if dev.type == "cuda":
        if links is not None:
            raise ModelError("links: measured on the GPUs; pass links only for a preview (device='cpu')")
        say(f"links: timing copies between {len(gpus)} GPUs")
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


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r}: CUDA is not available here; use --device cpu for a preview plan")
    if dev.type not in ("cpu", "cuda"):
        raise ModelError(f"device {device!r}: expected 'cpu' or 'cuda[:N]'")
    return dev


def cast_model(model, example_inputs, dtype: str):
    """A copy of the model and inputs in `dtype` (floating tensors only); float32 leaves them as given."""
    if dtype == "float32":
        return model, tuple(example_inputs)
    dt = getattr(torch, dtype)
    model = copy.deepcopy(model).to(dt)
    inputs = tuple(x.to(dt) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
                   for x in example_inputs)
    return model, inputs


def compile_ref(ref: str, *, shapes: str | None = None, **options) -> Plan:
    """compile() for a model named on the command line (.pt2, .onnx or package.module:factory)."""
    from oparac.models.reference import load_model

    model, inputs = load_model(ref, shapes)
    if isinstance(model, Path):
        options["shapes"] = shapes
    return compile(model, inputs, **options)


def ingest(model, example_inputs, dtype: str, shapes: str | dict | None = None,
           attention: str = "sdpa") -> tuple[GraphBuilder, str]:
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
        return graph_from_exported(model.run_decompositions(decompositions(attention))), "torch.export"
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"model: expected an nn.Module, fx.GraphModule or ExportedProgram, "
                         f"found {type(model).__name__}")
    if example_inputs is None:
        raise ModelError("example_inputs: a PyTorch model needs example inputs to fix its shapes")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    model, example_inputs = cast_model(model, example_inputs, dtype)
    if isinstance(model, torch.fx.GraphModule):
        return graph_from_fx(model, example_inputs, decompositions=decompositions(attention))
    was_training = model.training
    model.eval()
    try:
        return graph_from_module(model, example_inputs, decompositions=decompositions(attention))
    finally:
        model.train(was_training)


def model_weights(model) -> dict:
    from opara_runtime.bind import weights_of

    if isinstance(model, torch.export.ExportedProgram):
        return dict(model.state_dict) | dict(model.constants)
    return weights_of(model)  # nn.Module or .onnx path


def profile_graph(graph: Graph, device: torch.device, dtype: str, cache, say,
                  memory_format: str = "contiguous") -> tuple[Target, Profile]:
    if device.type == "cpu":
        ops = cost_model.estimate(graph)
        return (Target(device_type="cpu", torch=torch.__version__),
                Profile(method="cost-model", ops=ops, sequential_ms=sum(o.ms for o in ops)))
    from oparac.profile.profiler import profile_on_gpu

    return profile_on_gpu(graph, device, dtype, cache, say, memory_format)


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
    return Plan(tool=Tool("oparac", TOOL_VERSION), model=model, target=target, graph=graph, schedule=schedule,
                profile=profile)
