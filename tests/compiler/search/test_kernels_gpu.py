"""The kernel-level fused mode on the GPU: the whole graph compiled once, its kernels put on streams, captured in
one CUDA graph; every schedule gives the one-stream program's outputs bit for bit."""
from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

import opara_runtime
import oparac
from opara_plan import load_plan
from oparac.search.kernels import compile_whole, kernel_dag, kernel_schedule, whole_graph
from oparac.models import zoo
from oparac.pipeline import bind_weights

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("no_tf32")]


class Branches(torch.nn.Module):
    """Four independent GEMM chains: a kernel DAG several kernels wide. Each chain reads its own multiple of the
    input, so merge_projections (on by default) leaves their first GEMMs apart."""

    def __init__(self):
        super().__init__()
        self.branches = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 256))
            for _ in range(4))

    def forward(self, x):
        return sum(torch.tanh(b(x * (i + 1))) for i, b in enumerate(self.branches))


def _cuda(model, inputs):
    return model.cuda().eval(), tuple(x.cuda() for x in inputs)


def test_kernel_plan_matches_eager_and_round_trips(tmp_path):
    model, inputs = _cuda(Branches(), (torch.randn(8, 256),))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        plan = oparac.compile(model, inputs, device="cuda", fuse="inductor", fuse_mode="kernels")
    # Every schedule the search timed ran on its own streams: one that fell back to one stream would be timed as
    # the one-stream program under its name (outputs alike, so only this warning tells).
    assert not [w for w in said if "kernel streams not applied" in str(w.message)]
    assert plan.fusion.mode == "kernels" and len(plan.fusion.segments) == 1
    k = plan.fusion.kernels
    assert len(k.stream) == len(k.ms) > 8 and k.critical_path_ms > 0
    assert "kernel schedules measured" in plan.profile.guard
    plan.save(tmp_path / "k.plan")
    loaded = load_plan(tmp_path / "k.plan")
    assert loaded == plan
    runner = opara_runtime.load(loaded, model, trust_compiled_code=True)
    with torch.no_grad():
        want = model(*inputs)
    torch.testing.assert_close(runner(*inputs), want, rtol=1e-4, atol=1e-4)


def test_every_stream_schedule_gives_the_one_stream_outputs_bitwise():
    model, inputs = _cuda(Branches(), (torch.randn(8, 256),))
    device = torch.device("cuda")
    base_plan = oparac.compile(model, inputs, device="cuda", guard=False)
    weights = bind_weights(model, base_plan, device)
    one = whole_graph(base_plan, "inductor")
    programs, base = compile_whole(one, weights, device)
    kd = kernel_dag(programs, base, device)
    assert kd.dag.ops and max(len(ps) for ps in kd.dag.preds.values()) >= 1
    from opara_runtime.fused import artifact_bytes, cache_key
    from oparac.search.kernels import one_stream, prioritized, with_kernels

    blob = artifact_bytes(programs[0].fn)
    outs = []
    schedules = [one_stream(kd)] + [kernel_schedule(kd, "opara", "opara", cap) for cap in (0, 2, 3)]
    assert max(schedules[1].stream) >= 1, "the four branches go on more than one stream"
    # and the uncapped schedule with its critical path's streams raised (schema 1.6 priorities)
    raised = prioritized(kd, schedules[1])
    assert raised is not None and -1 in raised.priority, "three of the four chains are off the critical path"
    schedules.append(raised)
    for ks in schedules:
        plan = with_kernels(one, ks, blob, cache_key(device))
        runner = opara_runtime.load(plan, model, trust_compiled_code=True)
        for _ in range(3):
            outs.append(runner(*inputs).clone())
    for o in outs[1:]:
        assert torch.equal(o, outs[0])


@pytest.mark.parametrize("tamper, message", [
    (lambda k: dataclasses.replace(k, call_digest="0" * 64), "made for another compiled program"),
    (lambda k: dataclasses.replace(k, launch_order=tuple(reversed(k.launch_order))), "is launched before kernel"),
])
def test_a_schedule_that_does_not_fit_its_program_runs_on_one_stream_with_a_warning(tamper, message):
    model, inputs = _cuda(Branches(), (torch.randn(8, 256),))
    plan = oparac.compile(model, inputs, device="cuda", fuse="inductor", fuse_mode="kernels")
    tampered = dataclasses.replace(plan, fusion=dataclasses.replace(plan.fusion, kernels=tamper(plan.fusion.kernels)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner = opara_runtime.load(tampered, model, trust_compiled_code=True)
    assert any(message in str(w.message) for w in caught)
    with torch.no_grad():
        want = model(*inputs)
    torch.testing.assert_close(runner(*inputs), want, rtol=1e-4, atol=1e-4)


def test_llama_style_decoder_in_kernel_mode_matches_eager():
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=704, num_hidden_layers=2,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256)
    model, inputs = _cuda(zoo.HiddenStates(LlamaModel(config)), (torch.randint(0, 1000, (1, 64)),))
    plan = oparac.compile(model, inputs, device="cuda", fuse="inductor", fuse_mode="kernels")
    runner = opara_runtime.load(plan, model, trust_compiled_code=True)
    with torch.no_grad():
        want = model(*inputs)
    torch.testing.assert_close(runner(*inputs), want, rtol=1e-3, atol=1e-3)


def test_default_fused_plan_keeps_the_faster_of_segments_and_the_whole_graph():
    model, inputs = _cuda(*zoo.gpt2(1, 64))
    plan = oparac.compile(model, inputs, device="cuda", fuse="inductor")
    assert plan.profile.guard.startswith("guard:")
    unfused = plan.profile.candidates[-1]  # the guard's last record: the unfused plan on one stream
    assert unfused.streams == "single" and unfused.measured_ms > 0
    assert unfused.chosen == (not plan.fusion.backend)
    if unfused.chosen:
        return
    if "clearly pay" in plan.profile.guard:
        return
    if "segments not compiled" in plan.profile.guard:  # the profile ruled segments out: the kernel search's pick
        measured = [c for c in plan.profile.candidates if "+kernels" in c.streams]
        [chosen] = [c for c in measured if c.chosen]
        assert plan.fusion.mode == "kernels" and any(c.streams == "single+kernels" for c in measured)
        assert chosen.measured_ms == min(c.measured_ms for c in measured)
        return
    segments, whole = plan.profile.candidates[-3:-1]  # the guard's two fused records, before the unfused one
    assert "+kernels" in whole.streams
    winner, loser = (segments, whole) if segments.chosen else (whole, segments)
    assert winner.chosen and not loser.chosen and winner.measured_ms <= loser.measured_ms
    assert (plan.fusion.mode == "kernels") == whole.chosen
