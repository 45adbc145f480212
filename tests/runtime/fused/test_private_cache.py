"""Stored programs load through a private per-load inductor cache: nothing one plan stores can be picked up by
another load, in this process or the next one, stored or compiled."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from opara_runtime import fused
from opara_runtime.fused.private_cache import private_inductor_cache

from helpers.fused import CPU, run_segments
from helpers.fused_tamper import tamper_source

ENV = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


def test_the_private_cache_is_fresh_private_and_gone_afterwards(monkeypatch, tmp_path):
    from torch._inductor.runtime.cache_dir_utils import cache_dir, triton_cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "shared"))
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    with private_inductor_cache() as root:
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700 and os.listdir(root) == []
        # What inductor's caches and the Triton bundler resolve their directories with, here:
        assert cache_dir() == root and triton_cache_dir(0).startswith(root + os.sep)
        Path(root, "entry").write_text("x")
    assert not os.path.exists(root)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "shared") and "TRITON_CACHE_DIR" not in os.environ
    with private_inductor_cache() as again:
        assert again != root
    with pytest.raises(KeyError):  # the environment is restored however the block ends
        with private_inductor_cache():
            raise KeyError
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "shared") and "TRITON_CACHE_DIR" not in os.environ


CHILD = r"""
import json, os, sys, torch
from opara_plan import load_plan
from opara_runtime import fused
plan = load_plan(sys.argv[1]); base = torch.load(sys.argv[2]); marker = sys.argv[3]
cpu = torch.device("cpu")

def output(programs):
    values = list(base)
    with torch.no_grad():
        for p in programs:
            p(values)
    return values[plan.graph.nodes[-1].args[0].node]

report = {}
for name, options in (("trusted", {"trust_compiled_code": True}), ("untrusted", {})):
    programs = fused.prepare_fused(plan, cpu, base, **options)
    out = output(programs)
    report[name] = {"marker": os.path.exists(marker), "stored": all(p.blob is not None for p in programs),
                    "out": out.tolist()}
print(json.dumps(report))
"""


@pytest.mark.slow
def test_a_tampered_plan_run_with_trust_leaves_nothing_for_a_clean_plan_in_a_new_process(stored_branches, tmp_path,
                                                                                        monkeypatch):
    plan, base, expected = stored_branches
    shared = tmp_path / "shared-inductor-cache"  # what both processes use as their ordinary inductor cache
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(shared))
    marker = tmp_path / "tampered-code-ran"
    bad = tamper_source(plan, marker)
    programs = fused.prepare_fused(bad, CPU, base, trust_compiled_code=True)
    run_segments(bad, programs, base)
    assert marker.exists()  # the tampered code ran here, as trusted code does
    marker.unlink()
    # Before: it also landed in the shared cache, under the clean graph's keys, and ran in the next process.
    assert not any(str(marker).encode() in f.read_bytes() for f in shared.rglob("*") if f.is_file())

    plan.save(tmp_path / "clean.plan")
    torch.save(base, tmp_path / "base.pt")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop("OPARA_TRUSTED_KEYS", None)
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "clean.plan"), str(tmp_path / "base.pt"),
                          str(marker)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["trusted"]["stored"] and not report["untrusted"]["stored"]  # loaded, then compiled
    for name, run in report.items():
        assert not run["marker"], f"{name}: the tampered program ran in the new process"
        torch.testing.assert_close(torch.tensor(run["out"]), expected, msg=name)
    assert not marker.exists()
