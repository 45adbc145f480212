"""Compiling fused segments in parallel worker processes.

Inductor spends about a second of single-threaded Python per segment, and a wide model has hundreds of
segments. Each worker is a fresh interpreter (`python -m opara_runtime.segment_workers JOB RESULT`, not
multiprocessing, which would re-run the caller's main module) that rebuilds the segments from the plan,
compiles its share on example inputs of the recorded sizes and strides, and hands back inductor's
artifacts; the caller loads them as it would load a plan's stored programs.

A fresh worker spends most of its time starting (importing torch, inductor's first compile), so a caller that
compiles several plans in a row opens `compile_pool(device)` around them: its workers
(`python -m opara_runtime.segment_workers --serve DEVICE`) start once, warm up, and serve one job after another
over their pipes until the pool closes.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from opara_plan import Plan
from opara_runtime.devices import indexed

MAX_WORKERS = 16
# A worker still running after this long is stuck: a whole model's segments took about a minute on the H100.
WORKER_TIMEOUT_S = 1800
# How long a closing pool lets its idle workers exit on their own (they read end-of-file) before killing them.
CLOSE_GRACE_S = 5
LOG_TAIL = 600  # characters of a worker's stderr shown when it fails


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
    if workers is None:
        return _current.size if _current is not None else default_workers(device)
    return min(workers, _current.size) if _current is not None else workers


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
    n = min(len(first), worker_count(device, workers))
    jobs = _balance([(k, key[1], len(programs[k].segment.ops)) for key, k in first.items()], n)
    if _current is not None:
        blobs = _current.run(plan.to_bytes(), device, jobs)
    else:
        blobs = _run_workers(plan, device, jobs)
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


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # The workers are the parallelism: each compiles its kernels in-process rather than starting a pool.
    env["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL:]
    except OSError:
        return "(no log)"


def _run_workers(plan: Plan, device: torch.device, jobs: list[list[tuple[int, list]]]) -> dict[int, bytes]:
    """One fresh worker per job, each gone when its job is."""
    env = _worker_env()
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
                    failures.append(f"worker exited with {rc}: {_log_tail(log_path)}")
                    continue
                out.update(pickle.loads(result_path.read_bytes()))
        finally:  # an interrupted or failed compile leaves no worker behind
            for proc, _, _ in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        _raise_failures(failures, len(procs))
    return out


def _raise_failures(failures: list[str], n: int) -> None:
    if failures:
        raise RuntimeError(f"{len(failures)} of {n} segment compile workers failed; first: {failures[0]}")


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


def _compile_job(job: dict) -> dict[int, bytes]:
    """A worker's share: {segment: inductor's artifact bytes}."""
    from opara_plan import plan_from_bytes
    from opara_runtime.fused import artifact_bytes, compile_one, segment_programs

    device = torch.device(job["device"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    programs = segment_programs(plan_from_bytes(job["plan"]), device)
    out = {}
    with torch.no_grad():
        for segment, meta in job["segments"]:
            example = [_example(m, device) for m in meta]
            out[segment] = artifact_bytes(compile_one(programs[segment].module, example))
    return out


def _worker(job_path: str, result_path: str) -> None:
    out = _compile_job(pickle.loads(Path(job_path).read_bytes()))
    tmp = Path(result_path).with_suffix(".partial")
    tmp.write_bytes(pickle.dumps(out))
    os.replace(tmp, result_path)


# A pool's messages, both ways: an 8-byte big-endian length, then that many bytes of pickle.
_HEADER = struct.Struct(">Q")


def _frame(message) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _read_message(stream):
    """The next message, or None at end of input (the pool closed or its process died)."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def _warm_up(device: torch.device) -> None:
    """Inductor's first compile in a process costs seconds that later ones do not: pay it before the first job."""
    from opara_runtime.fused import compile_one

    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    graph.output((graph.call_function(torch.relu, (graph.call_function(torch.mul, (x, 2.0)),)),))
    with torch.no_grad():
        compile_one(torch.fx.GraphModule(torch.nn.Module(), graph), [torch.randn(8, 8, device=device)])


def _serve(device: str) -> None:
    """A pool worker: jobs from stdin, one reply each to stdout, ("ok", {segment: bytes}) or ("error", traceback)."""
    replies = os.fdopen(os.dup(1), "wb")  # the dup is not inherited by the compilers inductor starts
    os.dup2(2, 1)  # anything else printed here, by Python or a compiler, goes to the log, not into a reply
    sys.stdout = sys.stderr
    jobs = sys.stdin.buffer
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    _warm_up(device)
    while (job := _read_message(jobs)) is not None:
        try:
            reply = ("ok", _compile_job(job))
        except Exception:
            reply = ("error", traceback.format_exc()[-LOG_TAIL:])
        replies.write(_frame(reply))
        replies.flush()


class _PoolWorker:
    """One serving interpreter, its pipes and its stderr log."""

    def __init__(self, device: torch.device, log_path: Path, env: dict[str, str]):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "opara_runtime.segment_workers", "--serve", str(device)],
                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        os.set_blocking(self.proc.stdin.fileno(), False)
        os.set_blocking(self.proc.stdout.fileno(), False)

    def alive(self) -> bool:
        return self.proc.poll() is None and not self.proc.stdin.closed

    def failure(self, what: str) -> str:
        return f"worker {self.proc.pid} {what}; its stderr ends: {_log_tail(self.log_path)}"

    def exit_code(self):
        try:
            return self.proc.wait(timeout=CLOSE_GRACE_S)
        except subprocess.TimeoutExpired:
            return "unknown (still running)"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()


