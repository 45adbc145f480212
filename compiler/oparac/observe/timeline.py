"""Gantt charts of a plan: one lane per (GPU, stream), op bars from the simulated or measured schedule."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from opara_plan import OparaError, Plan

COLOURS = {"compute": "#4C72B0", "memory": "#DD8452", "mixed": "#8C8C8C"}
CRITICAL = "#D62728"
MAX_WAITS = 400       # beyond this many waits only a sample (critical ones first) is drawn, faintly
AUTO_BARS = 600       # above this many bars the default aggregates short ops
AUTO_FRACTION = 400   # default aggregation threshold: 1/AUTO_FRACTION of the visible time span
MAX_LABELS = 150
# Drawing needs matplotlib, an extra: a plain install (plans, runtime, CLI) stays free of it and its deps.
TIMELINE_EXTRA = "pip install 'opara[timeline]'"


class MissingExtraError(OparaError):
    """An optional dependency of the feature asked for is not installed; the message names the install command."""


def require_matplotlib() -> None:
    """Fail before any work is done, with the command that fixes it, rather than in the middle with a bare
    ModuleNotFoundError."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise MissingExtraError(f"drawing a timeline needs matplotlib, which is not installed ({e}); install it "
                                f"with {TIMELINE_EXTRA} (or pip install matplotlib)") from None


@dataclass(frozen=True)
class Bar:
    """One op (node >= 0) or a run of short ops merged by aggregate() (node == -1, count > 1)."""

    node: int
    lane: int
    start: float
    end: float
    intensity: str
    label: str
    count: int = 1
    busy: float = 0.0  # summed op time inside the bar (equals end - start for a single op)
    critical: bool = False


@dataclass(frozen=True)
class Wait:
    lane_from: int
    time_from: float  # the producer's end
    lane_to: int
    time_to: float    # the consumer's start
    critical: bool = False


@dataclass(frozen=True)
class Timeline:
    lanes: tuple[tuple[int, int], ...]  # (device, stream) per lane, top to bottom
    bars: tuple[Bar, ...]
    waits: tuple[Wait, ...]
    makespan_ms: float
    title: str
    subtitle: str


def lanes_of(plan: Plan) -> dict[int, int]:
    """op id -> lane index; lanes are (device, stream) pairs sorted, so a GPU's streams sit together."""
    s = plan.schedule
    ops = [i for i, n in enumerate(plan.graph.nodes) if n.kind == "op"]
    key = {i: (s.device[i] if s.device else 0, s.stream[i]) for i in ops}
    order = sorted(set(key.values()))
    index = {k: n for n, k in enumerate(order)}
    return {i: index[key[i]] for i in ops}


def lane_keys(plan: Plan) -> tuple[tuple[int, int], ...]:
    s = plan.schedule
    ops = [i for i, n in enumerate(plan.graph.nodes) if n.kind == "op"]
    return tuple(sorted({(s.device[i] if s.device else 0, s.stream[i]) for i in ops}))


def _dag_and_costs(plan: Plan):
    from oparac.schedule.build import costs_of, dag_of

    dag = dag_of(plan.graph, plan.profile.ops)
    return dag, costs_of(plan.graph, dag, plan.profile.ops)


def _critical_nodes(dag, costs) -> frozenset[int]:
    from oparac.schedule import critical_path

    path, _ = critical_path(dag, costs)
    return frozenset(path)


def simulated_timeline(plan: Plan, *, title: str = "") -> Timeline:
    """The schedule as the simulator sees it: profiled op times on the plan's streams and waits."""
    from oparac.schedule import simulate

    dag, costs = _dag_and_costs(plan)
    lane = lanes_of(plan)
    # Simulate on lane ids so that streams of different GPUs never share a lane.
    sim = simulate(dag, {i: lane[i] for i in dag.ops}, plan.schedule.launch_order, plan.schedule.waits, costs)
    spans = {i: (sim.start[i], sim.finish[i]) for i in dag.ops}
    critical = _critical_nodes(dag, costs)
    s, p = plan.schedule, plan.profile
    speedup = p.sequential_ms / s.predicted_ms if s.predicted_ms > 0 else 1.0
    head = f"{title or 'plan'}: predicted {s.predicted_ms:.3f} ms vs {p.sequential_ms:.3f} ms sequential " \
           f"({speedup:.2f}x)"
    return _build(plan, spans, critical, sim.makespan_ms, head, _subtitle(plan, f"profile: {p.method}"))


