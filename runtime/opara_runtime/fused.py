"""Fused segments: each segment of a plan becomes an FX graph of its ATen ops, compiled by TorchInductor."""
from __future__ import annotations

import operator
import os
import tempfile
import warnings
import zlib
from dataclasses import dataclass

import torch
import torch._inductor
import torch.fx

from opara_plan import Plan, Ref, Segment, node_refs
from opara_runtime.ops import materialize, plan_op

Key = tuple[int, int]  # (node, output index)


@dataclass
class SegmentProgram:
    """A segment as a callable: external values in, the values other segments or outputs read, out."""

    segment: Segment
    inputs: list[Key]
    outputs: list[Key]
    module: torch.fx.GraphModule
    arity: dict[int, int]  # outputs of each multi-output op the segment produces
    fn: object = None
    program: int = -1          # which distinct compiled program runs this segment (shared by equal segments)
    blob: bytes | None = None  # that program's stored form, when it came from a file or a worker

    def __call__(self, values: list) -> None:
        outs = self.fn(*[_value(values, k) for k in self.inputs])
        for (node, index), t in zip(self.outputs, outs):
            if node in self.arity:
                if not isinstance(values[node], list):
                    values[node] = [None] * self.arity[node]
                values[node][index] = t
            else:
                values[node] = t


def _value(values: list, key: Key):
    v = values[key[0]]
    return v[key[1]] if isinstance(v, (list, tuple)) else v


def segment_programs(plan: Plan, device: torch.device) -> list[SegmentProgram]:
    nodes = plan.graph.nodes
    owner = {i: k for k, seg in enumerate(plan.fusion.segments) for i in seg.ops}
    needed_outside: set[Key] = set()
    for i, node in enumerate(nodes):
        for ref in node_refs(node):
            if ref.node in owner and (node.kind == "output" or owner.get(i) != owner[ref.node]):
                needed_outside.add((ref.node, ref.index))
    return [_build(plan, seg, needed_outside, device) for seg in plan.fusion.segments]


def _build(plan: Plan, seg: Segment, needed_outside: set[Key], device: torch.device) -> SegmentProgram:
    nodes = plan.graph.nodes
    members = set(seg.ops)
    g = torch.fx.Graph()
    env: dict[Key, torch.fx.Node] = {}
    inputs: list[Key] = []

    def lookup(ref: Ref):
        key = (ref.node, ref.index)
        if key not in env:
            if ref.node in members:
                raise AssertionError(f"segment op {ref.node} used before it is computed")
            # Positional names, not node ids: equal segments then have equal code and share one program.
            env[key] = g.placeholder(f"in_{len(inputs)}")
            inputs.append(key)
        return env[key]

    def convert(arg):
        if isinstance(arg, Ref):
            return lookup(arg)
        if isinstance(arg, tuple):
            return [convert(a) for a in arg]
        return materialize(arg, None, device)

    for i in seg.ops:
        node = nodes[i]
        call = g.call_function(plan_op(node.target, plan.model.memory_format), tuple(convert(a) for a in node.args),
                               {k: convert(v) for k, v in node.kwargs})
        if node.multi:
            for index in range(len(node.outputs)):
                env[(i, index)] = g.call_function(operator.getitem, (call, index))
        else:
            env[(i, 0)] = call
    outputs = sorted(k for k in needed_outside if k[0] in members)
    g.output(tuple(env[k] for k in outputs))
    module = torch.fx.GraphModule(torch.nn.Module(), g)
    arity = {i: len(nodes[i].outputs) for i in seg.ops if nodes[i].multi}
    return SegmentProgram(segment=seg, inputs=inputs, outputs=outputs, module=module, arity=arity)


INDUCTOR_CONFIG = {"triton.cudagraphs": False}  # the plan's single graph captures everything


def compile_one(module: torch.fx.GraphModule, example: list):
    """One segment through inductor's standalone entry point (no dynamo): static shapes from the example,
    no CUDA graphs of its own; the result can be saved as an artifact and loaded without compiling."""
    return torch._inductor.standalone_compile(module, example, dynamic_shapes="from_example_inputs",
                                              options={"config_patches": dict(INDUCTOR_CONFIG)})


def input_meta(x) -> tuple:
    """What a compiled segment is specialised to for one input: inductor asserts sizes and strides, and
    its code assumes the alignment that the storage offset gives."""
    if isinstance(x, torch.Tensor):
        return ("tensor", tuple(x.shape), tuple(x.stride()), x.storage_offset(), str(x.dtype), x.device.type)
    return ("value", x)


