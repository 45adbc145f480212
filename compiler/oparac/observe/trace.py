"""`oparac trace`: replay a plan under torch.profiler with a range per plan node; Chrome trace and measured times."""
from __future__ import annotations

import bisect
import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from opara_plan import OparaError, Plan

PREFIX = "opara/"
HOST_CATS = ("cuda_runtime", "cuda_driver")
DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


@dataclass
class StreamStat:
    stream: int
    kernels: int
    busy_ms: float
    cuda_streams: list[int] = field(default_factory=list)


@dataclass
class TraceReport:
    gpu: str
    replay_ms: float        # back-to-back CUDA graph replays: the plan's real latency
    predicted_ms: float
    sequential_ms: float
    eager_span_ms: float    # first to last kernel of one eager launch on the plan's streams
    host_held: bool         # every launch was enqueued before the first kernel ran (no launch gaps)
    traced_ops: int
    unmatched_ops: list[int]
    streams: list[StreamStat]
    path: str


def require_cuda(command: str, device=None):
    """The CUDA device to use, or a one-line OparaError where there is none."""
    import torch

    from opara_runtime.devices import indexed

    if device is not None and torch.device(device).type != "cuda":
        raise OparaError(f"oparac {command} needs a CUDA GPU: --device {device!r} is not a CUDA device")
    if not torch.cuda.is_available():
        raise OparaError(f"oparac {command} needs a CUDA GPU; none is available here "
                         f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'})")
    return indexed(torch.device(device or "cuda"))


def range_name(i: int, plan: Plan) -> str:
    node = plan.graph.nodes[i]
    return f"{PREFIX}{i} {node.name} ({node.target.removeprefix('aten.')})"


def node_of_range(name: str) -> int | None:
    if not name.startswith(PREFIX):
        return None
    head = name[len(PREFIX):].split(" ", 1)[0]
    return int(head) if head.isdigit() else None


def launch_traced(launcher, values: list) -> None:
    """StreamLauncher.launch with an NVTX range and a profiler range around every node's launch, so that
    what is traced is exactly what the captured graph contains."""
    launcher.launch(values, around=lambda i: _traced_range(range_name(i, launcher.plan)))


@contextlib.contextmanager
def _traced_range(name: str):
    import torch

    torch.cuda.nvtx.range_push(name)
    try:
        with torch.profiler.record_function(name):
            yield
    finally:
        torch.cuda.nvtx.range_pop()


def _sleep_cycles_per_ms(device) -> float:
    """Spin-kernel cycles per ms at the clock the GPU runs at under load. An idle GPU starts at a low clock
    (345 MHz against 1980 on the H100), so the first spins are discarded and the fastest rate is kept:
    calibrating on the idle clock would make the hold several times too short."""
    import torch

    rates = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(2_000_000)
        end.record()
        end.synchronize()
        rates.append(2_000_000 / max(start.elapsed_time(end), 1e-3))
    return max(rates[2:])


def _host_launch_ms(launcher, base_values) -> float:
    """Wall time to enqueue one eager launch (the GPU is left to finish afterwards)."""
    import torch

    values = list(base_values)
    t0 = time.perf_counter()
    launch_traced(launcher, values)
    elapsed = (time.perf_counter() - t0) * 1e3
    torch.cuda.synchronize(launcher.device)
    return elapsed


def record(runner, device, out_path: Path, *, replays: int) -> list:
    """Profile one host-held eager launch and `replays` graph replays; returns the trace events."""
    import torch
    from torch.profiler import record_function

    from oparac.profile.measure import cuda_profile

    captured = runner.captured
    launcher, base = captured.launcher, captured.base_values
    with torch.cuda.device(device):
        # Hold the GPU with a spin kernel while the host enqueues every launch, so the kernels then run as
        # fast as the streams allow instead of trickling in at the host's launch rate. The profiler slows
        # the host down, hence the generous factor.
        hold_ms = 4.0 * _host_launch_ms(launcher, base) + 5.0
        cycles = int(hold_ms * _sleep_cycles_per_ms(device))
        torch.cuda.synchronize(device)
        with cuda_profile() as prof:
            values = list(base)
            torch.cuda._sleep(cycles)
            launch_traced(launcher, values)
            torch.cuda.synchronize(device)
            del values
            with record_function(f"{PREFIX}replay x{replays}"):
                for _ in range(replays):
                    captured.graph.replay()
                torch.cuda.synchronize(device)
        fd, tmp = tempfile.mkstemp(suffix=".json", dir=out_path.parent)
        os.close(fd)
        try:
            prof.export_chrome_trace(tmp)
            data = json.loads(Path(tmp).read_text())
        finally:
            os.unlink(tmp)
    return data


def measured_from_events(events: list, plan: Plan) -> dict:
    """Per plan node, the span of the kernels launched inside its range, in ms from the first kernel.

    A kernel belongs to a node when the runtime call that launched it (same correlation id) lies inside
    the node's range on the same host thread.
    """
    ranges = sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0)), e.get("tid"), n)
                    for e in events if e.get("ph") == "X" and e.get("cat") == "user_annotation"
                    for n in [node_of_range(e.get("name", ""))] if n is not None)
    starts = [r[0] for r in ranges]
    node_of_corr: dict = {}
    launched_by: dict[int, float] = {}
    for e in events:
        if e.get("cat") not in HOST_CATS or "correlation" not in e.get("args", {}):
            continue
        ts = float(e["ts"])
        k = bisect.bisect_right(starts, ts) - 1
        if k >= 0 and ranges[k][1] >= ts and ranges[k][2] == e.get("tid"):
            node = ranges[k][3]
            node_of_corr[e["args"]["correlation"]] = node
            launched_by[node] = max(launched_by.get(node, 0.0), ts + float(e.get("dur", 0)))
    kernels: dict[int, list[tuple[float, float, int]]] = {}
    for e in events:
        if e.get("cat") in DEVICE_CATS and e.get("args", {}).get("correlation") in node_of_corr:
            ts = float(e["ts"])
            kernels.setdefault(node_of_corr[e["args"]["correlation"]], []).append(
                (ts, ts + float(e.get("dur", 0)), int(e["args"].get("stream", -1))))
    return _spans(kernels, launched_by, plan)


