"""benchmarks/program_variants.py without a GPU: the options each variant compiles with, and its refusals."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(_DIR))
_spec = importlib.util.spec_from_file_location("program_variants", _DIR / "program_variants.py")
variants = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(variants)


def test_opara_variants_keep_the_kernel_modes_options_and_change_only_their_own():
    from opara_runtime.fused.compile import INDUCTOR_KERNEL_CONFIG

    assert variants.opara_config("default") == INDUCTOR_KERNEL_CONFIG
    assert variants.opara_config("reuse") == {**INDUCTOR_KERNEL_CONFIG, "allow_buffer_reuse": True}
    assert variants.opara_config("combo")["combo_kernels"] is True
    assert variants.opara_config("combo")["allow_buffer_reuse"] is False
    assert variants.opara_config("autotune") == {**INDUCTOR_KERNEL_CONFIG, "max_autotune": True}
    assert variants.compile_options("autotune-cd") == {"triton.cudagraphs": True, "max_autotune": True,
                                                       "coordinate_descent_tuning": True}
    assert variants.opara_config("pdl") == {**INDUCTOR_KERNEL_CONFIG, "triton.enable_pdl": True}


def test_torch_compile_variants_are_reduce_overheads_cuda_graphs_plus_their_own():
    assert variants.compile_options("default") == {"triton.cudagraphs": True}
    assert variants.compile_options("no-reuse") == {"triton.cudagraphs": True, "allow_buffer_reuse": False}


def test_an_unknown_variant_is_refused_naming_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        variants.main(["--opara", "default,bogus"])
    assert "unknown variant 'bogus': expected one of default, reuse, no-reuse, combo" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_without_a_gpu_it_says_so(capsys):
    assert variants.main([]) == 1
    assert "need a CUDA GPU" in capsys.readouterr().err
