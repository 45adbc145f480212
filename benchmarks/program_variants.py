"""Inductor options for the whole-graph program: Opara's kernel-level plan and torch.compile, each under a few
inductor options, timed in one process.

Two open questions of issue 18 are about the program rather than the schedule:
- GPT-2 small: Opara's whole-graph program read 12% slower on one stream than torch.compile's (H200, fp16),
  although the ATen graphs they hand inductor are the same after decomposition. Opara compiles with
  allow_buffer_reuse off (kernel streams need it); the 'reuse' variants tell whether that is the cost (it was
  not, and the gap moved with the order methods were timed in: docs/design.md, sections 6.1 and 8).
- Combo (horizontal) kernels: inductor can merge small independent kernels into one launch; the 'combo' variants
  measure them on both sides, against the kernel-level plan's streams.
- Kernel selection: where the critical path of inductor's kernels leaves streams no room to reach 1.15x
  torch.compile (GPT-2, Swin-T), only faster kernels can. The 'autotune' variants benchmark Triton GEMM templates
  against cuBLAS and fuse epilogues into the templates (max_autotune, what torch.compile's mode='max-autotune'
  sets on top of CUDA graphs); 'autotune-cd' adds coordinate-descent tuning of every kernel's launch config.
- Launch gaps: a chain of ~100 kernels replayed from a CUDA graph spends a microsecond or two between each kernel
  and the next. 'pdl' has inductor's Triton kernels use programmatic dependent launch (Hopper and later): a kernel
  is scheduled while its predecessor on the stream drains and waits on the GPU for its results, so the gap
  shrinks where two Triton kernels follow each other (cuBLAS and cuDNN calls between them keep theirs).

Each Opara variant is the kernel-level search (oparac.search.kernels.kernel_fused) with that compile's options:
its one-stream program and its best schedule, as replays of their captured graphs, then the kept plan timed like
benchmarks/run.py times a method. The torch.compile variants are torch.compile with triton.cudagraphs on (what
mode='reduce-overhead' sets) plus the variant's options.

    python benchmarks/program_variants.py --models gpt2 --dtype float16 --out $OUT
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
# name -> inductor options on top of each side's own (Opara: INDUCTOR_KERNEL_CONFIG; torch.compile: cudagraphs)
VARIANTS = {"default": {}, "reuse": {"allow_buffer_reuse": True}, "no-reuse": {"allow_buffer_reuse": False},
            "combo": {"combo_kernels": True}, "autotune": {"max_autotune": True},
            "autotune-cd": {"max_autotune": True, "coordinate_descent_tuning": True},
            "pdl": {"triton.enable_pdl": True}}


def opara_config(variant: str) -> dict:
    """The kernel-level compile's options for `variant` (buffer reuse stays off unless the variant turns it on)."""
    from opara_runtime.fused.compile import INDUCTOR_KERNEL_CONFIG

    return {**INDUCTOR_KERNEL_CONFIG, **VARIANTS[variant]}


def compile_options(variant: str) -> dict:
    """torch.compile's options for `variant`: reduce-overhead's CUDA graphs plus the variant's."""
    return {"triton.cudagraphs": True, **VARIANTS[variant]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gpt2")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--opara", default="default,reuse,combo", help="Opara variants (of " + ",".join(VARIANTS) + ")")
    ap.add_argument("--compile", default="default,no-reuse,combo", help="torch.compile variants")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    for v in args.opara.split(",") + args.compile.split(","):
        if v and v not in VARIANTS:
            ap.error(f"unknown variant {v!r}: expected one of {', '.join(VARIANTS)}")
    if not torch.cuda.is_available():
        print("the program variants need a CUDA GPU", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    for name in args.models.split(","):
        print(f"wrote {measure_model(name, args)}")
        torch.cuda.empty_cache()
    return 0


def measure_model(name: str, args) -> Path:
    """Every variant of one model, written to one result file as it goes; the file's path."""
    import opara_runtime
    import oparac
    from oparac.bench.methods import Record, compiled_runner, measure_into, zoo_model
    from oparac.pipeline import bind_weights
    from oparac.search.kernels import kernel_fused
    from results_io import new_result, write_result

    device = torch.device("cuda")
    model, inputs, reference = zoo_model(name, args.batch, args.dtype, device)
    path, header = new_result(args.out, "program-variants", device, tag=name)
    result = dict(header, model=name, batch=args.batch, dtype=args.dtype, variants=VARIANTS, records=[])

    def record(method: str, make, **extra) -> None:
        rec = measure_into(Record(model=name, batch=args.batch, dtype=args.dtype, method=method), make, inputs,
                           reference, device, iters=args.iters, warmup=20)
        result["records"].append(dict(rec.as_dict(), **extra))
        write_result(path, result)
        print(f"{name} {method}: {rec.ms_b2b} ms b2b, compiled in {rec.compile_s} s ({rec.plan or rec.error or 'ok'})",
              flush=True)

    for variant in filter(None, args.compile.split(",")):
        # each variant compiles afresh: compiled_runner resets dynamo first
        record(f"torch_compile[{variant}]", lambda v=variant: compiled_runner(model, inputs,
                                                                             options=compile_options(v)))
    plan = oparac.compile(model, inputs, device=device, dtype=args.dtype, guard=False)
    weights = bind_weights(model, plan, device)
    for variant in filter(None, args.opara.split(",")):
        found: dict = {}

        def kernel_plan(variant=variant, found=found):
            search = kernel_fused(plan, weights, device, "inductor", print, config=opara_config(variant))
            found["candidates"] = [{"schedule": c.streams, "order": c.order, "measured_ms": c.measured_ms,
                                    "chosen": c.chosen} for c in search.plan.profile.candidates]
            found["kernels"] = len(search.plan.fusion.kernels.ms)
            return opara_runtime.load(search.plan, model, device=device, trust_compiled_code=True)
        record(f"opara_kernels[{variant}]", kernel_plan, search=found)  # filled in as the plan is built
    return path


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
