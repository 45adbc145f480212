"""Segments compiled in worker processes, one-shot and from a pool (CPU inductor: real workers, real compiles)."""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
import torch

from opara_runtime import fused
from opara_runtime.devices import indexed
from opara_runtime.fused import parallel
from opara_runtime.fused.parallel import compile_pool, default_workers, worker_count

from helpers.fused import CPU, run_segments, two_branches


@pytest.fixture
def branches():
    return two_branches()


def _compile(plan, base, workers=None):
    programs = fused.segment_programs(plan, CPU)
    fused.compile_segments(programs, base, plan=plan, workers=workers)
    return programs


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


@pytest.mark.slow
def test_segments_compile_in_worker_processes(branches):
    plan, base, expected = branches
    programs = _compile(plan, base, workers=2)
    # Only the worker path hands back stored bytes; a fallback to compiling here would leave them None.
    assert all(p.blob for p in programs)
    assert [p.program for p in programs] == [0, 0, 1]
    torch.testing.assert_close(run_segments(plan, programs, base), expected)


@pytest.mark.slow
def test_a_failing_worker_falls_back_to_compiling_here(branches, monkeypatch):
    plan, base, expected = branches
    monkeypatch.setenv("PYTHONPATH", "")
    monkeypatch.setattr("sys.executable", "/bin/false")
    with pytest.warns(UserWarning, match="worker processes failed"):
        programs = _compile(plan, base, workers=2)
    assert all(p.blob is None for p in programs)
    torch.testing.assert_close(run_segments(plan, programs, base), expected)


def test_worker_count_defaults_and_override(monkeypatch):
    monkeypatch.delenv("OPARA_COMPILE_WORKERS", raising=False)
    assert default_workers(CPU) == 1  # the CPU path compiles in-process unless told otherwise
    monkeypatch.setenv("OPARA_COMPILE_WORKERS", "3")
    assert default_workers(CPU) == 3
    monkeypatch.setenv("OPARA_COMPILE_WORKERS", "many")
    with pytest.raises(ValueError, match="OPARA_COMPILE_WORKERS: expected a whole number of processes, found 'many'"):
        default_workers(CPU)


def test_no_pool_where_segments_compile_in_process(monkeypatch):
    monkeypatch.delenv("OPARA_COMPILE_WORKERS", raising=False)
    with compile_pool(CPU) as pool:
        assert pool is None and worker_count(CPU, None) == 1


def test_a_nested_pool_is_the_open_one_and_workers_start_only_for_a_compile(monkeypatch):
    monkeypatch.delenv("OPARA_COMPILE_WORKERS", raising=False)
    with compile_pool(CPU, 2) as outer:
        with compile_pool(CPU, 3) as inner:
            assert inner is outer and outer.pids == []
            assert worker_count(CPU, None) == 2 and worker_count(CPU, 5) == 2 and worker_count(CPU, 1) == 1
        assert worker_count(CPU, None) == 2  # the inner block did not close the outer pool
    assert worker_count(CPU, None) == 1


def test_an_open_pool_belongs_to_its_own_context(monkeypatch):
    """The open pool is context-local (no module-level global): another thread's compiles do not use it."""
    monkeypatch.delenv("OPARA_COMPILE_WORKERS", raising=False)
    seen = []
    with compile_pool(CPU, 2):
        thread = threading.Thread(target=lambda: seen.append(worker_count(CPU, None)))
        thread.start()
        thread.join()
        assert worker_count(CPU, None) == 2
    assert seen == [1]


def test_a_pool_starts_its_workers_on_an_indexed_device(monkeypatch):
    # On the H100 a pool opened with the compiler's plain 'cuda' started workers that could not select it.
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    for given, expected in (("cuda", "cuda:3"), ("cuda:1", "cuda:1")):
        pool = parallel.SegmentCompilePool(2, torch.device(given))
        pool.close()  # no worker started: they start with a compile
        assert pool.device == torch.device(expected) and pool.pids == []
    assert indexed(CPU) == CPU


