"""Does putting a compiled program's kernels on streams change its outputs? The one-stream program against each
kernel schedule, bit for bit, and both against eager; JSON to --out.

    python benchmarks/kernel_streams_check.py --model llama --dtype float16 --out benchmarks/results
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    import opara_runtime
    import oparac
    from opara_runtime.fused import artifact_bytes, cache_key
    from oparac.search.kernels import compile_whole, kernel_dag, kernel_schedule, one_stream, whole_graph, with_kernels
    from oparac.models import zoo
    from oparac.pipeline import bind_weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    device = torch.device("cuda")
    dt = getattr(torch, args.dtype)
    model, inputs = getattr(zoo, args.model)(1)
    model = model.to(device=device, dtype=dt).eval()
    inputs = tuple((x.to(dt) if x.is_floating_point() else x).to(device) for x in inputs)
    with torch.no_grad():
        eager = model(*inputs).float()
    plan = oparac.compile(model, inputs, device="cuda", dtype=args.dtype, guard=False)
    weights = bind_weights(model, plan, device)
    one = whole_graph(plan, "inductor")
    programs, base = compile_whole(one, weights, device)
    kd = kernel_dag(programs, base, device)
    blob = artifact_bytes(programs[0].fn)
    schedules = [one_stream(kd)] + [kernel_schedule(kd, "opara", "opara", cap) for cap in (0, 4)]
    records, first = [], None
    for ks in schedules:
        runner = opara_runtime.load(with_kernels(one, ks, blob, cache_key(device)), model, trust_compiled_code=True)
        outs = [runner(*inputs).float().clone() for _ in range(args.calls)]
        first = outs[0] if first is None else first
        records.append({"schedule": ks.algorithm, "streams": max(ks.stream) + 1,
                        "bitwise_equal_to_one_stream": all(torch.equal(o, first) for o in outs),
                        "max_abs_diff_to_one_stream": max((o - first).abs().max().item() for o in outs),
                        "max_abs_diff_to_eager": max((o - eager).abs().max().item() for o in outs),
                        "eager_max_abs": eager.abs().max().item()})
        print(records[-1], flush=True)
    out = Path(args.out) / f"kernel-streams-check-{time.strftime('%Y%m%dT%H%M%S')}-{args.model}-{args.dtype}.json"
    out.write_text(json.dumps({"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__,
                               "model": args.model, "dtype": args.dtype, "records": records}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