def program_key(prog: SegmentProgram, metas) -> tuple:
    """Segments with equal keys share one compiled program: the same code on inputs of the same layout."""
    return (prog.module.code, tuple(metas))


def compile_segments(programs: list[SegmentProgram], base_values: list, *, plan: Plan | None = None,
                     workers: int | None = None) -> None:
    """Compile every segment with inductor; segments with equal code on equal inputs share one program.

    With a plan and more than one worker (the default on a GPU, `OPARA_COMPILE_WORKERS` to choose), the
    distinct programs are compiled in parallel worker processes; otherwise here, in launch order. Either
    way every segment then runs once on real values, so each is specialised to the exact sizes and strides
    its inputs will have."""
    from opara_runtime.segment_workers import compile_in_workers, worker_count

    device = _device_of(base_values)
    if plan is not None and worker_count(device, workers) > 1:
        try:
            compile_in_workers(plan, programs, base_values, device, workers)
            _run_once(programs, base_values)
            return
        except Exception as e:  # parallel compilation is an optimisation: compile here instead
            warnings.warn(f"compiling fused segments in worker processes failed ({type(e).__name__}: "
                          f"{str(e)[-800:]}); compiling them in this process", stacklevel=2)
    for prog in programs:  # nothing half-loaded or from a failed attempt may be stored as this program
        prog.fn, prog.program, prog.blob = None, -1, None
    values = list(base_values)
    compiled: dict[tuple, tuple[int, object]] = {}
    with torch.no_grad():
        for prog in programs:
            example = [_value(values, k) for k in prog.inputs]
            key = program_key(prog, map(input_meta, example))
            if key not in compiled:
                compiled[key] = (len(compiled), compile_one(prog.module, example))
            prog.program, prog.fn = compiled[key]
            prog(values)


def _run_once(programs: list[SegmentProgram], base_values: list) -> None:
    values = list(base_values)
    with torch.no_grad():
        for prog in programs:
            prog(values)


def _device_of(values: list) -> torch.device:
    for v in values:
        if isinstance(v, torch.Tensor):
            return v.device
    return torch.device("cpu")


def artifact_bytes(compiled) -> bytes:
    """A compiled segment as bytes: inductor's binary artifact format, zlib-compressed (kernel sources and
    binaries shrink about 5x, and a plan holds one per distinct program)."""
    with tempfile.TemporaryDirectory(prefix="opara-seg-") as tmp:
        path = os.path.join(tmp, "segment.bin")
        compiled.save(path=path, format="binary")
        with open(path, "rb") as f:
            return zlib.compress(f.read(), 6)


def load_artifact(data: bytes):
    with tempfile.TemporaryDirectory(prefix="opara-seg-") as tmp:
        path = os.path.join(tmp, "segment.bin")
        with open(path, "wb") as f:
            f.write(zlib.decompress(data))
        return torch._inductor.CompiledArtifact.load(path=path, format="binary")


def cache_key(device: torch.device) -> str:
    """What compiled segments depend on: the torch build and the GPU (or the CPU)."""
    if device.type != "cuda":
        return f"torch {torch.__version__} | {device.type}"
    props = torch.cuda.get_device_properties(device)
    return f"torch {torch.__version__} | {props.name} | sm {props.major}.{props.minor}"


def prepare_fused(plan: Plan, device: torch.device, base_values: list, *,
                  use_artifacts: bool = True) -> list[SegmentProgram]:
    """Segment programs ready to launch. The plan's compiled programs are loaded (unless use_artifacts is
    False) when they were made with this torch build and GPU, so deployment does not compile; otherwise
    every segment is compiled here."""
    programs = segment_programs(plan, device)
    f = plan.fusion
    if use_artifacts and f.programs:
        reason = _load_all(programs, f) if f.cache_key == cache_key(device) else \
            f"were made with {f.cache_key}, this is {cache_key(device)}"
        if reason is None:
            return programs
        warnings.warn(f"the plan's compiled segments {reason}: compiling them afresh", stacklevel=3)
    compile_segments(programs, base_values, plan=plan)
    return programs


def _load_all(programs: list[SegmentProgram], f) -> str | None:
    """Load each distinct program once; None when all loaded, else why not (the caller compiles instead)."""
    loaded: dict[int, object] = {}
    for prog in programs:
        index = prog.segment.program
        if index not in loaded:
            try:
                loaded[index] = load_artifact(f.programs[index])
            except Exception as e:  # a corrupt or foreign artifact must cost a compile, never the deployment
                return f"could not be loaded (program {index}: {type(e).__name__}: {e})"
        prog.fn, prog.program, prog.blob = loaded[index], index, f.programs[index]
    return None
