"""Requests of n samples run as plan-sized batches: admit each request, pack requests, run, slice outputs back.

A batch's samples are taken to be independent (as in inference), so requests can share a run and zero-padding
changes no request's outputs. A batchable plan (or plan set) has the batch as the leading dimension of every
input and output. One with some output that does not (a scalar loss, say) is still served, one request per run.
"""
from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor

import torch

from opara_plan import OparaError, Plan, PlanSet
from opara_runtime.ops import spec_text, torch_dtype
from opara_runtime.replicas import RunnerPool
from opara_runtime.serve.codec import JSON, RequestError, TooLargeError

# Room for a body's framing: the safetensors header, the JSON keys. Bodies beyond the tensors' own size plus this
# (and, for JSON, plus the longest text a number takes) are refused unread.
_FRAMING_BYTES = 64 * 1024
_JSON_BYTES_PER_VALUE = 32


@dataclasses.dataclass(frozen=True)
class Request:
    """One admitted request: its tensors in the plan's input order (on the CPU), how many samples it holds, and
    its inputs' dimensions besides the batch (requests of equal ones can share a run)."""

    inputs: tuple[torch.Tensor, ...]
    n: int
    key: tuple = ()


def batcher_for(pool: RunnerPool):
    """The batcher of the pool's artifact: a PlanBatcher for a plan, a BucketBatcher for a plan set."""
    return BucketBatcher(pool) if isinstance(pool.plan, PlanSet) else PlanBatcher(pool)


class Batcher:
    """What both batchers share: admission by name, dtype and rank; packing; running packs on the pool at once."""

    def __init__(self, pool: RunnerPool, plan: Plan, groups: dict[tuple, int], batchable: bool) -> None:
        """plan: the one whose inputs name the request's tensors; groups: the inputs' dimensions besides the batch
        -> the largest batch served with them; batchable: requests may share a run (their outputs split apart)."""
        self.pool = pool
        self.names = tuple(x.name for x in plan.model.inputs)
        self.dtypes = tuple(x.dtype for x in plan.model.inputs)
        self.groups = groups
        self.batchable = batchable
        self.max_batch = max(groups.values())
        self._threads = ThreadPoolExecutor(pool.replicas, thread_name_prefix="opara-batch")

    def expected(self, k: int) -> str:
        """What input k may be, e.g. 'float32[n, 3, 224, 224] with 1 <= n <= 8'."""
        return " or ".join(f"{spec_text(self.dtypes[k], ('n',) + rest[k])} with 1 <= n <= {largest}"
                           for rest, largest in self.groups.items())

    def max_body_bytes(self, kind: str) -> int:
        """The largest request body worth reading: the tensors of the largest batch, as safetensors or JSON text."""
        numel = max(largest * sum(math.prod(dims) for dims in rest) for rest, largest in self.groups.items())
        return numel * (_JSON_BYTES_PER_VALUE if kind == JSON else 8) + _FRAMING_BYTES

    def admit(self, tensors) -> Request:
        """The request's tensors checked (names, dtypes, ranks, one batch size, the other dimensions), in input
        order. RequestError names the input, what was expected and what was found; TooLargeError for a batch
        beyond the largest served."""
        inputs = self._ordered(tensors)
        n = inputs[0].shape[0] if inputs and inputs[0].dim() else 0
        for k, x in enumerate(inputs):
            got = spec_text(str(x.dtype).removeprefix("torch."), tuple(x.shape))
            if x.dtype != torch_dtype(self.dtypes[k]) or x.dim() == 0 or x.shape[0] < 1 or not any(
                    x.dim() == len(rest[k]) + 1 for rest in self.groups):
                raise RequestError(f"input {k} {self.names[k]!r}: expected {self.expected(k)}, got {got}")
            if x.shape[0] != n:
                raise RequestError(f"input {k} {self.names[k]!r}: expected the batch size of input 0 ({n}), "
                                   f"got {got}")
        key = tuple(tuple(x.shape[1:]) for x in inputs)
        if key not in self.groups:
            k = next((k for k in range(len(inputs)) if all(rest[k] != key[k] for rest in self.groups)), 0)
            got = spec_text(str(inputs[k].dtype).removeprefix("torch."), tuple(inputs[k].shape))
            raise RequestError(f"input {k} {self.names[k]!r}: expected {self.expected(k)}, got {got}")
        if n > self.groups[key]:
            raise TooLargeError(f"request batch: {n} samples, more than the largest batch this deployment serves "
                                f"for these shapes ({self.groups[key]})")
        return Request(tuple(inputs), n, key)

    def run(self, requests: list[Request]) -> list:
        """The outputs of each request, in the model's structure, on the CPU; packs run on the replicas at once.
        A pack whose run fails with an OparaError gives that error in place of each of its requests' outputs,
        and the other packs' requests are served."""
        packs = self._packs(list(range(len(requests))), requests)
        results: list = [None] * len(requests)
        for pack, outs in zip(packs, self._threads.map(self._run_or_refuse, [[requests[i] for i in p]
                                                                            for p in packs])):
            for i, out in zip(pack, outs):
                results[i] = out
        return results

    def close(self) -> None:
        self._threads.shutdown(wait=True)

    def _packs(self, order: list[int], requests: list[Request]) -> list[list[int]]:
        """Request indices in packs: consecutive requests of one group, at most the group's largest batch each."""
        if not self.batchable:
            return [[i] for i in order]
        packs: list[list[int]] = []
        open_pack: dict[tuple, tuple[list[int], int]] = {}
        for i in order:
            r = requests[i]
            pack, size = open_pack.get(r.key, (None, 0))
            if pack is None or size + r.n > self.groups[r.key]:
                pack, size = [], 0
                packs.append(pack)
            pack.append(i)
            open_pack[r.key] = (pack, size + r.n)
        return packs

    def _run_or_refuse(self, pack: list[Request]) -> list:
        try:
            return self._run_pack(pack)
        except OparaError as e:
            return [e] * len(pack)

    def _run_pack(self, pack: list[Request]) -> list:
        device = self.pool.device
        if len(pack) == 1 and not self._pads(pack[0].n, pack[0].key):
            out = self.pool(*(x.to(device) for x in pack[0].inputs))
            return [_map(out, lambda t: t.cpu())]
        total = sum(r.n for r in pack)
        inputs = []
        for k in range(len(self.names)):
            parts = [r.inputs[k] for r in pack]
            pad = self._pads(total, pack[0].key)
            if pad:
                parts.append(torch.zeros((pad,) + parts[0].shape[1:], dtype=parts[0].dtype))
            inputs.append(torch.cat(parts).to(device))
        out = _map(self.pool(*inputs), lambda t: t.cpu())
        outs, start = [], 0
        for r in pack:
            outs.append(_map(out, lambda t, a=start, b=start + r.n: t[a:b]))
            start += r.n
        return outs

    def _pads(self, total: int, key: tuple) -> int:
        """Samples of zeros to add to a pack of `total` samples before it runs."""
        return 0

    def _ordered(self, tensors) -> list[torch.Tensor]:
        if isinstance(tensors, dict):
            missing = [name for name in self.names if name not in tensors]
            extra = sorted(set(tensors) - set(self.names))
            if missing or extra:
                raise RequestError(f"request inputs: expected {', '.join(map(repr, self.names))}, "
                                   f"found {', '.join(map(repr, tensors)) or 'none'}")
            return [tensors[name] for name in self.names]
        if len(tensors) != len(self.names):
            raise RequestError(f"request inputs: expected {len(self.names)} ({', '.join(map(repr, self.names))}), "
                               f"found {len(tensors)}")
        return list(tensors)


