"""Compiling a plan's segments in parallel worker processes: how many, which segments each gets, and the
long-lived pool a caller may keep open around several compiles.

Inductor spends about a second of single-threaded Python per segment, and a wide model has hundreds of
segments. Each worker is a fresh interpreter (`python -m opara_runtime.fused.worker`) that rebuilds
the segments from the plan, compiles its share on example inputs of the recorded sizes and strides, and hands
back inductor's artifacts, which are loaded here as a plan's stored programs are (in a private cache).

A fresh worker spends most of its time starting (importing torch, inductor's first compile), so a caller that
compiles several plans in a row opens `compile_pool(device)` around them: its workers start once, warm up,
and serve one job after another until the pool closes.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import sys

import torch

from opara_plan import Plan
from opara_runtime.devices import indexed
from opara_runtime.fused.compile import compile_one, load_artifact
from opara_runtime.fused.pool import WorkerPool, python_env, run_one_shot
from opara_runtime.fused.private_cache import private_inductor_cache
from opara_runtime.fused.programs import SegmentProgram, input_meta, program_key, value_of
from opara_runtime.lifetimes import release_points
from opara_runtime.ops import run_node

MAX_WORKERS = 16
# A worker still running after this long is stuck: a whole model's segments took about a minute on the H100.
WORKER_TIMEOUT_S = 1800
WORKER_MODULE = "opara_runtime.fused.worker"

Job = list[tuple[int, list]]  # (segment, its input metas) for one worker


class SegmentCompilePool:
    """Long-lived compile workers on one device (a WorkerPool running the segment compile job)."""

    def __init__(self, size: int, device: torch.device):
        # A worker started on plain 'cuda' cannot select it (torch.cuda.set_device needs the index).
        self.size, self.device = size, indexed(device)
        self._pool = WorkerPool(size, [sys.executable, "-m", WORKER_MODULE, "--serve", str(self.device)],
                                _worker_env())

    @property
    def pids(self) -> list[int]:
        return self._pool.pids

    def run(self, plan_bytes: bytes, device: torch.device, jobs: list[Job]) -> dict[int, bytes]:
        """Each job to its own worker; every segment's artifact bytes, or an error naming the failed workers."""
        requests = [{"plan": plan_bytes, "device": str(device), "segments": job} for job in jobs]
        return _collect(self._pool.map(requests, WORKER_TIMEOUT_S))

    def close(self) -> None:
        self._pool.close()


# The pool open in this context (compile_pool), if any: a context-local, so a pool opened by one thread or
# task is not used by another's compiles.
_open_pool: contextvars.ContextVar[SegmentCompilePool | None] = contextvars.ContextVar("opara_compile_pool",
                                                                                        default=None)


@contextlib.contextmanager
def compile_pool(device: torch.device, workers: int | None = None):
    """Compiles inside share one set of long-lived workers (`workers`, else default_workers(device)). Yields the
    pool (the one already open, if any), or None where compiles run in-process (one worker: the CPU default).
    Keep it open only around compiles: each idle worker holds a CUDA context."""
    current = _open_pool.get()
    n = workers or default_workers(device)
    if current is not None or n <= 1:
        yield current
        return
    pool = SegmentCompilePool(n, device)
    token = _open_pool.set(pool)
    try:
        yield pool
    finally:
        _open_pool.reset(token)
        pool.close()


