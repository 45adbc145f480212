"""`oparac diff`: two plans of one model, of two models, relabelled streams, changed profiles and targets."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

import oparac
from opara_plan import Candidate, load_plan
from oparac.models import zoo
from oparac.cli import main
from oparac.observe.diff import diff_plans, match_streams
from oparac.schedule.build import make_schedule


@pytest.fixture(scope="module")
def squeezenet_plan():
    model, inputs = zoo.squeezenet()
    return oparac.compile(model, inputs, device="cpu")


def single_stream(plan):
    return replace(plan, schedule=make_schedule(plan.graph, plan.profile.ops, streams="single", order="topo",
                                                max_streams=0))


def slower_op(plan, factor=3.0):
    """The first kernel op made `factor` times slower in the profile (same graph, same fingerprint)."""
    ops = list(plan.profile.ops)
    i = next(k for k, n in enumerate(plan.graph.nodes) if n.kind == "op" and ops[k].intensity != "free")
    ops[i] = replace(ops[i], ms=ops[i].ms * factor)
    return replace(plan, profile=replace(plan.profile, ops=tuple(ops))), i


def test_a_plan_against_itself_changes_nothing(squeezenet_plan):
    d = diff_plans(squeezenet_plan, squeezenet_plan)
    assert d["same_model"] and d["target"] == [] and d["schedule"]["changes"] == []
    assert d["schedule"]["order_equal"] and d["schedule"]["ops_moved_stream"] == 0
    assert d["profile"]["ops_changed"] == 0 and d["profile"]["top"] == []


def test_single_stream_against_parallel(squeezenet_plan, tmp_path):
    a, b = tmp_path / "a.plan", tmp_path / "b.plan"
    squeezenet_plan.save(a)
    single_stream(squeezenet_plan).save(b)
    result = CliRunner().invoke(main, ["diff", str(a), str(b), "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    s = d["schedule"]
    assert d["same_model"] and s["streams"] == [squeezenet_plan.schedule.num_streams, 1]
    assert s["ops_moved_stream"] > 0 and s["waits"][1] == 0
    assert s["waits_only_in_a"] == len(squeezenet_plan.schedule.waits)
    table = CliRunner().invoke(main, ["diff", str(a), str(b)])
    assert table.exit_code == 0, table.output
    assert "same model" in table.output and "streams" in table.output


def test_profile_changes_are_ranked(squeezenet_plan, tmp_path):
    slow, i = slower_op(squeezenet_plan)
    d = diff_plans(squeezenet_plan, slow, top=3)
    assert d["profile"]["ops_changed"] == 1
    top = d["profile"]["top"][0]
    assert top["node"] == i and top["ratio"] == pytest.approx(3.0)
    a, b = tmp_path / "a.plan", tmp_path / "b.plan"
    squeezenet_plan.save(a)
    slow.save(b)
    out = CliRunner().invoke(main, ["diff", str(a), str(b)]).output
    assert "changed most" in out and "3.00x" in out


def test_renumbered_streams_are_not_moves(squeezenet_plan):
    s = squeezenet_plan.schedule
    flipped = tuple((s.num_streams - 1 - k) if k >= 0 else k for k in s.stream)
    other = replace(squeezenet_plan, schedule=replace(s, stream=flipped))
    d = diff_plans(squeezenet_plan, other)
    assert d["schedule"]["ops_moved_stream"] == 0
    assert match_streams((0, 1, 1), (1, 0, 0), range(3)) == {1: 0, 0: 1}


def test_target_and_measured_latency(squeezenet_plan):
    tuned = replace(squeezenet_plan,
                    target=replace(squeezenet_plan.target, device_type="cuda", gpu_name="NVIDIA H100"),
                    profile=replace(squeezenet_plan.profile, candidates=(
                        Candidate("single", "topo", 0, 0.2, measured_ms=0.30),
                        Candidate("opara", "opara", 0, 0.1, measured_ms=0.25, chosen=True))))
    d = diff_plans(squeezenet_plan, tuned)
    fields = {c["field"]: c for c in d["target"]}
    assert fields["gpu_name"]["b"] == "NVIDIA H100" and fields["device_type"]["a"] == "cpu"
    assert d["latency"]["measured_ms"] == [None, 0.25]
    assert d["latency"]["single_stream_measured_ms"] == [None, 0.30]


def test_different_models_skip_per_node_sections(squeezenet_plan, tmp_path):
    small = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    other = oparac.compile(small, (torch.randn(1, 8),), device="cpu")
    d = diff_plans(squeezenet_plan, other)
    assert not d["same_model"] and "order_equal" not in d["schedule"] and "top" not in d["profile"]
    a, b = tmp_path / "a.plan", tmp_path / "b.plan"
    squeezenet_plan.save(a)
    other.save(b)
    result = CliRunner().invoke(main, ["diff", str(a), str(b)])
    assert result.exit_code == 0 and "different models" in result.output


def test_missing_plan_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["diff", str(tmp_path / "a.plan"), str(tmp_path / "b.plan")])
    assert result.exit_code == 1 and "cannot read plan" in result.output and "Traceback" not in result.output
