"""verify(): run a plan, eager PyTorch and a float64 reference on the same random inputs, and judge the plan's
error against eager's own.

A float32 model is not exact: eager float32 is itself some 1e-4 off the true answer on a deep network, so a plan
that merely rounds differently can be 1.2e-4 off eager while being as accurate as eager. The plan is therefore
compared with the model run in float64, and may be off by max(tolerance, 2 x eager's error against float64),
output by output. Where no float64 reference exists (ONNX models run by onnxruntime, or a model that fixes its
own dtypes), the plan is compared with the eager reference at the fixed tolerance, as the verdict says.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree

from opara_plan import ModelError, Plan
from oparac.models.reference import random_input
from opara_runtime.ops import torch_dtype

# Relative error (max |a - b| over max |reference|) always accepted per plan precision, whatever eager's error.
TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
# How much less accurate than eager the plan may be, against the float64 reference.
EAGER_FACTOR = 2.0


@dataclass(frozen=True)
class OutputCheck:
    """One output: the plan's error and eager's against the reference, and the error allowed."""
    index: int
    plan_abs: float
    plan_rel: float
    eager_rel: float | None  # None: the reference is eager itself (no float64 reference)
    allowed: float

    @property
    def ok(self) -> bool:
        return self.plan_rel <= self.allowed

    def margin(self) -> float:
        """The error over the error allowed: above 1 fails."""
        if self.allowed > 0:
            return self.plan_rel / self.allowed
        return math.inf if self.plan_rel > 0 else 0.0


@dataclass(frozen=True)
class Verdict:
    max_abs: float  # the plan against the reference, over all outputs
    max_rel: float
    tolerance: float  # the floor: per precision, or the caller's
    outputs: int
    reference: str = "eager"  # 'float64', or what the plan was compared with instead
    checks: tuple[OutputCheck, ...] = ()
    precision: str = "float32"

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) if self.checks else self.max_rel <= self.tolerance

    @property
    def worst(self) -> OutputCheck | None:
        """The output nearest to (or furthest past) its bound."""
        return max(self.checks, key=OutputCheck.margin, default=None)

    @property
    def eager_rel(self) -> float | None:
        return self.worst.eager_rel if self.worst else None

    @property
    def allowed(self) -> float:
        return self.worst.allowed if self.worst else self.tolerance

    def rule(self) -> str:
        """How the verdict was reached, with the numbers of the output nearest its bound."""
        w = self.worst
        if w is None:
            return f"no outputs to compare (tolerance {self.tolerance:.1e})"
        which = f" (output {w.index})" if self.outputs > 1 else ""
        if w.eager_rel is None:
            return (f"plan error {w.plan_rel:.2e} vs {self.reference}{which}; allowed: the tolerance "
                    f"{self.tolerance:.1e} ({self.reference} is the reference: no float64 reference)")
        return (f"plan error {w.plan_rel:.2e} vs float64{which}; eager {self.precision}'s {w.eager_rel:.2e}; "
                f"allowed max(tolerance {self.tolerance:.1e}, {EAGER_FACTOR:g} x eager's error) = {w.allowed:.2e}")

    def describe(self) -> str:
        """The line `oparac verify` and `oparac demo` print."""
        status = "OK" if self.ok else "MISMATCH"
        outputs = f"{self.outputs} output{'' if self.outputs == 1 else 's'}"
        return f"{status}: {outputs}, {self.rule()}; max abs diff {self.max_abs:.3e} ({self.precision})"


def inputs_for(plan: Plan, device, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(random_input(s.shape, torch_dtype(s.dtype), g).to(device) for s in plan.model.inputs)


def errors(got, want) -> list[tuple[float, float]]:
    """(max |got - want|, that over max |want|) per output; inf where they disagree on which values are finite."""
    got_flat, want_flat = pytree.tree_leaves(got), pytree.tree_leaves(want)
    if len(got_flat) != len(want_flat):
        raise ModelError(f"the plan returned {len(got_flat)} tensors, the reference {len(want_flat)}")
    out = []
    for k, (a, b) in enumerate(zip(got_flat, want_flat)):
        a, b = a.detach().double().cpu(), b.detach().double().cpu()
        if a.shape != b.shape:
            raise ModelError(f"output {k}: the plan gives shape {list(a.shape)}, the reference {list(b.shape)}")
        if not torch.isfinite(a).all() or not torch.isfinite(b).all():
            if not all(torch.equal(f(a), f(b)) for f in (torch.isnan, torch.isposinf, torch.isneginf)):
                out.append((math.inf, math.inf))
                continue
            mask = torch.isfinite(b)
            a, b = a[mask], b[mask]
        if a.numel() == 0:
            out.append((0.0, 0.0))
            continue
        diff = (a - b).abs().max().item()
        scale = b.abs().max().item()
        out.append((diff, diff / scale if scale > 0 else diff))
    return out


def judge(got, eager, exact, tolerance: float, precision: str) -> Verdict:
    """The verdict of the plan's outputs `got`, given eager's and the float64 reference's (None: none)."""
    plan_err = errors(got, exact if exact is not None else eager)
    eager_err = errors(eager, exact) if exact is not None else [None] * len(plan_err)
    checks = []
    for k, ((plan_abs, plan_rel), e) in enumerate(zip(plan_err, eager_err)):
        eager_rel = None if e is None else e[1]
        if eager_rel is not None and not math.isfinite(eager_rel):
            # Eager itself overflows where float64 does not: hold the plan to eager, at the tolerance.
            (plan_abs, plan_rel), = errors([pytree.tree_leaves(got)[k]], [pytree.tree_leaves(eager)[k]])
            eager_rel = None
        allowed = tolerance if eager_rel is None else max(tolerance, EAGER_FACTOR * eager_rel)
        checks.append(OutputCheck(k, plan_abs, plan_rel, eager_rel, allowed))
    reference = "float64" if exact is not None else "eager"
    return Verdict(max((c.plan_abs for c in checks), default=0.0), max((c.plan_rel for c in checks), default=0.0),
                   tolerance, len(checks), reference, tuple(checks), precision)


