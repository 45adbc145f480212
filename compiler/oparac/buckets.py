"""Shape buckets at compile time: one plan per batch size (and per shape set), gathered into one plan set."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from opara_plan import ModelError, OparaError, PlanSet, make_plan_set
from opara_plan.plan_set import MAX_BUCKETS
from oparac.models.reference import load_model, parse_shapes, random_input, shapes_from_dict
from oparac.options import CompileOptions
from oparac.pipeline import compile
from oparac.progress import as_progress


def parse_batches(text) -> tuple[int, ...]:
    """'1,2,4,8' (or a sequence of ints) -> (1, 2, 4, 8): distinct positive batch sizes, ascending."""
    items = (text.split(",") if text.strip() else []) if isinstance(text, str) else list(text)
    batches = []
    for item in items:
        try:
            b = int(str(item).strip()) if not isinstance(item, bool) else None
        except ValueError:
            b = None
        if b is None or b < 1:
            raise ModelError(f"--batch item {item!r}: expected a positive integer, as in --batch 1,2,4,8")
        if b in batches:
            raise ModelError(f"--batch: batch {b} appears twice")
        batches.append(b)
    if not batches:
        raise ModelError("--batch: expected at least one batch size, as in --batch 1,2,4,8")
    return tuple(sorted(batches))


def compile_buckets(model, example_inputs=None, options: CompileOptions | None = None, *, batches=(), shapes=(),
                    progress=None, profile_cache=None, **keywords) -> PlanSet:
    """Compile `model` once per bucket into a plan set; options, keywords, progress and profile_cache as
    compile() takes them, for every bucket.

    batches: batch sizes ('1,2,4,8' or ints); each replaces every input's leading dimension (a PyTorch model's
    example inputs repeat their first sample to that size; an .onnx model's shapes give the other dimensions).
    shapes: shape sets, a string like 'ids:1x128:int64' or a dict each (default: options.shapes), one bucket per
    set times each batch: other dynamic dimensions such as sequence length. The runtime pads a call's batch up
    to the next bucket but never pads other dimensions (that would change the answer without an attention
    mask): a call must match one shape set exactly, apart from its batch.
    """
    opts = CompileOptions.from_keywords(options, **keywords)
    hook = as_progress(progress)
    batches = parse_batches(batches) if batches else ()
    if isinstance(shapes, (str, dict)):
        shapes = [shapes]
    shapes = list(shapes or ()) or ([opts.shapes] if opts.shapes else [])
    sets = [parse_shapes(s) for s in shapes]
    variants = _variants(model, example_inputs, batches, sets)
    if len(variants) > MAX_BUCKETS:
        raise ModelError(f"buckets: {len(variants)} asked for ({len(batches) or 1} batches x {len(sets) or 1} "
                         f"shape sets); a plan set holds at most {MAX_BUCKETS}")
    plans = []
    for k, (label, inputs, given) in enumerate(variants):
        hook.note(f"bucket {k + 1}/{len(variants)}: {label}")
        plans.append(compile(model, inputs, dataclasses.replace(opts, shapes=given), progress=hook,
                             profile_cache=profile_cache))
    return make_plan_set(plans, _batched_outputs(model, variants[0], plans, opts))


def _batched_outputs(model, variant, plans, opts: CompileOptions) -> tuple[int, ...] | None:
    """Which outputs have the batch as leading dimension. Buckets of several batch sizes show it (None: the set
    works it out); where every bucket has one batch size, the model is traced once more at that batch + 1."""
    batches = {p.model.inputs[0].shape[0] for p in plans}
    if len(batches) > 1 or isinstance(model, torch.export.ExportedProgram):
        return None
    from oparac.pipeline import ingest

    batch = batches.pop()
    _, inputs, given = variant
    probe = _resized(inputs, batch + 1) if inputs is not None else None
    shapes = _with_batch(given, batch + 1) if given is not None else None
    builder, _ = ingest(model, probe, opts.dtype, shapes, opts.attention)
    nodes = builder.build().nodes
    grown = [nodes[r.node].outputs[r.index].shape[:1] for r in nodes[-1].args]
    return tuple(j for j, (spec, lead) in enumerate(zip(plans[0].model.outputs, grown))
                 if spec.shape[:1] == (batch,) and lead == (batch + 1,))


def compile_buckets_ref(ref: str, options: CompileOptions | None = None, *, batches=(), shapes=(), progress=None,
                        profile_cache=None, **keywords) -> PlanSet:
    """compile_buckets() for a model named on the command line (.pt2, .onnx or package.module:factory)."""
    opts = CompileOptions.from_keywords(options, **keywords)
    shapes = [shapes] if isinstance(shapes, (str, dict)) else list(shapes or ()) or (
        [opts.shapes] if opts.shapes else [])
    model, inputs = load_model(ref, shapes[0] if shapes else None)
    if not isinstance(model, Path):  # a PyTorch model: each shape set makes its example inputs
        from oparac.ingest.input_names import check_shapes_fit

        for given in shapes:
            check_shapes_fit(model, parse_shapes(given), ref)
    return compile_buckets(model, inputs, dataclasses.replace(opts, shapes=None), batches=batches, shapes=shapes,
                           progress=progress, profile_cache=profile_cache)


def _variants(model, example_inputs, batches, sets) -> list[tuple[str, tuple | None, dict | None]]:
    """(label, example inputs, shapes for compile) per bucket."""
    onnx = isinstance(model, (str, Path)) and str(model).endswith(".onnx")
    if isinstance(model, torch.export.ExportedProgram) and (batches or len(sets) > 1):
        raise ModelError("--batch: an ExportedProgram (.pt2) has its input shapes fixed at export; compile the "
                         "nn.Module (package.module:factory) or an .onnx model with a dynamic batch dimension")
    if onnx:
        if not sets:
            raise ModelError("--batch on an .onnx model: give --shapes for its inputs; each batch replaces "
                             "their leading dimensions")
        sets = [_with_batch(s, b) for s in sets for b in batches] if batches else sets
        return [(_label(s), None, s) for s in sets]
    if sets:
        bases = [tuple(random_input(shape, _torch_dtype(dt)) for shape, dt in s.values()) for s in sets]
    else:
        if example_inputs is None:
            raise ModelError("example_inputs: a PyTorch model needs example inputs to fix its shapes")
        bases = [(example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)]
    out = []
    for base in bases:
        for inputs in ([_resized(base, b) for b in batches] if batches else [base]):
            out.append((_label_inputs(inputs), inputs, None))
    return out


def _with_batch(shapes: dict, batch: int) -> dict:
    out = {}
    for name, (dims, dtype) in shapes.items():
        if not dims:
            raise ModelError(f"--shapes {name}: a scalar input has no batch dimension for --batch")
        out[name] = ((batch, *dims[1:]), dtype)
    return shapes_from_dict(out)


def _resized(inputs: tuple, batch: int) -> tuple:
    """The inputs with leading dimension `batch`: the first sample repeated (valid token ids stay valid)."""
    out = []
    for k, x in enumerate(inputs):
        if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[0] == 0:
            raise ModelError(f"--batch: example input {k} is {_shown(x)}; every input needs a leading batch "
                             f"dimension of at least 1")
        out.append(x[:1].expand(batch, *x.shape[1:]).contiguous())
    return tuple(out)


def _shown(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {list(x.shape)}"
    return f"a {type(x).__name__}"


def _torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def _label(shapes: dict) -> str:
    return ", ".join(f"{name}: {dtype}{list(dims)}" for name, (dims, dtype) in shapes.items())


def _label_inputs(inputs: tuple) -> str:
    return ", ".join(f"{str(x.dtype).removeprefix('torch.')}{list(x.shape)}" for x in inputs)


def measure_set(ps: PlanSet, ref: str, *, device: str = "cuda") -> dict:
    """Load the set for the model named `ref` on a GPU and return its measured graph memory
    (BucketedRunner.graph_memory)."""
    import opara_runtime

    if not isinstance(ps, PlanSet):
        raise OparaError("--measure: the file is a single plan, not a plan set")
    if not torch.cuda.is_available():
        raise ModelError("--measure: graph memory is measured by capturing the buckets on a GPU; CUDA is not "
                         "available here (the predicted figures need none)")
    model, _ = load_model(ref)
    return opara_runtime.load(ps, model, device=device).graph_memory()


def sign_plan_set(ps: PlanSet, private_key) -> PlanSet:
    """Every bucket's plan signed (opara_plan.signing): each plan's stored programs are trusted on its own."""
    from opara_plan.signing import sign_plan

    return make_plan_set(sign_plan(p, private_key) for p in ps.plans)


def bucket_plan(ps, k: int):
    """Bucket k's plan (`oparac inspect --bucket K`)."""
    if not isinstance(ps, PlanSet):
        raise OparaError(f"--bucket {k}: the file is a single plan, not a plan set")
    if not 0 <= k < len(ps.plans):
        raise OparaError(f"--bucket {k}: the plan set has buckets 0..{len(ps.plans) - 1}")
    return ps.plans[k]
