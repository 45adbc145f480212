"""Where a runner call's time goes, on the GPU: bare replay, input copy + replay, the runner's call, and the
host-side input check alone. Latency is one call followed by a synchronize, the variants timed in turn; overhead
is latency minus the back-to-back replay time (docs/design.md, section 8).

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


def breakdown(model_name: str, iters: int = 200) -> dict:
    import torch

    import opara_runtime
    import oparac
    from opara_runtime.graph_inputs import InputFeed
    from oparac.models import zoo
    from oparac.profile.measure import fill_random, median_paired_diff_us, time_alternating, time_gpu

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
    # The runner's calls switch the graph's in-graph input copies on (the caller's tensors) or off (its own
    # buffers), and the three variants that replay the graph directly run it in whatever state the last call
    # left. The alternation below wraps from runner_own_buffers_zero_copy, which leaves the copies off, to
    # bare_replay: those three then time the graph without them, as before any call.
    variants = {"bare_replay": graph.replay, "copy_and_replay": copy_and_replay,
                "foreach_copy_and_replay": foreach_copy_and_replay,
                "runner_zero_copy": lambda: runner(*xs, zero_copy=True), "runner": lambda: runner(*xs),
                "runner_alternating_inputs": lambda: runner(*next(turns)),
                "runner_own_buffers": lambda: runner(*own),
                "runner_own_buffers_zero_copy": lambda: runner(*own, zero_copy=True)}
    runner(*own, zero_copy=True)  # the copies off for the replays' back-to-back timing too
    b2bs = {name: time_gpu(fn, dev).ms_b2b for name, fn in variants.items()}
    # One untimed call ahead of each timed one: a runner call that switches the copies (runner_zero_copy after
    # the replays, runner_own_buffers after runner_alternating_inputs) then does so there, and the timed call
    # is the variant's steady state, as in a loop of its own.
    lat = time_alternating(variants, dev, iters=iters, lead_in=1)
    check_us = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(1000):
            runner.check_inputs(xs)
        check_us.append((time.perf_counter() - t0) * 1e3)
    replay_b2b = b2bs["bare_replay"]
    out = {"model": model_name, "replay_b2b_ms": replay_b2b, "input_check_us": statistics.median(check_us),
           "in_graph_input_copies": isinstance(runner.captured.inputs, InputFeed)}
    # The VM's synchronisation floor (the bare replay's overhead) drifts by more than a call costs, within a run
    # and between runs: over_floor_us is the median difference from the bare replay of the same iteration,
    # timed milliseconds before.
    for name in variants:
        ms_latency = statistics.median(lat[name])
        out[name] = {"ms_b2b": b2bs[name], "ms_latency": ms_latency,
                     "overhead_us": (ms_latency - replay_b2b) * 1e3,
                     "over_floor_us": median_paired_diff_us(lat, name, "bare_replay")}
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