def _spans(kernels: dict, launched_by: dict, plan: Plan) -> dict:
    t0 = min((k[0] for ks in kernels.values() for k in ks), default=0.0)
    spans = {str(i): [(min(k[0] for k in ks) - t0) / 1e3, (max(k[1] for k in ks) - t0) / 1e3]
             for i, ks in sorted(kernels.items())}
    stream = plan.schedule.stream
    per_stream: dict[int, list] = {}
    for i, ks in kernels.items():
        per_stream.setdefault(stream[i], []).extend(ks)
    stats = [{"stream": s, "kernels": len(ks), "busy_ms": _union_ms(ks),
              "cuda_streams": sorted({k[2] for k in ks})} for s, ks in sorted(per_stream.items())]
    expected = [i for i, n in enumerate(plan.graph.nodes) if n.kind == "op" and plan.profile.ops[i].intensity != "free"]
    end = max((v[1] for v in spans.values()), default=0.0)
    return {"spans": spans, "streams": stats, "eager_span_ms": end,
            "unmatched_ops": [i for i in expected if i not in kernels],
            "host_held": bool(launched_by) and max(launched_by.values()) <= t0}


def _union_ms(intervals) -> float:
    """Time covered by at least one interval (µs in, ms out): overlapping kernels of a stream count once."""
    busy, end = 0.0, float("-inf")
    for s, e, _ in sorted(intervals):
        if e > end:
            busy += e - max(s, end)
            end = e
    return busy / 1e3