class PlanBatcher(Batcher):
    """One plan from a RunnerPool: requests are packed, in arrival order, into runs of at most the plan's batch,
    zero-padded to it. A plan that is not batchable takes requests of exactly its shapes, one per run."""

    def __init__(self, pool: RunnerPool) -> None:
        plan = pool.plan
        shapes = [tuple(x.shape) for x in plan.model.inputs]
        first = shapes[0][0] if shapes and shapes[0] else 1
        # Not batchable, the group still sizes request bodies: a request is then the plan's whole input.
        super().__init__(pool, plan, {tuple(s[1:] for s in shapes): first}, _batched(plan, first))
        self.shapes = shapes

    def expected(self, k: int) -> str:
        if not self.batchable:
            return spec_text(self.dtypes[k], self.shapes[k])
        return super().expected(k)

    def admit(self, tensors) -> Request:
        if self.batchable:
            return super().admit(tensors)
        inputs = self._ordered(tensors)
        for k, x in enumerate(inputs):
            if x.dtype != torch_dtype(self.dtypes[k]) or tuple(x.shape) != self.shapes[k]:
                got = spec_text(str(x.dtype).removeprefix("torch."), tuple(x.shape))
                raise RequestError(f"input {k} {self.names[k]!r}: expected {self.expected(k)}, got {got}")
        return Request(tuple(inputs), 1, next(iter(self.groups)))

    def _pads(self, total: int, key: tuple) -> int:
        return self.max_batch - total if self.batchable else 0


class BucketBatcher(Batcher):
    """A plan set from a RunnerPool of BucketedRunners: requests are grouped by their dimensions besides the batch
    and packed into runs of at most the largest bucket of their group; each run takes the smallest bucket that
    fits it (the BucketedRunner pads it and cuts the outputs back)."""

    def __init__(self, pool: RunnerPool) -> None:
        plan_set: PlanSet = pool.plan
        groups: dict[tuple, int] = {}
        for b in plan_set.buckets:
            key = tuple(tuple(x.shape[1:]) for x in b.inputs)
            groups[key] = max(groups.get(key, 0), b.batch)
        batchable = all(_batched(p, b.batch) for p, b in zip(plan_set.plans, plan_set.buckets))
        super().__init__(pool, plan_set.plans[0], groups, batchable)


def _batched(plan: Plan, batch: int | None) -> bool:
    """Every input and output of the plan has `batch` as its leading dimension."""
    specs = plan.model.inputs + plan.model.outputs
    return batch is not None and bool(plan.model.inputs) and all(x.shape[:1] == (batch,) for x in specs)


def _map(out, fn):
    """`fn` applied to every tensor of an output structure (tuples stay tuples, dicts dicts, None None)."""
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, (list, tuple)):
        return type(out)(_map(x, fn) for x in out)
    if isinstance(out, dict):
        return {k: _map(v, fn) for k, v in out.items()}
    return out
