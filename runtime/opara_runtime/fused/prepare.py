"""Preparing a fused plan's segments to launch: whether its stored programs may run, loading them (in a
private cache), and compiling the segments here or in workers when they may not or cannot."""
from __future__ import annotations

import os
import warnings

import torch

from opara_plan import Plan
from opara_runtime.fused.compile import cache_key, compile_here, config_for, load_artifact
from opara_runtime.fused.parallel import compile_in_workers, worker_count
from opara_runtime.fused.private_cache import private_inductor_cache
from opara_runtime.fused.programs import SegmentProgram, segment_programs

HOW_TO_TRUST = ("stored programs run only from a plan signed by a trusted key (sign it when compiling: oparac "
                "compile --sign-key KEY or OPARA_SIGNING_KEY; trust the public key here: OPARA_TRUSTED_KEYS or "
                "trusted_keys=), or with trust_compiled_code=True for a plan from storage you trust as you would "
                "the model's code")


def prepare_fused(plan: Plan, device: torch.device, base_values: list, *, use_artifacts: bool = True,
                  trust_compiled_code: bool = False, trusted_keys=None, compiled=None) -> list[SegmentProgram]:
    """Segment programs ready to launch. The plan's stored programs are loaded, so deployment does not compile,
    when use_artifacts is True, they were made with this torch build and GPU, and they are trusted: the plan
    carries a valid signature by one of `trusted_keys` (paths or public keys; None: OPARA_TRUSTED_KEYS), or
    trust_compiled_code is True. Otherwise, or when one fails to load or to run, every segment is compiled
    here, with a warning saying why. A plan of fusion mode 'kernels' then has its program's kernels put on the
    plan's streams (kernel_mode).

    compiled: the plan's programs as this process already holds them (a list by program index, each having
    run once), used as they are instead of loading or compiling: the compiler timing several kernel schedules
    of the one program it has just compiled loads nothing per schedule. Nothing from a file is involved, so no
    trust is asked. A kernel-mode program is shared by every runner made from it: each installs its own
    schedule before capturing, which is what its captured graph then keeps."""
    if compiled is not None:
        programs = segment_programs(plan, device)
        for prog in programs:
            index = prog.segment.program
            if not 0 <= index < len(compiled):
                raise ValueError(f"segment program {index}: {len(compiled)} compiled programs were given")
            prog.fn, prog.program = compiled[index], index
    else:
        programs = _prepared(plan, device, base_values, use_artifacts=use_artifacts,
                             trust_compiled_code=trust_compiled_code, trusted_keys=trusted_keys)
    if plan.fusion.mode == "kernels" and device.type == "cuda":
        from opara_runtime.fused.kernel_mode import apply_kernel_streams

        if apply_kernel_streams(programs, plan.fusion.kernels, device) is None and compiled is not None:
            # A loaded plan may run on one stream (it warned); a schedule timed for the compiler may not: it
            # would be measured as the one-stream program under its own name.
            from opara_runtime.fused.kernel_streams import KernelScheduleError

            raise KernelScheduleError(f"kernel schedule {plan.fusion.kernels.algorithm} could not be put on the "
                                      f"program compiled in this process")
    return programs


def _prepared(plan: Plan, device: torch.device, base_values: list, *, use_artifacts: bool, trust_compiled_code: bool,
              trusted_keys) -> list[SegmentProgram]:
    programs = segment_programs(plan, device)
    if use_artifacts and plan.fusion.programs:
        reason = refusal(plan, device, trust_compiled_code=trust_compiled_code, trusted_keys=trusted_keys)
        if reason is None:
            reason = _load_stored(programs, plan, base_values)
        if reason is None:
            return programs
        warnings.warn(f"the plan's compiled segments {reason}: compiling them afresh", stacklevel=4)
    compile_segments(programs, base_values, plan=plan)
    return programs


def refusal(plan: Plan, device: torch.device, *, trust_compiled_code: bool, trusted_keys) -> str | None:
    """Why the plan's stored programs may not run here (completing "the plan's compiled segments ..."), or None."""
    f = plan.fusion
    if f.cache_key != cache_key(device):
        return f"were made with {f.cache_key}, this is {cache_key(device)}"
    if trust_compiled_code:
        return None
    from opara_plan.signing import check_signature  # cryptography is imported only where a signature is checked

    verdict = check_signature(plan, public_keys(trusted_keys))
    if verdict.trusted:
        return None
    return f"were not run ({verdict.reason}; {HOW_TO_TRUST})"


def public_keys(trusted_keys) -> list:
    """The keys a signature may be made with: trusted_keys as paths or key objects, or OPARA_TRUSTED_KEYS."""
    from opara_plan.signing import load_public_key, trusted_keys_from_env

    if trusted_keys is None:
        return list(trusted_keys_from_env())
    if isinstance(trusted_keys, (str, os.PathLike)) or not hasattr(trusted_keys, "__iter__"):
        trusted_keys = [trusted_keys]
    return [load_public_key(k) if isinstance(k, (str, os.PathLike)) else k for k in trusted_keys]


def _load_stored(programs: list[SegmentProgram], plan: Plan, base_values: list) -> str | None:
    """Load each distinct stored program once and run every segment once, all in one private cache; None when
    that worked, else why not (then nothing loaded is kept: the caller compiles instead)."""
    stored = plan.fusion.programs
    with private_inductor_cache():
        loaded: dict[int, object] = {}
        for prog in programs:
            index = prog.segment.program
            if index not in loaded:
                try:
                    loaded[index] = load_artifact(stored[index])
                except Exception as e:  # a corrupt or foreign artifact must cost a compile, never the deployment
                    return _discard(programs, f"could not be loaded (program {index}: {type(e).__name__}: {e})")
            prog.fn, prog.program, prog.blob = loaded[index], index, stored[index]
        values = list(base_values)
        with torch.no_grad():
            for k, prog in enumerate(programs):
                try:
                    prog(values)
                except Exception as e:
                    return _discard(programs, f"failed on their first run (segment {k}, program {prog.program}: "
                                              f"{type(e).__name__}: {e})")
    return None


def _discard(programs: list[SegmentProgram], reason: str) -> str:
    for prog in programs:
        prog.fn, prog.program, prog.blob = None, -1, None
    return reason


def compile_segments(programs: list[SegmentProgram], base_values: list, *, plan: Plan | None = None,
                     workers: int | None = None) -> None:
    """Compile every segment with inductor; segments with equal code on equal inputs share one program.

    With a plan and more than one worker (the default on a GPU, `OPARA_COMPILE_WORKERS` to choose), the
    distinct programs are compiled in parallel worker processes; otherwise here, in launch order. Either
    way every segment then runs once on real values, so each is specialised to the exact sizes and strides
    its inputs will have."""
    device = _device_of(base_values)
    mode = plan.fusion.mode if plan is not None else "segments"
    if mode == "kernels":  # one program: a worker would only add its start-up time
        compile_here(programs, base_values, config_for(mode))
        return
    if plan is not None and worker_count(device, workers) > 1:
        try:
            compile_in_workers(plan, programs, base_values, device, workers)
            return
        except Exception as e:  # parallel compilation is an optimisation: compile here instead
            warnings.warn(f"compiling fused segments in worker processes failed ({type(e).__name__}: "
                          f"{str(e)[-800:]}); compiling them in this process", stacklevel=2)
    compile_here(programs, base_values)


def _device_of(values: list) -> torch.device:
    for v in values:
        if isinstance(v, torch.Tensor):
            return v.device
    return torch.device("cpu")
