"""A generic pool of worker processes: fresh interpreters, length-prefixed pickles over their pipes, one request
each, timeouts, restarts. Nothing here knows what the jobs are (jobs.py, worker.py).

Workers are `python -m <module> ...` processes, not multiprocessing, which would re-run the caller's main
module. A serving worker reads requests from stdin and writes one reply per request to stdout until end of
input; a one-shot worker reads one request from a file and writes its reply to another.
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
from collections.abc import Callable, Sequence
from pathlib import Path

# How long a closing pool lets its idle workers exit on their own (they read end-of-file) before killing them.
CLOSE_GRACE_S = 5
LOG_TAIL = 600  # characters of a worker's stderr (or traceback) shown when it fails

# Messages, both ways: an 8-byte big-endian length, then that many bytes of pickle.
HEADER = struct.Struct(">Q")

Reply = tuple[str, object]  # ("ok", value) or ("failed", a message naming the worker)


def frame(message) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def read_message(stream):
    """The next message, or None at end of input (the pool closed or its process died)."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def python_env(**extra: str) -> dict[str, str]:
    """This process's environment for a worker, which must import what this process imports."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.update(extra)
    return env


def log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL:]
    except OSError:
        return "(no log)"


# --- the caller's side -------------------------------------------------------------------------------------

def run_one_shot(requests: Sequence, command: Callable[[str, str], list[str]], env: dict[str, str],
                 timeout: float) -> list[Reply]:
    """One fresh worker per request, `command(request_path, reply_path)`, each gone when its request is."""
    with tempfile.TemporaryDirectory(prefix="opara-workers-") as tmp:
        procs = []
        replies: list[Reply] = []
        try:
            for w, request in enumerate(requests):
                job_path, reply_path, log_path = (Path(tmp) / f"{w}.{ext}" for ext in ("job", "result", "log"))
                job_path.write_bytes(pickle.dumps(request))
                with open(log_path, "wb") as log:
                    procs.append((subprocess.Popen(command(str(job_path), str(reply_path)), env=env,
                                                   stdout=subprocess.DEVNULL, stderr=log), reply_path, log_path))
            for proc, reply_path, log_path in procs:
                try:
                    rc = proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    rc = "timeout"
                if rc != 0 or not reply_path.exists():
                    replies.append(("failed", f"worker exited with {rc}: {log_tail(log_path)}"))
                else:
                    replies.append(("ok", pickle.loads(reply_path.read_bytes())))
        finally:  # an interrupted or failed run leaves no worker behind
            for proc, _, _ in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    return replies


class PoolWorker:
    """One serving interpreter, its pipes and its stderr log."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str]):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        os.set_blocking(self.proc.stdin.fileno(), False)
        os.set_blocking(self.proc.stdout.fileno(), False)

    def alive(self) -> bool:
        return self.proc.poll() is None and not self.proc.stdin.closed

    def failure(self, what: str) -> str:
        return f"worker {self.proc.pid} {what}; its stderr ends: {log_tail(self.log_path)}"

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
    """Up to `size` long-lived serving workers running `command`: started as requests need them, then kept for
    every later request until `close` (or interpreter exit). A worker that dies or stops answering fails its
    request and is started afresh for the next one; a worker whose caller dies reads end of input and exits."""

    def __init__(self, size: int, command: list[str], env: dict[str, str]):
        self.size, self.command, self.env = size, list(command), env
        self._tmp = Path(tempfile.mkdtemp(prefix="opara-pool-"))
        self._workers: list[PoolWorker] = []
        self._started = 0
        self._closed = False
        atexit.register(self.close)

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def _start(self) -> PoolWorker:
        self._started += 1
        return PoolWorker(self.command, self._tmp / f"worker-{self._started}.log", self.env)

    def map(self, requests: Sequence, timeout: float) -> list[Reply]:
        """Each request to its own worker, all at once; one reply per request."""
        if self._closed:
            raise RuntimeError("the worker pool is closed")
        if len(requests) > self.size:
            raise ValueError(f"{len(requests)} jobs for a pool of {self.size} workers")
        for k, w in enumerate(self._workers[:len(requests)]):
            if not w.alive():
                w.kill()
                self._workers[k] = self._start()
        while len(self._workers) < len(requests):
            self._workers.append(self._start())
        workers = self._workers[:len(requests)]
        replies = exchange(workers, list(requests), timeout)
        return [("failed", f"worker {w.proc.pid} failed: {value}") if status == "error" else (status, value)
                for w, (status, value) in zip(workers, replies)]

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
        atexit.unregister(self.close)


def exchange(workers: list[PoolWorker], requests: list, timeout: float) -> list[tuple[str, object]]:
    """Send each worker its request and read every reply, all at once: a worker may be writing a large reply
    while another still reads its request, so no pipe may be waited on alone. Each result is ("ok", value),
    ("error", traceback) from the worker, or ("failed", message) for a worker that died or did not answer
    in time (it is killed)."""
    results: list[tuple[str, object] | None] = [None] * len(workers)
    pipes = [(w.proc.stdin.fileno(), w.proc.stdout.fileno()) for w in workers]
    outgoing = {fd: (k, memoryview(frame(r))) for k, ((fd, _), r) in enumerate(zip(pipes, requests))}
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
                if len(buf) >= HEADER.size and len(buf) >= HEADER.size + HEADER.unpack_from(buf)[0]:
                    results[k] = pickle.loads(bytes(buf[HEADER.size:]))
                    sel.unregister(fd)
    except BaseException:  # interrupted mid-job: the workers' replies would be out of step with their next jobs
        for w in workers:
            w.kill()
        raise
    finally:
        sel.close()
    return results


# --- the worker's side -------------------------------------------------------------------------------------

def serve(handle: Callable[[object], object], ready: Callable[[], None] | None = None) -> None:
    """A serving worker: requests from stdin, one reply each to stdout, ("ok", handle(request)) or
    ("error", traceback); `ready()` runs once first (warming up). The caller's Ctrl-C is the caller's to
    handle: it closes us."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = os.fdopen(os.dup(1), "wb")  # the dup is not inherited by the processes a job starts
    os.dup2(2, 1)  # anything else printed here, by Python or a compiler, goes to the log, not into a reply
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    if ready is not None:
        ready()
    while (request := read_message(requests)) is not None:
        try:
            reply = ("ok", handle(request))
        except Exception:
            reply = ("error", traceback.format_exc()[-LOG_TAIL:])
        replies.write(frame(reply))
        replies.flush()


def serve_one(request_path: str, reply_path: str, handle: Callable[[object], object]) -> None:
    """A one-shot worker: one request from a file, its reply written atomically to another."""
    out = handle(pickle.loads(Path(request_path).read_bytes()))
    tmp = Path(reply_path).with_suffix(".partial")
    tmp.write_bytes(pickle.dumps(out))
    os.replace(tmp, reply_path)