def measured_timeline(plan: Plan, measured: dict, *, title: str = "") -> Timeline:
    """The same chart from measured kernel spans (the `opara` section that `oparac trace` writes)."""
    spans = {int(k): (float(v[0]), float(v[1])) for k, v in measured["spans"].items()}
    dag, costs = _dag_and_costs(plan)
    measured_costs = replace(costs, ms={i: (spans[i][1] - spans[i][0]) if i in spans else 0.0 for i in dag.ops})
    critical = _critical_nodes(dag, measured_costs)
    span = max((e for _, e in spans.values()), default=0.0)
    head = f"{title or 'plan'} on {measured.get('gpu', 'GPU')}: graph replay {measured['replay_ms']:.3f} ms, " \
           f"predicted {plan.schedule.predicted_ms:.3f} ms, {plan.profile.sequential_ms:.3f} ms sequential"
    sub = _subtitle(plan, f"measured kernels of one eager launch on the plan's streams, span {span:.3f} ms")
    return _build(plan, spans, critical, span, head, sub)


def _subtitle(plan: Plan, source: str) -> str:
    s = plan.schedule
    kernels = sum(1 for i, n in enumerate(plan.graph.nodes)
                  if n.kind == "op" and plan.profile.ops[i].intensity != "free")
    gpus = f", {s.num_devices} GPUs" if s.num_devices > 1 else ""
    return f"{s.num_streams} streams ({s.stream_algorithm} / order {s.order_algorithm}){gpus}, {kernels} kernels, " \
           f"{len(s.waits)} waits; {source}"


def _build(plan: Plan, spans: dict, critical: frozenset, makespan: float, title: str, subtitle: str) -> Timeline:
    nodes, ops = plan.graph.nodes, plan.profile.ops
    lane = lanes_of(plan)
    bars = []
    for i, (start, end) in sorted(spans.items(), key=lambda kv: kv[1]):
        if ops[i].intensity == "free" or end <= start:
            continue  # launches no kernel: nothing to draw
        bars.append(Bar(i, lane[i], start, end, ops[i].intensity, nodes[i].name, busy=end - start,
                        critical=i in critical))
    waits = tuple(Wait(lane[p], spans[p][1], lane[c], spans[c][0], critical=c in critical and p in critical)
                  for c, p in plan.schedule.waits if c in spans and p in spans)
    return Timeline(lane_keys(plan), tuple(bars), waits, makespan, title, subtitle)


def aggregate(timeline: Timeline, threshold_ms: float) -> Timeline:
    """Merge runs of consecutive bars of a lane that are each shorter than `threshold_ms` and separated by
    gaps shorter than it, so that a 1000-op model draws as readable blocks instead of hairlines."""
    if threshold_ms <= 0:
        return timeline
    by_lane: dict[int, list[Bar]] = {}
    for b in timeline.bars:
        by_lane.setdefault(b.lane, []).append(b)
    merged: list[Bar] = []
    for lane_bars in by_lane.values():
        run: list[Bar] = []
        for b in sorted(lane_bars, key=lambda b: b.start):
            short = b.end - b.start < threshold_ms
            if run and short and b.start - run[-1].end < threshold_ms:
                run.append(b)
                continue
            merged.extend(_merge(run))
            run = [b] if short else []
            if not short:
                merged.append(b)
        merged.extend(_merge(run))
    merged.sort(key=lambda b: (b.start, b.lane))
    return replace(timeline, bars=tuple(merged))


def _merge(run: list[Bar]) -> list[Bar]:
    if len(run) <= 1:
        return run
    kinds = {b.intensity for b in run}
    return [Bar(-1, run[0].lane, run[0].start, run[-1].end, kinds.pop() if len(kinds) == 1 else "mixed",
                f"{len(run)} ops", count=len(run), busy=sum(b.busy for b in run),
                critical=any(b.critical for b in run))]


def zoomed(timeline: Timeline, start_ms: float, end_ms: float) -> Timeline:
    """Only what overlaps [start_ms, end_ms], on the lanes busy in it; render() sets the axis to the window."""
    bars = [b for b in timeline.bars if b.end >= start_ms and b.start <= end_ms]
    busy = sorted({b.lane for b in bars})
    new = {old: k for k, old in enumerate(busy)}
    waits = tuple(replace(w, lane_from=new[w.lane_from], lane_to=new[w.lane_to]) for w in timeline.waits
                  if w.time_to >= start_ms and w.time_from <= end_ms and w.lane_from in new and w.lane_to in new)
    return replace(timeline, lanes=tuple(timeline.lanes[k] for k in busy),
                   bars=tuple(replace(b, lane=new[b.lane]) for b in bars), waits=waits)


def parse_zoom(text: str | None) -> tuple[float, float] | None:
    """'1.5:3' -> (1.5, 3.0)."""
    if not text:
        return None
    parts = text.split(":")
    try:
        lo, hi = float(parts[0]), float(parts[1])
        if len(parts) != 2:
            raise ValueError
    except (ValueError, IndexError):
        raise OparaError(f"--zoom {text!r}: expected START_MS:END_MS, e.g. 0.5:1.25") from None
    if not 0 <= lo < hi:
        raise OparaError(f"--zoom {text!r}: expected 0 <= START_MS < END_MS")
    return lo, hi


