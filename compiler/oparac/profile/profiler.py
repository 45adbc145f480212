"""Per-op profile on the target GPU: time without launch overhead, kernel resources, intensity."""
from __future__ import annotations

import bisect
import json
import os
import tempfile

import torch

from opara_plan import Graph, KernelInfo, OpProfile, Profile, Target
from oparac.profile import cost_model
from oparac.profile.gpus import gpu_spec
from oparac.profile.measure import cuda_profile, time_in_graph
from oparac.models.reference import random_input
from oparac.profile.cache import ProfileCache
from oparac.progress import Progress
from opara_runtime.ops import constant_tensor, in_layout, run_node, torch_dtype

REPEATS_IN_GRAPH = 20


def gpu_target(device: torch.device) -> Target:
    props = torch.cuda.get_device_properties(device)
    driver = ""
    if hasattr(torch._C, "_cuda_getDriverVersion"):
        v = torch._C._cuda_getDriverVersion()
        driver = f"{v // 1000}.{(v % 1000) // 10}"
    return Target(device_type="cuda", gpu_name=props.name, compute_capability=(props.major, props.minor),
                  sm_count=props.multi_processor_count, device_count=torch.cuda.device_count(), driver=driver,
                  cuda=torch.version.cuda or "", torch=torch.__version__)


def profile_on_gpu(graph: Graph, device: torch.device, dtype: str, cache, progress: Progress,
                   memory_format: str = "contiguous") -> tuple[Target, Profile]:
    """Every op timed on `device` (or the profile cache's entry); intensity against the ridge point of the GPU
    the Target names (oparac.profile.gpus)."""
    target = gpu_target(device)
    store = ProfileCache.default() if cache is None else cache
    fingerprint_key = None
    if store:
        from opara_plan import graph_fingerprint

        fingerprint_key = store.key(graph_fingerprint(graph), target, dtype, memory_format)
        cached = store.get(fingerprint_key, len(graph.nodes))
        if cached is not None:
            progress.note("profile: cache hit")
            return target, Profile(method="cuda-graph", ops=cached, sequential_ms=sum(o.ms for o in cached))
    values = materialize(graph, device, memory_format)
    times = time_ops(graph, values, device, progress, memory_format)
    kernels = kernel_records(graph, values, device, memory_format)
    ridge = gpu_spec(target).ridge(dtype)
    ops = []
    for i, node in enumerate(graph.nodes):
        if node.kind != "op" or cost_model.is_free(node):
            ops.append(OpProfile(ms=0.0, flops=0.0, bytes=0.0, intensity="free"))
            continue
        flops, nbytes = cost_model.op_flops(graph, node), cost_model.op_bytes(graph, node)
        ops.append(OpProfile(ms=times[i], flops=flops, bytes=nbytes, intensity=cost_model.classify(flops, nbytes, ridge),
                             kernels=tuple(kernels.get(i, ()))))
    ops = tuple(ops)
    if store:
        store.put(fingerprint_key, ops)
    return target, Profile(method="cuda-graph", ops=ops, sequential_ms=sum(o.ms for o in ops))


def materialize(graph: Graph, device: torch.device, memory_format: str = "contiguous") -> list:
    """Every node's value, computed once from random inputs and weights (times do not depend on values),
    inputs and weights in the layout the runtime binds them in (opara_runtime.ops.in_layout)."""
    g = torch.Generator().manual_seed(0)
    values: list = [None] * len(graph.nodes)
    with torch.no_grad():
        for i, node in enumerate(graph.nodes):
            if node.kind in ("input", "param"):
                meta = node.outputs[0]
                dt = torch_dtype(meta.dtype)
                x = random_input(meta.shape, dt, g)
                values[i] = in_layout((x * 0.1 if dt.is_floating_point else x).to(device), memory_format)
            elif node.kind == "constant":
                values[i] = constant_tensor(node, device)
            elif node.kind == "op":
                values[i] = run_node(node, values, device, memory_format)
        torch.cuda.synchronize(device)
    return values


def time_ops(graph: Graph, values: list, device: torch.device, progress: Progress | None = None,
             memory_format: str = "contiguous") -> dict[int, float]:
    """Each op alone, REPEATS_IN_GRAPH times inside a small CUDA graph: no launch overhead in the figure."""
    times: dict[int, float] = {}
    ops = [i for i, n in enumerate(graph.nodes) if n.kind == "op" and not cost_model.is_free(n)]
    stream = torch.cuda.Stream(device=device)
    for k, i in enumerate(ops):
        times[i] = _time_one(graph.nodes[i], values, device, stream, memory_format)
        if progress is not None and (k + 1) % 200 == 0:
            progress.note(f"profile: timed {k + 1}/{len(ops)} ops")
    return times


def _time_one(node, values, device, stream, memory_format: str) -> float:
    return time_in_graph(lambda: run_node(node, values, device, memory_format), device, stream, REPEATS_IN_GRAPH)


def kernel_records(graph: Graph, values: list, device: torch.device,
                   memory_format: str = "contiguous") -> dict[int, list[KernelInfo]]:
    """Kernel launch resources per op from one profiled run (torch.profiler's trace)."""
    from torch.profiler import record_function

    ops = [i for i, n in enumerate(graph.nodes) if n.kind == "op" and not cost_model.is_free(n)]
    with cuda_profile() as prof:
        for i in ops:
            with record_function(f"opara:{i}"):
                run_node(graph.nodes[i], values, device, memory_format)
        torch.cuda.synchronize(device)
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
    finally:
        os.unlink(path)
    return kernels_by_op(trace.get("traceEvents", []))


def kernels_by_op(events: list[dict]) -> dict[int, list[KernelInfo]]:
    """Kernel -> launching runtime call (correlation id) -> enclosing `opara:<node>` range."""
    ranges = sorted((e["ts"], e["ts"] + e.get("dur", 0), int(e["name"].split(":")[1]))
                    for e in events if e.get("ph") == "X" and str(e.get("name", "")).startswith("opara:"))
    starts = [r[0] for r in ranges]
    owner: dict[int, int] = {}
    for e in events:
        if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {}):
            k = bisect.bisect_right(starts, e["ts"]) - 1
            if k >= 0 and ranges[k][0] <= e["ts"] <= ranges[k][1]:
                owner[e["args"]["correlation"]] = ranges[k][2]
    out: dict[int, list[KernelInfo]] = {}
    for e in events:
        if e.get("cat") != "kernel":
            continue
        args = e.get("args", {})
        node = owner.get(args.get("correlation"))
        if node is None:
            continue
        out.setdefault(node, []).append(KernelInfo(
            name=str(e.get("name", ""))[:200], grid=tuple(int(v) for v in args.get("grid", ())),
            block=tuple(int(v) for v in args.get("block", ())),
            registers_per_thread=int(args.get("registers per thread", 0)),
            shared_memory=int(args.get("shared memory", 0)),
            occupancy=float(args.get("est. achieved occupancy %", 0.0))))
    return out
