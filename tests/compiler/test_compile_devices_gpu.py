"""Several GPUs on a machine with at least two (2 x H200): links, capture across GPUs, correctness, tuning."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import opara_runtime
import oparac
from opara_plan import PlanMismatchError, is_copy
from oparac.models import zoo
from oparac.schedule.placement import make_device_schedule, with_placement
from oparac.search.tune import candidate_label
from oparac.verify import verify

from helpers.models import two_branches

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("no_tf32"),
              pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")]
GPUS = ["cuda:0", "cuda:1"]


def _forced_split(model, inputs, streams="opara", order="critical"):
    """A 2-GPU plan whatever HIOS-LP decides: the ops after the first half go to GPU 1 (a worst case for copies)."""
    plan = oparac.compile(model, inputs, device="cuda", devices=GPUS, streams=streams, order=order)
    if plan.schedule.num_devices == 2:
        return plan
    base = oparac.compile(model, inputs, device="cuda", streams=streams, order=order)
    base = dataclasses.replace(base, profile=dataclasses.replace(base.profile, links=plan.profile.links))
    ops = [i for i, n in enumerate(base.graph.nodes) if n.kind == "op"]
    device_of = {i: int(k >= len(ops) // 2) for k, i in enumerate(ops)}
    return with_placement(base, make_device_schedule(base.graph, base.profile.ops, links=base.profile.links,
                                                     num_devices=2, streams=streams, order=order, max_streams=0,
                                                     device_of=device_of))


def test_links_are_measured_per_pair():
    model, inputs = two_branches()
    plan = oparac.compile(model, inputs, device="cuda", devices=GPUS)
    links = {(k.src, k.dst): k for k in plan.profile.links}
    assert set(links) == {(0, 1), (1, 0)} and plan.profile.links_method == "cuda-events"
    for k in links.values():
        assert 0 <= k.latency_ms < 0.5 and 0 < k.ms_per_byte < 1e-6  # faster than 1 GB/s


@pytest.mark.parametrize("streams", ["opara", "critical", "window", "single"])
def test_a_plan_across_two_gpus_matches_eager_with_outputs_on_the_first(streams):
    model, inputs = zoo.googlenet()
    plan = _forced_split(model.cuda(), tuple(x.cuda() for x in inputs), streams=streams)
    assert plan.schedule.num_devices == 2 and any(is_copy(n) for n in plan.graph.nodes)
    runner = opara_runtime.load(plan, model, device="cuda:0")
    assert runner.captured is not None and runner.devices == [torch.device("cuda", 0), torch.device("cuda", 1)]
    x = torch.randn_like(inputs[0]).cuda()
    got = runner(x)
    assert got.device == torch.device("cuda", 0)
    with torch.no_grad():
        want = model.cuda()(x)
    assert (got - want).abs().max().item() <= 1e-4 * want.abs().max().item()
    again = runner(x.clone())
    assert torch.equal(again, got), "replays are deterministic"
    assert verify(plan, model, device="cuda:0").ok


def test_a_wide_model_splits_and_replays_correctly_many_times():
    model, inputs = two_branches(batch=8)
    model = model.cuda()
    plan = _forced_split(model, tuple(x.cuda() for x in inputs))
    runner = opara_runtime.load(plan, model, device="cuda:0")
    for _ in range(20):
        x = torch.randn_like(inputs[0]).cuda()
        with torch.no_grad():
            want = model(x)
        got = runner(x)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_a_runner_stays_correct_after_another_capture_and_an_emptied_cache():
    """What a graph's ops allocate on GPU 1 during capture (values, and workspaces freed again) must stay the
    graph's: a later capture calls empty_cache(), and memory handed out again on GPU 1 must not be written by
    the first graph's replays (tuning captures its finalists side by side)."""
    model, inputs = two_branches(batch=8)
    model = model.cuda()
    plan = _forced_split(model, tuple(x.cuda() for x in inputs))
    first = opara_runtime.load(plan, model, device="cuda:0")
    x = torch.randn_like(inputs[0]).cuda()
    want = first(x)
    second = opara_runtime.load(plan, model, device="cuda:0")
    torch.cuda.empty_cache()
    fillers = [torch.full((n,), float("nan"), device="cuda:1") for n in (1 << 12, 1 << 16, 1 << 20, 1 << 22) * 4]
    for runner in (first, second, first):
        for a, b in zip(runner(x), want):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.cuda.synchronize("cuda:1")
    assert all(torch.isnan(f).all() for f in fillers), "a replay wrote memory handed out after its capture"


def test_tuning_never_picks_a_plan_slower_than_the_best_single_gpu_candidate():
    model, inputs = zoo.googlenet()
    said = []
    plan = oparac.compile(model, inputs, device="cuda", devices=GPUS, tune=True, progress=said.append)
    # Finalists are recorded with their re-measured median, the others with their one first-pass figure; the
    # progress line names the finalists (the best single-GPU candidate of the first pass always among them).
    line = next(s for s in said if s.startswith("tune: finalists "))
    labels = {f.rsplit(" ", 2)[0] for f in line.removeprefix("tune: finalists ").split(", ")}
    finalists = [c for c in plan.profile.candidates
                 if candidate_label((c.streams, c.order, c.max_streams, c.num_devices)) in labels]
    chosen = next(c for c in plan.profile.candidates if c.chosen)
    best_single = min(c.measured_ms for c in finalists if c.num_devices == 1)
    assert chosen in finalists and chosen.measured_ms == min(c.measured_ms for c in finalists)
    assert chosen.measured_ms < best_single if chosen.num_devices > 1 else chosen.measured_ms == best_single
    assert plan.schedule.num_devices == chosen.num_devices
    assert verify(plan, model, device="cuda:0").ok


def test_a_plan_for_more_gpus_than_present_is_refused():
    model, inputs = two_branches()
    plan = _forced_split(model.cuda(), tuple(x.cuda() for x in inputs))
    n = torch.cuda.device_count()
    too_many = dataclasses.replace(plan, schedule=dataclasses.replace(plan.schedule, num_devices=n + 1))
    with pytest.raises(PlanMismatchError, match=rf"needs {n + 1} GPUs, this machine has {n}"):
        opara_runtime.load(too_many, model, device="cuda:0")
    with pytest.raises(PlanMismatchError, match=rf"needs 2 GPUs \(cuda:{n - 1}..cuda:{n}\), this machine has {n}"):
        opara_runtime.load(plan, model, device=f"cuda:{n - 1}")
