"""`oparac diff`: what differs between two plans (model, target, schedule, profile, latency), as plain data."""
from __future__ import annotations

from collections import Counter
from dataclasses import fields

from opara_plan import Plan

TOP_OPS = 10


def diff_plans(a: Plan, b: Plan, *, top: int = TOP_OPS) -> dict:
    """Plain data: every section says what A and B hold; per-node comparisons need the same graph."""
    same = a.model.fingerprint == b.model.fingerprint
    return {
        "same_model": same,
        "model": _model(a, b),
        "target": _changes(a.target, b.target),
        "schedule": _schedule(a, b, same),
        "profile": _profile(a, b, same, top),
        "latency": _latency(a, b),
    }


def _model(a: Plan, b: Plan) -> dict:
    return {"fingerprint": [a.model.fingerprint, b.model.fingerprint],
            "precision": [a.model.precision, b.model.precision],
            "inputs": [_inputs(a), _inputs(b)],
            "ops": [_count_ops(a), _count_ops(b)]}


def _inputs(plan: Plan) -> list:
    return [[x.name, list(x.shape), x.dtype] for x in plan.model.inputs]


def _count_ops(plan: Plan) -> int:
    return sum(n.kind == "op" for n in plan.graph.nodes)


def _changes(x, y) -> list[dict]:
    """Fields of two dataclasses of one type that differ: [{field, a, b}]."""
    out = []
    for f in fields(x):
        va, vb = getattr(x, f.name), getattr(y, f.name)
        if va != vb:
            out.append({"field": f.name, "a": _plain(va), "b": _plain(vb)})
    return out


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def _schedule(a: Plan, b: Plan, same: bool) -> dict:
    sa, sb = a.schedule, b.schedule
    out = {"changes": [c for c in _changes(sa, sb) if c["field"] not in ("stream", "launch_order", "waits", "device")],
           "streams": [sa.num_streams, sb.num_streams], "waits": [len(sa.waits), len(sb.waits)],
           "algorithms": [f"{sa.stream_algorithm}/{sa.order_algorithm}", f"{sb.stream_algorithm}/{sb.order_algorithm}"]}
    if not same:
        return out
    ops = [i for i, n in enumerate(a.graph.nodes) if n.kind == "op"]
    mapping = match_streams(sa.stream, sb.stream, ops)
    pos_a = {i: k for k, i in enumerate(sa.launch_order)}
    pos_b = {i: k for k, i in enumerate(sb.launch_order)}
    out.update({
        "order_equal": sa.launch_order == sb.launch_order,
        "ops_launched_elsewhere": sum(pos_a[i] != pos_b[i] for i in ops),
        "stream_mapping": {str(k): v for k, v in sorted(mapping.items())},
        "ops_moved_stream": sum(mapping.get(sa.stream[i]) != sb.stream[i] for i in ops),
        "ops_moved_device": sum(_dev(sa, i) != _dev(sb, i) for i in ops),
        "waits_only_in_a": len(set(sa.waits) - set(sb.waits)),
        "waits_only_in_b": len(set(sb.waits) - set(sa.waits)),
    })
    return out


def _dev(schedule, i: int) -> int:
    return schedule.device[i] if schedule.device else 0


def match_streams(stream_a, stream_b, ops) -> dict[int, int]:
    """A's stream ids -> B's, greedily by the number of ops they share, so that renumbered but otherwise
    identical streams do not count as moved ops."""
    overlap = Counter((stream_a[i], stream_b[i]) for i in ops)
    mapping: dict[int, int] = {}
    used: set[int] = set()
    for (x, y), _ in sorted(overlap.items(), key=lambda kv: (-kv[1], kv[0])):
        if x not in mapping and y not in used:
            mapping[x] = y
            used.add(y)
    return mapping


def _profile(a: Plan, b: Plan, same: bool, top: int) -> dict:
    pa, pb = a.profile, b.profile
    out = {"method": [pa.method, pb.method], "sequential_ms": [pa.sequential_ms, pb.sequential_ms]}
    if not same:
        return out
    nodes = a.graph.nodes
    changed = []
    for i, n in enumerate(nodes):
        if n.kind != "op":
            continue
        ta, tb = pa.ops[i].ms, pb.ops[i].ms
        if ta != tb:
            changed.append({"node": i, "name": n.name, "target": n.target, "a_ms": ta, "b_ms": tb,
                            "delta_ms": tb - ta, "ratio": tb / ta if ta > 0 else None})
    changed.sort(key=lambda c: -abs(c["delta_ms"]))
    out["ops_changed"] = len(changed)
    out["intensity_changed"] = sum(1 for i, n in enumerate(nodes)
                                   if n.kind == "op" and pa.ops[i].intensity != pb.ops[i].intensity)
    out["top"] = changed[:top]
    return out


