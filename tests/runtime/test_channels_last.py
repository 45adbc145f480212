"""channels_last plans on the CPU: NHWC weights and inputs, contiguous outputs, eager's numbers."""
from __future__ import annotations

import pytest
import torch

import opara_runtime
import oparac
from opara_plan import ExecutionError
from opara_runtime import ops

from helpers.models import small_cnn

CL = torch.channels_last


@pytest.fixture(scope="module")
def cnn():
    model, inputs = small_cnn()
    return model, inputs, oparac.compile(model, inputs, device="cpu", memory_format="channels_last")


def test_runner_matches_eager_and_returns_contiguous_outputs(cnn):
    model, (x,), plan = cnn
    assert plan.model.memory_format == "channels_last"
    out = opara_runtime.load(plan, model, device="cpu")(x)
    with torch.no_grad():
        want = model(x)
    assert out.is_contiguous()
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)  # other conv algorithms: close, not bitwise


def test_weights_and_inputs_are_bound_channels_last(cnn):
    model, _, plan = cnn
    runner = opara_runtime.load(plan, model, device="cpu")
    nodes = plan.graph.nodes
    convs = [runner._base[i] for i, n in enumerate(nodes) if n.kind == "param" and len(n.outputs[0].shape) == 4]
    assert len(convs) == 4 and all(w.is_contiguous(memory_format=CL) for w in convs)
    assert not convs[0].is_contiguous()  # a 3x3 kernel really is NHWC, not just trivially both
    others = [runner._base[i] for i, n in enumerate(nodes) if n.kind == "param" and len(n.outputs[0].shape) != 4]
    assert others and all(w.is_contiguous() for w in others)
    (buf,) = runner.input_buffers()
    assert buf.is_contiguous(memory_format=CL) and not buf.is_contiguous()


def test_contiguous_plan_binds_as_given(cnn):
    model, (x,), plan = cnn
    default = oparac.compile(model, (x,), device="cpu")
    assert default.graph == plan.graph and default.model.memory_format == "contiguous"
    runner = opara_runtime.load(default, model, device="cpu")
    assert all(t.is_contiguous() for t in runner._base if isinstance(t, torch.Tensor))


def test_the_flatten_of_a_2x2_map_needs_the_reshape_fallback(cnn, monkeypatch):
    model, (x,), plan = cnn
    monkeypatch.setattr(ops, "_CHANNELS_LAST_TARGETS", {})
    with pytest.raises(ExecutionError, match="view"):
        opara_runtime.load(plan, model, device="cpu")(x)


def test_fallback_changes_only_views_of_channels_last_plans():
    assert ops.plan_op("aten.view.default") is torch.ops.aten.view.default
    assert ops.plan_op("aten.view.default", "channels_last") is torch.ops.aten.reshape.default
    assert ops.plan_op("aten.convolution.default", "channels_last") is torch.ops.aten.convolution.default


def test_in_layout_touches_only_4d_floating_point_tensors():
    assert ops.in_layout(torch.zeros(2, 3, 4, 5), "channels_last").is_contiguous(memory_format=CL)
    for t in (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4, 5, dtype=torch.int64)):
        assert ops.in_layout(t, "channels_last") is t
    t = torch.zeros(2, 3, 4, 5)
    assert ops.in_layout(t, "contiguous") is t


@pytest.mark.slow
@pytest.mark.parametrize("name", ["googlenet", "resnet50"])
def test_zoo_model_verifies_in_channels_last(name):
    from oparac.models import zoo
    from oparac.verify import verify

    model, inputs = getattr(zoo, name)()
    plan = oparac.compile(model, inputs, device="cpu", memory_format="channels_last")
    verdict = verify(plan, model, device="cpu")
    assert verdict.ok, verdict


@pytest.mark.slow  # inductor compiles C++ for every segment on the CPU
def test_fused_segments_compiled_from_channels_last_values_match_eager(cnn, tmp_path, monkeypatch):
    from opara_runtime import fused
    from opara_runtime.runner import Runner
    from oparac.fuse.segments import fuse_plan

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    model, (x,), plan = cnn
    plan = fuse_plan(oparac.compile(model, (x,), device="cpu", memory_format="channels_last", streams="nimble"),
                     "inductor")
    base = list(Runner(plan, opara_runtime.bind.weights_of(model), torch.device("cpu"), capture=False)._base)
    (i,) = [k for k, n in enumerate(plan.graph.nodes) if n.kind == "input"]
    base[i].copy_(x)
    programs = fused.segment_programs(plan, torch.device("cpu"))
    fused.compile_segments(programs, base)
    assert len(programs) > 1
    values = list(base)
    with torch.no_grad():
        for prog in programs:
            prog(values)
        want = model(x)
    out = plan.graph.nodes[-1].args[0]
    torch.testing.assert_close(values[out.node], want, rtol=1e-4, atol=1e-5)


def test_weights_already_in_place_are_not_copied_again(cnn):
    from opara_runtime.bind import weights_of, weights_on_device

    model, _, plan = cnn
    placed = weights_on_device(plan, weights_of(model), torch.device("cpu"))
    again = weights_on_device(plan, placed, torch.device("cpu"))  # what tuning does for every candidate
    assert all(again[k].data_ptr() == placed[k].data_ptr() for k in placed)
