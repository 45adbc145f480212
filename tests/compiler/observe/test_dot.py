"""`oparac inspect --dot`: Graphviz text of a real plan, nodes coloured by stream, waits marked."""
from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

import oparac
from opara_plan import load_plan, node_refs
from oparac.models import zoo
from oparac.cli import main
from oparac.observe.dot import _quote, plan_to_dot, stream_colour


class Branches(torch.nn.Module):
    """Three independent branches joined by a sum: a fork-join that needs several streams."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(16, 16)
        self.b = torch.nn.Linear(16, 16)
        self.c = torch.nn.Linear(16, 16)

    def forward(self, x):
        return torch.relu(self.a(x)) + torch.sigmoid(self.b(x)) + torch.tanh(self.c(x))


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("dot") / "sq.plan"
    model, inputs = zoo.squeezenet()
    oparac.compile(model, inputs, device="cpu").save(path)
    return path


def test_dot_of_squeezenet(plan_path, tmp_path):
    out = tmp_path / "g.dot"
    result = CliRunner().invoke(main, ["inspect", str(plan_path), "--dot", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    plan = load_plan(plan_path)
    assert text.startswith("digraph opara {") and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    ops = [i for i, n in enumerate(plan.graph.nodes) if n.kind == "op"]
    for i in ops:
        assert re.search(rf"^\s*n{i} \[label=", text, re.M), f"op {i} missing"
    params = [i for i, n in enumerate(plan.graph.nodes) if n.kind == "param"]
    assert not any(re.search(rf"^\s*n{i} \[", text, re.M) for i in params)
    kernel_streams = {plan.schedule.stream[i] for i in ops if plan.profile.ops[i].intensity != "free"}
    fills = set(re.findall(r'fillcolor="(#[0-9A-F]{6})"', text))
    assert {stream_colour(s) for s in kernel_streams} <= fills


def test_every_edge_and_wait_is_drawn():
    model = Branches().eval()
    plan = oparac.compile(model, (torch.randn(2, 16),), device="cpu")
    text = plan_to_dot(plan)
    nodes = plan.graph.nodes
    shown = {i for i, n in enumerate(nodes) if n.kind in ("op", "input", "output")}
    for i in shown:
        for p in {r.node for r in node_refs(nodes[i])} & shown:
            assert f"n{p} -> n{i}" in text
    assert text.count('color="#D62728"') == len(plan.schedule.waits)
    assert plan.schedule.num_streams > 1


def test_multi_gpu_plans_get_one_cluster_per_gpu(plan_path):
    plan = load_plan(plan_path)
    s = plan.schedule
    device = tuple((s.stream[i] % 2) if s.stream[i] >= 0 else 0 for i in range(len(s.stream)))
    text = plan_to_dot(replace(plan, schedule=replace(s, num_devices=2, device=device)))
    assert "subgraph cluster_gpu0" in text and "subgraph cluster_gpu1" in text
    assert text.count("{") == text.count("}")


def test_labels_are_escaped():
    assert _quote('a "b"\\c\nd') == '"a \\"b\\"\\\\c\\nd"'
