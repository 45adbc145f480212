"""CompileOptions (the one source of allowed values), the progress hook, weights bound once, GPU figures."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import oparac
from opara_plan import Link, ModelError, Target
from oparac import options
from oparac.options import CompileOptions
from oparac.progress import Lines, Progress, StageError, as_progress
from oparac.profile.gpus import HOPPER, PREVIEW, gpu_spec

from helpers.models import small_cnn


def test_the_defaults_are_valid_and_frozen():
    opts = CompileOptions()
    assert (opts.streams, opts.order, opts.max_streams, opts.dtype, opts.fuse, opts.memory_format) == \
        ("opara", "opara", 0, "float32", "", "auto")
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.tune = True


@pytest.mark.parametrize("field, value, message", [
    ("streams", "bogus", "streams: expected one of ('opara', 'nimble', 'critical', 'window', 'single'), found 'bogus'"),
    ("order", "fifo", "order: expected one of ('topo', 'opara', 'critical'), found 'fifo'"),
    ("dtype", "float64", "dtype: expected one of ('float32', 'float16', 'bfloat16'), found 'float64'"),
    ("fuse", "tvm", "fuse: expected one of ('inductor',), found 'tvm'"),
    ("cut", "fine", "cut: expected one of ('maximal', 'coarse'), found 'fine'"),
    ("attention", "flash", "attention: expected one of ('sdpa', 'math'), found 'flash'"),
    ("memory_format", "nhwc", "memory_format: expected one of ('auto', 'contiguous', 'channels_last'), found 'nhwc'"),
    ("max_streams", -1, "max_streams: expected an int in 0..1024 (0: no cap), found -1"),
    ("max_streams", 1025, "max_streams: expected an int in 0..1024 (0: no cap), found 1025"),
    ("max_streams", True, "max_streams: expected an int in 0..1024 (0: no cap), found True"),
    ("max_streams", 2.0, "max_streams: expected an int in 0..1024 (0: no cap), found 2.0"),
    ("tune", "yes", "tune: expected True or False, found 'yes'"),
    ("merge_convolutions", 1, "merge_convolutions: expected True or False, found 1"),
    ("device", "tpu", "device 'tpu': expected 'cpu' or 'cuda[:N]'"),
    ("device", "cuda:x", "device 'cuda:x': expected 'cpu' or 'cuda[:N]'"),
    ("devices", ["cpu"], "devices: expected GPUs written cuda:N, found 'cpu'"),
    ("links", [1, 2], "links: expected opara_plan.Link records, found int"),
    ("shapes", 3, "shapes: expected a string like 'x:1x3x224x224' or a dict like {'x': (1, 3, 224, 224)}, found int"),
])
def test_each_field_is_checked_as_the_options_are_made(field, value, message):
    with pytest.raises(ModelError) as e:
        CompileOptions(**{field: value})
    assert str(e.value) == message


def test_options_are_normalised():
    opts = CompileOptions(fuse=None, device=torch.device("cuda", 1), devices="cuda:0, cuda:1",
                          links=[Link(0, 1, 0.01, 1e-9)])
    assert opts.fuse == "" and opts.device == "cuda:1" and opts.devices == ("cuda:0", "cuda:1")
    assert opts.links == (Link(0, 1, 0.01, 1e-9),)


@pytest.mark.parametrize("fields, message", [
    ({"cut": "coarse"}, "cut 'coarse': applies to fused plans only; add fuse='inductor' (--fuse inductor)"),
    ({"fuse": "inductor", "devices": ["cuda:0", "cuda:1"]}, "fuse: fused plans run on one GPU"),
])
def test_options_that_contradict_each_other_are_refused(fields, message):
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CompileOptions(**fields)


def test_an_unknown_keyword_is_named_with_the_valid_ones():
    model, inputs = small_cnn()
    with pytest.raises(ModelError) as e:
        oparac.compile(model, inputs, device="cpu", stream="opara")
    assert str(e.value) == ("compile(): unknown option 'stream'; valid options: streams, order, max_streams, dtype, "
                            "device, tune, shapes, fuse, cut, fuse_mode, devices, links, attention, memory_format, guard, "
                            "merge_projections, merge_convolutions")
    with pytest.raises(ModelError, match=r"unknown options 'a', 'b'"):
        CompileOptions.from_keywords(b=1, a=2)
    with pytest.raises(ModelError, match="options: expected a CompileOptions, found dict"):
        CompileOptions.from_keywords({"streams": "opara"})


def test_an_options_object_and_keywords_compile_the_same_plan():
    model, inputs = small_cnn()
    by_keywords = oparac.compile(model, inputs, device="cpu", streams="critical", max_streams=2)
    given = CompileOptions(device="cpu", streams="critical", max_streams=2)
    assert oparac.compile(model, inputs, given).to_bytes() == by_keywords.to_bytes()
    # keywords replace fields of a given object
    assert oparac.compile(model, inputs, CompileOptions(device="cpu"), streams="critical",
                          max_streams=2).to_bytes() == by_keywords.to_bytes()


def test_the_passes_dispatch_on_the_options_lists():
    from oparac.fuse import segments
    from oparac.ingest import attention
    from oparac.schedule import order, streams
    from oparac.search import fused, tune

    assert streams.STREAM_ALGORITHMS is options.STREAM_ALGORITHMS
    assert order.ORDER_ALGORITHMS is options.ORDER_ALGORITHMS
    assert attention.ATTENTION is options.ATTENTION_MODES
    assert segments.CUTS is options.CUTS
    assert set(tune.TUNED_STREAMS) <= set(options.STREAM_ALGORITHMS)
    assert {s for s, _, _ in tune.DEVICE_SETTINGS} <= set(options.STREAM_ALGORITHMS)
    assert {o for _, o, _ in tune.DEVICE_SETTINGS} <= set(options.ORDER_ALGORITHMS)
    assert {(s, o, c) for s, o, c, _ in fused.FUSED_CANDIDATES + fused.NHWC_CANDIDATES} <= \
        set(tune.candidate_settings()) | {("opara", "opara", 4)}
    assert {cut for *_, cut in fused.FUSED_CANDIDATES} <= set(options.CUTS)


def test_plans_record_the_installed_version():
    from importlib import metadata

    model, inputs = small_cnn()
    assert oparac.__version__ == metadata.version("opara")
    assert oparac.compile(model, inputs, device="cpu").tool.version == oparac.__version__


class Recorder(Progress):
    def __init__(self):
        self.events = []

    def stage_started(self, stage, detail):
        self.events.append(("start", stage, detail))

    def stage_finished(self, stage, seconds):
        assert seconds >= 0
        self.events.append(("end", stage))

    def note(self, message):
        self.events.append(("note", message))


def test_the_hook_hears_every_stage_start_and_end_in_order():
    model, inputs = small_cnn()
    hook = Recorder()
    oparac.compile(model, inputs, device="cpu", fuse="inductor", progress=hook)
    stages = [(kind, stage) for kind, stage, *_ in hook.events if kind != "note"]
    assert stages == [(k, s) for s in ("ingest", "profile", "schedule", "fuse") for k in ("start", "end")]
    [(_, _, detail)] = [e for e in hook.events if e[:2] == ("start", "profile")]
    assert detail.endswith("ops on cpu")
    assert any(e[0] == "note" and e[1].startswith("layout: channels_last") for e in hook.events)


def test_the_schedule_stage_says_what_the_profile_predicts_against_one_stream():
    model, inputs = small_cnn()
    said = []
    plan = oparac.compile(model, inputs, device="cpu", progress=said.append)
    s, seq = plan.schedule, plan.profile.sequential_ms
    n = s.num_streams
    line = (f"schedule: {n} stream{'s' if n > 1 else ''}, predicted {s.predicted_ms:.4f} ms against {seq:.4f} ms on "
            f"one stream ({seq / s.predicted_ms:.2f}x)")
    assert line in said


def test_a_callable_gets_lines():
    said = []
    hook = as_progress(said.append)
    assert isinstance(hook, Lines)
    hook.stage_started("profile", "54 ops on cpu")
    hook.note("profile: cache hit")
    hook.stage_finished("profile", 1.234)
    assert said == ["profile: 54 ops on cpu", "profile: cache hit", "profile: done in 1.23 s"]
    assert isinstance(as_progress(None), Progress) and as_progress(hook) is hook
    with pytest.raises(ModelError, match="progress: expected a Progress hook or a callable"):
        as_progress(3)


def test_a_failing_stage_is_named_with_the_stages_before_it(monkeypatch):
    from oparac import pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("boom")
    monkeypatch.setattr(pipeline, "make_schedule", broken)
    model, inputs = small_cnn()
    with pytest.raises(StageError, match=r"stage 'schedule' failed \(after ingest, profile\): RuntimeError: boom"):
        oparac.compile(model, inputs, device="cpu")


def test_the_weights_are_bound_once_for_tuning_and_fusing(monkeypatch):
    """On a GPU, tune and fuse share one copy of the weights (faked here: no GPU, the stages are recorded)."""
    from oparac import pipeline
    from oparac.search import tune

    profile_on_cpu = pipeline.profile_graph
    bound, given = [], []
    monkeypatch.setattr(pipeline, "resolve_device", lambda opts, progress: torch.device("cuda"))
    monkeypatch.setattr(pipeline, "profile_graph", lambda graph, dev, *rest: profile_on_cpu(
        graph, torch.device("cpu"), *rest))
    monkeypatch.setattr(pipeline, "bind_weights", lambda model, plan, dev: bound.append(dev) or {"w": object()})
    monkeypatch.setattr(tune, "tune_plan", lambda plan, weights, dev, progress: given.append(weights) or plan)
    monkeypatch.setattr(pipeline, "fuse_stage", lambda plan, weights, dev, opts, progress, cache: given.append(
        weights) or plan)
    model, inputs = small_cnn()
    hook = Recorder()
    oparac.compile(model, inputs, tune=True, fuse="inductor", progress=hook)
    assert bound == [torch.device("cuda")] and len(given) == 2 and given[0] is given[1]
    assert [s for kind, s, *_ in hook.events if kind == "end"] == ["ingest", "profile", "schedule", "bind", "tune",
                                                                   "fuse"]


def test_a_preview_plan_keeps_the_nominal_figures():
    assert gpu_spec(Target(device_type="cpu")) is PREVIEW
    assert (PREVIEW.flops("float32"), PREVIEW.flops("float16"), PREVIEW.bytes_per_s, PREVIEW.sm_count) == \
        (60e12, 60e12, 3.0e12, 132)
    assert PREVIEW.ridge() == 20.0


@pytest.mark.parametrize("target, fp32, half, bandwidth, sms, shared", [
    (Target("cuda", "NVIDIA H100 80GB HBM3", (9, 0), 132), 67e12, 990e12, 3.35e12, 132, 228 << 10),
    (Target("cuda", "NVIDIA H200", (9, 0), 132), 67e12, 990e12, 4.8e12, 132, 228 << 10),
    (Target("cuda", "NVIDIA H100 PCIe", (9, 0), 114), 51e12, 756e12, 2.0e12, 114, 228 << 10),
    (Target("cuda", "NVIDIA A100-SXM4-80GB", (8, 0), 108), 19.5e12, 312e12, 2.039e12, 108, 164 << 10),
    (Target("cuda", "NVIDIA L40S", (8, 9), 142), 91.6e12, 362e12, 0.864e12, 142, 100 << 10),
    (Target("cuda", "NVIDIA L4", (8, 9), 58), 30.3e12, 121e12, 0.3e12, 58, 100 << 10),
    (Target("cuda", "Tesla T4", (7, 5), 40), 8.1e12, 65e12, 0.32e12, 40, 64 << 10),
    # not in the table: its architecture's figures, the SM count it reports
    (Target("cuda", "NVIDIA A800 80GB PCIe", (8, 0), 108), 19.5e12, 312e12, 2.039e12, 108, 164 << 10),
    # an unknown architecture: Hopper's figures
    (Target("cuda", "Some Future GPU", (12, 0), 200), 67e12, 990e12, 3.35e12, 200, 228 << 10),
])
def test_gpu_figures_come_from_the_target(target, fp32, half, bandwidth, sms, shared):
    spec = gpu_spec(target)
    assert (spec.flops("float32"), spec.flops("bfloat16"), spec.bytes_per_s, spec.sm_count, spec.sm_shared_memory) \
        == (fp32, half, bandwidth, sms, shared)
    assert spec.name == target.gpu_name


def test_the_hopper_default_is_what_the_profiler_assumed():
    assert (HOPPER.flops("float32"), HOPPER.flops("float16"), HOPPER.bytes_per_s) == (67e12, 990e12, 3.35e12)
    assert gpu_spec(Target("cuda", "", (), 0)) == dataclasses.replace(HOPPER, name="H100")


def test_a_gpu_with_fewer_sms_gives_cost_model_ops_a_larger_demand():
    from oparac.schedule.build import demand

    model, inputs = small_cnn()
    plan = oparac.compile(model, inputs, device="cpu")
    conv = next(i for i, n in enumerate(plan.graph.nodes) if "conv" in n.target)
    op = plan.profile.ops[conv]
    small = dataclasses.replace(PREVIEW, sm_count=8)
    assert demand(op, plan.graph, conv) == demand(op, plan.graph, conv, PREVIEW)
    assert demand(op, plan.graph, conv, small) > demand(op, plan.graph, conv, PREVIEW)
