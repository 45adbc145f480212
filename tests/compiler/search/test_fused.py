"""Fused tuning without a GPU: compiling and timing are faked, what is tested is which plan tune_fused keeps
(by the interleaved final rounds, not the first pass) and what it records."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from opara_plan import Candidate, graph_fingerprint, validate
from oparac.search import fused as fuse
from oparac.search import tune
CPU = torch.device("cpu")


@pytest.fixture
def fake(monkeypatch, tiny_plan):
    """first[k] / final[k]: candidate k's first-pass and final-round figures (0 = the unfused plan, then
    FUSED_CANDIDATES in order)."""
    def install(first, final):
        calls = []

        def measure_fused(plan, weights, device):
            k = len(calls) + 1
            calls.append(plan.schedule.stream_algorithm)
            return plan, first[k]

        def measure_rounds(plans, weights, devices, *, rounds, repeats, replays):
            assert rounds == tune.FINAL_ROUNDS and sorted(plans) == list(range(len(first)))
            return {k: final[k] for k in plans}

        monkeypatch.setattr(fuse, "measure_fused", measure_fused)
        monkeypatch.setattr(tune, "measure_rounds", measure_rounds)
        return calls
    return install


def _tune(plan):
    return fuse.tune_fused(plan, {"w": torch.randn(3, 3)}, CPU, "inductor", mode="segments")


def _chosen(plan):
    [chosen] = [c for c in plan.profile.candidates if c.chosen]
    return chosen


def test_the_final_rounds_decide_not_the_first_pass(fake, tiny_plan):
    # the cap-0 opara fused plan is fastest in the first pass only; the single-stream fused plan wins the rounds
    fake([None, 1.0, 0.5, 0.9, 0.8], [2.0, 1.1, 1.5, 1.3, 1.4])
    out = _tune(tiny_plan)
    assert out.fusion.backend == "inductor" and out.schedule.stream_algorithm == "single"
    assert (_chosen(out).streams, _chosen(out).measured_ms) == ("single+inductor", 1.1)
    assert [c.measured_ms for c in out.profile.candidates] == [2.0, 1.1, 1.5, 1.3, 1.4]
    validate(out)


def test_a_tie_keeps_the_unfused_plan(fake, tiny_plan):
    fake([None, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.2, 1.0, 1.0])
    out = _tune(tiny_plan)
    assert not out.fusion.backend and out.schedule == tiny_plan.schedule
    assert _chosen(out).streams == tiny_plan.schedule.stream_algorithm


def test_earlier_tuning_candidates_stay_on_record_with_one_chosen(fake, tiny_plan):
    earlier = (Candidate(streams="opara", order="topo", max_streams=0, predicted_ms=0.1, measured_ms=0.2,
                         chosen=True),)
    tuned = dataclasses.replace(tiny_plan, profile=dataclasses.replace(tiny_plan.profile, candidates=earlier))
    fake([None, 1.0, 1.0, 1.0, 1.0], [0.9, 1.0, 1.0, 1.0, 1.0])  # the (tuned) unfused plan wins
    out = _tune(tuned)
    assert out.profile.candidates[0].chosen and sum(c.chosen for c in out.profile.candidates) == 1
    fake([None, 1.0, 1.0, 1.0, 1.0], [0.9, 1.0, 0.8, 1.0, 1.0])  # a fused plan wins: the earlier choice is withdrawn
    out = _tune(tuned)
    assert not out.profile.candidates[0].chosen and sum(c.chosen for c in out.profile.candidates) == 1
    assert _chosen(out).streams == "opara+inductor" and _chosen(out).max_streams == 0


def _short_branches(plan):
    """The tiny fork-join with its two branches (relu, sigmoid) too short to be worth a stream each."""
    ops = list(plan.profile.ops)
    ops[3] = dataclasses.replace(ops[3], ms=0.001)
    ops[4] = dataclasses.replace(ops[4], ms=0.001)
    return dataclasses.replace(plan, profile=dataclasses.replace(plan.profile, ops=tuple(ops)))


def test_the_coarse_cut_is_a_candidate_told_apart_by_its_label(fake, tiny_plan):
    assert [c[3] for c in fuse.FUSED_CANDIDATES] == ["maximal", "maximal", "maximal", "coarse"]
    calls = fake([None, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 0.7])
    out = _tune(_short_branches(tiny_plan))
    assert calls == ["single", "opara", "opara", "opara+coarse"]
    labels = [tune.candidate_label((c.streams, c.order, c.max_streams, c.num_devices))
              for c in out.profile.candidates]
    assert labels == ["opara/topo/cap -", "single+inductor/topo/cap -", "opara+inductor/opara/cap -",
                      "opara+inductor/opara/cap 4", "opara+coarse+inductor/opara/cap -"]
    assert _chosen(out).streams == "opara+coarse+inductor"
    # the kept plan is the coarse one: the side branch joined stream 0, so one stream and one segment
    assert out.schedule.stream_algorithm == "opara+coarse" and out.schedule.num_streams == 1
    assert len(out.fusion.segments) == 1
    validate(out)


def _with_conv_weight(plan):
    """The tiny plan with its weight 4-D, as a convolution's is (the fakes run nothing, only the layout rule
    reads it)."""
    nodes = list(plan.graph.nodes)
    nodes[1] = dataclasses.replace(nodes[1], outputs=(dataclasses.replace(nodes[1].outputs[0], shape=(3, 3, 1, 1)),))
    graph = dataclasses.replace(plan.graph, nodes=tuple(nodes))
    return dataclasses.replace(plan, graph=graph, model=dataclasses.replace(plan.model,
                                                                            fingerprint=graph_fingerprint(graph)))


def test_convolution_models_are_also_tried_in_channels_last(fake, tiny_plan):
    plan = _with_conv_weight(tiny_plan)
    nhwc_ops = tuple(dataclasses.replace(op, ms=op.ms * 0.5) for op in plan.profile.ops)
    asked = []

    def nhwc_profile():
        asked.append(True)
        return dataclasses.replace(plan.profile, ops=nhwc_ops, sequential_ms=0.02)

    n = len(fuse.FUSED_CANDIDATES) + len(fuse.NHWC_CANDIDATES)
    fake([None] + [1.0] * n, [1.0] * n + [0.6])  # the NHWC candidate (last) wins the rounds
    out = fuse.tune_fused(plan, {"w": torch.randn(3, 3, 1, 1)}, CPU, "inductor", nhwc_profile=nhwc_profile,
                          mode="segments")
    assert asked == [True]
    assert _chosen(out).streams == "opara+inductor+channels_last"
    assert out.model.memory_format == "channels_last" and out.fusion.backend == "inductor"
    assert out.profile.ops == nhwc_ops and out.profile.sequential_ms == 0.02  # the profile of its own layout
    assert [c.streams for c in out.profile.candidates][-2:] == ["opara+coarse+inductor", "opara+inductor+channels_last"]
    validate(out)


def test_channels_last_is_not_tried_without_4d_weights_or_when_already_chosen(fake, tiny_plan):
    def nhwc_profile():
        raise AssertionError("no NHWC candidates for this plan")

    n = len(fuse.FUSED_CANDIDATES)
    fake([None] + [1.0] * n, [1.0] * (n + 1))
    out = fuse.tune_fused(tiny_plan, {"w": torch.randn(3, 3)}, CPU, "inductor", nhwc_profile=nhwc_profile,
                          mode="segments")
    assert out.model.memory_format == "contiguous"  # 2-D weights only: the layout changes nothing
    conv = _with_conv_weight(tiny_plan)
    already = dataclasses.replace(conv, model=dataclasses.replace(conv.model, memory_format="channels_last"))
    fake([None] + [1.0] * n, [1.0] * (n + 1))
    out = fuse.tune_fused(already, {"w": torch.randn(3, 3, 1, 1)}, CPU, "inductor", nhwc_profile=nhwc_profile,
                          mode="segments")
    assert out.model.memory_format == "channels_last" and all("channels_last" not in c.streams
                                                             for c in out.profile.candidates)


def test_the_kernel_level_plan_is_a_candidate_in_auto_and_the_only_one_in_kernels_mode(monkeypatch, tiny_plan):
    from opara_plan import KernelStreams
    from oparac.search import kernels
    from oparac.search.kernels import whole_graph

    ks = KernelStreams(call_digest="ab" * 32, stream=(0, 1, 0), launch_order=(0, 1, 2), ms=(0.1,) * 3,
                       algorithm="opara/opara", critical_path_ms=0.2, predicted_ms=0.25)
    one = whole_graph(tiny_plan, "inductor")
    kernel_plan = dataclasses.replace(one, fusion=dataclasses.replace(one.fusion, kernels=ks))
    monkeypatch.setattr(kernels, "kernel_fused", lambda plan, w, d, b, p: kernels.KernelSearch(
        kernel_plan, 0.3, {}, {"single": (0.3, 0.3)}))
    monkeypatch.setattr(fuse, "measure_fused", lambda plan, weights, device: (plan, 1.0))
    monkeypatch.setattr(tune, "measure_rounds", lambda plans, *a, **k: {n: 0.3 if n == len(plans) - 1 else 1.0
                                                                        for n in plans})
    auto = fuse.tune_fused(tiny_plan, {"w": torch.randn(3, 3)}, CPU, "inductor", mode="auto")
    assert auto.fusion.mode == "kernels"
    assert len(auto.profile.candidates) == 1 + len(fuse.FUSED_CANDIDATES) + 1
    assert _chosen(auto).streams == "kernels opara/opara+inductor"
    only = fuse.tune_fused(tiny_plan, {"w": torch.randn(3, 3)}, CPU, "inductor", mode="kernels")
    assert only.fusion.mode == "kernels" and len(only.profile.candidates) == 2
    validate(only)