def verify(plan: Plan, model, *, device=None, seed: int = 0, tolerance: float | None = None,
           trust_compiled_code: bool = False, trusted_keys=None) -> Verdict:
    """The plan against a float64 reference of the model, allowed max(tolerance, 2 x eager's own error); ONNX
    models against onnxruntime at the tolerance. TF32 is off throughout, so float32 means float32.
    trust_compiled_code, trusted_keys: whether a fused plan's stored programs may run, as opara_runtime.load
    takes them."""
    import opara_runtime

    tol = TOLERANCE[plan.model.precision] if tolerance is None else tolerance
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ModelError(f"tolerance: expected a finite number >= 0, found {tol!r}")
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        runner = opara_runtime.load(plan, model, device=device, trust_compiled_code=trust_compiled_code,
                                    trusted_keys=trusted_keys)
        inputs = inputs_for(plan, runner.device, seed)
        got = runner(*inputs)
        eager = reference(plan, model, inputs, runner.device)
        exact = float64_reference(model, inputs, runner.device)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    verdict = judge(got, eager, exact, tol, plan.model.precision)
    if exact is None and not _is_onnx(model):
        verdict = _named(verdict, "eager (the model would not run in float64)")
    elif exact is None:
        verdict = _named(verdict, "onnxruntime")
    return verdict


def _named(verdict: Verdict, reference: str) -> Verdict:
    from dataclasses import replace

    return replace(verdict, reference=reference)


def _is_onnx(model) -> bool:
    from pathlib import Path

    return isinstance(model, (str, Path)) and str(model).endswith(".onnx")


def reference(plan: Plan, model, inputs, device):
    """Eager PyTorch in the plan's precision (onnxruntime for .onnx models): what users run without Opara."""
    from pathlib import Path

    if _is_onnx(model):
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


def float64_reference(model, inputs, device):
    """The model in float64 on the same inputs, or None where it has no float64 form: an .onnx file, or a model
    that fixes dtypes inside (a float32 constant, an explicit .float()), which then fails or gives float32."""
    if _is_onnx(model):
        return None
    module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    wide = tuple(x.double() if x.is_floating_point() else x for x in inputs)
    try:
        module = copy.deepcopy(module).double().to(device)
        if not isinstance(model, torch.export.ExportedProgram):
            module = module.eval()
        with torch.no_grad():
            out = module(*wide)
    except Exception:  # any failure only means there is no float64 reference; the verdict says so
        return None
    floats = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if any(t.dtype != torch.float64 for t in floats):
        return None
    return out