def trace_plan(plan_path, model_ref: str, out, *, shapes: str | None = None, device=None, replays: int = 20,
               timeline=None, progress=None, trust_compiled_code: bool = False, trusted_keys=None) -> TraceReport:
    """Load the plan for the model on a GPU, trace it, write the Chrome trace (plus an `opara` section).
    trust_compiled_code, trusted_keys: as opara_runtime.load takes them."""
    say = progress or (lambda msg: None)
    from opara_plan import load_plan

    plan = load_plan(plan_path)
    dev = require_cuda("trace", device)
    import torch

    import opara_runtime
    from oparac.profile.measure import time_graph_replays
    from oparac.models.reference import load_model
    from oparac.observe.timeline import launch_order_hash, write_timeline
    from oparac.verify import inputs_for

    model, _ = load_model(model_ref, shapes)
    say(f"load: capturing the plan on {torch.cuda.get_device_name(dev)}")
    runner = opara_runtime.load(plan, model, device=dev, trust_compiled_code=trust_compiled_code,
                                trusted_keys=trusted_keys)
    if runner.captured is None:
        raise OparaError("the plan was not captured as a CUDA graph; oparac trace needs the CUDA path")
    if getattr(runner.captured.launcher, "programs", None) is not None:
        raise OparaError("oparac trace names ranges after plan ops, but this plan launches fused segments "
                         "(compiled with --fuse); trace the plan compiled without fusion")
    runner(*inputs_for(plan, dev))
    replay_ms = time_graph_replays(runner.captured.graph, dev, replays=replays)
    say("trace: one eager launch on the plan's streams and graph replays under torch.profiler")
    out = Path(out)
    data = record(runner, dev, out, replays=replays)
    measured = measured_from_events(data.get("traceEvents", []), plan)
    measured.update({"fingerprint": plan.model.fingerprint, "launch_order_hash": launch_order_hash(plan),
                     "gpu": torch.cuda.get_device_name(dev), "replay_ms": replay_ms,
                     "predicted_ms": plan.schedule.predicted_ms, "sequential_ms": plan.profile.sequential_ms})
    data["opara"] = measured
    out.write_text(json.dumps(data))
    if timeline:
        write_timeline(plan, [timeline], measured=measured, title=Path(plan_path).stem)
    return _report(measured, plan, str(out))


def _report(measured: dict, plan: Plan, path: str) -> TraceReport:
    return TraceReport(gpu=measured["gpu"], replay_ms=measured["replay_ms"], predicted_ms=plan.schedule.predicted_ms,
                       sequential_ms=plan.profile.sequential_ms, eager_span_ms=measured["eager_span_ms"],
                       host_held=measured["host_held"], traced_ops=len(measured["spans"]),
                       unmatched_ops=measured["unmatched_ops"],
                       streams=[StreamStat(**s) for s in measured["streams"]], path=path)


def print_trace_report(report: TraceReport, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    ratio = report.replay_ms / report.predicted_ms if report.predicted_ms > 0 else float("nan")
    console.print(f"wrote {report.path} ({report.traced_ops} ops traced on {report.gpu})")
    console.print(f"measured {report.replay_ms:.4f} ms (CUDA graph replay) vs predicted {report.predicted_ms:.4f} ms "
                  f"({ratio:.2f}x of the prediction); sequential sum {report.sequential_ms:.4f} ms; "
                  f"eager launch span {report.eager_span_ms:.4f} ms")
    if not report.host_held:
        console.print("[yellow]note:[/] the GPU caught up with the host during the eager launch, so the traced "
                      "timeline contains launch gaps that the CUDA graph does not have")
    if report.unmatched_ops:
        console.print(f"[yellow]note:[/] {len(report.unmatched_ops)} ops launched no traced kernel "
                      f"(first: {report.unmatched_ops[:5]})")
    table = Table(title="Per-stream busy time (eager launch)")
    for col in ("stream", "kernels", "busy ms", "busy %", "CUDA stream ids"):
        table.add_column(col)
    for s in report.streams:
        pct = 100.0 * s.busy_ms / report.eager_span_ms if report.eager_span_ms > 0 else 0.0
        table.add_row(str(s.stream), str(s.kernels), f"{s.busy_ms:.4f}", f"{pct:.0f}",
                      ", ".join(map(str, s.cuda_streams)))
    console.print(table)
