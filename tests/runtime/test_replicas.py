"""RunnerPool on the CPU: replicas share the weights, concurrent callers get eager's outputs, checkout and errors."""
from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import opara_runtime
import oparac
from opara_plan import InputError, OparaError, PlanFormatError, PlanMismatchError, make_plan_set
from opara_runtime import PoolTimeoutError, RunnerPool
from opara_runtime.replicas import CaptureThreads

from helpers.models import small_cnn
from helpers.plans import fork_join


def test_concurrent_callers_get_eager_outputs(tiny_plan):
    w = torch.randn(3, 3)
    pool = RunnerPool(tiny_plan, {"w": w}, replicas=3)
    xs = [torch.randn(2, 3) for _ in range(64)]
    with ThreadPoolExecutor(8) as ex:
        outs = list(ex.map(pool, xs))
    for x, y in zip(xs, outs):
        torch.testing.assert_close(y, fork_join(x, w))


def test_a_compiled_model_in_threads_matches_eager():
    model, (x,) = small_cnn()
    plan = oparac.compile(model, (x,), device="cpu")
    pool = RunnerPool(plan, model, replicas=2)
    xs = [torch.randn_like(x) for _ in range(16)]
    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(pool, xs))
    with torch.no_grad():
        for xi, y in zip(xs, outs):
            torch.testing.assert_close(y, model(xi), rtol=1e-4, atol=1e-5)


def test_replicas_share_one_copy_of_the_weights(tiny_plan):
    w = torch.randn(3, 3)
    pool = RunnerPool(tiny_plan, {"w": w}, replicas=4)
    x = torch.randn(2, 3)
    # On the CPU in the plan's dtype the one copy is the caller's tensor itself: every replica reads it.
    w.mul_(2)
    for _ in range(pool.replicas):
        with pool.checkout() as replica:
            torch.testing.assert_close(replica(x), fork_join(x, w))


def test_each_replica_is_its_own_runner(tiny_plan):
    pool = RunnerPool(tiny_plan, {"w": torch.randn(3, 3)}, replicas=3)
    assert pool.replicas == 3
    assert len({id(r) for r in pool.runners}) == 3
    assert all(r.device == torch.device("cpu") and r.captured is None for r in pool.runners)


def test_loads_from_a_path(tiny_plan, tmp_path):
    tiny_plan.save(tmp_path / "t.plan")
    w = torch.randn(3, 3)
    pool = RunnerPool(tmp_path / "t.plan", {"w": w}, replicas=2)
    x = torch.randn(2, 3)
    torch.testing.assert_close(pool(x), fork_join(x, w))


def test_a_busy_pool_times_out_with_an_opara_error(tiny_plan):
    pool = RunnerPool(tiny_plan, {"w": torch.randn(3, 3)}, replicas=1)
    with pool.checkout():
        with pytest.raises(PoolTimeoutError, match=r"all 1 replicas stayed busy for 0.05 s"):
            pool(torch.randn(2, 3), timeout=0.05)
    pool(torch.randn(2, 3), timeout=0.05)  # idle again once the holder is done


def test_a_waiting_caller_gets_the_replica_when_it_is_returned(tiny_plan):
    w = torch.randn(3, 3)
    pool = RunnerPool(tiny_plan, {"w": w}, replicas=1)
    x = torch.randn(2, 3)
    got = []
    with pool.checkout():
        waiter = threading.Thread(target=lambda: got.append(pool(x, timeout=10)))
        waiter.start()
        waiter.join(0.1)
        assert waiter.is_alive() and not got  # waits while the only replica is out
    waiter.join(10)
    torch.testing.assert_close(got[0], fork_join(x, w))


def test_bad_inputs_raise_input_error_and_the_replica_comes_back(tiny_plan):
    pool = RunnerPool(tiny_plan, {"w": torch.randn(3, 3)}, replicas=1)
    with pytest.raises(InputError, match=r"input 0 'x': expected float32\[2, 3\] on cpu, got float32\[2, 4\]"):
        pool(torch.randn(2, 4))
    with pytest.raises(InputError, match=r"expected 1 inputs \('x'\), got 0"):
        pool()
    pool(torch.randn(2, 3), timeout=0.05)  # the failed call returned its replica


