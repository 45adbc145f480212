"""compile(memory_format=...): the option is checked, profiled in its layout and part of the profile cache key."""
from __future__ import annotations

import pytest
import torch

import oparac
from opara_plan import ModelError, Target
from oparac.profile import profiler
from oparac.profile.cache import ProfileCache

from helpers.models import small_cnn


def test_unknown_memory_format_is_refused():
    model, inputs = small_cnn()
    with pytest.raises(ModelError, match=r"memory_format: expected one of \('auto', 'contiguous', 'channels_last'\), "
                                         r"found 'nhwc'"):
        oparac.compile(model, inputs, device="cpu", memory_format="nhwc")


def test_profile_cache_key_distinguishes_memory_formats():
    target = Target(device_type="cuda", gpu_name="H100", compute_capability=(9, 0), torch="2.x", cuda="12")
    plain = ProfileCache.key("fp", target, "float16")
    assert ProfileCache.key("fp", target, "float16", "contiguous") == plain  # existing caches stay valid
    assert ProfileCache.key("fp", target, "float16", "channels_last") != plain


def test_profiler_materialises_inputs_and_weights_as_the_runtime_binds_them(monkeypatch):
    model, inputs = small_cnn()
    graph = oparac.compile(model, inputs, device="cpu").graph
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)  # CPU values, no GPU here
    for memory_format, layout in (("channels_last", torch.channels_last), ("contiguous", torch.contiguous_format)):
        values = profiler.materialize(graph, torch.device("cpu"), memory_format)
        four_d = [values[i] for i, n in enumerate(graph.nodes)
                  if n.kind in ("input", "param") and len(n.outputs[0].shape) == 4]
        assert len(four_d) == 5 and all(v.is_contiguous(memory_format=layout) for v in four_d)
        assert values[-2] is not None  # every op ran, the flatten of a 2x2 map included


@pytest.mark.parametrize("method, backend", [("opara_cl", ""), ("opara_fused_cl", "inductor")])
def test_bench_cl_methods_compile_channels_last_plans(method, backend):
    from oparac.bench.methods import METHODS, build

    model, inputs = small_cnn()
    runner = build(method, model, inputs, torch.device("cpu"))
    assert runner.plan.model.memory_format == "channels_last" and runner.plan.fusion.backend == backend
    assert method not in METHODS  # measured on request, like opara_math


@pytest.mark.parametrize("options, layout", [
    ({}, "contiguous"),  # unfused: eager's own kernels, bit for bit
    ({"fuse": "inductor"}, "channels_last"),  # 'auto': a fused plan of a convolution model runs NHWC
    ({"fuse": "inductor", "memory_format": "contiguous"}, "contiguous"),  # a named layout is kept
    ({"memory_format": "channels_last"}, "channels_last"),
])
def test_auto_memory_format_makes_fused_convolution_plans_nhwc(options, layout):
    import opara_runtime

    model, inputs = small_cnn()
    plan = oparac.compile(model, inputs, device="cpu", **options)
    assert plan.model.memory_format == layout
    out = opara_runtime.load(plan, model, device="cpu")(*inputs)
    with torch.no_grad():
        torch.testing.assert_close(out, model(*inputs), rtol=1e-4, atol=1e-5)


def test_auto_memory_format_keeps_models_without_4d_weights_contiguous():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).eval()
    plan = oparac.compile(model, (torch.randn(2, 8),), device="cpu", fuse="inductor")
    assert plan.model.memory_format == "contiguous"


def test_a_tuned_fused_plan_starts_nchw_and_its_tuner_tries_nhwc_only_under_auto(monkeypatch):
    from oparac import pipeline
    from oparac.fuse.segments import resolve_memory_format

    model, inputs = small_cnn()
    graph = oparac.compile(model, inputs, device="cpu").graph
    assert resolve_memory_format("auto", graph, "inductor", True)[0] == "contiguous"
    assert resolve_memory_format("auto", graph, "inductor", False)[0] == "channels_last"
    # compile() tells the fuse stage whether the layout was left to it ...
    seen = []
    monkeypatch.setattr(pipeline, "fuse_stage",
                        lambda plan, weights, dev, opts, *rest: seen.append(opts.memory_format == "auto") or plan)
    oparac.compile(model, inputs, device="cpu", fuse="inductor")
    oparac.compile(model, inputs, device="cpu", fuse="inductor", memory_format="contiguous")
    assert seen == [True, False]
    monkeypatch.undo()
    # ... and the fused tuner is given the NHWC profile only when it was
    from oparac.options import CompileOptions
    from oparac.progress import Progress
    from oparac.search import fused as fuse
    given = []
    monkeypatch.setattr(fuse, "tune_fused",
                        lambda plan, weights, dev, backend, say, nhwc, mode: given.append(nhwc) or plan)
    plan = oparac.compile(model, inputs, device="cpu")
    for memory_format in ("auto", "contiguous"):
        opts = CompileOptions(fuse="inductor", tune=True, memory_format=memory_format)
        pipeline.fuse_stage(plan, {}, torch.device("cuda"), opts, Progress())
    assert callable(given[0]) and given[1] is None


@pytest.mark.parametrize("method", ["opara_fused", "opara_fused_coarse"])
def test_bench_plain_fused_methods_stay_nchw(method):
    from oparac.bench.methods import build

    model, inputs = small_cnn()
    runner = build(method, model, inputs, torch.device("cpu"))
    assert runner.plan.model.memory_format == "contiguous" and runner.plan.fusion.backend == "inductor"


@pytest.mark.parametrize("method, layout", [("opara_default", "channels_last"), ("opara_default_cl", "channels_last"),
                                            ("opara_default_nchw", "contiguous")])
def test_bench_default_methods_fix_the_layout_auto_chooses_between(method, layout):
    from oparac.bench.methods import build

    model, inputs = small_cnn()
    runner = build(method, model, inputs, torch.device("cpu"))
    assert runner.plan.model.memory_format == layout and runner.plan.fusion.backend == "inductor"


def test_bench_an_unknown_default_variant_is_refused_by_name():
    from oparac.bench.methods import build

    model, inputs = small_cnn()
    with pytest.raises(ValueError, match="unknown method 'opara_default_nhwc': expected one of opara_default, "):
        build("opara_default_nhwc", model, inputs, torch.device("cpu"))


class _PatchEmbedding(torch.nn.Module):
    """A transformer's shape of convolution use: one patch-embedding convolution, then many linear layers."""

    def __init__(self, layers: int = 80) -> None:
        super().__init__()
        self.patch = torch.nn.Conv2d(3, 16, 4, stride=4)
        self.blocks = torch.nn.Sequential(*(torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.GELU())
                                            for _ in range(layers)))

    def forward(self, x):
        return self.blocks(self.patch(x).flatten(2).transpose(1, 2))


def test_auto_memory_format_builds_a_patch_embedding_transformer_nhwc_too():
    # Measured on the H200: the NHWC default plan of ViT-B/16 and Swin-T beat the NCHW one (segments.py).
    from oparac.fuse.segments import auto_layout, resolve_memory_format

    x = torch.randn(1, 3, 16, 16)
    graph = oparac.compile(_PatchEmbedding().eval(), (x,), device="cpu").graph
    assert resolve_memory_format("auto", graph, "inductor", False) == ("channels_last", auto_layout(graph)[1])
    assert auto_layout(graph)[1] == "a fused plan of a model with 1 convolution"
    assert resolve_memory_format("auto", graph, "", False)[0] == "contiguous"  # unfused: eager's layout
    assert resolve_memory_format("contiguous", graph, "inductor", False)[0] == "contiguous"  # asked for: kept
