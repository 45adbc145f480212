"""Where a float32 plan's difference to eager comes from: every method against the model in float64 (the truth),
with cuDNN's TF32 convolutions on (PyTorch's default) and off; JSON to --out.

PyTorch runs float32 convolutions in TF32 by default (torch.backends.cudnn.allow_tf32), so eager itself is only
TF32-accurate there, and a plan that runs a convolution in another layout (NHWC, `--memory-format auto`) may pick
another cuDNN kernel and round differently. This tells that apart from an error: with TF32 off every method must
come close to the truth.

    python benchmarks/layout_precision.py --model vit_b16 --batch 8 --out benchmarks/results
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def max_abs(got, want) -> float:
    """oparac.bench.methods.max_abs_diff in float64: the truth is float64, and the differences sought (~1e-6) are
    near float32's own rounding of it."""
    import torch.utils._pytree as pytree

    return max((a.double() - b.double()).abs().max().item()
               for a, b in zip(pytree.tree_leaves(got), pytree.tree_leaves(want)))


def errors(model, inputs, truth, device: torch.device) -> dict:
    """Each method's max abs difference to `truth`, under the TF32 settings in force."""
    import copy

    import opara_runtime
    import oparac

    out: dict = {}
    with torch.no_grad():
        out["eager"] = max_abs(model(*inputs), truth)
        nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
        out["eager_channels_last"] = max_abs(nhwc(*[x.contiguous(memory_format=torch.channels_last)
                                                    if x.dim() == 4 else x for x in inputs]), truth)
    t0 = time.perf_counter()
    plan = oparac.compile(model, inputs, device=device, fuse="inductor")
    runner = opara_runtime.load(plan, model, device=device, trust_compiled_code=True)
    out["opara_default"] = max_abs(runner(*inputs), truth)
    out["opara_default_compile_s"] = time.perf_counter() - t0
    out["opara_default_plan"] = plan.model.memory_format + ", " + (plan.fusion.mode or "unfused")
    return out


def main(argv=None) -> int:
    from oparac.models import zoo
    from results_io import new_result, write_result

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_b16")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    device = torch.device("cuda")
    model, inputs = getattr(zoo, args.model)(args.batch)
    model = model.to(device=device).eval()
    inputs = tuple(x.to(device) for x in inputs)
    with torch.no_grad():
        truth = model.double()(*[x.double() if x.is_floating_point() else x for x in inputs])
        model = model.float()
    path, header = new_result(Path(args.out), "layout-precision", device)
    record = {"model": args.model, "batch": args.batch, "dtype": "float32",
              "default_cudnn_tf32": torch.backends.cudnn.allow_tf32,
              "default_matmul_tf32": torch.backends.cuda.matmul.allow_tf32}
    saved = torch.backends.cudnn.allow_tf32
    try:
        for tf32 in (True, False):
            torch.backends.cudnn.allow_tf32 = tf32
            record[f"cudnn_tf32_{'on' if tf32 else 'off'}"] = errors(model, inputs, truth, device)
            print(tf32, record[f"cudnn_tf32_{'on' if tf32 else 'off'}"], flush=True)
    finally:
        torch.backends.cudnn.allow_tf32 = saved
    write_result(path, dict(header, records=[record]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
