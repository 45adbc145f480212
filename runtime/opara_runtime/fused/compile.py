"""Inductor for segments: compiling one, compiling a plan's segments here, and compiled programs as bytes."""
from __future__ import annotations

import os
import tempfile
import zlib

import torch
import torch._inductor
import torch.fx

from opara_runtime.fused.programs import SegmentProgram, input_meta, program_key, value_of

INDUCTOR_CONFIG = {"triton.cudagraphs": False}  # the plan's single graph captures everything
# The kernel-level mode compiles the whole graph once and puts its kernels on streams: a buffer inductor hands on
# to a later, unrelated value would order two kernels that could otherwise run side by side.
INDUCTOR_KERNEL_CONFIG = {**INDUCTOR_CONFIG, "allow_buffer_reuse": False}


def config_for(mode: str) -> dict:
    """Inductor's options for a plan of this fusion mode ('segments' or 'kernels')."""
    return INDUCTOR_KERNEL_CONFIG if mode == "kernels" else INDUCTOR_CONFIG


def compile_one(module: torch.fx.GraphModule, example: list, config: dict | None = None):
    """One segment through inductor's standalone entry point (no dynamo): static shapes from the example,
    no CUDA graphs of its own; the result can be saved as an artifact and loaded without compiling."""
    return torch._inductor.standalone_compile(module, example, dynamic_shapes="from_example_inputs",
                                              options={"config_patches": dict(config or INDUCTOR_CONFIG)})


def compile_here(programs: list[SegmentProgram], base_values: list, config: dict | None = None) -> None:
    """Compile every segment in this process, in launch order, each distinct program once. Every segment
    runs on real values as it is compiled, so the next one is specialised to the exact sizes and strides
    its inputs will have."""
    for prog in programs:  # nothing half-loaded or from a failed attempt may be stored as this program
        prog.fn, prog.program, prog.blob = None, -1, None
    values = list(base_values)
    compiled: dict[tuple, tuple[int, object]] = {}
    with torch.no_grad():
        for prog in programs:
            example = [value_of(values, k) for k in prog.inputs]
            key = program_key(prog, map(input_meta, example))
            if key not in compiled:
                compiled[key] = (len(compiled), compile_one(prog.module, example, config))
            prog.program, prog.fn = compiled[key]
            prog(values)


def artifact_bytes(compiled) -> bytes:
    """A compiled segment as bytes: inductor's binary artifact format, zlib-compressed (kernel sources and
    binaries shrink about 5x, and a plan holds one per distinct program)."""
    with tempfile.TemporaryDirectory(prefix="opara-seg-") as tmp:
        path = os.path.join(tmp, "segment.bin")
        compiled.save(path=path, format="binary")
        with open(path, "rb") as f:
            return zlib.compress(f.read(), 6)


def load_artifact(data: bytes):
    """A compiled segment back from artifact_bytes. Loading unpickles the artifact and imports its code, and
    it writes the artifact's entries into inductor's current cache directory: call it only on trusted bytes,
    and only inside private_cache.private_inductor_cache()."""
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
