"""compile(devices=...) on simulated GPUs: HIOS-LP splits a wide model, keeps a narrow one on one GPU, and
the plan runs on the CPU path like eager; links, device names and the CLI option."""
from __future__ import annotations

import functools

import pytest
import torch
from click.testing import CliRunner

import opara_runtime
import oparac
from opara_plan import Link, ModelError, is_copy, load_plan, plan_from_bytes, validate
from oparac.models import zoo
from oparac.cli import main
from oparac.schedule.copies import split_across_devices
from oparac.options import parse_devices
from oparac.profile.links import fit_line, nominal_links
from oparac.schedule.devices import TransferModel

from helpers.models import two_branches

CHEAP = nominal_links(2, latency_ms=0.001, ms_per_byte=1e-10)
DEAR = nominal_links(2, latency_ms=5.0, ms_per_byte=1e-6)
# the branches' first convolutions kept apart, so that a whole branch can move: merged, they are one op
WIDE = dict(device="cpu", devices=["cuda:0", "cuda:1"], links=CHEAP, merge_convolutions=False)


@functools.lru_cache(maxsize=1)
def _wide_plan():
    model, inputs = two_branches()
    return model, inputs, oparac.compile(model, inputs, **WIDE)


def test_two_heavy_branches_split_over_two_gpus_with_copies_on_the_cut():
    _, _, plan = _wide_plan()
    s, nodes = plan.schedule, plan.graph.nodes
    assert s.num_devices == 2 and s.device_algorithm == "hios-lp"
    assert plan.profile.links == CHEAP and plan.profile.links_method == "nominal"
    assert plan.target.device_count == 2
    ops_on = {d: [i for i, n in enumerate(nodes) if n.kind == "op" and s.device[i] == d] for d in (0, 1)}
    assert ops_on[0] and ops_on[1]
    convs_on = {d: sum("conv" in nodes[i].target for i in ops_on[d]) for d in (0, 1)}
    assert convs_on[1] >= 4, "one whole branch moves to the second GPU"
    copies = [i for i, n in enumerate(nodes) if is_copy(n)]
    assert len(copies) >= 2, "the stem's output goes over, the branch's result comes back"
    assert {s.device[i] for i in copies} == {0, 1}
    assert all(s.device[nodes[i].args[0].node] != s.device[i] for i in copies)
    assert {n.name for n in nodes if n.kind == "param" and n.name == "scale"} == {"scale"}
    assert sorted(s.device[i] for i, n in enumerate(nodes) if n.name == "scale") == [0, 1]
    assert s.predicted_ms < plan.profile.sequential_ms
    validate(plan)
    assert plan_from_bytes(plan.to_bytes()) == plan