def _latency(a: Plan, b: Plan) -> dict:
    pred = [a.schedule.predicted_ms, b.schedule.predicted_ms]
    return {"predicted_ms": pred, "predicted_ratio": pred[1] / pred[0] if pred[0] > 0 else None,
            "measured_ms": [_measured(a), _measured(b)],
            "single_stream_measured_ms": [_measured(a, single=True), _measured(b, single=True)]}


def _measured(plan: Plan, *, single: bool = False) -> float | None:
    """The chosen (or the single-stream) tuning candidate's measured latency; None for an untuned plan."""
    for c in plan.profile.candidates:
        hit = c.streams == "single" if single else c.chosen
        if hit and c.measured_ms >= 0:
            return c.measured_ms
    return None


def print_diff(info: dict, names: tuple[str, str], console=None) -> None:
    """The diff as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    a, b = names
    m = info["model"]
    verdict = "same model (fingerprints match)" if info["same_model"] else \
        f"[yellow]different models[/]: {m['fingerprint'][0][:12]} vs {m['fingerprint'][1][:12]}"
    console.print(verdict)
    table = Table(title="Plan diff")
    for col in ("", a, b):
        table.add_column(col)
    for row in _rows(info):
        table.add_row(*row)
    console.print(table)
    if info["profile"].get("top"):
        ops = Table(title=f"Ops whose profiled time changed most ({info['profile']['ops_changed']} changed)")
        for col in ("node", "op", f"{a} us", f"{b} us", "delta us", "ratio"):
            ops.add_column(col)
        for c in info["profile"]["top"]:
            ops.add_row(str(c["node"]), c["target"].removeprefix("aten."), f"{c['a_ms'] * 1e3:.2f}",
                        f"{c['b_ms'] * 1e3:.2f}", f"{c['delta_ms'] * 1e3:+.2f}",
                        f"{c['ratio']:.2f}x" if c["ratio"] is not None else "-")
        console.print(ops)


def _rows(info: dict) -> list[tuple[str, str, str]]:
    m, s, p, lat = info["model"], info["schedule"], info["profile"], info["latency"]
    rows = [("precision", *m["precision"]), ("ops", *map(str, m["ops"]))]
    rows += [(f"target.{c['field']}", str(c["a"]), str(c["b"])) for c in info["target"]]
    rows += [("algorithms", *s["algorithms"]), ("streams", *map(str, s["streams"])), ("waits", *map(str, s["waits"]))]
    rows += [(f"schedule.{c['field']}", str(c["a"]), str(c["b"])) for c in s["changes"]
             if c["field"] not in ("stream_algorithm", "order_algorithm", "num_streams", "predicted_ms")]
    if "order_equal" in s:
        rows.append(("launch order", "", "same" if s["order_equal"] else
                     f"{s['ops_launched_elsewhere']} ops at another position"))
        rows.append(("ops on another stream", "", f"{s['ops_moved_stream']} (after matching stream ids)"))
        rows.append(("waits not in the other", str(s["waits_only_in_a"]), str(s["waits_only_in_b"])))
        if s["ops_moved_device"]:
            rows.append(("ops on another GPU", "", str(s["ops_moved_device"])))
    rows += [("profile", *p["method"]), ("sequential ms", *map(_ms, p["sequential_ms"])),
             ("predicted ms", *map(_ms, lat["predicted_ms"])), ("measured ms (tuned)", *map(_ms, lat["measured_ms"])),
             ("single stream measured ms", *map(_ms, lat["single_stream_measured_ms"]))]
    return rows


def _ms(v) -> str:
    return f"{v:.4f}" if v is not None else "-"


def diff_files(path_a, path_b) -> dict:
    from opara_plan import load_plan

    return diff_plans(load_plan(path_a), load_plan(path_b))
