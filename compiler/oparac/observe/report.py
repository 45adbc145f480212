"""Human-readable tables for the CLI, rendered with rich."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_summary(info: dict, console: Console | None = None) -> None:
    console = console or Console()
    g, s, p, t, m = info["graph"], info["schedule"], info["profile"], info["target"], info["model"]
    table = Table(title="Opara plan", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    ins = ", ".join(f"{x['name']}: {x['dtype']}{x['shape']}" for x in m["inputs"])
    layout = f", {m['memory_format']}" if m["memory_format"] != "contiguous" else ""
    rows = [
        ("model", f"{m['source']}, {m['precision']}{layout}, inputs {ins}"),
        ("fingerprint", m["fingerprint"]),
        ("nodes", f"{g['nodes']} ({g['ops']} ops, {g['kernels']} kernels, {g['params']} params"
                  + (f", {g['stacked_params']} of them stacked at load" if g.get("stacked_params") else "") + ")"),
        ("streams", f"{s['streams']} ({s['stream_algorithm']} / order {s['order_algorithm']}, "
                    f"cap {s['max_streams'] or 'none'}), kernels per stream {s['kernels_per_stream']}"),
        ("waits", str(s["waits"])),
        ("predicted", f"{s['predicted_ms']:.3f} ms vs {p['sequential_ms']:.3f} ms sequential "
                      f"({p['predicted_speedup']:.2f}x, {p['method']})"),
        ("target", f"{t['device_type']} {t['gpu']} cc {t['compute_capability'] or '-'}, "
                   f"torch {t['torch']}, cuda {t['cuda'] or '-'}"),
        ("tool", f"{info['tool']['name']} {info['tool']['version']}, schema {info['tool']['schema_version']}"),
    ]
    fusion = info["fusion"]
    if fusion["backend"]:
        stored = (f"{fusion['compiled_segments']} compiled as {fusion['compiled_programs']} distinct programs "
                  f"({fusion['compiled_bytes'] / 2**20:.1f} MiB, for {fusion['compiled_for']})"
                  if fusion["compiled_segments"] else "none compiled (compiled at load)")
        if fusion.get("mode") == "kernels":
            rows.insert(5, ("fusion", f"{fusion['backend']}, kernel-level: the whole graph as one program, "
                                      f"{fusion['kernels']} kernels on {fusion['kernel_streams']} streams"
                                      f"{_raised(fusion)}({fusion['kernel_schedule']}; critical path "
                                      f"{fusion['critical_path_ms']:.4f} "
                                      f"ms, predicted {fusion['kernel_predicted_ms']:.4f} ms), {stored}"))
        else:
            rows.insert(5, ("fusion", f"{fusion['backend']}: {fusion['segments']} segments, {stored}"))
    if s["devices"] > 1:
        rows.insert(3, ("devices", f"{s['devices']} GPUs ({s['device_algorithm']}), {s['copies']} copies between them"))
    if p["guard"]:
        rows.append(("guard", p["guard"].removeprefix("guard: ")))
    for link in p["links"]:
        rows.append((f"link {link['src']}->{link['dst']}", f"{link['latency_ms'] * 1e3:.1f} us + "
                     f"{1e-6 / link['ms_per_byte'] if link['ms_per_byte'] else float('inf'):.0f} GB/s "
                     f"({p['links_method']})"))
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    if p["candidates"]:
        cand = Table(title="Tuning candidates" if not p["guard"] else "Measured by the guard")
        for col in ("streams", "order", "max streams", "GPUs", "predicted ms", "measured ms", ""):
            cand.add_column(col)
        for c in sorted(p["candidates"], key=lambda c: (c["measured_ms"] is None, c["measured_ms"] or 0.0)):
            measured = f"{c['measured_ms']:.4f}" if c["measured_ms"] is not None else "-"
            cand.add_row(c["streams"], c["order"], str(c["max_streams"] or "-"), str(c["devices"]),
                         f"{c['predicted_ms']:.4f}",
                         measured, "chosen" if c["chosen"] else "")
        console.print(cand)


def _raised(fusion: dict) -> str:
    """', 2 at high priority ' for a kernel schedule that raises streams (KernelStreams.priority), else ' '."""
    raised = fusion.get("raised_streams") or []
    return f", {len(raised)} at high priority " if raised else " "