class WorkerPool:
    """Long-lived compile workers on one device: started as compiles need them (up to `size`), each warming up
    once, then kept for every later compile until `close`. A worker that dies or stops answering fails its
    job and is started afresh for the next one; a worker whose caller dies reads end of input and exits."""

    def __init__(self, size: int, device: torch.device):
        # A worker started on plain 'cuda' cannot select it (torch.cuda.set_device needs the index).
        self.size, self.device = size, indexed(device)
        self._tmp = Path(tempfile.mkdtemp(prefix="opara-pool-"))
        self._env = _worker_env()
        self._workers: list[_PoolWorker] = []
        self._started = 0
        self._closed = False
        _open_pools.append(self)

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def _start(self) -> _PoolWorker:
        self._started += 1
        return _PoolWorker(self.device, self._tmp / f"worker-{self._started}.log", self._env)

    def run(self, plan_bytes: bytes, device: torch.device, jobs: list[list[tuple[int, list]]]) -> dict[int, bytes]:
        """Each job to its own worker; every segment's artifact bytes, or an error naming the failed workers."""
        if self._closed:
            raise RuntimeError("the segment compile pool is closed")
        if len(jobs) > self.size:
            raise ValueError(f"{len(jobs)} jobs for a pool of {self.size} workers")
        for k, w in enumerate(self._workers[:len(jobs)]):
            if not w.alive():
                w.kill()
                self._workers[k] = self._start()
        while len(self._workers) < len(jobs):
            self._workers.append(self._start())
        workers = self._workers[:len(jobs)]
        requests = [{"plan": plan_bytes, "device": str(device), "segments": job} for job in jobs]
        replies = _exchange(workers, requests, WORKER_TIMEOUT_S)
        out: dict[int, bytes] = {}
        failures = []
        for w, (status, value) in zip(workers, replies):
            if status == "ok":
                out.update(value)
            elif status == "error":
                failures.append(f"worker {w.proc.pid} failed: {value}")
            else:
                failures.append(value)
        _raise_failures(failures, len(jobs))
        return out

    def close(self) -> None:
        """Every worker gone and waited for; idle ones exit on end of input, the rest are killed."""
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            with contextlib.suppress(OSError):
                w.proc.stdin.close()
        deadline = time.monotonic() + CLOSE_GRACE_S
        for w in self._workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            w.kill()
        shutil.rmtree(self._tmp, ignore_errors=True)
        with contextlib.suppress(ValueError):
            _open_pools.remove(self)


def _exchange(workers: list[_PoolWorker], requests: list[dict], timeout: float) -> list[tuple[str, object]]:
    """Send each worker its request and read every reply, all at once: a worker may be writing a large reply
    while another still reads its request, so no pipe may be waited on alone. Each result is ("ok", value),
    ("error", traceback) from the worker, or ("failed", message) for a worker that died or did not answer
    in time (it is killed)."""
    results: list[tuple[str, object] | None] = [None] * len(workers)
    pipes = [(w.proc.stdin.fileno(), w.proc.stdout.fileno()) for w in workers]
    outgoing = {fd: (k, memoryview(_frame(r))) for k, ((fd, _), r) in enumerate(zip(pipes, requests))}
    incoming = {fd: (k, bytearray()) for k, (_, fd) in enumerate(pipes)}
    sel = selectors.DefaultSelector()
    for fd in outgoing:
        sel.register(fd, selectors.EVENT_WRITE)
    for fd in incoming:
        sel.register(fd, selectors.EVENT_READ)

    def fail(k: int, what: str) -> None:
        results[k] = ("failed", workers[k].failure(what))
        for fd in pipes[k]:
            with contextlib.suppress(KeyError):
                sel.unregister(fd)

    deadline = time.monotonic() + timeout
    try:
        while any(r is None for r in results):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for k, r in enumerate(results):
                    if r is None:
                        fail(k, f"gave no reply within {timeout} s and was killed")
                        workers[k].kill()
                break
            for key, _ in sel.select(remaining):
                fd = key.fd
                if fd in outgoing:
                    k, data = outgoing[fd]
                    try:
                        sent = os.write(fd, data)
                    except BrokenPipeError:
                        fail(k, f"exited with {workers[k].exit_code()} before reading its job")
                        continue
                    outgoing[fd] = (k, data[sent:])
                    if sent == len(data):
                        sel.unregister(fd)
                    continue
                k, buf = incoming[fd]
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    fail(k, f"exited with {workers[k].exit_code()} before replying")
                    continue
                buf += chunk
                if len(buf) >= _HEADER.size and len(buf) >= _HEADER.size + _HEADER.unpack_from(buf)[0]:
                    results[k] = pickle.loads(bytes(buf[_HEADER.size:]))
                    sel.unregister(fd)
    except BaseException:  # interrupted mid-job: the workers' replies would be out of step with their next jobs
        for w in workers:
            w.kill()
        raise
    finally:
        sel.close()
    return results


_open_pools: list[WorkerPool] = []
_current: WorkerPool | None = None


@atexit.register
def _close_open_pools() -> None:
    for pool in list(_open_pools):
        pool.close()


@contextlib.contextmanager
def compile_pool(device: torch.device, workers: int | None = None):
    """Compiles inside share one set of long-lived workers (`workers`, else default_workers(device)). Yields the
    pool (the one already open, if any), or None where compiles run in-process (one worker: the CPU default).
    Keep it open only around compiles: each idle worker holds a CUDA context."""
    global _current
    n = workers or default_workers(device)
    if _current is not None or n <= 1:
        yield _current
        return
    pool = _current = WorkerPool(n, device)
    try:
        yield pool
    finally:
        _current = None
        pool.close()


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller's Ctrl-C is the caller's to handle; it closes us
        _serve(sys.argv[2])
    else:
        _worker(sys.argv[1], sys.argv[2])
