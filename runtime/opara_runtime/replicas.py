"""RunnerPool: N replicas of one plan on one device, sharing its weights, so that concurrent callers overlap."""
from __future__ import annotations

import contextlib
import functools
import queue
import threading
import weakref
from pathlib import Path

import torch

from opara_plan import OparaError, Plan, PlanSet
from opara_runtime.artifacts import validated_artifact
from opara_runtime.bind import check_weights, weights_of, weights_on_device
from opara_runtime.runner import check_target, choose_device


class PoolTimeoutError(OparaError):
    """No replica of a pool became idle within the caller's timeout."""


class Replica:
    """One runner (a Runner, or a BucketedRunner for a plan set) and the stream its calls are enqueued on (None on
    the CPU)."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.stream = torch.cuda.Stream(device=runner.device) if runner.device.type == "cuda" else None

    def __call__(self, *inputs):
        """The runner's call, enqueued on this replica's stream; returns when the outputs are ready."""
        if self.stream is None:
            return self.runner(*inputs)
        caller = torch.cuda.current_stream(self.runner.device)
        # The inputs were made on the caller's stream; the replay must see them.
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            out = self.runner(*inputs)
        # A wait of the caller's stream on ours would chain replicas: callers of one thread-shared stream
        # (the default one) would each wait there for the others' replays. The host waits for this replica instead,
        # which releases the GIL, and the outputs are ready on any stream when the call returns.
        self.stream.synchronize()
        for t in _tensors(out):
            # The outputs were allocated on our stream: without this, their memory could go to this replica's next
            # call while work the caller queued on them is still pending.
            t.record_stream(caller)
        return out


class RunnerPool:
    """A plan loaded `replicas` times on one device, each replica with its own CUDA graph and stream; the weights
    are placed on the device once and shared. Call it like a Runner from any number of threads: each call checks
    out an idle replica (waiting for one, up to `timeout` seconds, when all are busy), runs on it, returns it.
    A plan set gives replicas that are BucketedRunners: each holds every bucket's graph, and a call runs the
    smallest bucket that fits it.

    On the CPU the replicas run the sequential path. A plan for several GPUs shares nothing: each replica places
    its own weights. Everything else is as `opara_runtime.load` (options go through to it, per replica, so every
    load-time check applies to each).
    """

    def __init__(self, plan: Plan | PlanSet | str | Path, model, *, replicas: int = 2, device=None,
                 timeout: float | None = None, **options) -> None:
        from opara_runtime import load  # the package's load(), defined beside this module's import

        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
            raise OparaError(f"replicas: expected an integer >= 1, found {replicas!r}")
        plan = validated_artifact(plan)
        plans = plan.plans if isinstance(plan, PlanSet) else (plan,)
        weights = weights_of(model)
        dev = choose_device(plans[0], device)
        if all(p.schedule.num_devices == 1 for p in plans):
            for p in plans:
                check_target(p, dev)
            check_weights(plans[0], weights)
            # Placed once in the plan's dtype and layout (a plan set's buckets share both): each replica's own
            # placement then finds every weight already in place and keeps the tensor, so they share one copy.
            weights = weights_on_device(plans[0], weights, dev)
            device = dev
        self.capture_threads = CaptureThreads()
        # The finalizer holds the threads' release, not the pool: dropping the pool lets its threads end.
        weakref.finalize(self, self.capture_threads.release)
        make = functools.partial(load, plan, weights, device=device, **options)
        if dev.type == "cuda":
            self.runners = tuple(self.capture_threads.load(make) for _ in range(replicas))
        else:
            self.runners = tuple(make() for _ in range(replicas))
        self.plan = plan
        self.device = self.runners[0].device
        self.timeout = timeout
        self._idle: queue.LifoQueue[Replica] = queue.LifoQueue()
        for runner in self.runners:
            self._idle.put(Replica(runner))

    @property
    def replicas(self) -> int:
        return len(self.runners)

    def __call__(self, *inputs, timeout: float | None = None):
        """Run the plan on `inputs` on an idle replica; outputs in the model's structure (copies, ready on return).
        timeout: seconds to wait for an idle replica (default: the pool's), then PoolTimeoutError."""
        with self.checkout(timeout=timeout) as replica:
            return replica(*inputs)

    @contextlib.contextmanager
    def checkout(self, *, timeout: float | None = None):
        """An idle Replica, the caller's alone until the block ends (e.g. to fill `replica.runner.input_buffers()`
        and call it several times); PoolTimeoutError after `timeout` seconds (default: the pool's) if none is."""
        wait = self.timeout if timeout is None else timeout
        try:
            replica = self._idle.get(timeout=wait)
        except queue.Empty:
            raise PoolTimeoutError(f"pool: all {self.replicas} replicas stayed busy for {wait} s") from None
        try:
            yield replica
        finally:
            self._idle.put(replica)


class CaptureThreads:
    """Captures each replica on a thread of its own, which then stays parked for the pool's life.

    cuBLAS workspaces are kept per (cuBLAS handle, stream), and a captured graph's GEMMs write the workspace
    that was current at capture. torch hands out streams round-robin from a pool of 32 per device, so two replicas
    captured on one thread can get the same stream and, through the thread's one handle, the same workspace: run at
    once, their GEMMs would corrupt each other's results. A thread has handles of its own, held until it exits, so a
    replica captured on its own live thread has workspaces no other capture shares. (Each capture now also makes
    its workspaces inside its own graph's pool, workspaces.graph_owned_workspaces, which gives the same guarantee
    on one thread; the threads stay, as the measured and tested arrangement.)
    """

    def __init__(self) -> None:
        self._release = threading.Event()

    def load(self, make):
        """make() on a new thread, which is parked until release(); its result or its exception here. One capture
        at a time: torch's default capture mode refuses CUDA work from other threads while a graph is captured."""
        done = threading.Event()
        box: dict = {}

        def run() -> None:
            try:
                box["runner"] = make()
            except BaseException as e:  # re-raised on the caller's thread
                box["error"] = e
            done.set()
            if "runner" in box:
                self._release.wait()

        threading.Thread(target=run, name="opara-replica", daemon=True).start()
        done.wait()
        if "error" in box:
            raise box.pop("error")
        return box.pop("runner")

    def release(self) -> None:
        self._release.set()

    @property
    def released(self) -> bool:
        return self._release.is_set()


def _tensors(out):
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, (list, tuple)):
        for x in out:
            yield from _tensors(x)
    elif isinstance(out, dict):
        for x in out.values():
            yield from _tensors(x)
