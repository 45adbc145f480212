"""A plan set summarised: its buckets, what they share, and their graph memory (what `oparac inspect` shows)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from opara_plan import PlanSet
from oparac.observe.summary import summarize

# The issue's target: the buckets' graphs together within this factor of the largest bucket's graph alone.
SHARED_POOL_TARGET = 1.3


def summarize_set(ps: PlanSet, measured: dict | None = None, integrity=None) -> dict:
    """Plain data. measured: BucketedRunner.graph_memory() of the set loaded on a GPU, if it was; integrity:
    plan -> its signature report (observe.trust.integrity), added to each bucket's plan summary."""
    from opara_runtime.graph_memory import capture_order, predict_graph_memory, predict_shared_pool

    memories = [predict_graph_memory(p) for p in ps.plans]
    added, total = predict_shared_pool(memories)
    largest = max(m.total for m in memories)
    buckets = []
    for k, (b, plan, m, a) in enumerate(zip(ps.buckets, ps.plans, memories, added)):
        s = plan.schedule
        inputs = [{"name": x.name, "shape": list(x.shape), "dtype": x.dtype} for x in b.inputs]
        row = {"batch": b.batch, "inputs": inputs,
               "streams": s.num_streams, "waits": len(s.waits), "predicted_ms": s.predicted_ms,
               "fused_segments": len(plan.fusion.segments) if plan.fusion.backend else 0,
               "graph_memory": {"predicted_bytes": m.total, "predicted_added_bytes": a,
                                "measured_added_bytes": None}}
        if measured is not None:
            row["graph_memory"]["measured_added_bytes"] = measured["buckets"][k]["measured_added_bytes"]
        buckets.append(row)
    memory = {"largest_alone_predicted_bytes": largest, "predicted_total_bytes": total,
              "predicted_ratio": total / largest if largest else 1.0, "measured_total_bytes": None,
              "measured_ratio": None, "target_ratio": SHARED_POOL_TARGET}
    if measured is not None and measured.get("measured_total_bytes") is not None:
        # The largest bucket is captured first, into the empty pool: what it added is its graph alone.
        first = capture_order(memories)[0]
        alone = measured["buckets"][first]["measured_added_bytes"]
        memory["measured_total_bytes"] = measured["measured_total_bytes"]
        memory["measured_ratio"] = measured["measured_total_bytes"] / alone if alone else None
    return {
        "format": ps.format, "schema_version": ".".join(map(str, ps.schema_version)),
        "buckets": buckets, "graph_memory": memory,
        "programs": {"distinct": len({p for plan in ps.plans for p in plan.fusion.programs}),
                     "per_bucket": sum(len(plan.fusion.programs) for plan in ps.plans)},
        "plans": [summarize(p) | ({"integrity": integrity(p)} if integrity else {}) for p in ps.plans],
    }


def describe_set(ps: PlanSet) -> str:
    """One line for `oparac compile`: the buckets and what the set stores once."""
    batches = ", ".join(str(b) for b in sorted({b.batch for b in ps.buckets}))
    shapes = len({b.key[0] for b in ps.buckets})
    others = f" x {shapes} shape sets" if shapes > 1 else ""
    programs = {p for plan in ps.plans for p in plan.fusion.programs}
    stored = f", {len(programs)} distinct compiled programs" if programs else ""
    return (f"plan set of {len(ps.buckets)} buckets (batch {batches}{others}), up to "
            f"{max(p.schedule.num_streams for p in ps.plans)} streams{stored}")


def print_set_summary(info: dict, console: Console | None = None) -> None:
    console = console or Console()
    first = info["plans"][0]
    m = first["model"]
    head = Table(title="Opara plan set", show_header=False)
    head.add_column("", style="bold")
    head.add_column("")
    head.add_row("model", f"{m['source']}, {m['precision']}, {len(info['buckets'])} buckets")
    head.add_row("target", f"{first['target']['device_type']} {first['target']['gpu']}")
    head.add_row("format", f"{info['format']} {info['schema_version']}")
    if info["programs"]["per_bucket"]:
        head.add_row("programs", f"{info['programs']['distinct']} stored for {info['programs']['per_bucket']} "
                                 f"per-bucket programs")
    console.print(head)
    table = Table(title="Buckets")
    signed = any(p.get("integrity", {}).get("signatures") for p in info["plans"])
    for col in ("batch", "inputs", "streams", "predicted ms", "live tensors", "added to pool", "measured") + (
            ("signature",) if signed else ()):
        table.add_column(col)
    for b, p in zip(info["buckets"], info["plans"]):
        g = b["graph_memory"]
        ins = ", ".join(str(x["shape"]) for x in b["inputs"])
        trust = (("trusted" if p["integrity"]["trusted"] else "not trusted"),) if signed else ()
        table.add_row(str(b["batch"]), ins, str(b["streams"]), f"{b['predicted_ms']:.3f}", _mib(g["predicted_bytes"]),
                      _mib(g["predicted_added_bytes"]), _mib(g["measured_added_bytes"]), *trust)
    console.print(table)
    g = info["graph_memory"]
    line = (f"graph memory: {_mib(g['predicted_total_bytes'])} of live tensors predicted for all buckets in one "
            f"shared pool, {g['predicted_ratio']:.2f}x the largest bucket alone "
            f"({_mib(g['largest_alone_predicted_bytes'])}); a lower bound: the allocator's rounding and per-stream "
            f"segments and library workspaces come on top (--measure MODEL measures them on a GPU)")
    if g["measured_total_bytes"] is not None:
        ratio = f", {g['measured_ratio']:.2f}x the largest alone" if g["measured_ratio"] is not None else ""
        line += f"; measured {_mib(g['measured_total_bytes'])}{ratio}"
    console.print(line)


def _mib(n) -> str:
    return "-" if n is None else f"{n / 2**20:.2f} MiB"
