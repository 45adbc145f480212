"""Opara runtime: load a plan, bind the model's weights, capture one multi-stream CUDA graph, replay it."""
from __future__ import annotations

from pathlib import Path

from opara_plan import Plan, PlanSet
from opara_runtime.admit import admit
from opara_runtime.artifacts import validated_artifact
from opara_runtime.bind import weights_of
from opara_runtime.buckets import BucketedRunner
from opara_runtime.replicas import PoolTimeoutError, RunnerPool
from opara_runtime.runner import Runner, check_target, choose_device, rebuild

__all__ = ["BucketedRunner", "PoolTimeoutError", "Runner", "RunnerPool", "load", "rebuild"]


def load(plan: Plan | PlanSet | str | Path, model, *, device=None, capture: bool | None = None, devices=None,
         compiled_segments: bool = True, trust_compiled_code: bool = False, trusted_keys=None,
         max_bytes: int | None = None, replicas: int | None = None) -> Runner | BucketedRunner | RunnerPool:
    """Load `plan` (a Plan, a PlanSet or a path to either) for `model` (nn.Module, state dict or .onnx path).

    replicas=N gives a RunnerPool (replicas.py): N replicas sharing the weights, each with its own graph and stream,
    callable from many threads at once.

    A plan set (`oparac compile --batch 1,2,4,8`) gives a BucketedRunner: each call runs the smallest bucket
    that fits its batch (padded, outputs cut back), the weights bound once for all buckets (buckets.py).

    device: None picks the plan's target kind (a CUDA plan runs on the CPU, sequentially, with a
    warning where no GPU exists). On CUDA the plan is captured as one multi-stream CUDA graph;
    capture=False runs the ops one by one instead (for debugging). A plan for several GPUs runs on
    consecutive GPUs from `device` (cuda:0, cuda:1, ...) unless `devices` names one per plan device; inputs
    and outputs live on the first. Raises PlanFormatError for a bad
    plan and PlanMismatchError when the model, the GPU or the machine does not fit it.

    Before anything runs the plan is admitted (admit.py): every op is on the allowlist and fits its schema,
    every declared output shape is what the op produces (a pass on meta tensors), and the tensors the plan
    declares total at most max_bytes (None: $OPARA_MAX_TENSOR_BYTES, else 64 GiB).

    A fused plan carries its segments compiled by inductor, and running them runs code stored in the plan.
    They are used only when the plan carries a valid signature by one of `trusted_keys` (paths of public
    keys or loaded keys; None: the keys named in OPARA_TRUSTED_KEYS) or when trust_compiled_code=True says
    the plan comes from storage you trust as you would the model's code; otherwise they are ignored, every
    segment is compiled here (slower: about 30 s for GoogLeNet) and a warning says why. compiled_segments=False
    always compiles here.
    """
    if replicas is not None:
        return RunnerPool(plan, model, replicas=replicas, device=device, capture=capture, devices=devices,
                          compiled_segments=compiled_segments, trust_compiled_code=trust_compiled_code,
                          trusted_keys=trusted_keys, max_bytes=max_bytes)
    plan = validated_artifact(plan)
    if isinstance(plan, PlanSet):
        for bucket_plan in plan.plans:
            admit(bucket_plan, max_bytes=max_bytes)
        return BucketedRunner(plan, weights_of(model), choose_device(plan.plans[0], device), capture=capture,
                              devices=devices, compiled_segments=compiled_segments,
                              trust_compiled_code=trust_compiled_code, trusted_keys=trusted_keys)
    admit(plan, max_bytes=max_bytes)
    dev = choose_device(plan, device)
    check_target(plan, dev)
    return Runner(plan, weights_of(model), dev, capture=capture, devices=devices,
                  compiled_segments=compiled_segments, trust_compiled_code=trust_compiled_code,
                  trusted_keys=trusted_keys)