def render(timeline: Timeline, paths, *, window: tuple[float, float] | None = None) -> None:
    """Draw the chart once and save it to each path (format from the suffix: .png or .svg)."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(timeline.lanes)
    # Lanes get thinner as their number grows (Opara's Alg. 1 opens ~150 streams for NASNet) so that the
    # figure stays a screen or two tall.
    lane_in = max(0.12, min(0.42, 24.0 / max(n, 1)))
    fig, ax = plt.subplots(figsize=(16, max(3.2, lane_in * n + 2.0)))
    try:
        lo, hi = window or (0.0, max(timeline.makespan_ms, 1e-6))
        ax.set_xlim(lo, hi)
        ax.set_ylim(n - 0.4, -0.6)
        _draw_lanes(ax, timeline)
        _draw_bars(ax, timeline)
        waits_note = _draw_waits(ax, timeline)
        _draw_labels(ax, fig, timeline, hi - lo)
        _legend(ax, waits_note)
        ax.set_xlabel("time (ms)")
        ax.set_title(f"{timeline.title}\n{timeline.subtitle}", fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        for path in paths:
            fig.savefig(path, dpi=150 if str(path).lower().endswith(".png") else None)
    finally:
        plt.close(fig)


def _draw_lanes(ax, timeline: Timeline) -> None:
    multi = len({d for d, _ in timeline.lanes}) > 1
    n = len(timeline.lanes)
    step = max(1, n // 60)  # at most ~60 lane names, or they overlap
    ticks = range(0, n, step)
    ax.set_yticks(list(ticks))
    ax.set_yticklabels([f"GPU {d} · s{s}" if multi else f"stream {s}" for d, s in (timeline.lanes[k] for k in ticks)],
                       fontsize=8 if n <= 40 else 6)
    if multi:
        # Shade every other GPU's group of lanes so the device boundary is visible at a glance.
        for k, (d, _) in enumerate(timeline.lanes):
            if d % 2:
                ax.axhspan(k - 0.5, k + 0.5, color="#F0F0F0", zorder=0)


def _draw_bars(ax, timeline: Timeline) -> None:
    for kind, colour in COLOURS.items():
        for lane in range(len(timeline.lanes)):
            bars = [b for b in timeline.bars if b.lane == lane and b.intensity == kind]
            if bars:
                ax.broken_barh([(b.start, b.end - b.start) for b in bars], (lane - 0.38, 0.76),
                               facecolors=[_shade(colour, b) for b in bars], edgecolors="white",
                               linewidth=0.3, zorder=2)
    for lane in range(len(timeline.lanes)):
        crit = [b for b in timeline.bars if b.lane == lane and b.critical]
        if crit:
            ax.broken_barh([(b.start, b.end - b.start) for b in crit], (lane - 0.42, 0.84), facecolors="none",
                           edgecolors=CRITICAL, linewidth=0.9, zorder=3)


def _shade(colour: str, bar: Bar):
    """Aggregated bars are paler where the merged ops leave idle time inside the bar."""
    from matplotlib.colors import to_rgba

    width = bar.end - bar.start
    fill = 1.0 if bar.count == 1 or width <= 0 else min(1.0, bar.busy / width)
    return to_rgba(colour, 0.35 + 0.65 * fill)


def _draw_waits(ax, timeline: Timeline) -> str:
    from matplotlib.collections import LineCollection

    waits = sorted(timeline.waits, key=lambda w: not w.critical)
    shown = waits if len(waits) <= MAX_WAITS else waits[:MAX_WAITS]
    if not shown:
        return "cross-stream wait"
    faint = len(timeline.waits) > 100
    segments = [((w.time_from, w.lane_from), (w.time_to, w.lane_to)) for w in shown]
    ax.add_collection(LineCollection(segments, colors="#333333", linewidths=0.5, alpha=0.25 if faint else 0.7,
                                     zorder=4))
    ax.scatter([w.time_to for w in shown], [w.lane_to for w in shown], marker=">", s=6 if faint else 14,
               color="#333333", alpha=0.4 if faint else 0.8, linewidths=0, zorder=4)
    if len(shown) < len(timeline.waits):
        return f"cross-stream wait ({len(shown)} of {len(timeline.waits)} shown)"
    return f"cross-stream wait ({len(shown)})"


def _draw_labels(ax, fig, timeline: Timeline, visible_ms: float) -> None:
    """Name the bars that are wide enough to hold text; narrow ones stay unlabeled."""
    width_in = fig.get_size_inches()[0] * 0.85
    wide = [b for b in timeline.bars if (b.end - b.start) / visible_ms * width_in > 0.45]
    for b in sorted(wide, key=lambda b: b.start - b.end)[:MAX_LABELS]:
        chars = int((b.end - b.start) / visible_ms * width_in * 14)
        text = b.label if len(b.label) <= chars else b.label[:max(1, chars - 1)] + "…"
        ax.text(max(b.start, ax.get_xlim()[0]) + 0.002 * visible_ms, b.lane, text, fontsize=6, va="center",
                ha="left", color="white", clip_on=True, zorder=5)


def _legend(ax, waits_note: str) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=COLOURS["compute"], label="compute-intensive"),
               Patch(color=COLOURS["memory"], label="memory-intensive"),
               Patch(color=COLOURS["mixed"], label="merged short ops (mixed)"),
               Patch(facecolor="none", edgecolor=CRITICAL, label="critical path"),
               Line2D([0], [0], color="#333333", lw=0.8, label=waits_note)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)


def load_measured(path, plan: Plan) -> dict:
    """The `opara` section of a trace written by `oparac trace`, checked against the plan."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise OparaError(f"--measured {str(path)!r}: cannot read trace: {e}") from None
    measured = data.get("opara") if isinstance(data, dict) else None
    if not isinstance(measured, dict) or "spans" not in measured:
        raise OparaError(f"--measured {str(path)!r}: no 'opara' section; write the trace with `oparac trace`")
    if measured.get("fingerprint") != plan.model.fingerprint or \
            measured.get("launch_order_hash") != launch_order_hash(plan):
        raise OparaError(f"--measured {str(path)!r}: the trace was recorded for another plan "
                         f"(fingerprint {str(measured.get('fingerprint'))[:12]}, this plan "
                         f"{plan.model.fingerprint[:12]}, or another schedule)")
    return measured


