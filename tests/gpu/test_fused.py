"""Fused and parallel: inductor-compiled segments on the plan's streams, inside one CUDA graph."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import opara_runtime
import oparac
from opara_plan import load_plan
from oparac.models import zoo
from oparac.verify import verify

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("no_tf32")]


def test_fused_googlenet_matches_and_embeds_artifacts(tmp_path):
    model, inputs = zoo.googlenet()
    model, inputs = model.cuda(), tuple(x.cuda() for x in inputs)
    plan = oparac.compile(model, inputs, device="cuda", fuse="inductor")
    assert plan.fusion.backend == "inductor" and len(plan.fusion.segments) > 1
    assert all(seg.ms > 0 for seg in plan.fusion.segments)
    assert plan.fusion.programs and all(seg.program >= 0 for seg in plan.fusion.segments), \
        "compiled segments are embedded"
    verdict = verify(plan, model, device="cuda")
    assert verdict.ok, f"rel {verdict.max_rel:.2e}"
    plan.save(tmp_path / "g.plan")
    assert load_plan(tmp_path / "g.plan") == plan


def test_coarse_fused_googlenet_matches_with_no_more_segments():
    from opara_plan import cut_segments
    from oparac.schedule.build import make_schedule

    model, inputs = zoo.googlenet()
    model, inputs = model.cuda(), tuple(x.cuda() for x in inputs)
    plan = oparac.compile(model, inputs, device="cuda", fuse="inductor", cut="coarse")
    assert plan.schedule.stream_algorithm == "opara+coarse" and plan.fusion.programs
    maximal = make_schedule(plan.graph, plan.profile.ops, streams="opara", order="opara", max_streams=0)
    assert len(plan.fusion.segments) <= len(cut_segments(maximal))
    verdict = verify(plan, model, device="cuda")
    assert verdict.ok, f"rel {verdict.max_rel:.2e}"


def test_fused_load_uses_embedded_artifacts(tmp_path):
    model, inputs = zoo.googlenet()
    plan = oparac.compile(model.cuda(), tuple(x.cuda() for x in inputs), device="cuda", fuse="inductor")
    plan.save(tmp_path / "g.plan")
    code = ("import time, torch, opara_runtime; from oparac.models import zoo; m, _ = zoo.googlenet(); "
            "t = time.perf_counter(); r = opara_runtime.load('g.plan', m.cuda()); "
            "torch.cuda.synchronize(); print(time.perf_counter() - t)")
    env = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "PATH": "/usr/bin:/bin"}
    import os
    env = dict(os.environ, **env)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    seconds = float(out.stdout.strip().splitlines()[-1])
    print(f"fused GoogLeNet load with embedded artifacts, empty inductor cache: {seconds:.1f} s")
    assert seconds < 10


def test_fused_plan_on_cpu_runs_unfused(tmp_path):
    model, inputs = zoo.squeezenet()
    plan = oparac.compile(model, inputs, device="cpu", fuse="inductor")
    assert plan.fusion.segments
    got = opara_runtime.load(plan, model, device="cpu")(*inputs)
    torch.testing.assert_close(got, model(*inputs))
