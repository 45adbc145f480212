"""Where a runner call's time goes, on the GPU: bare replay, input copy + replay, the runner's call, and the
host-side input check alone. Latency is one call followed by a synchronize; overhead is latency minus the
back-to-back replay time (DESIGN section 8).

    python benchmarks/call_overhead.py --model googlenet        # GPU; writes results/call-overhead-*.json
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def breakdown(model_name: str, rounds: int = 5) -> dict:
    import torch

    import opara_runtime
    import oparac
    from opara_runtime.graph_inputs import InputFeed
    from oparac import zoo
    from oparac.measure import fill_random, time_gpu

    model, inputs = getattr(zoo, model_name)()
    model = model.cuda()
    xs = tuple(x.cuda() for x in inputs)
    dev = torch.device("cuda")
    plan = oparac.compile(model, xs, device="cuda")
    runner = opara_runtime.load(plan, model, device="cuda")
    fill_random(runner.captured.static_inputs)
    graph, static = runner.captured.graph, runner.captured.static_inputs

    def copy_and_replay():
        for buf, x in zip(static, xs):
            buf.copy_(x, non_blocking=True)
        graph.replay()

    def foreach_copy_and_replay():  # one multi-tensor kernel on the SMs instead of a memcpy per input
        torch._foreach_copy_(static, xs)
        graph.replay()

    own = runner.input_buffers()  # a caller that fills the runner's buffers in place skips the input copy
    # Two input tensors in turn: every call re-points the graph's input copies (the same tensor again does not).
    turns = itertools.cycle([tuple(x.clone() for x in xs), xs])
    # Each round opens with the bare replays, after a call with the runner's own buffers has switched the in-graph
    # input copies off: they then time the graph without them, as before any call.
    variants = {"bare_replay": graph.replay, "copy_and_replay": copy_and_replay,
                "foreach_copy_and_replay": foreach_copy_and_replay,
                "runner_zero_copy": lambda: runner(*xs, zero_copy=True), "runner": lambda: runner(*xs),
                "runner_alternating_inputs": lambda: runner(*next(turns)),
                "runner_own_buffers_zero_copy": lambda: runner(*own, zero_copy=True),
                "runner_own_buffers": lambda: runner(*own)}
    rows = {name: [] for name in variants}
    check_us = []
    for _ in range(rounds):  # interleaved rounds: a slow moment of the VM hits every variant alike
        runner(*own, zero_copy=True)
        for name, fn in variants.items():
            t = time_gpu(fn, dev)
            rows[name].append((t.ms_b2b, t.ms_latency))
        t0 = time.perf_counter()
        for _ in range(1000):
            runner.check_inputs(xs)
        check_us.append((time.perf_counter() - t0) * 1e3)
    replay_b2b = statistics.median(r[0] for r in rows["bare_replay"])
    out = {"model": model_name, "replay_b2b_ms": replay_b2b, "input_check_us": statistics.median(check_us),
           "in_graph_input_copies": isinstance(runner.captured.inputs, InputFeed)}
    for name, samples in rows.items():
        b2b = statistics.median(r[0] for r in samples)
        lat = statistics.median(r[1] for r in samples)
        out[name] = {"ms_b2b": b2b, "ms_latency": lat, "overhead_us": (lat - replay_b2b) * 1e3}
    # The VM's synchronisation floor (the bare replay's overhead) moves between runs by more than a call costs:
    # each variant's figure over its own run's floor is what compares across runs.
    floor = out["bare_replay"]["overhead_us"]
    for name in rows:
        out[name]["over_floor_us"] = out[name]["overhead_us"] - floor
    return out


def main(argv=None) -> int:
    import torch

    from results_io import new_result, write_result

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="googlenet")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("the call-overhead breakdown needs a CUDA GPU", file=sys.stderr)
        return 1
    rec = breakdown(args.model)
    path, header = new_result(args.out, "call-overhead")
    write_result(path, dict(header, records=[rec]))
    for name, r in rec.items():
        if not isinstance(r, dict):
            continue
        print(f"{name:28s} b2b {r['ms_b2b']:.4f} ms  latency {r['ms_latency']:.4f} ms  overhead {r['overhead_us']:.1f} us "
              f"({r['over_floor_us']:+.1f} over the floor)")
    print(f"input check alone: {rec['input_check_us']:.2f} us per call; inputs copied inside the graph: "
          f"{rec['in_graph_input_copies']}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
