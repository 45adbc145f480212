"""oparac.bench.methods.cold_compile_caches: every compile a benchmark times starts from empty inductor and Triton
caches, so a group's later methods do not record a compile warmed by its earlier ones."""
from __future__ import annotations

import os

import torch

from oparac.bench import methods


def _dirs() -> tuple[str | None, str | None]:
    return os.environ.get("TORCHINDUCTOR_CACHE_DIR"), os.environ.get("TRITON_CACHE_DIR")


def test_each_build_gets_new_empty_cache_folders_and_restarted_workers(monkeypatch):
    from torch._inductor import async_compile

    restarts = []
    monkeypatch.setattr(async_compile, "shutdown_compile_workers", lambda: restarts.append(1))
    before = _dirs()
    seen = []
    for _ in range(2):
        with methods.cold_compile_caches():
            inductor, triton = _dirs()
            assert inductor and triton and os.path.isdir(inductor) and not os.listdir(inductor)
            seen.append((inductor, triton))
    assert _dirs() == before and len(restarts) == 2
    assert len({s for pair in seen for s in pair}) == 4  # no folder is used twice


def test_oparas_profile_cache_is_new_and_empty_inside_and_restored_after(monkeypatch, tmp_path):
    from oparac.profile.cache import ProfileCache

    monkeypatch.setenv("OPARA_CACHE_DIR", str(tmp_path / "mine"))
    seen = []
    for _ in range(2):
        with methods.cold_compile_caches():
            folder = ProfileCache.default().folder
            assert folder != tmp_path / "mine" and not (folder.exists() and any(folder.iterdir()))
            seen.append(folder)
    assert seen[0] != seen[1] and os.environ["OPARA_CACHE_DIR"] == str(tmp_path / "mine")
    monkeypatch.delenv("OPARA_CACHE_DIR")
    with methods.cold_compile_caches():
        assert ProfileCache.default().folder.name == "opara-profiles"
    assert "OPARA_CACHE_DIR" not in os.environ  # unset before, unset after: the default in the home folder


def test_only_the_methods_that_compile_are_built_inside_them(monkeypatch):
    inside = {}

    def fake_build(method, model, inputs, device, plan_options):
        inside[method] = _dirs()[0]
        return lambda *xs: None
    monkeypatch.setattr(methods, "_build", fake_build)
    outer = _dirs()[0]
    for m in ("cudagraph", "eager", "torch_compile", "opara_default", "opara_fused_kernels"):
        methods.build(m, None, (), torch.device("cpu"))
    assert inside["cudagraph"] == inside["eager"] == outer
    assert len({inside[m] for m in ("torch_compile", "opara_default", "opara_fused_kernels")} - {outer}) == 3
    assert [m for m in inside if methods.compiles(m)] == ["torch_compile", "opara_default", "opara_fused_kernels"]


def test_warming_the_imports_compiles_in_caches_of_its_own():
    """warm_imports (run before a group's first build) really compiles, so the imports it is for are done, in
    cache folders of its own: the methods timed after it still start from empty ones."""
    import subprocess
    import sys

    code = ("import os, sys, torch; from oparac.bench.methods import warm_imports; before = "
            "(os.environ.get('TORCHINDUCTOR_CACHE_DIR'), os.environ.get('TRITON_CACHE_DIR')); "
            "warm_imports(torch.device('cpu')); "
            "assert (os.environ.get('TORCHINDUCTOR_CACHE_DIR'), os.environ.get('TRITON_CACHE_DIR')) == before; "
            "print('torch._inductor.compile_fx' in sys.modules, 'torch._dynamo.convert_frame' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True"]