def launch_order_hash(plan: Plan) -> str:
    """Identifies the schedule a trace belongs to (the fingerprint alone covers only the graph)."""
    import hashlib

    s = plan.schedule
    text = json.dumps([list(s.stream), list(s.launch_order), [list(w) for w in s.waits], list(s.device)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_timeline(plan: Plan, paths, *, measured: dict | None = None, aggregate_ms: float | None = None,
                   zoom: tuple[float, float] | None = None, title: str = "") -> Timeline:
    """Build the simulated (or measured) timeline, zoom, aggregate and render it to each of `paths`.

    aggregate_ms None: merge short ops automatically when there are more than AUTO_BARS bars; 0: never.
    """
    bad = [str(p) for p in paths if Path(p).suffix.lower() not in (".png", ".svg")]
    if bad:
        raise OparaError(f"timeline {bad[0]!r}: expected a .png or .svg file name")
    require_matplotlib()
    timeline = measured_timeline(plan, measured, title=title) if measured else simulated_timeline(plan, title=title)
    if zoom:
        end = timeline.makespan_ms
        timeline = zoomed(timeline, *zoom)
        if not timeline.bars:
            raise OparaError(f"--zoom {zoom[0]:g}:{zoom[1]:g}: no op runs in this window (the timeline ends at "
                             f"{end:.4f} ms)")
    if aggregate_ms is None and len(timeline.bars) > AUTO_BARS:
        visible = (zoom[1] - zoom[0]) if zoom else timeline.makespan_ms
        aggregate_ms = visible / AUTO_FRACTION
    timeline = aggregate(timeline, aggregate_ms or 0.0)
    render(timeline, paths, window=zoom)
    return timeline


def write_pictures(plan: Plan, *, timeline=None, svg=None, dot=None, aggregate_ms: float | None = None,
                   zoom: str | None = None, measured=None, title: str = "") -> list[str]:
    """What `oparac inspect --timeline/--svg/--dot` writes; returns the paths written."""
    if timeline or svg:
        require_matplotlib()  # before the .dot file is written: a failed command leaves nothing half done
    written = []
    if dot:
        from oparac.observe.dot import write_dot

        write_dot(plan, dot)
        written.append(str(dot))
    paths = [p for p in (timeline, svg) if p]
    if svg and Path(svg).suffix.lower() != ".svg":
        raise OparaError(f"--svg {str(svg)!r}: expected a file name ending in .svg")
    if not paths and (measured or zoom or aggregate_ms is not None):
        raise OparaError("--measured, --zoom and --aggregate shape a timeline: give --timeline FILE or --svg FILE")
    if paths:
        data = load_measured(measured, plan) if measured else None
        write_timeline(plan, paths, measured=data, aggregate_ms=aggregate_ms, zoom=parse_zoom(zoom), title=title)
        written.extend(map(str, paths))
    return written
