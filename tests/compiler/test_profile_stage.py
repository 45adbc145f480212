"""pipeline.profile_stage: the default fused compile times its ops only where the cost model leaves segments worth
forecasting; every other compile times them as before. The GPU is faked: 'cuda' only selects the path."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import oparac
from helpers.models import two_branches
from opara_plan import OpProfile, Profile, Target
from oparac import pipeline
from oparac.options import CompileOptions
from oparac.progress import as_progress

GPU = torch.device("cuda")
H100 = Target(device_type="cuda", gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0), sm_count=132,
              torch=torch.__version__)


def _chain():
    torch.manual_seed(0)
    layers = [m for _ in range(4) for m in (nn.Linear(64, 64), nn.ReLU())]
    return nn.Sequential(*layers).eval(), (torch.randn(8, 64),)


@pytest.fixture
def timed(monkeypatch):
    """Fakes the GPU: its Target, and an op profile whose every op took 1 ms; records which graphs were timed."""
    from oparac.profile import profiler

    calls = []
    on_cpu = pipeline.profile_graph

    def profile_graph(graph, device, dtype, cache, progress, memory_format="contiguous"):
        if device.type == "cpu":  # the plans the tests start from are built on the CPU
            return on_cpu(graph, device, dtype, cache, progress, memory_format)
        calls.append(memory_format)
        ops = tuple(OpProfile(ms=1.0 if n.kind == "op" else 0.0, flops=0.0, bytes=0.0,
                              intensity="compute" if n.kind == "op" else "free") for n in graph.nodes)
        return H100, Profile(method="cuda-graph", ops=ops, sequential_ms=sum(o.ms for o in ops))
    monkeypatch.setattr(profiler, "gpu_target", lambda device: H100)
    monkeypatch.setattr(pipeline, "profile_graph", profile_graph)
    return calls


def _graph(make):
    model, inputs = make()
    return oparac.compile(model, inputs, device="cpu").graph


def test_a_chain_is_not_timed_where_the_cost_model_rules_segments_out(timed):
    notes = []
    target, profile = pipeline.profile_stage(_graph(_chain), GPU, CompileOptions(fuse="inductor"), None,
                                             as_progress(notes.append))
    assert timed == [] and target == H100
    assert profile.method == "cost-model" and profile.sequential_ms > 0
    assert any(n.startswith("profile: ops not timed (the schedule is one stream") for n in notes)


def test_a_wide_model_is_timed_where_segments_might_pay(timed):
    notes = []
    _, profile = pipeline.profile_stage(_graph(two_branches), GPU, CompileOptions(fuse="inductor"), None,
                                        as_progress(notes.append), "channels_last")
    assert timed == ["channels_last"] and profile.method == "cuda-graph" and notes == []


@pytest.mark.parametrize("options", [dict(), dict(fuse="inductor", tune=True), dict(fuse="inductor", guard=False),
                                     dict(fuse="inductor", fuse_mode="segments")])
def test_every_other_compile_times_its_ops(timed, options):
    assert not pipeline.deferred_profile(CompileOptions(**options), GPU)
    _, profile = pipeline.profile_stage(_graph(_chain), GPU, CompileOptions(**options), None, as_progress([].append))
    assert timed == ["contiguous"] and profile.method == "cuda-graph"


def test_no_gpu_no_deferral():
    assert not pipeline.deferred_profile(CompileOptions(fuse="inductor"), torch.device("cpu"))
    assert pipeline.deferred_profile(CompileOptions(fuse="inductor"), GPU)


def test_segments_fallen_back_to_are_cut_from_measured_op_times(timed):
    """Where the whole graph cannot be put on streams, the fused guard falls back to segments: a plan that kept the
    cost model's op times is timed then, and its schedule made again on them."""
    model, inputs = _chain()
    plan = oparac.compile(model, inputs, device="cpu")
    estimated = dataclasses.replace(plan, target=H100)
    notes = []
    again = pipeline.measured_profile(estimated, GPU, CompileOptions(fuse="inductor"), None, as_progress(notes.append))
    assert timed == [plan.model.memory_format] and again.profile.method == "cuda-graph"
    assert again.schedule.predicted_ms == pytest.approx(sum(o.ms for o in again.profile.ops))  # one chain, 1 ms each
    assert notes == ["profile: timing the ops after all: the segments are cut from their schedule"]

