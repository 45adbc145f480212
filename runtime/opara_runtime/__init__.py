"""Opara runtime: load a plan, bind the model's weights, capture one multi-stream CUDA graph, replay it."""
from __future__ import annotations

from pathlib import Path

from opara_plan import Plan, load_plan, validate
from opara_runtime.bind import weights_of
from opara_runtime.runner import Runner, check_target, choose_device, rebuild

__all__ = ["Runner", "load", "rebuild"]


def load(plan: Plan | str | Path, model, *, device=None, capture: bool | None = None, devices=None,
         compiled_segments: bool = True) -> Runner:
    """Load `plan` (a Plan or a path) for `model` (nn.Module, state dict or .onnx path).

    device: None picks the plan's target kind (a CUDA plan runs on the CPU, sequentially, with a
    warning where no GPU exists). On CUDA the plan is captured as one multi-stream CUDA graph;
    capture=False runs the ops one by one instead (for debugging). A plan for several GPUs runs on
    consecutive GPUs from `device` (cuda:0, cuda:1, ...) unless `devices` names one per plan device; inputs
    and outputs live on the first. Raises PlanFormatError for a bad
    plan and PlanMismatchError when the model, the GPU or the machine does not fit it.

    A fused plan carries its segments compiled by inductor: loading them runs code stored in the plan,
    so load such plans from storage you trust, as you would the model's code. compiled_segments=False
    ignores them and compiles every segment here instead (slower: about 30 s for GoogLeNet).
    """
    if isinstance(plan, (str, Path)):
        plan = load_plan(plan)
    elif isinstance(plan, Plan):
        validate(plan)
    else:
        from opara_plan import PlanFormatError

        raise PlanFormatError(f"plan: expected a Plan or a path, found {type(plan).__name__}")
    dev = choose_device(plan, device)
    check_target(plan, dev)
    return Runner(plan, weights_of(model), dev, capture=capture, devices=devices,
                  compiled_segments=compiled_segments)
