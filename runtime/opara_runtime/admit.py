"""Admission of an untrusted plan before anything runs: a bound on the bytes it declares, its outputs, every op
call against its ATen schema, and a meta-tensor pass proving each op's declared outputs are what it produces."""
from __future__ import annotations

import math
import os

from opara_plan import DTYPE_SIZES, OparaError, Plan, PlanFormatError, Ref
from opara_runtime.meta_pass import MetaPass
from opara_runtime.ops import spec_text
from opara_runtime.schemas import check_call, node_label

# Generous: a plan for an 8B-parameter model in float16 with its activations fits. Counted over every tensor
# the plan declares (views included), so it bounds what a plan can make the runtime allocate.
DEFAULT_MAX_BYTES = 64 << 30
MAX_BYTES_ENV = "OPARA_MAX_TENSOR_BYTES"


def max_bytes_setting(max_bytes: int | None = None) -> int:
    """The bound on declared tensor bytes: `max_bytes`, else $OPARA_MAX_TENSOR_BYTES, else 64 GiB."""
    if max_bytes is None:
        text = os.environ.get(MAX_BYTES_ENV)
        if text is None:
            return DEFAULT_MAX_BYTES
        try:
            max_bytes = int(text)
        except ValueError:
            raise OparaError(f"${MAX_BYTES_ENV}: expected a number of bytes, found {text!r}") from None
        where = f"${MAX_BYTES_ENV}"
    else:
        where = "max_bytes"
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise OparaError(f"{where}: expected a positive number of bytes, found {max_bytes!r}")
    return max_bytes


def admit(plan: Plan, *, max_bytes: int | None = None) -> None:
    """Raise PlanFormatError naming the node and op at the first thing a validated plan may not do."""
    limit = max_bytes_setting(max_bytes)
    _check_bytes(plan, limit)
    _check_outputs(plan)
    _check_ops(plan)


def _check_bytes(plan: Plan, limit: int) -> None:
    total = 0
    hint = f"raise it with load(..., max_bytes=) or ${MAX_BYTES_ENV} if the plan is genuine"
    for i, node in enumerate(plan.graph.nodes):
        for o, meta in enumerate(node.outputs):
            nbytes = math.prod(meta.shape) * DTYPE_SIZES[meta.dtype]
            if nbytes > limit:
                raise PlanFormatError(f"{node_label(plan, i)} output {o}: declares "
                                      f"{spec_text(meta.dtype, meta.shape)}, {nbytes} bytes, above the limit of "
                                      f"{limit} bytes; {hint}")
            total += nbytes
            if total > limit:
                raise PlanFormatError(f"{node_label(plan, i)} output {o}: the tensors the plan declares up to here "
                                      f"total {total} bytes, above the limit of {limit} bytes; {hint}")


def _check_outputs(plan: Plan) -> None:
    nodes = plan.graph.nodes
    out, specs = nodes[-1], plan.model.outputs
    if out.kwargs:
        raise PlanFormatError("plan output node: takes no keyword arguments")
    if len(out.args) != len(specs):
        raise PlanFormatError(f"plan output node: returns {len(out.args)} values, model.outputs declares {len(specs)}")
    for k, (arg, spec) in enumerate(zip(out.args, specs)):
        if not isinstance(arg, Ref):
            raise PlanFormatError(f"plan output {k} ({spec.name!r}): expected a reference to a value the graph "
                                  f"computes, found {type(arg).__name__}")
        meta = nodes[arg.node].outputs[arg.index]
        if (meta.shape, meta.dtype) != (tuple(spec.shape), spec.dtype):
            raise PlanFormatError(f"plan output {k} ({spec.name!r}): model.outputs declares "
                                  f"{spec_text(spec.dtype, spec.shape)}, the graph gives "
                                  f"{spec_text(meta.dtype, meta.shape)} ({node_label(plan, arg.node)})")


def _check_ops(plan: Plan) -> None:
    """Node by node, so the first problem in graph order is the one reported: schemas, then the meta pass."""
    meta_pass = MetaPass(plan)
    for i, node in enumerate(plan.graph.nodes):
        if node.kind in ("input", "param", "constant"):
            meta_pass.leaf(i)
        elif node.kind == "op":
            check_call(plan, i)
            meta_pass.run(i)
