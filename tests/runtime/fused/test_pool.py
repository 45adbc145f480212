"""The generic worker pool on its own: plain-Python jobs, no torch (pool.py imports only the standard library)."""
from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

import opara_runtime.fused.pool as pool_module
from opara_runtime.fused.pool import WorkerPool, run_one_shot

POOL_PY = Path(pool_module.__file__)
# A worker that loads pool.py by itself (so nothing but the standard library) and serves `handle`.
WORKER = f"""
import importlib.util, os, sys, time
spec = importlib.util.spec_from_file_location("pool", {str(POOL_PY)!r})
pool = importlib.util.module_from_spec(spec); spec.loader.exec_module(pool)

def handle(request):
    if request == "boom":
        raise ZeroDivisionError("the job failed")
    if request == "exit":
        print("exiting on request", file=sys.stderr, flush=True)
        os._exit(3)
    if request == "hang":
        time.sleep(600)
    return request * 2

if sys.argv[1] == "--serve":
    pool.serve(handle)
else:
    pool.serve_one(sys.argv[1], sys.argv[2], handle)
"""


def _serving(size: int) -> WorkerPool:
    return WorkerPool(size, [sys.executable, "-c", WORKER, "--serve"], {"PATH": "/usr/bin:/bin"})


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def test_the_pool_module_needs_only_the_standard_library():
    spec = importlib.util.spec_from_file_location("standalone_pool", POOL_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.WorkerPool.__module__ == "standalone_pool"


def test_workers_answer_in_order_keep_serving_after_an_error_and_close():
    pool = _serving(3)
    try:
        big = b"x" * (8 << 20)  # larger than any pipe buffer, from every worker at once
        assert pool.map([big, 2, "ab"], timeout=60) == [("ok", big * 2), ("ok", 4), ("ok", "abab")]
        pids = pool.pids
        replies = pool.map(["boom", 5], timeout=60)
        assert replies[1] == ("ok", 10)
        status, message = replies[0]
        assert status == "failed" and message.startswith(f"worker {pids[0]} failed: Traceback")
        assert "ZeroDivisionError: the job failed" in message
        assert pool.map([1, 1, 1], timeout=60) == [("ok", 2)] * 3 and pool.pids == pids  # the same workers
    finally:
        pool.close()
    assert all(_gone(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="the worker pool is closed"):
        pool.map([1], timeout=60)


def test_a_worker_that_dies_or_hangs_fails_its_request_and_is_replaced():
    pool = _serving(2)
    try:
        pool.map([0, 0], timeout=60)
        first, second = pool.pids
        replies = pool.map(["exit", "hang"], timeout=2)
        assert replies[0] == ("failed", f"worker {first} exited with 3 before replying; its stderr ends: "
                                        "exiting on request\n")
        assert replies[1][0] == "failed" and replies[1][1].startswith(
            f"worker {second} gave no reply within 2 s and was killed; its stderr ends:")
        assert _gone(second)
        assert pool.map([3, 4], timeout=60) == [("ok", 6), ("ok", 8)]
        assert not set(pool.pids) & {first, second}
        with pytest.raises(ValueError, match="3 jobs for a pool of 2 workers"):
            pool.map([1, 2, 3], timeout=60)
    finally:
        pool.close()


def test_one_shot_workers_each_run_one_request():
    start = time.monotonic()
    replies = run_one_shot([21, "exit", "hang"], lambda job, reply: [sys.executable, "-c", WORKER, job, reply],
                           {"PATH": "/usr/bin:/bin"}, timeout=2)
    assert replies[0] == ("ok", 42)
    assert replies[1] == ("failed", "worker exited with 3: exiting on request\n")
    assert replies[2][0] == "failed" and replies[2][1].startswith("worker exited with timeout: ")
    assert time.monotonic() - start < 30
