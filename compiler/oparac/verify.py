"""verify(): run a plan and its reference on the same random inputs and compare."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree

from opara_plan import ModelError, Plan
from oparac.models.reference import random_input
from opara_runtime.ops import torch_dtype

# Relative error (max |a - b| over max |reference|) accepted per plan precision. float32 on a GPU uses
# TF32 off for the check (verify disables it), so 1e-4 holds there too.
TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}


@dataclass(frozen=True)
class Verdict:
    max_abs: float
    max_rel: float
    tolerance: float
    outputs: int

    @property
    def ok(self) -> bool:
        return self.max_rel <= self.tolerance


def inputs_for(plan: Plan, device, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(random_input(s.shape, torch_dtype(s.dtype), g).to(device) for s in plan.model.inputs)


def compare(got, want, tolerance: float) -> Verdict:
    got_flat, want_flat = pytree.tree_leaves(got), pytree.tree_leaves(want)
    if len(got_flat) != len(want_flat):
        raise ModelError(f"the plan returned {len(got_flat)} tensors, the reference {len(want_flat)}")
    max_abs = max_rel = 0.0
    for k, (a, b) in enumerate(zip(got_flat, want_flat)):
        a, b = a.detach().double().cpu(), b.detach().double().cpu()
        if a.shape != b.shape:
            raise ModelError(f"output {k}: the plan gives shape {list(a.shape)}, the reference {list(b.shape)}")
        if not torch.isfinite(a).all() or not torch.isfinite(b).all():
            same_nonfinite = torch.equal(torch.isfinite(a), torch.isfinite(b))
            if not same_nonfinite:
                return Verdict(float("inf"), float("inf"), tolerance, len(got_flat))
            mask = torch.isfinite(b)
            a, b = a[mask], b[mask]
        if a.numel() == 0:
            continue
        diff = (a - b).abs().max().item()
        scale = b.abs().max().item()
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / scale if scale > 0 else diff)
    return Verdict(max_abs, max_rel, tolerance, len(got_flat))


def verify(plan: Plan, model, *, device=None, seed: int = 0, tolerance: float | None = None) -> Verdict:
    """Plan vs eager PyTorch (or onnxruntime for .onnx models) on the same random inputs."""
    import opara_runtime

    tol = TOLERANCE[plan.model.precision] if tolerance is None else tolerance
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        runner = opara_runtime.load(plan, model, device=device)
        inputs = inputs_for(plan, runner.device, seed)
        got = runner(*inputs)
        want = reference(plan, model, inputs, runner.device)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return compare(got, want, tol)


def reference(plan: Plan, model, inputs, device):
    from pathlib import Path

    if isinstance(model, (str, Path)) and str(model).endswith(".onnx"):
        from oparac.ingest.onnx_reference import run_onnxruntime

        return run_onnxruntime(Path(model), [x.cpu() for x in inputs])
    if isinstance(model, torch.export.ExportedProgram):
        with torch.no_grad():  # an exported module is already in inference form (and refuses .eval())
            return model.module().to(device)(*inputs)
    from oparac.pipeline import cast_model

    model, _ = cast_model(model, (), plan.model.precision)
    model = model.to(device).eval()
    with torch.no_grad():
        return model(*inputs)
