"""`oparac inspect --timeline/--svg`: Gantt charts rendered on the CPU from real (cost-model) plans."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
from click.testing import CliRunner
from PIL import Image

import oparac
from opara_plan import load_plan
from oparac.observe import timeline as tl
from oparac.models import zoo
from oparac.cli import main
from oparac.observe.trace import measured_from_events

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    root = tmp_path_factory.mktemp("timeline")
    out = {}
    for name in ("squeezenet", "googlenet"):
        model, inputs = getattr(zoo, name)()
        path = root / f"{name}.plan"
        oparac.compile(model, inputs, device="cpu").save(path)
        out[name] = path
    return out


def assert_png(path, min_width=800, min_height=300):
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        width, height = img.size
    assert min_width <= width <= 5000 and min_height <= height <= 12000
    return width, height


def assert_svg(path):
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    assert len(list(root.iter())) > 50


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def test_png_and_svg_of_squeezenet(plans, tmp_path):
    png, svg = tmp_path / "sq.png", tmp_path / "sq.svg"
    result = invoke("inspect", plans["squeezenet"], "--timeline", png, "--svg", svg)
    assert result.exit_code == 0, result.output
    assert f"wrote {png}, {svg}" in result.output and "fingerprint" in result.output
    assert_png(png)
    assert_svg(svg)


def test_timeline_suffix_picks_svg(plans, tmp_path):
    svg = tmp_path / "g.svg"
    assert invoke("inspect", plans["googlenet"], "--timeline", svg).exit_code == 0
    assert_svg(svg)


def test_googlenet_bars_waits_and_critical_path(plans, tmp_path):
    plan = load_plan(plans["googlenet"])
    t = tl.simulated_timeline(plan, title="googlenet")
    kernels = [i for i, n in enumerate(plan.graph.nodes) if n.kind == "op" and plan.profile.ops[i].intensity != "free"]
    assert sorted(b.node for b in t.bars) == sorted(i for i in kernels if plan.profile.ops[i].ms > 0)
    assert len(t.waits) == len(plan.schedule.waits)
    assert any(b.critical for b in t.bars)
    assert t.makespan_ms == pytest.approx(plan.schedule.predicted_ms, rel=1e-6)
    assert len(t.lanes) == plan.schedule.num_streams
    assert "predicted" in t.title and "sequential" in t.title
    for b in t.bars:
        assert 0 <= b.start < b.end <= t.makespan_ms + 1e-9
    png = tmp_path / "g.png"
    tl.render(t, [png])
    assert_png(png)


def test_aggregate_merges_short_ops_and_keeps_counts(plans):
    plan = load_plan(plans["googlenet"])
    t = tl.simulated_timeline(plan)
    merged = tl.aggregate(t, t.makespan_ms / 20)
    assert len(merged.bars) < len(t.bars)
    assert sum(b.count for b in merged.bars) == len(t.bars)
    assert any(b.count > 1 and b.node == -1 for b in merged.bars)
    assert tl.aggregate(t, 0) is t


def test_auto_aggregation_for_big_graphs(plans, tmp_path, monkeypatch):
    monkeypatch.setattr(tl, "AUTO_BARS", 10)
    monkeypatch.setattr(tl, "AUTO_FRACTION", 20)
    plan = load_plan(plans["googlenet"])
    t = tl.write_timeline(plan, [tmp_path / "auto.png"])
    assert any(b.count > 1 for b in t.bars)
    assert_png(tmp_path / "auto.png")
    off = tl.write_timeline(plan, [tmp_path / "off.png"], aggregate_ms=0)
    assert all(b.count == 1 for b in off.bars)


def test_zoom_keeps_the_window_and_its_busy_lanes(plans, tmp_path):
    plan = load_plan(plans["googlenet"])
    full = tl.simulated_timeline(plan)
    lo, hi = full.makespan_ms * 0.4, full.makespan_ms * 0.6
    z = tl.zoomed(full, lo, hi)
    assert 0 < len(z.bars) < len(full.bars)
    assert all(b.end >= lo and b.start <= hi for b in z.bars)
    assert len(z.lanes) <= len(full.lanes) and {b.lane for b in z.bars} == set(range(len(z.lanes)))
    png = tmp_path / "zoom.png"
    result = invoke("inspect", plans["googlenet"], "--timeline", png, "--zoom", f"{lo}:{hi}", "--aggregate", "0")
    assert result.exit_code == 0, result.output
    assert_png(png)


def test_multi_gpu_lanes_are_grouped_by_device(plans, tmp_path):
    plan = load_plan(plans["squeezenet"])
    s = plan.schedule
    # Put every op of the odd streams on GPU 1: lanes then form two groups.
    device = tuple((s.stream[i] % 2) if s.stream[i] >= 0 else 0 for i in range(len(s.stream)))
    two = replace(plan, schedule=replace(s, num_devices=2, device=device))
    t = tl.simulated_timeline(two)
    assert {d for d, _ in t.lanes} == {0, 1}
    assert list(t.lanes) == sorted(t.lanes)
    tl.render(t, [tmp_path / "two.png"])
    assert_png(tmp_path / "two.png")


def fake_trace(plan):
    """Kineto-shaped events: a range per node, the runtime call inside it, its kernel on the node's stream."""
    events, ts, corr = [], 0.0, 0
    for i in plan.schedule.launch_order:
        if plan.profile.ops[i].intensity == "free":
            continue
        corr += 1
        name = f"opara/{i} {plan.graph.nodes[i].name} (x)"
        events.append({"ph": "X", "cat": "user_annotation", "name": name, "tid": 1, "ts": ts, "dur": 4.0})
        events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "tid": 1, "ts": ts + 1,
                       "dur": 2.0, "args": {"correlation": corr}})
        start = 10_000.0 + 3.0 * corr
        events.append({"ph": "X", "cat": "kernel", "name": "k", "tid": 7, "ts": start, "dur": 5.0,
                       "args": {"correlation": corr, "stream": 7 + plan.schedule.stream[i]}})
        events.append({"ph": "X", "cat": "gpu_user_annotation", "name": name, "tid": 7, "ts": start, "dur": 5.0})
        ts += 5.0
    return events


