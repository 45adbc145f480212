"""Fused segments: each segment of a plan becomes an FX graph of its ATen ops, compiled by TorchInductor.

Modules, each importing only those above it: programs (segment FX graphs and which share code), compile
(inductor, artifacts as bytes), private_cache (a per-load inductor cache for stored programs), pool (a generic
worker pool), jobs and worker (the compile job and the worker's entry point), parallel (compiling in
workers, the compile pool), prepare (the trust decision, loading stored programs, falling back to compiling);
wrapper_ir, kernel_streams and kernel_mode (the kernel-level mode: a compiled program's kernels as a DAG, its
call rewritten onto streams, and applying a plan's kernel schedule).
"""
from opara_runtime.fused.compile import INDUCTOR_CONFIG, artifact_bytes, cache_key, compile_one, load_artifact
from opara_runtime.fused.parallel import compile_pool, default_workers, worker_count
from opara_runtime.fused.prepare import compile_segments, prepare_fused
from opara_runtime.fused.private_cache import private_inductor_cache
from opara_runtime.fused.programs import SegmentProgram, input_meta, program_key, segment_programs, value_of

__all__ = ["INDUCTOR_CONFIG", "SegmentProgram", "artifact_bytes", "cache_key", "compile_one", "compile_pool",
           "compile_segments", "default_workers", "input_meta", "load_artifact", "prepare_fused",
           "private_inductor_cache", "program_key", "segment_programs", "value_of", "worker_count"]
