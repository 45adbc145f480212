"""Binding a model's weights to a plan: collect them, check them against the plan's params, place them."""
from __future__ import annotations

from pathlib import Path

import torch

from opara_plan import CONCAT_PARAM, ModelError, Plan, PlanMismatchError
from opara_runtime.devices import node_device
from opara_runtime.ops import dtype_name, in_layout, spec_text, torch_dtype

_REDUCED = ("float16", "bfloat16")


def weights_of(model) -> dict[str, torch.Tensor]:
    """Weights by name from an nn.Module, an ExportedProgram (or .pt2 path), a state dict, or an .onnx path."""
    if isinstance(model, (str, Path)) and str(model).endswith(".pt2"):
        model = torch.export.load(str(model))
    if isinstance(model, torch.export.ExportedProgram):
        return dict(model.state_dict) | {k: v for k, v in model.constants.items() if isinstance(v, torch.Tensor)}
    if isinstance(model, torch.nn.Module):
        named = dict(model.named_parameters(remove_duplicate=False))
        named.update(model.named_buffers(remove_duplicate=False))
        return named
    if isinstance(model, dict):
        for key, value in model.items():
            if not isinstance(key, str) or not isinstance(value, torch.Tensor):
                raise ModelError(f"weights dict: expected str -> tensor, found {type(key).__name__} -> "
                                 f"{type(value).__name__} at key {key!r}")
        return dict(model)
    if isinstance(model, (str, Path)) and str(model).endswith(".onnx"):
        from opara_runtime.onnx_weights import onnx_weights  # imports onnx only here

        return onnx_weights(Path(model))
    raise ModelError(f"model: expected an nn.Module, an ExportedProgram, a dict of tensors or a path to a "
                     f".pt2 or .onnx file, found {type(model).__name__}")


def check_weights(plan: Plan, weights: dict[str, torch.Tensor]) -> None:
    """PlanMismatchError naming the first param whose presence, shape or dtype differs from the plan. A merged
    param (target CONCAT_PARAM) checks each weight it stacks: each present, of the plan's dtype, and together
    the declared shape along dimension 0; where `weights` already holds the stack under the param's own name
    (weights_on_device's result, which tuning, buckets and replicas hand to their runners), that is checked."""
    precision = plan.model.precision
    for i, node in enumerate(plan.graph.nodes):
        if node.kind != "param":
            continue
        meta = node.outputs[0]
        if node.target == CONCAT_PARAM and node.name not in weights:
            parts = [_checked_weight(weights, name, meta.dtype, None, precision, i) for name in node.args]
            same_rest = all(p.dim() == len(meta.shape) and tuple(p.shape[1:]) == meta.shape[1:] for p in parts)
            if not same_rest or sum(p.shape[0] for p in parts) != meta.shape[0]:
                found = ", ".join(f"{name!r} {list(p.shape)}" for name, p in zip(node.args, parts))
                raise PlanMismatchError(f"parameter {node.name!r} (plan node {i}): the plan stacks {found} into "
                                        f"{spec_text(meta.dtype, meta.shape)}, which they do not make")
        else:
            _checked_weight(weights, node.name, meta.dtype, meta.shape, precision, i)


def _checked_weight(weights: dict[str, torch.Tensor], name: str, dtype: str, shape, precision: str, i: int):
    """The model's weight `name`, checked to be of `dtype` (or castable to the plan's reduced precision) and of
    `shape` (None: any); PlanMismatchError otherwise."""
    w = weights.get(name)
    wanted = spec_text(dtype, shape) if shape is not None else f"{dtype} weight"
    if w is None:
        raise PlanMismatchError(f"the model has no parameter {name!r}, which the plan needs as {wanted} (plan node "
                                f"{i}); is this the model the plan was compiled for?")
    found = dtype_name(w.dtype)
    castable = dtype == precision and precision in _REDUCED and w.is_floating_point()
    if (shape is not None and tuple(w.shape) != shape) or (found != dtype and not castable):
        raise PlanMismatchError(f"parameter {name!r}: the plan expects {wanted}, the model has "
                                f"{spec_text(found, tuple(w.shape))}")
    return w


def weights_on_device(plan: Plan, weights: dict[str, torch.Tensor], device: torch.device, *,
                      only: int | None = None) -> dict[str, torch.Tensor]:
    """Param name -> the weight on `device` in the plan's dtype, each copied once however many nodes use it;
    `only`: just the params of that plan device id. Tuning builds many runners from this one copy (a tensor
    already in place is not copied again). A channels_last plan gets its 4-D floating-point weights NHWC."""
    placed: dict[str, torch.Tensor] = {}
    memory_format = plan.model.memory_format
    for i, node in enumerate(plan.graph.nodes):
        if node.kind == "param" and node.name not in placed and (only is None or node_device(plan, i) == only):
            dtype = torch_dtype(node.outputs[0].dtype)
            if node.target == CONCAT_PARAM and node.name not in weights:  # merged projections: stacked once
                weight = torch.cat([weights[name].detach().to(device=device, dtype=dtype) for name in node.args])
            else:
                weight = weights[node.name].detach().to(device=device, dtype=dtype)
            placed[node.name] = in_layout(weight, memory_format)
    return placed


def place_weights(plan: Plan, weights: dict[str, torch.Tensor], devices: list[torch.device]) -> dict[int, torch.Tensor]:
    """Node id -> its weight on the device of that node (devices[plan device id]) in the plan's dtype.
    A weight that nodes on several GPUs read is copied once per device, not once per node."""
    by_device: dict[int, dict[str, torch.Tensor]] = {}
    out = {}
    for i, node in enumerate(plan.graph.nodes):
        if node.kind != "param":
            continue
        d = node_device(plan, i)
        if d not in by_device:
            by_device[d] = weights_on_device(plan, weights, devices[d], only=d)
        out[i] = by_device[d][node.name]
    return out
