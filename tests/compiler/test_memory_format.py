"""compile(memory_format=...): the option is checked, profiled in its layout and part of the profile cache key."""
from __future__ import annotations

import pytest
import torch

import oparac
from opara_plan import ModelError, Target
from oparac import profiler
from oparac.profile_cache import ProfileCache
from small_cnn import small_cnn


def test_unknown_memory_format_is_refused():
    model, inputs = small_cnn()
    with pytest.raises(ModelError, match=r"memory_format: expected one of \('contiguous', 'channels_last'\), "
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
    from oparac.bench import METHODS, build

    model, inputs = small_cnn()
    runner = build(method, model, inputs, torch.device("cpu"))
    assert runner.plan.model.memory_format == "channels_last" and runner.plan.fusion.backend == backend
    assert method not in METHODS  # measured on request, like opara_math