@pytest.mark.slow
def test_a_pool_compiles_as_one_shot_workers_do_and_keeps_its_workers(branches):
    plan, base, expected = branches
    one_shot = _compile(plan, base, workers=2)
    with pytest.raises(KeyboardInterrupt):
        with compile_pool(CPU, 2) as pool:
            pooled = _compile(plan, base)
            pids = pool.pids
            again = _compile(plan, base)
            assert pool.pids == pids and len(pids) == 2  # the second compile reused the warm workers
            raise KeyboardInterrupt  # an interrupted caller still closes its pool
    for programs in (pooled, again):
        assert all(p.blob for p in programs)  # compiled by the workers, not by the fallback here
        assert [p.program for p in programs] == [p.program for p in one_shot]
        torch.testing.assert_close(run_segments(plan, programs, base), run_segments(plan, one_shot, base))
    torch.testing.assert_close(run_segments(plan, pooled, base), expected)
    assert all(_gone(pid) for pid in pids)
    assert worker_count(CPU, None) == default_workers(CPU)  # no pool is left open


@pytest.mark.slow
def test_a_worker_that_errs_hangs_or_dies_fails_its_job_and_is_replaced(branches, monkeypatch):
    plan, base, expected = branches
    with compile_pool(CPU, 2) as pool:
        _compile(plan, base)  # both workers started and warm
        first, second = pool.pids

        with pytest.raises(RuntimeError, match=rf"1 of 1 segment compile workers failed; first: worker {first} "
                                               r"failed: [^$]*PlanFormatError: "):
            pool.run(b"not a plan", CPU, [[(0, [])]])
        assert pool.pids == [first, second]  # a compile error leaves the worker serving

        os.kill(second, signal.SIGSTOP)
        with monkeypatch.context() as m:
            m.setattr(parallel, "WORKER_TIMEOUT_S", 3)
            with pytest.warns(UserWarning, match=rf"1 of 2 segment compile workers failed; first: worker {second} "
                                                 r"gave no reply within 3 s and was killed; its stderr ends:"):
                programs = _compile(plan, base)
        assert all(p.blob is None for p in programs)  # compiled here instead
        torch.testing.assert_close(run_segments(plan, programs, base), expected)
        assert _gone(second)

        os.kill(first, signal.SIGSTOP)  # stopped, so it is still running when it is given its job
        killer = threading.Timer(1.0, os.kill, (first, signal.SIGKILL))
        killer.start()
        with pytest.warns(UserWarning, match=rf"first: worker {first} exited with -9 before (replying|reading its job)"):
            _compile(plan, base)
        killer.join()
        programs = _compile(plan, base)
        assert all(p.blob for p in programs)  # both dead workers were started afresh
        replaced = pool.pids
        assert first not in replaced and second not in replaced
    assert all(_gone(pid) for pid in replaced)


@pytest.mark.slow
def test_a_segment_whose_inputs_differ_from_the_eager_layout_is_compiled_here(branches, monkeypatch):
    """Workers compile on the layouts of an eager pass; where a compiled producer lays its output out otherwise
    (inductor's stride padding), that segment is compiled on its real inputs instead of failing its checks."""
    from opara_runtime.fused import parallel

    plan, base, expected = branches
    real = parallel._input_metas

    def skewed(plan_, programs, base_values, device):
        metas = real(plan_, programs, base_values, device)
        last = programs[-1].inputs[0]  # the final segment's first input: recorded with other strides
        kind, shape, stride, offset, dtype, dev = metas[last]
        metas[last] = (kind, shape, tuple(s * 2 for s in stride), offset, dtype, dev)
        return metas

    monkeypatch.setattr(parallel, "_input_metas", skewed)
    programs = _compile(plan, base, workers=2)
    assert all(p.blob for p in programs[:-1]) and programs[-1].blob is None
    assert programs[-1].program not in {p.program for p in programs[:-1]}
    torch.testing.assert_close(run_segments(plan, programs, base), expected)
