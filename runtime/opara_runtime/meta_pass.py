"""The meta-tensor pass: each op run on meta tensors built from the declared metadata of its inputs, in
topological order, proving the outputs the plan declares (shapes, dtypes, how many) are what the op produces."""
from __future__ import annotations

import functools

import torch

from opara_plan import OparaError, Plan, PlanFormatError
from opara_runtime.ops import dtype_name, input_specs, materialize, resolve_op, spec_text, torch_dtype
from opara_runtime.schemas import node_label

META = torch.device("meta")


# Views placed by explicit strides and offset. Meta kernels do not hold them to their input's storage (the CPU
# kernel does), so admit does; never memoised, since a memoised input does not keep the storage behind it.
STRIDED_VIEWS = frozenset({"aten.as_strided.default"})


class MetaPass:
    """The meta values of one plan's nodes, each op run on its inputs' meta tensors in topological order."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.values: list = [None] * len(plan.graph.nodes)

    def leaf(self, i: int) -> None:
        """An input, param or constant: a meta tensor of its declared metadata."""
        node = self.plan.graph.nodes[i]
        if len(node.outputs) != 1 or node.multi:
            raise PlanFormatError(f"{node_label(self.plan, i)}: a {node.kind} node has one output, found "
                                  f"{len(node.outputs)}{' (multi)' if node.multi else ''}")
        meta = node.outputs[0]
        self.values[i] = torch.empty(meta.shape, dtype=torch_dtype(meta.dtype), device=META)

    def run(self, i: int) -> None:
        plan, node, values = self.plan, self.plan.graph.nodes[i], self.values
        try:
            args = [materialize(a, values, META) for a in node.args]
            kwargs = {k: materialize(v, values, META) for k, v in node.kwargs}
            if node.target in STRIDED_VIEWS:
                _check_strided_view(plan, i, *args, **kwargs)
                result = meta_op(node.target)(*args, **kwargs)
            else:
                result = meta_call(node.target, args, kwargs)
        except OparaError:
            raise
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise PlanFormatError(f"{node_label(plan, i)}: the op rejects its declared inputs "
                                  f"({input_specs(node, values)}): {type(e).__name__}: {first[:300]}") from None
        produced = tuple(result) if isinstance(result, (tuple, list)) else (result,)
        if isinstance(result, (tuple, list)) != node.multi or len(produced) != len(node.outputs):
            raise PlanFormatError(f"{node_label(plan, i)}: the op returns {len(produced)} "
                                  f"{'values' if isinstance(result, (tuple, list)) else 'tensor'}, the plan declares "
                                  f"{len(node.outputs)}{' (multi)' if node.multi else ''}")
        for o, (t, meta) in enumerate(zip(produced, node.outputs)):
            if not isinstance(t, torch.Tensor):
                raise PlanFormatError(f"{node_label(plan, i)} output {o}: the op returns {type(t).__name__}, "
                                      f"not a tensor")
            got = dtype_name(t.dtype)
            if tuple(t.shape) != meta.shape or got != meta.dtype:
                raise PlanFormatError(f"{node_label(plan, i)} output {o}: declared "
                                      f"{spec_text(meta.dtype, meta.shape)}, the op produces {spec_text(got, tuple(t.shape))} from inputs "
                                      f"({input_specs(node, values)})")
        values[i] = produced if node.multi else result


# Shapes, not strides, are checked: a meta kernel may lay out a result differently from the real one (SDPA's
# output), and `view` then fails on meta where it works at run time. So a view is checked as a reshape (the same
# result shape, the same size check); a view the real strides refuse fails at run time, as an ExecutionError.
META_STAND_INS = {"aten.view.default": "aten.reshape.default", "aten._unsafe_view.default": "aten.reshape.default"}


def meta_op(target: str):
    """The overload whose result on meta tensors stands for `target`'s."""
    return resolve_op(META_STAND_INS.get(target, target))


def meta_call(target: str, args, kwargs):
    """The op's result on meta tensors, memoised by call: many meta kernels are Python decompositions
    (layer_norm, addmm) and a model's repeated layers (and repeated loads) make the same calls."""
    key = _call_key(target, args, kwargs)
    layout = _meta_layout(key) if key is not None else None
    if layout is None:
        return meta_op(target)(*args, **kwargs)
    multi, specs = layout
    made = [torch.empty_strided(shape, stride, dtype=dtype, device=META) for shape, stride, dtype in specs]
    return made if multi else made[0]


@functools.lru_cache(maxsize=8192)
def _meta_layout(key):
    """(multi, ((shape, stride, dtype), ...)) of the call `key` stands for; None where it returns a non-tensor."""
    target, args, kwargs = key
    result = meta_op(target)(*_from_key(args), **dict(_from_key(kwargs)))
    multi = isinstance(result, (tuple, list))
    tensors = tuple(result) if multi else (result,)
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        return None
    return multi, tuple((tuple(t.shape), t.stride(), t.dtype) for t in tensors)


def _key_of(v):
    if isinstance(v, torch.Tensor):
        return "tensor", tuple(v.shape), v.stride(), v.dtype, v.storage_offset()
    if isinstance(v, (tuple, list)):
        return "list", tuple(_key_of(x) for x in v)
    return "value", type(v), v  # the type too: True and 1 hash alike but promote differently


def _from_key(key):
    if key[0] == "tensor":
        _, shape, stride, dtype, offset = key
        extent = 1 + sum((d - 1) * st for d, st in zip(shape, stride)) if all(shape) else 0
        return torch.empty(offset + extent, dtype=dtype, device=META).as_strided(shape, stride, offset)
    if key[0] == "list":
        return [_from_key(k) for k in key[1]]
    return key[2]


def _call_key(target: str, args, kwargs):
    key = (target, _key_of(args), _key_of(sorted(kwargs.items())))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _check_strided_view(plan: Plan, i: int, base, size, stride, storage_offset=None) -> None:
    size, stride = list(size), list(stride)
    offset = storage_offset if storage_offset is not None else base.storage_offset()
    if len(size) != len(stride) or any(d < 0 for d in size) or any(s < 0 for s in stride) or offset < 0:
        raise PlanFormatError(f"{node_label(plan, i)}: a view with sizes {size}, strides {stride} and offset {offset}")
    if 0 in size:
        return
    needed = (offset + sum((d - 1) * s for d, s in zip(size, stride)) + 1) * base.element_size()
    have = base.untyped_storage().nbytes()
    if needed > have:
        raise PlanFormatError(f"{node_label(plan, i)}: the view needs {needed} bytes of storage from offset {offset}, "
                              f"its input has {have}")
