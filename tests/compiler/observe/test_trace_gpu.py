"""`oparac trace` and `oparac bench` on a GPU: a Chrome trace with a range per node, measured timeline, table."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

import oparac
from oparac.models import zoo
from oparac.cli import main

pytestmark = pytest.mark.gpu
MODEL = "oparac.models.zoo:squeezenet"


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory):
    # A cost-model plan loads on any GPU (no target check) and skips profiling: fast to set up.
    path = tmp_path_factory.mktemp("trace") / "sq.plan"
    model, inputs = zoo.squeezenet()
    oparac.compile(model, inputs, device="cpu").save(path)
    return path


@pytest.fixture(scope="module")
def traced(plan_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("traced")
    out, png = root / "trace.json", root / "measured.png"
    result = CliRunner().invoke(main, ["trace", str(plan_path), MODEL, "-o", str(out), "--timeline", str(png),
                                       "--replays", "5"])
    assert result.exit_code == 0, result.output
    return result.output, out, png


def test_trace_has_a_range_per_node_and_measured_times(traced, plan_path):
    from opara_plan import load_plan

    output, out, _ = traced
    plan = load_plan(plan_path)
    data = json.loads(out.read_text())
    names = {e.get("name", "") for e in data["traceEvents"] if e.get("cat") == "user_annotation"}
    kernels = [i for i, n in enumerate(plan.graph.nodes) if n.kind == "op" and plan.profile.ops[i].intensity != "free"]
    assert sum(name.startswith("opara/") for name in names) >= len(kernels)
    m = data["opara"]
    assert m["replay_ms"] > 0 and m["eager_span_ms"] > 0
    assert len(m["spans"]) >= 0.9 * len(kernels)
    assert all(0 <= a <= b for a, b in m["spans"].values())
    assert {s["stream"] for s in m["streams"]} <= set(range(plan.schedule.num_streams))
    assert "measured" in output and "predicted" in output and "busy" in output


def test_measured_timeline_png(traced, plan_path, tmp_path):
    _, out, png = traced
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as img:
        assert img.size[0] >= 800 and img.size[1] >= 300
    again = tmp_path / "again.svg"
    result = CliRunner().invoke(main, ["inspect", str(plan_path), "--timeline", str(again), "--measured", str(out)])
    assert result.exit_code == 0, result.output
    assert again.read_text().lstrip().startswith("<?xml")


def test_bench_table_and_json(plan_path):
    args = ["bench", str(plan_path), MODEL, "--iters", "5", "--warmup", "1", "--baselines", "eager,cudagraph"]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    rows = {r["method"]: r for r in data["records"]}
    assert set(rows) == {"opara", "eager", "cudagraph"}
    assert all("error" not in r and r["ms_b2b"] > 0 for r in rows.values())
    assert rows["opara"]["max_abs_diff"] < 1e-2
    table = CliRunner(env={"COLUMNS": "200"}).invoke(main, args)
    assert table.exit_code == 0, table.output
    assert "vs cudagraph" in table.output and "opara" in table.output
