"""--cut coarse through the compiler on CPU: zoo models cut into fewer segments, fused plans run and match eager,
the Python API checks its `cut` argument."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import opara_runtime
import oparac
from opara_plan import ModelError, validate
from oparac.models import zoo
from oparac.fuse.segments import CUTS, fuse_plan

CPU = torch.device("cpu")


class SideBranch(nn.Module):
    """Two convolution stacks that deserve a stream each, and a cheap pooling branch that does not."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x), torch.relu(nn.functional.max_pool2d(x, 3, 1, 1))], 1)


def side_branch():
    torch.manual_seed(0)
    return SideBranch().eval(), (torch.randn(1, 8, 32, 32),)


def _matches_eager(plan, model, inputs, tmp_path) -> None:
    plan.save(tmp_path / "coarse.plan")  # through the file: what a deployment loads
    runner = opara_runtime.load(tmp_path / "coarse.plan", model)
    torch.testing.assert_close(runner(*inputs), model(*inputs))


@pytest.mark.parametrize("name", ["googlenet", pytest.param("inception_v3", marks=pytest.mark.slow),
                                  pytest.param("nasnet", marks=pytest.mark.slow)])
def test_branchy_zoo_models_cut_coarse_into_fewer_segments_and_match_eager(name, tmp_path):
    model, inputs = getattr(zoo, name)()
    # convolutions kept apart, as in the tests of the schedules: the cut, compared tightly with eager, is under test
    plan = oparac.compile(model, inputs, device="cpu", merge_convolutions=False)
    maximal, coarse = (fuse_plan(plan, "inductor", cut=cut) for cut in CUTS)
    validate(coarse)
    assert len(coarse.fusion.segments) < len(maximal.fusion.segments)
    assert len(coarse.schedule.waits) < len(maximal.schedule.waits)
    assert 1 < coarse.schedule.num_streams <= maximal.schedule.num_streams  # the big branches stay parallel
    _matches_eager(coarse, model, inputs, tmp_path)


def test_the_api_cuts_coarse_and_the_plan_says_so(tmp_path):
    model, inputs = side_branch()
    # kept apart, the stacks' first convolutions are two ops of two streams: the cut is what is under test here
    apart = dict(device="cpu", fuse="inductor", merge_convolutions=False)
    maximal = oparac.compile(model, inputs, **apart)
    coarse = oparac.compile(model, inputs, **apart, cut="coarse")
    assert maximal.schedule.stream_algorithm == "opara" and coarse.schedule.stream_algorithm == "opara+coarse"
    # the pooling branch joined a convolution stack's stream; the two stacks still run side by side
    assert (maximal.schedule.num_streams, len(maximal.fusion.segments)) == (3, 4)
    assert (coarse.schedule.num_streams, len(coarse.fusion.segments)) == (2, 3)
    _matches_eager(coarse, model, inputs, tmp_path)


@pytest.mark.parametrize("options, message", [
    ({"fuse": "inductor", "cut": "fine"}, r"cut: expected one of \('maximal', 'coarse'\), found 'fine'"),
    ({"cut": "coarse"}, r"cut 'coarse': applies to fused plans only; add fuse='inductor'"),
])
def test_bad_cuts_are_refused_before_any_work(options, message):
    with pytest.raises(ModelError, match=message):
        oparac.compile(nn.Identity(), (torch.randn(1),), device="cpu", **options)


def test_fuse_plan_refuses_an_unknown_cut(tiny_plan):
    with pytest.raises(ValueError, match=r"cut: expected one of \('maximal', 'coarse'\), found 'fine'"):
        fuse_plan(tiny_plan, "inductor", cut="fine")


@pytest.mark.slow  # CPU inductor compiles C++ for every segment
def test_coarse_segments_compiled_by_inductor_match_eager(tmp_path, monkeypatch):
    from opara_runtime import fused
    from opara_runtime.runner import Runner

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    model, (x,) = side_branch()
    plan = oparac.compile(model, (x,), device="cpu", fuse="inductor", cut="coarse")
    runner = Runner(plan, dict(model.named_parameters()), CPU, capture=False)
    values = list(runner._base)
    values[runner._input_ids[0]] = x
    programs = fused.segment_programs(plan, CPU)
    fused.compile_segments(programs, values, workers=1)
    with torch.no_grad():
        for program in programs:  # segments in launch order of their first ops: a valid sequential order
            program(values)
    out = plan.graph.nodes[-1].args[0]
    torch.testing.assert_close(values[out.node], model(x))