def test_the_split_plan_runs_on_the_cpu_path_like_eager():
    model, inputs, plan = _wide_plan()
    runner = opara_runtime.load(plan, model, device="cpu")
    assert runner.devices == [torch.device("cpu")] * 2
    got = runner(*inputs)
    with torch.no_grad():
        want = model(*inputs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_same_inputs_give_the_same_bytes():
    model, inputs, plan = _wide_plan()
    again = oparac.compile(model, inputs, **WIDE)
    assert again.to_bytes() == plan.to_bytes()


def test_expensive_copies_keep_the_wide_model_on_one_gpu():
    model, inputs = two_branches()
    plan = oparac.compile(model, inputs, device="cpu", devices=["cuda:0", "cuda:1"], links=DEAR)
    single = oparac.compile(model, inputs, device="cpu")
    assert plan.schedule == single.schedule and plan.graph == single.graph
    assert plan.model.fingerprint == single.model.fingerprint


@pytest.mark.slow
def test_a_narrow_googlenet_stays_on_one_gpu_when_copies_are_expensive():
    model, inputs = zoo.googlenet()
    plan = oparac.compile(model, inputs, device="cpu", devices=["cuda:0", "cuda:1"], links=DEAR)
    single = oparac.compile(model, inputs, device="cpu")
    assert plan.schedule.num_devices == 1 and plan.schedule == single.schedule
    assert plan.model.fingerprint == single.model.fingerprint
    assert plan.profile.links == DEAR  # what the decision was made with is kept


def test_one_device_is_the_ordinary_compile():
    model, inputs = two_branches()
    assert oparac.compile(model, inputs, device="cpu", devices=["cuda:1"]).to_bytes() == \
        oparac.compile(model, inputs, device="cpu").to_bytes()


@pytest.mark.parametrize("devices, message", [
    (["cpu", "cuda:1"], r"devices: expected GPUs written cuda:N, found 'cpu'"),
    (["cuda:0", "cuda:0"], r"devices: each GPU may appear once, found cuda:0, cuda:0"),
    ([], r"devices: expected at least one GPU"),
    ("cuda:0,cuda:x", r"found 'cuda:x'"),
])
def test_bad_device_lists_are_refused(devices, message):
    with pytest.raises(ModelError, match=message):
        parse_devices(devices)


def test_fusion_on_several_gpus_is_refused_before_any_work():
    model, inputs = two_branches()
    with pytest.raises(ModelError, match="fused plans run on one GPU"):
        oparac.compile(model, inputs, device="cpu", devices=["cuda:0", "cuda:1"], fuse="inductor")


def test_tuning_several_gpus_needs_gpus():
    model, inputs = two_branches()
    with pytest.raises(ModelError, match="--tune measures schedules on the GPU"):
        oparac.compile(model, inputs, device="cpu", devices=["cuda:0", "cuda:1"], tune=True)


def test_fit_line_recovers_latency_and_bandwidth():
    samples = [(b, 0.02 + 5e-9 * b) for b in (4e3, 1e6, 8e6, 6.4e7)]
    latency, per_byte = fit_line(samples)
    assert latency == pytest.approx(0.02) and per_byte == pytest.approx(5e-9)
    assert fit_line([(1.0, 2.0), (2.0, 1.0)]) == (1.5, 0.0), "a falling line is clamped to no per-byte cost"
    with pytest.raises(ValueError, match="at least 2 samples"):
        fit_line([(1.0, 1.0)])


def test_a_value_read_by_several_ops_on_another_gpu_is_copied_once():
    from helpers.plans import make_tiny_plan

    plan = make_tiny_plan()  # mm -> relu, sigmoid -> add
    graph, ops, device = split_across_devices(plan.graph, plan.profile.ops, {2: 0, 3: 1, 4: 1, 5: 1},
                                              TransferModel(0.5, 0.0))
    copies = [i for i, n in enumerate(graph.nodes) if is_copy(n)]
    assert len(copies) == 2  # mm's output to device 1 once; add's result back to device 0 for the output
    assert [ops[i].ms for i in copies] == [0.5, 0.5]
    assert device[copies[0]] == 1 and device[copies[1]] == 0 and device[-1] == 0


def test_cli_devices_option(tmp_path):
    out = tmp_path / "wide.plan"
    result = CliRunner().invoke(main, ["compile", "helpers.models:two_branches", "-o", str(out), "--device",
                                       "cpu", "--devices", "cuda:0,cuda:1"])
    assert result.exit_code == 0, result.output
    plan = load_plan(out)
    assert plan.profile.links_method == "nominal" and len(plan.profile.links) == 2
    assert all(isinstance(k, Link) for k in plan.profile.links)
    verified = CliRunner().invoke(main, ["verify", str(out), "helpers.models:two_branches", "--device", "cpu"])
    assert verified.exit_code == 0 and "OK" in verified.output, verified.output
    bad = CliRunner().invoke(main, ["compile", "helpers.models:two_branches", "-o", str(out), "--device", "cpu",
                                    "--devices", "cuda:0,gpu1"])
    assert bad.exit_code == 1 and bad.output.startswith("error: devices: expected GPUs written cuda:N")


def test_links_are_timed_per_ordered_pair_and_fitted(monkeypatch):
    """measure_links with the copy timing faked: pair (a, b) costs (1 + a) us + bytes / ((1 + b) * 100 GB/s)."""
    from oparac.profile import links
    seen = []

    def time_copy(torch_module, size, src, dst):
        seen.append((src, dst, size))
        return (1 + src.index) * 1e-3 + size * 1e-8 / (1 + dst.index)
    monkeypatch.setattr(links, "_time_copy", time_copy)
    measured = links.measure_links(("cuda:0", "cuda:1", "cuda:2"))
    assert [(k.src, k.dst) for k in measured] == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    for k in measured:
        assert k.latency_ms == pytest.approx((1 + k.src) * 1e-3, abs=1e-9)
        assert k.ms_per_byte == pytest.approx(1e-8 / (1 + k.dst))
    assert {s for _, _, s in seen} == set(links.SIZES)


def test_a_copy_is_timed_on_the_source_gpu_between_events():
    """_time_copy against a fake torch: the copies run with the source GPU current, between two events."""
    import contextlib
    from types import SimpleNamespace

    from oparac.profile import links
    log, current = [], [None]

    class Tensor:
        def __init__(self, size, device):
            self.size, self.device = size, device

        def copy_(self, other, non_blocking=False):
            log.append(("copy", current[0], other.device, self.device, non_blocking))

    class Event:
        def __init__(self, enable_timing=False):
            assert enable_timing
            self.at = None

        def record(self):
            self.at = len(log)
            log.append(("record", current[0]))

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            return 2.0 * sum(e[0] == "copy" for e in log[self.at:end.at])

    @contextlib.contextmanager
    def device(d):
        before, current[0] = current[0], d
        yield
        current[0] = before

    fake = SimpleNamespace(uint8="uint8", empty=lambda size, dtype, device: Tensor(size, device),
                           cuda=SimpleNamespace(device=device, Event=Event, synchronize=lambda d=None: None))
    src, dst = torch.device("cuda", 1), torch.device("cuda", 0)
    assert links._time_copy(fake, 4096, src, dst) == 2.0, "ms per copy: the copies between the events, averaged"
    copies = [e for e in log if e[0] == "copy"]
    assert len(copies) == 1 + links.SAMPLES * links.COPIES_PER_SAMPLE
    assert all(e == ("copy", src, src, dst, True) for e in copies)
    assert all(e[1] == src for e in log if e[0] == "record")