@pytest.mark.parametrize("replicas", [0, -1, 1.5, True, "2"])
def test_replicas_must_be_a_positive_integer(tiny_plan, replicas):
    with pytest.raises(OparaError, match=r"replicas: expected an integer >= 1, found"):
        RunnerPool(tiny_plan, {"w": torch.randn(3, 3)}, replicas=replicas)


def test_a_bad_plan_or_weights_are_refused_as_load_refuses_them(tiny_plan):
    with pytest.raises(PlanFormatError, match=r"plan: expected a Plan, a PlanSet or a path, found int"):
        RunnerPool(3, {"w": torch.randn(3, 3)})
    with pytest.raises(PlanMismatchError, match=r"the model has no parameter 'w'"):
        RunnerPool(tiny_plan, {})
    with pytest.raises(PlanMismatchError, match=r"parameter 'w': the plan expects float32\[3, 3\]"):
        RunnerPool(tiny_plan, {"w": torch.randn(3, 4)})


def test_a_plan_for_several_devices_runs_on_the_cpu(two_device_plan):
    w = torch.randn(3, 3)
    pool = RunnerPool(two_device_plan, {"w": w}, replicas=2)
    xs = [torch.randn(2, 3) for _ in range(8)]
    with ThreadPoolExecutor(4) as ex:
        for x, y in zip(xs, ex.map(pool, xs)):
            torch.testing.assert_close(y, fork_join(x, w))


def test_options_go_through_to_load(tiny_plan):
    with pytest.raises(PlanMismatchError, match=r"devices: the plan runs on 1 devices, 2 were given"):
        RunnerPool(tiny_plan, {"w": torch.randn(3, 3)}, devices=["cpu", "cpu"])
    assert isinstance(opara_runtime.RunnerPool(tiny_plan, {"w": torch.randn(3, 3)}, replicas=1).runners[0],
                      opara_runtime.Runner)


def test_capture_threads_load_on_a_thread_that_stays_until_released():
    threads = CaptureThreads()
    seen = []

    def make():
        seen.append(threading.current_thread())
        return "runner"
    assert threads.load(make) == "runner"
    (worker,) = seen
    assert worker is not threading.current_thread()
    worker.join(0.05)
    assert worker.is_alive()  # parked: its cuBLAS handles stay its own
    threads.release()
    worker.join(5)
    assert not worker.is_alive()


def test_capture_threads_raise_the_loads_error_on_the_caller():
    def make():
        raise PlanMismatchError("plan target: compiled for compute capability 9.0")
    with pytest.raises(PlanMismatchError, match="compiled for compute capability 9.0"):
        CaptureThreads().load(make)


def test_dropping_a_pool_releases_its_threads(tiny_plan):
    pool = RunnerPool(tiny_plan, {"w": torch.randn(3, 3)}, replicas=1)
    threads = pool.capture_threads
    del pool
    gc.collect()
    assert threads.released


@pytest.fixture(scope="module")
def cnn_plan_set():
    model, (x,) = small_cnn()
    plans = [oparac.compile(model, (x[:n],), device="cpu") for n in (1, 2)]
    return make_plan_set(plans), model


def test_a_plan_set_gives_bucketed_replicas(cnn_plan_set, tmp_path):
    plan_set, model = cnn_plan_set
    plan_set.save(tmp_path / "cnn.plans")
    for source in (plan_set, tmp_path / "cnn.plans"):
        pool = RunnerPool(source, model, replicas=2)
        assert all(isinstance(r, opara_runtime.BucketedRunner) for r in pool.runners)
        xs = [torch.randn(1 + k % 2, 3, 16, 16) for k in range(8)]
        with ThreadPoolExecutor(4) as ex:
            outs = list(ex.map(pool, xs))
        with torch.no_grad():
            for x, y in zip(xs, outs):
                torch.testing.assert_close(y, model(x), rtol=1e-4, atol=1e-5)
        with pytest.raises(InputError, match=r"batch: expected at most 2, got 3"):
            pool(torch.randn(3, 3, 16, 16))


def test_load_with_replicas_gives_a_pool(tiny_plan):
    w = torch.randn(3, 3)
    pool = opara_runtime.load(tiny_plan, {"w": w}, replicas=3)
    assert isinstance(pool, RunnerPool) and pool.replicas == 3
    x = torch.randn(2, 3)
    torch.testing.assert_close(pool(x), fork_join(x, w))
    assert isinstance(opara_runtime.load(tiny_plan, {"w": w}), opara_runtime.Runner)