def test_measured_spans_from_a_trace(plans):
    plan = load_plan(plans["squeezenet"])
    m = measured_from_events(fake_trace(plan), plan)
    kernels = [i for i in plan.schedule.launch_order if plan.profile.ops[i].intensity != "free"]
    assert len(m["spans"]) == len(kernels) and m["unmatched_ops"] == []
    first = m["spans"][str(kernels[0])]
    assert first == pytest.approx([0.0, 0.005])
    assert m["host_held"] is True
    assert sum(s["kernels"] for s in m["streams"]) == len(kernels)
    assert all(s["busy_ms"] > 0 for s in m["streams"])


def test_measured_timeline_from_trace_file(plans, tmp_path):
    plan = load_plan(plans["squeezenet"])
    m = measured_from_events(fake_trace(plan), plan)
    m.update({"fingerprint": plan.model.fingerprint, "launch_order_hash": tl.launch_order_hash(plan),
              "gpu": "H100", "replay_ms": 0.1})
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps({"traceEvents": [], "opara": m}))
    png = tmp_path / "measured.png"
    result = invoke("inspect", plans["squeezenet"], "--timeline", png, "--measured", trace)
    assert result.exit_code == 0, result.output
    assert_png(png)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"traceEvents": [], "opara": {**m, "fingerprint": "sha256:x"}}))
    result = invoke("inspect", plans["squeezenet"], "--timeline", png, "--measured", other)
    assert result.exit_code == 1 and "another plan" in result.output


@pytest.mark.parametrize("args, message", [
    (["--timeline", "t.jpg"], "expected a .png or .svg"),
    (["--svg", "t.png"], "ending in .svg"),
    (["--timeline", "t.png", "--zoom", "3"], "START_MS:END_MS"),
    (["--timeline", "t.png", "--zoom", "2:1"], "START_MS < END_MS"),
    (["--timeline", "t.png", "--zoom", "500:600"], "no op runs in this window"),
    (["--zoom", "0:1"], "give --timeline FILE"),
    (["--timeline", "t.png", "--measured", "missing.json"], "cannot read trace"),
])
def test_bad_options_are_one_line_errors(plans, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("inspect", plans["squeezenet"], *args)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------- matplotlib is an extra


@pytest.fixture
def tiny_plan(tmp_path):
    from helpers.plans import make_tiny_plan

    path = tmp_path / "tiny.plan"
    make_tiny_plan().save(path)
    return path


def test_timeline_without_matplotlib_names_the_install_command(tiny_plan, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as after a plain `pip install opara`
    result = CliRunner().invoke(main, ["inspect", str(tiny_plan), "--timeline", str(tmp_path / "t.png"),
                                       "--dot", str(tmp_path / "g.dot")])
    assert result.exit_code == 1
    assert result.output.startswith("error: drawing a timeline needs matplotlib") and result.output.count("\n") == 1
    assert "pip install 'opara[timeline]'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "t.png").exists() and not (tmp_path / "g.dot").exists()  # nothing half done
    dot_only = CliRunner().invoke(main, ["inspect", str(tiny_plan), "--dot", str(tmp_path / "g.dot")])
    assert dot_only.exit_code == 0, dot_only.output  # what needs no matplotlib still works


def test_timeline_without_matplotlib_in_a_fresh_process(tiny_plan, tmp_path):
    """The install-level case: a Python whose import system has no matplotlib at all, running the CLI."""
    import subprocess
    import sys

    blocker = ("import sys, importlib.abc\n"
               "class NoMatplotlib(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name == 'matplotlib' or name.startswith('matplotlib.'):\n"
               "            raise ModuleNotFoundError(\"No module named 'matplotlib'\", name=name)\n"
               "sys.meta_path.insert(0, NoMatplotlib())\n"
               "from oparac.cli import main\n"
               "main()\n")
    out = tmp_path / "t.svg"
    run = subprocess.run([sys.executable, "-c", blocker, "inspect", str(tiny_plan), "--svg", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert "error: drawing a timeline needs matplotlib" in run.stderr and "opara[timeline]" in run.stderr
    assert "Traceback" not in run.stderr and not out.exists()


def test_the_extra_the_message_names_is_declared():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert tl.TIMELINE_EXTRA == "pip install 'opara[timeline]'" and project["name"] == "opara"
    assert any(d.startswith("matplotlib") for d in extras["timeline"])
    assert any(d.startswith("matplotlib") for d in extras["dev"])  # the test suite draws timelines
    assert not any(d.startswith("matplotlib") for d in project["dependencies"])
