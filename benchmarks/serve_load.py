"""Concurrent callers on one GPU: throughput and p50/p99 latency of a RunnerPool, one replica and torch.compile.

Each caller is a thread calling in a loop with its own input on the GPU (--host-io: from pinned host memory, the
output copied back); a call ends when its outputs are ready. Every run is bounded by a request count and a duration,
whichever comes first. Methods: pool (RunnerPool, --replicas graphs), one-replica (RunnerPool of one), runner (a
plain Runner, one graph on the caller's stream) and torch-compile (torch.compile behind a lock: its compiled
callable is not thread-safe). --ray adds the Ray Serve deployment, called over loopback HTTP with safetensors bodies.

    python benchmarks/serve_load.py                     # GPU; GoogLeNet b1, 1/2/4/8 callers; results/serve-load-*.json
    python benchmarks/serve_load.py --ray --out /tmp/r  # also Ray Serve on 127.0.0.1
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET_SPEEDUP = 1.5  # issue 19: the pool at 4 callers against one replica


def load_run(call, inputs: list, callers: int, *, requests: int, duration: float, warmup: int) -> dict:
    """`callers` threads calling `call(x)` with their own input until `requests` calls or `duration` s are done."""
    start_line = threading.Barrier(callers + 1)
    lock = threading.Lock()
    issued = [0]
    stop_at = [0.0]
    latencies: list[list[float]] = [[] for _ in range(callers)]
    errors: list[BaseException] = []

    def caller(k: int) -> None:
        x = inputs[k % len(inputs)]
        try:
            for _ in range(warmup):
                call(x)
        except BaseException as e:  # reported below, after the other callers are released
            errors.append(e)
        start_line.wait()
        start_line.wait()
        while not errors:
            with lock:
                if issued[0] >= requests or time.perf_counter() >= stop_at[0]:
                    return
                issued[0] += 1
            t0 = time.perf_counter()
            try:
                call(x)
            except BaseException as e:
                errors.append(e)
                return
            latencies[k].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=caller, args=(k,), daemon=True) for k in range(callers)]
    for t in threads:
        t.start()
    start_line.wait()  # every caller warmed up
    stop_at[0] = time.perf_counter() + duration
    began = time.perf_counter()
    start_line.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    flat = sorted(x for per in latencies for x in per)
    return {"callers": callers, "requests": len(flat), "seconds": elapsed, "throughput_rps": len(flat) / elapsed,
            "p50_ms": _quantile(flat, 0.50) * 1e3, "p99_ms": _quantile(flat, 0.99) * 1e3,
            "mean_ms": sum(flat) / len(flat) * 1e3, "max_ms": flat[-1] * 1e3}


def _quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def methods(model, plan, sample, *, replicas: int, host_io: bool, compile_mode: str) -> dict:
    """Method name -> call(x): each returns when its outputs are ready (and, with host_io, back on the host)."""
    import torch

    import opara_runtime
    from oparac.bench.methods import compiled_runner

    # torch.compile first, warmed up and its CUDA graph recorded on `sample` before any Opara graph is captured,
    # the order benchmarks/run.py uses (the last H200 run saw its capture fail in cuDNN when it came after).
    try:
        compiled = compiled_runner(model, (sample.to(next(model.parameters()).device),), mode=compile_mode)
        torch.cuda.synchronize()
    except Exception as e:  # main() records it as the method's failure on its first call
        failure = e

        def compiled(x):
            raise failure
    pool = opara_runtime.RunnerPool(plan, model, replicas=replicas)
    one = opara_runtime.RunnerPool(plan, model, replicas=1)
    runner = opara_runtime.load(plan, model)
    lock = threading.Lock()
    device = pool.device

    def on_device(x):
        return x.to(device, non_blocking=True) if host_io else x

    def finish(y):
        if host_io:
            return y.cpu()
        torch.cuda.current_stream(device).synchronize()
        return y

    def compiled_call(x):
        with torch.no_grad():
            x = on_device(x)
            with lock:
                # reduce-overhead replays a CUDA graph into static outputs that its next call overwrites: a
                # serving user copies them out before letting another caller in
                y = compiled(x)
                y = y.clone() if "overhead" in compile_mode or "cudagraphs" in compile_mode else y
            return finish(y)

    return {f"pool-{replicas}": lambda x: finish(pool(on_device(x))),
            "one-replica": lambda x: finish(one(on_device(x))),
            "runner": lambda x: finish(runner(on_device(x))),
            "torch-compile": compiled_call}


def ray_method(plan_path: Path, weights: str, *, replicas: int, port: int):
    """(call(x) over HTTP, shutdown): the Ray Serve deployment on a local Ray bound to 127.0.0.1."""
    import http.client
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve
    from safetensors.torch import load as load_st
    from safetensors.torch import save as save_st

    from opara_runtime.serve import opara_app

    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # tf32=False: the replica computes as this process does (main() turns TF32 off), so its outputs are compared
    # like for like
    serve.run(opara_app(plan_path, weights, runners=replicas, num_gpus=1, batch_wait_timeout_s=0.001, tf32=False),
              route_prefix="/")
    local = threading.local()

    def call(x):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/", body=save_st({"x": x.cpu().contiguous()}),
                     headers={"Content-Type": "application/octet-stream"})
        reply = conn.getresponse()
        body = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"HTTP {reply.status}: {body[:300]!r}")
        return load_st(body)["output"]

    def shutdown():
        serve.shutdown()
        ray.shutdown()
    return call, shutdown


def main(argv=None) -> int:
    import socket
    import tempfile

    import torch

    import oparac
    from oparac.models import zoo
    from results_io import new_result, write_result

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="googlenet", help="an oparac.models.zoo factory")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--callers", default="1,2,4,8")
    ap.add_argument("--replicas", type=int, default=4, help="graphs in the pool")
    ap.add_argument("--requests", type=int, default=3000, help="at most this many calls per run")
    ap.add_argument("--duration", type=float, default=5.0, help="at most this many seconds per run")
    ap.add_argument("--warmup", type=int, default=20, help="untimed calls per caller before each run")
    ap.add_argument("--host-io", action="store_true", help="inputs from pinned host memory, outputs copied back")
    ap.add_argument("--compile-mode", default="reduce-overhead",
                    help="torch.compile mode for the torch-compile method (reduce-overhead, as every other "
                         "comparison here: CUDA graphs, outputs copied out inside the lock)")
    ap.add_argument("--methods", default="", help="comma-separated subset of the methods (default: all)")
    ap.add_argument("--ray", action="store_true", help="also the Ray Serve deployment over loopback HTTP")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("the serving load test needs a CUDA GPU", file=sys.stderr)
        return 1
    callers = [int(c) for c in args.callers.split(",")]
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model, (x,) = getattr(zoo, args.model)(batch=args.batch)
    model = model.cuda().eval()
    plan = oparac.compile(model, (x.cuda(),), device="cuda")
    torch.manual_seed(1)
    inputs = [torch.randn_like(x) for _ in range(max(callers))]
    inputs = [t.pin_memory() for t in inputs] if args.host_io else [t.cuda() for t in inputs]
    with torch.no_grad():
        want = model(inputs[0].cuda())
        # A Ray replica is a fresh process with torch's default flags, under which cuDNN convolutions may use
        # TF32: its outputs are also compared with eager under those flags, to tell that apart from a fault.
        torch.backends.cudnn.allow_tf32 = True
        want_default_flags = model(inputs[0].cuda())
        torch.backends.cudnn.allow_tf32 = False
    path, header = new_result(args.out, "serve-load", tag=args.model)
    result = dict(header, model=args.model, batch=args.batch, replicas=args.replicas, requests=args.requests,
                  duration_s=args.duration, host_io=args.host_io, compile_mode=args.compile_mode,
                  plan_streams=plan.schedule.num_streams, records=[])
    calls = methods(model, plan, inputs[0], replicas=args.replicas, host_io=args.host_io,
                    compile_mode=args.compile_mode)
    if args.methods:
        calls = {k: v for k, v in calls.items() if k in args.methods.split(",")}
    # Every local method makes its first calls (torch.compile records its CUDA graph) before Ray starts a replica
    # process on the same GPU, and a method that fails is recorded and skipped rather than ending the run.
    errs = {}

    def errors(call) -> tuple[float, float]:
        y = call(inputs[0]).to(want.device)
        return (y - want).abs().max().item(), (y - want_default_flags).abs().max().item()
    for name, call in list(calls.items()):
        try:
            errs[name] = errors(call)
        except Exception as e:  # recorded in the JSON and printed; the other methods still run
            calls.pop(name)
            result.setdefault("failed", {})[name] = f"{type(e).__name__}: {e}"
            print(f"{name}: failed on its first call: {type(e).__name__}: {str(e).splitlines()[0]}", flush=True)
    shutdown = None
    if args.ray:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # serve.run returns once the deployment has loaded both files.
        with tempfile.TemporaryDirectory() as d:
            plan.save(Path(d) / "model.plan")
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, Path(d) / "model.pt")
            calls["ray-serve"], shutdown = ray_method(Path(d) / "model.plan", str(Path(d) / "model.pt"),
                                                      replicas=args.replicas, port=port)
    try:
        for name, call in calls.items():
            if name not in errs:
                errs[name] = errors(call)
            err, err_default_flags = errs[name]
            for c in callers:
                rec = dict(load_run(call, inputs, c, requests=args.requests, duration=args.duration,
                                    warmup=args.warmup), method=name, max_abs_err=err,
                           max_abs_err_vs_default_flags=err_default_flags)
                result["records"].append(rec)
                write_result(path, result)
                print(f"{name:14s} {c} callers: {rec['throughput_rps']:8.1f} req/s  p50 {rec['p50_ms']:.3f} ms  "
                      f"p99 {rec['p99_ms']:.3f} ms  ({rec['requests']} requests, err {err:.1e})", flush=True)
    finally:
        if shutdown is not None:
            shutdown()
    result["summary"] = summary(result["records"], f"pool-{args.replicas}")
    write_result(path, result)
    for line in result["summary"]["lines"]:
        print(line)
    print(f"wrote {path}")
    return 0


def summary(records: list[dict], pool: str) -> dict:
    """The pool's throughput over one replica's and torch.compile's at each caller count; the 4-caller target."""
    rate = {(r["method"], r["callers"]): r["throughput_rps"] for r in records}
    out: dict = {"speedup_over_one_replica": {}, "speedup_over_torch_compile": {}, "lines": []}
    for (method, c), value in sorted(rate.items()):
        if method != pool:
            continue
        if ("one-replica", c) in rate:
            out["speedup_over_one_replica"][c] = value / rate[("one-replica", c)]
        if ("torch-compile", c) in rate:
            out["speedup_over_torch_compile"][c] = value / rate[("torch-compile", c)]
        out["lines"].append(f"{pool} at {c} callers: {out['speedup_over_one_replica'].get(c, float('nan')):.2f}x one "
                            f"replica, {out['speedup_over_torch_compile'].get(c, float('nan')):.2f}x torch.compile")
    at4 = out["speedup_over_one_replica"].get(4)
    if at4 is not None:
        out["target_at_4_callers"] = {"speedup": at4, "target": TARGET_SPEEDUP, "met": at4 >= TARGET_SPEEDUP}
    return out


if __name__ == "__main__":
    sys.exit(main())
