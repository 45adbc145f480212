"""A plan summarised as plain data: what `oparac inspect` prints and `--json` emits."""
from __future__ import annotations

from collections import Counter

from opara_plan import CONCAT_PARAM, Plan, is_copy


def summarize(plan: Plan) -> dict:
    nodes, s, p = plan.graph.nodes, plan.schedule, plan.profile
    ops = [i for i, n in enumerate(nodes) if n.kind == "op"]
    kernels = [i for i in ops if p.ops[i].intensity != "free"]
    per_stream = Counter(s.stream[i] for i in kernels)
    t = plan.target
    return {
        "model": {"source": plan.model.source, "fingerprint": plan.model.fingerprint,
                  "precision": plan.model.precision, "memory_format": plan.model.memory_format,
                  "inputs": [{"name": x.name, "shape": list(x.shape), "dtype": x.dtype} for x in plan.model.inputs],
                  "outputs": [{"name": x.name, "shape": list(x.shape), "dtype": x.dtype}
                              for x in plan.model.outputs]},
        "graph": {"nodes": len(nodes), "ops": len(ops), "kernels": len(kernels),
                  "params": sum(n.kind == "param" for n in nodes),
                  # merged linears and convolutions: weights the runtime stacks at load (ingest/merge_projections)
                  "stacked_params": sum(n.kind == "param" and n.target == CONCAT_PARAM for n in nodes),
                  "constants": sum(n.kind == "constant" for n in nodes)},
        "schedule": {"streams": s.num_streams, "stream_algorithm": s.stream_algorithm,
                     "order_algorithm": s.order_algorithm, "max_streams": s.max_streams,
                     "waits": len(s.waits), "devices": s.num_devices, "device_algorithm": s.device_algorithm,
                     "copies": sum(1 for n in nodes if is_copy(n)) if s.num_devices > 1 else 0,
                     "kernels_per_stream": [per_stream.get(k, 0) for k in range(s.num_streams)],
                     "predicted_ms": s.predicted_ms},
        "profile": {"method": p.method, "sequential_ms": p.sequential_ms,
                    "predicted_speedup": p.sequential_ms / s.predicted_ms if s.predicted_ms > 0 else 1.0,
                    "candidates": [{"streams": c.streams, "order": c.order, "max_streams": c.max_streams,
                                    "predicted_ms": c.predicted_ms,
                                    "measured_ms": c.measured_ms if c.measured_ms >= 0 else None,
                                    "chosen": c.chosen, "devices": c.num_devices} for c in p.candidates],
                    "guard": p.guard,
                    "links_method": p.links_method,
                    "links": [{"src": k.src, "dst": k.dst, "latency_ms": k.latency_ms, "ms_per_byte": k.ms_per_byte}
                              for k in p.links]},
        "target": {"device_type": t.device_type, "gpu": t.gpu_name,
                   "compute_capability": ".".join(map(str, t.compute_capability)), "sm_count": t.sm_count,
                   "devices": t.device_count, "driver": t.driver, "cuda": t.cuda, "torch": t.torch},
        "fusion": _fusion(plan),
        "tool": {"name": plan.tool.name, "version": plan.tool.version,
                 "schema_version": ".".join(map(str, plan.schema_version))},
    }


def _fusion(plan: Plan) -> dict:
    """Fused segments and the compiled code the plan stores for them (what loading will run)."""
    f = plan.fusion
    measured = [seg.ms for seg in f.segments if seg.ms >= 0]
    return {"backend": f.backend, "segments": len(f.segments),
            "compiled_segments": sum(seg.program >= 0 for seg in f.segments), "compiled_programs": len(f.programs),
            "compiled_bytes": sum(len(a) for a in f.programs), "compiled_for": f.cache_key,
            "segments_ms": sum(measured) if measured else None, "mode": f.mode, **_kernels(plan)}


def _kernels(plan: Plan) -> dict:
    """The kernel-level mode's schedule: kernels, streams (and which run at a raised priority), what made it, its
    critical path and prediction."""
    if plan.fusion.mode != "kernels":
        return {}
    k = plan.fusion.kernels
    return {"kernels": len(k.stream), "kernel_streams": k.num_streams, "kernel_schedule": k.algorithm,
            "raised_streams": [s for s, p in enumerate(k.priority) if p != 0],
            "critical_path_ms": k.critical_path_ms, "kernel_predicted_ms": k.predicted_ms}
