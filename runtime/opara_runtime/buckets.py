"""BucketedRunner: a plan set loaded for one model; each call runs the smallest bucket that fits its batch."""
from __future__ import annotations

import threading

import torch

from opara_plan import InputError, OutTree, PlanSet
from opara_runtime.bind import check_weights, weights_on_device
from opara_runtime.graph_memory import capture_order, predict_graph_memory
from opara_runtime.ops import dtype_name, spec_text, torch_dtype
from opara_runtime.runner import Runner, check_target


class BucketedRunner:
    """Runs a plan set like the model: a call of batch n runs the bucket of the smallest batch >= n whose other
    input dimensions equal the call's, with the inputs padded by zeros to that batch, and returns the outputs
    whose leading dimension is the batch cut back to n. (Padding is sound for models that treat the samples of
    a batch independently, as inference models do; the other dimensions are never padded.)

    The weights are placed on the device once and shared by every bucket. On CUDA the buckets' graphs share one
    memory pool (opara_runtime.graph_pool), captured largest first, so together they hold about what the largest
    holds alone. Calls are serialised across buckets, since the graphs share memory; zero_copy=True outputs
    are valid until the next call of any bucket.
    """

    def __init__(self, plan_set: PlanSet, weights: dict, device: torch.device, *, capture: bool | None = None,
                 devices=None, **options) -> None:
        """weights: name -> tensor (bind.weights_of); options go to each bucket's Runner."""
        self.plan_set = plan_set
        self.buckets = plan_set.buckets
        first = plan_set.plans[0]
        for plan in plan_set.plans:
            check_target(plan, device)
        check_weights(first, weights)
        if first.schedule.num_devices == 1 and all(p.schedule.num_devices == 1 for p in plan_set.plans):
            # Placed once in the plans' dtype and layout (the same for every bucket: validate_plan_set); each
            # Runner's own placement then finds every weight in place and keeps the tensor.
            weights = weights_on_device(first, weights, device)
        self.weights = weights
        self.device = device
        self.predicted = [predict_graph_memory(p) for p in plan_set.plans]
        self.pool = None
        if device.type == "cuda" and capture is not False:
            from opara_runtime.graph_pool import GraphPool

            self.pool = GraphPool(device)
        runners: list[Runner | None] = [None] * len(plan_set.plans)
        self.measured: list[int | None] = [None] * len(plan_set.plans)
        for k in capture_order(self.predicted):
            before = self.pool.reserved_bytes() if self.pool is not None else 0
            runners[k] = Runner(plan_set.plans[k], weights, device, capture=capture, devices=devices,
                                pool=self.pool, **options)
            if self.pool is not None:
                self.measured[k] = self.pool.reserved_bytes() - before
        self.runners: tuple[Runner, ...] = tuple(runners)
        self.device = self.runners[0].device
        self._lock = threading.Lock()
        inputs = first.model.inputs
        self._names = [x.name for x in inputs]
        self._dtypes = [torch_dtype(x.dtype) for x in inputs]
        self._ranks = [len(x.shape) for x in inputs]
        # Other dimensions -> [(batch, bucket index)] ascending.
        self._groups: dict[tuple, list[tuple[int, int]]] = {}
        for k, b in enumerate(self.buckets):
            self._groups.setdefault(b.key[0], []).append((b.batch, k))
        self._batched_outputs = frozenset(plan_set.batched_outputs)  # cut back to a padded call's batch

    @property
    def max_batch(self) -> int:
        return max(b.batch for b in self.buckets)

    def graph_memory(self) -> dict:
        """Per bucket: the predicted bytes of its graph alone, and on CUDA what its capture added to the shared
        pool (measured); the pool's total."""
        from opara_runtime.graph_memory import predict_shared_pool

        added, total = predict_shared_pool(self.predicted)
        return {"buckets": [{"batch": b.batch, "predicted_bytes": m.total, "predicted_added_bytes": a,
                             "measured_added_bytes": meas}
                            for b, m, a, meas in zip(self.buckets, self.predicted, added, self.measured)],
                "predicted_total_bytes": total,
                "measured_total_bytes": self.pool.reserved_bytes() if self.pool is not None else None}

    def bucket_for(self, inputs) -> tuple[int, int]:
        """(bucket index, the call's batch); InputError saying what was expected where nothing fits."""
        if len(inputs) != len(self._names):
            names = ", ".join(repr(n) for n in self._names)
            raise InputError(f"expected {len(self._names)} inputs ({names}), got {len(inputs)}")
        for k, (x, name, dtype, rank) in enumerate(zip(inputs, self._names, self._dtypes, self._ranks)):
            if not isinstance(x, torch.Tensor):
                raise InputError(f"input {k} {name!r}: expected a {dtype_name(dtype)} tensor of rank {rank} on "
                                 f"{self.device}, got {type(x).__name__}")
            same_device = x.device.type == self.device.type and (
                self.device.index is None or x.device.index in (None, self.device.index))
            if x.dtype != dtype or x.dim() != rank or not same_device:
                raise InputError(f"input {k} {name!r}: expected a {dtype_name(dtype)} tensor of rank {rank} on "
                                 f"{self.device}, got {spec_text(dtype_name(x.dtype), tuple(x.shape), x.device)}")
        n = inputs[0].shape[0]
        for k, x in enumerate(inputs[1:], 1):
            if x.shape[0] != n:
                raise InputError(f"input {k} {self._names[k]!r}: batch (leading dimension) {x.shape[0]}, input 0 "
                                 f"{self._names[0]!r} has {n}; every input's leading dimension is the batch")
        rest = tuple(tuple(x.shape[1:]) for x in inputs)
        group = self._groups.get(rest)
        if group is None:
            known = "; ".join(self._shapes_text(other) for other in self._groups)
            raise InputError(f"inputs {self._shapes_text(rest, n)}: no bucket has these dimensions besides the "
                             f"batch; the plan set has {known}")
        largest = group[-1][0]
        if n > largest:
            raise InputError(f"batch: expected at most {largest}, got {n} (the largest bucket of the plan set for "
                             f"{self._shapes_text(rest)}); split the request")
        if n < 1:
            raise InputError(f"batch: expected 1..{largest}, got {n}")
        return next(k for batch, k in group if batch >= n), n

    def _shapes_text(self, rest: tuple, n: int | str = "N") -> str:
        return ", ".join(f"{name}: {dtype_name(dt)}[{', '.join(map(str, (n, *dims)))}]"
                         for name, dt, dims in zip(self._names, self._dtypes, rest))

    def __call__(self, *inputs, zero_copy: bool = False):
        """Run the bucket that fits; outputs in the model's structure, batched ones cut to the call's batch."""
        k, n = self.bucket_for(inputs)
        runner, batch = self.runners[k], self.buckets[k].batch
        with self._lock:
            if n == batch:
                return runner(*inputs, zero_copy=zero_copy)
            buffers = runner.input_buffers()
            for buf, x in zip(buffers, inputs):
                buf[:n].copy_(x)
                buf[n:].zero_()
            out = runner(*buffers, zero_copy=zero_copy)
            return _cut(runner.plan.model.output_tree, out, self._batched_outputs, n)


def _cut(tree: OutTree, out, batched: frozenset[int], n: int):
    """The runner's outputs with the batched ones cut to the first n samples (views: no copy)."""
    if tree.kind == "tensor":
        return out[:n] if tree.index in batched else out
    if tree.kind == "none":
        return out
    if tree.kind == "dict":
        return {key: _cut(child, out[key], batched, n) for key, child in zip(tree.keys, tree.children)}
    children = [_cut(child, o, batched, n) for child, o in zip(tree.children, out)]
    return children if tree.kind == "list" else tuple(children)
