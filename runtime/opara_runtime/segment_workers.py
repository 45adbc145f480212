"""Compiling fused segments in parallel worker processes.

Inductor spends about a second of single-threaded Python per segment, and a wide model has hundreds of
segments. Each worker is a fresh interpreter (`python -m opara_runtime.segment_workers JOB RESULT`, not
multiprocessing, which would re-run the caller's main module) that rebuilds the segments from the plan,
compiles its share on example inputs of the recorded sizes and strides, and hands back inductor's
artifacts; the caller loads them as it would load a plan's stored programs.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from opara_plan import Plan

MAX_WORKERS = 16
# A worker still running after this long is stuck: a whole model's segments took about a minute on the H100.
WORKER_TIMEOUT_S = 1800


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


def compile_in_workers(plan: Plan, programs: list, base_values: list, device: torch.device,
                       workers: int | None) -> None:
    """Give every program its compiled fn, compiling each distinct one once, spread over worker processes."""
    from opara_runtime.fused import load_artifact, program_key

    metas = _input_metas(plan, programs, base_values, device)
    first: dict[tuple, int] = {}  # program key -> its first segment, in order of first use
    keys = []
    for k, prog in enumerate(programs):
        keys.append(program_key(prog, (metas[ref] for ref in prog.inputs)))
        first.setdefault(keys[-1], k)
    n = min(len(first), workers or default_workers(device))
    blobs = _run_workers(plan, device, _balance([(k, key[1], len(programs[k].segment.ops))
                                                 for key, k in first.items()], n))
    index = {key: u for u, key in enumerate(first)}
    fns = {key: load_artifact(blobs[k]) for key, k in first.items()}
    for prog, key in zip(programs, keys):
        prog.program, prog.fn, prog.blob = index[key], fns[key], blobs[first[key]]


def _input_metas(plan: Plan, programs: list, base_values: list, device: torch.device) -> dict[tuple, tuple]:
    """The layout of every segment input (inductor keeps eager strides for a compiled segment's outputs, so
    these are what it will see), from one eager pass in launch order that drops each value after its last use."""
    from opara_runtime.fused import _value, input_meta
    from opara_runtime.lifetimes import release_points
    from opara_runtime.ops import run_node

    wanted: dict[int, list[tuple]] = {}
    for prog in programs:
        for ref in prog.inputs:
            wanted.setdefault(ref[0], []).append(ref)
    values = list(base_values)
    metas: dict[tuple, tuple] = {}

    def record(i: int) -> None:
        for ref in wanted.get(i, ()):
            metas[ref] = input_meta(_value(values, ref))

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


def _balance(items: list[tuple[int, list, int]], n: int) -> list[list[tuple[int, list]]]:
    """Largest segments first, each to the least loaded worker (ops as the cost)."""
    jobs: list[list[tuple[int, list]]] = [[] for _ in range(n)]
    load = [0] * n
    for segment, meta, cost in sorted(items, key=lambda it: -it[2]):
        w = load.index(min(load))
        jobs[w].append((segment, meta))
        load[w] += cost
    return [j for j in jobs if j]


def _run_workers(plan: Plan, device: torch.device, jobs: list[list[tuple[int, list]]]) -> dict[int, bytes]:
    env = dict(os.environ)
    # The workers are the parallelism: each compiles its kernels in-process rather than starting a pool.
    env["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    plan_bytes = plan.to_bytes()
    with tempfile.TemporaryDirectory(prefix="opara-compile-") as tmp:
        procs = []
        out: dict[int, bytes] = {}
        failures = []
        try:
            for w, job in enumerate(jobs):
                job_path, result_path, log_path = (Path(tmp) / f"{w}.{ext}" for ext in ("job", "result", "log"))
                job_path.write_bytes(pickle.dumps({"plan": plan_bytes, "device": str(device), "segments": job}))
                with open(log_path, "wb") as log:
                    procs.append((subprocess.Popen(
                        [sys.executable, "-m", "opara_runtime.segment_workers", str(job_path), str(result_path)],
                        env=env, stdout=subprocess.DEVNULL, stderr=log), result_path, log_path))
            for proc, result_path, log_path in procs:
                try:
                    rc = proc.wait(timeout=WORKER_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    rc = "timeout"
                if rc != 0 or not result_path.exists():
                    tail = log_path.read_text(errors="replace")[-600:]
                    failures.append(f"worker exited with {rc}: {tail}")
                    continue
                out.update(pickle.loads(result_path.read_bytes()))
        finally:  # an interrupted or failed compile leaves no worker behind
            for proc, _, _ in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if failures:
            raise RuntimeError(f"{len(failures)} of {len(procs)} segment compile workers failed; first: {failures[0]}")
    return out


def _example(meta: tuple, device: torch.device):
    """A tensor of the recorded size, strides, storage offset and dtype (its contents do not matter:
    compiling does not run the segment)."""
    if meta[0] == "value":
        return meta[1]
    _, shape, stride, offset, dtype, _ = meta
    dtype = getattr(torch, dtype.removeprefix("torch."))
    span = 1 + sum((s - 1) * st for s, st in zip(shape, stride)) if all(shape) else 0
    storage = torch.empty(offset + span, dtype=dtype, device=device)
    return storage.as_strided(shape, stride, offset)


def _worker(job_path: str, result_path: str) -> None:
    from opara_plan import plan_from_bytes
    from opara_runtime.fused import artifact_bytes, compile_one, segment_programs

    job = pickle.loads(Path(job_path).read_bytes())
    device = torch.device(job["device"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    programs = segment_programs(plan_from_bytes(job["plan"]), device)
    out = {}
    with torch.no_grad():
        for segment, meta in job["segments"]:
            example = [_example(m, device) for m in meta]
            out[segment] = artifact_bytes(compile_one(programs[segment].module, example))
    tmp = Path(result_path).with_suffix(".partial")
    tmp.write_bytes(pickle.dumps(out))
    os.replace(tmp, result_path)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
