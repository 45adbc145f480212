"""Fused and parallel: inductor-compiled segments on the plan's streams, inside one CUDA graph."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import opara_runtime
import oparac
from opara_plan import load_plan
from opara_plan.signing import generate_key, load_private_key, sign_plan
from oparac.models import zoo
from oparac.profile.cost_model import is_free
from oparac.verify import verify

from helpers.fused import TwoBranches
from helpers.fused_tamper import tamper_pickle, tamper_source

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("no_tf32")]


def test_fused_googlenet_matches_and_embeds_artifacts(tmp_path):
    model, inputs = zoo.googlenet()
    model, inputs = model.cuda(), tuple(x.cuda() for x in inputs)
    # segment-level: the default ('auto') keeps GoogLeNet's whole-graph kernels on streams, one segment. The guard
    # off: by a timing it may keep the whole graph as one segment, or the unfused plan, and the segment plan itself
    # is what is checked here.
    plan = oparac.compile(model, inputs, device="cuda", fuse="inductor", fuse_mode="segments", guard=False)
    assert plan.fusion.backend == "inductor" and len(plan.fusion.segments) > 1
    # Merged convolutions leave segments made only of the slices of a merged output: views, launching nothing,
    # which may measure 0.0 (time_in_graph: nothing launched). Every segment with a kernel-launching op is measured.
    for seg in plan.fusion.segments:
        assert seg.ms >= 0 and (seg.ms > 0 or all(is_free(plan.graph.nodes[i]) for i in seg.ops)), (seg.ops, seg.ms)
    assert any(seg.ms > 0 for seg in plan.fusion.segments)
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
    plan = oparac.compile(model, inputs, device="cuda", fuse="inductor", fuse_mode="segments", cut="coarse",
                          guard=False)  # as above: the coarse segment plan, not what a timing replaces it with
    assert plan.schedule.stream_algorithm == "opara+coarse" and plan.fusion.programs
    maximal = make_schedule(plan.graph, plan.profile.ops, streams="opara", order="opara", max_streams=0)
    assert len(plan.fusion.segments) <= len(cut_segments(maximal))
    verdict = verify(plan, model, device="cuda")
    assert verdict.ok, f"rel {verdict.max_rel:.2e}"


def test_fused_load_uses_embedded_artifacts(tmp_path):
    model, inputs = zoo.googlenet()
    plan = oparac.compile(model.cuda(), tuple(x.cuda() for x in inputs), device="cuda", fuse="inductor")
    generate_key(tmp_path / "key", tmp_path / "key.pub")
    sign_plan(plan, load_private_key(tmp_path / "key")).save(tmp_path / "g.plan")
    # Signed by a trusted key, so its stored programs run: a warning that they were not (and compiled) fails.
    code = ("import time, warnings, torch, opara_runtime; from oparac.models import zoo; m, _ = zoo.googlenet(); "
            "warnings.filterwarnings('error', message=\"the plan's compiled segments\"); "
            "t = time.perf_counter(); r = opara_runtime.load('g.plan', m.cuda()); "
            "torch.cuda.synchronize(); print(time.perf_counter() - t)")
    env = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "PATH": "/usr/bin:/bin",
           "OPARA_TRUSTED_KEYS": str(tmp_path / "key.pub")}
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


@pytest.fixture(scope="module")
def branches_plan():
    """A small fused plan compiled on the GPU with its programs stored, the model and an input."""
    model = TwoBranches().eval().cuda()
    x = torch.randn(4, 16, device="cuda")
    plan = oparac.compile(model, (x,), device="cuda", fuse="inductor", merge_projections=False)
    assert plan.fusion.programs and plan.fusion.cache_key.startswith("torch ")
    return plan, model, x


def test_an_unsigned_fused_plan_never_loads_its_programs_and_compiles_them(branches_plan, monkeypatch, tmp_path):
    from opara_runtime.fused import prepare

    plan, model, x = branches_plan
    monkeypatch.delenv("OPARA_TRUSTED_KEYS", raising=False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))

    def refuse(data):
        raise AssertionError("an untrusted plan's stored program was loaded")

    monkeypatch.setattr(prepare, "load_artifact", refuse)  # the stored programs' only way in
    with pytest.warns(UserWarning, match=r"compiled segments were not run \(no signature"):
        runner = opara_runtime.load(plan, model)
    torch.testing.assert_close(runner(x), model(x), rtol=1e-4, atol=1e-4)


def test_gpu_tampered_programs_run_only_with_trust_and_leave_nothing_for_the_next_process(branches_plan, tmp_path,
                                                                                         monkeypatch):
    """With Triton kernels in the artifacts (TRITON_CACHE_DIR is private to a load as well)."""
    plan, model, x = branches_plan
    shared = tmp_path / "shared-inductor-cache"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(shared))
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.delenv("OPARA_TRUSTED_KEYS", raising=False)
    marker = tmp_path / "tampered-code-ran"
    generate_key(tmp_path / "key", tmp_path / "key.pub")
    for bad in (tamper_source(plan, marker), tamper_pickle(plan, marker),
                tamper_source(sign_plan(plan, load_private_key(tmp_path / "key")), marker)):
        with pytest.warns(UserWarning, match=r"compiled segments were not run"):
            runner = opara_runtime.load(bad, model, trusted_keys=[tmp_path / "key.pub"])
        torch.testing.assert_close(runner(x), model(x), rtol=1e-4, atol=1e-4)
        assert not marker.exists()
    runner = opara_runtime.load(tamper_source(plan, marker), model, trust_compiled_code=True)
    runner(x)
    assert marker.exists()  # trusted, the tampered code ran: what the loads above did not do
    marker.unlink()
    assert not any(str(marker).encode() in f.read_bytes() for f in shared.rglob("*") if f.is_file())
    del runner

    sign_plan(plan, load_private_key(tmp_path / "key")).save(tmp_path / "clean.plan")
    torch.save({"state": model.state_dict(), "x": x.cpu()}, tmp_path / "model.pt")
    code = ("import json, os, sys, warnings, torch, opara_runtime; sys.path.insert(0, sys.argv[3]); "
            "from helpers.fused import TwoBranches; m = TwoBranches().eval().cuda(); d = torch.load(sys.argv[1]); "
            "m.load_state_dict(d['state']); x = d['x'].cuda(); out = {}\n"
            "for name, opts in (('signed', {'trusted_keys': [sys.argv[4]]}), ('unsigned', {})):\n"
            "    with warnings.catch_warnings(record=True) as w:\n"
            "        warnings.simplefilter('always'); r = opara_runtime.load(sys.argv[2], m, **opts)\n"
            "    err = (r(x) - m(x)).abs().max().item()\n"
            "    out[name] = {'marker': os.path.exists(sys.argv[5]), 'err': err, 'compiled': any('not run' in str(v.message) for v in w)}\n"
            "print(json.dumps(out))")
    tests = str(Path(__file__).resolve().parents[2])  # where the helpers package is
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop("OPARA_TRUSTED_KEYS", None)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "model.pt"), str(tmp_path / "clean.plan"), tests,
                          str(tmp_path / "key.pub"), str(marker)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert not report["signed"]["compiled"] and report["unsigned"]["compiled"]
    for name, run in report.items():
        assert not run["marker"], f"{name}: the tampered program ran in the new process"
        assert run["err"] < 1e-4, name