def default_workers(device: torch.device) -> int:
    """OPARA_COMPILE_WORKERS if set; else one per core (up to 16) on a GPU, and none on the CPU, where
    fused plans are a correctness path and CI machines have two cores."""
    env = os.environ.get("OPARA_COMPILE_WORKERS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"OPARA_COMPILE_WORKERS: expected a whole number of processes, found {env!r}") from None
    if device.type != "cuda":
        return 1
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def worker_count(device: torch.device, workers: int | None) -> int:
    """How many workers a compile may use: as asked (at most the open pool's size); else the open pool's
    size; else default_workers."""
    current = _open_pool.get()
    if workers is None:
        return current.size if current is not None else default_workers(device)
    return min(workers, current.size) if current is not None else workers


def compile_in_workers(plan: Plan, programs: list[SegmentProgram], base_values: list, device: torch.device,
                       workers: int | None) -> None:
    """Give every program its compiled fn, compiling each distinct one once, spread over worker processes;
    then run every segment once (inside the private cache the programs were loaded in)."""
    metas = _input_metas(plan, programs, base_values, device)
    first: dict[tuple, int] = {}  # program key -> its first segment, in order of first use
    keys = []
    for k, prog in enumerate(programs):
        keys.append(program_key(prog, (metas[ref] for ref in prog.inputs)))
        first.setdefault(keys[-1], k)
    n = min(len(first), worker_count(device, workers))
    jobs = _balance([(k, key[1], len(programs[k].segment.ops)) for key, k in first.items()], n)
    current = _open_pool.get()
    blobs = current.run(plan.to_bytes(), device, jobs) if current is not None else _run_one_shot(plan, device, jobs)
    index = {key: u for u, key in enumerate(first)}
    with private_inductor_cache():
        fns = {key: load_artifact(blobs[k]) for key, k in first.items()}
        _bind_checked(programs, keys, base_values, lambda key: (index[key], fns[key], blobs[first[key]]))


def _bind_checked(programs: list[SegmentProgram], keys: list[tuple], base_values: list, compiled) -> None:
    """Run every segment once in launch order with the program compiled for `keys[k]` (compiled(key): its index,
    fn and bytes), except where a segment's real inputs are laid out otherwise than the eager pass recorded:
    inductor may pad the strides of a compiled producer's output (Swin-T's windows on the H200: 56 for eager's
    49), and a program specialised to eager strides would then fail its size and stride checks. Such a segment
    is compiled here, on its real inputs, as compile_here would."""
    values = list(base_values)
    here: dict[tuple, tuple[int, object]] = {}
    extra = len(set(keys))  # the distinct programs are numbered 0..extra-1; those compiled here come after
    with torch.no_grad():
        for prog, key in zip(programs, keys):
            example = [value_of(values, k) for k in prog.inputs]
            actual = program_key(prog, map(input_meta, example))
            if actual == key:
                prog.program, prog.fn, prog.blob = compiled(key)
            else:
                if actual not in here:
                    here[actual] = (extra + len(here), compile_one(prog.module, example))
                prog.program, prog.fn = here[actual]
                prog.blob = None
            prog(values)


def _run_one_shot(plan: Plan, device: torch.device, jobs: list[Job]) -> dict[int, bytes]:
    """One fresh worker per job, each gone when its job is."""
    plan_bytes = plan.to_bytes()
    requests = [{"plan": plan_bytes, "device": str(device), "segments": job} for job in jobs]
    return _collect(run_one_shot(requests, lambda job, result: [sys.executable, "-m", WORKER_MODULE, job, result],
                                 _worker_env(), WORKER_TIMEOUT_S))


def _collect(replies) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    failures = []
    for status, value in replies:
        if status == "ok":
            out.update(value)
        else:
            failures.append(value)
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(replies)} segment compile workers failed; first: {failures[0]}")
    return out


def _worker_env() -> dict[str, str]:
    # The workers are the parallelism: each compiles its kernels in-process rather than starting a pool.
    return python_env(TORCHINDUCTOR_COMPILE_THREADS="1")


def _input_metas(plan: Plan, programs: list[SegmentProgram], base_values: list,
                 device: torch.device) -> dict[tuple, tuple]:
    """The layout of every segment input (inductor keeps eager strides for a compiled segment's outputs, so
    these are what it will see), from one eager pass in launch order that drops each value after its last use."""
    wanted: dict[int, list[tuple]] = {}
    for prog in programs:
        for ref in prog.inputs:
            wanted.setdefault(ref[0], []).append(ref)
    values = list(base_values)
    metas: dict[tuple, tuple] = {}

    def record(i: int) -> None:
        for ref in wanted.get(i, ()):
            metas[ref] = input_meta(value_of(values, ref))

    for i, v in enumerate(values):  # inputs, weights and constants
        if v is not None:
            record(i)
    release = release_points(plan, sequential=True)
    with torch.no_grad():
        for i in plan.schedule.launch_order:
            values[i] = run_node(plan.graph.nodes[i], values, device, plan.model.memory_format)
            record(i)
            for j in release.get(i, ()):
                values[j] = None
    return metas


def _balance(items: list[tuple[int, list, int]], n: int) -> list[Job]:
    """Largest segments first, each to the least loaded worker (ops as the cost)."""
    jobs: list[Job] = [[] for _ in range(n)]
    load = [0] * n
    for segment, meta, cost in sorted(items, key=lambda it: -it[2]):
        w = load.index(min(load))
        jobs[w].append((segment, meta))
        load[w] += cost
    return [j for j in jobs if j]
