"""load() of a plan set on the CPU: the smallest bucket that fits, the batch padded and the outputs cut back, the
weights bound once, and requests that fit no bucket (or a tampered set) refused with an Opara error."""
from __future__ import annotations

import dataclasses

import msgpack
import pytest
import torch

import opara_runtime
from opara_plan import InputError, PlanFormatError, PlanMismatchError, make_plan_set, plan_set_to_bytes
from opara_runtime import BucketedRunner
from oparac.buckets import compile_buckets

from helpers.buckets import tiny_text, with_table
from helpers.models import small_cnn


@pytest.fixture(scope="module")
def cnn():
    model, inputs = small_cnn()
    return model, compile_buckets(model, inputs, batches=(1, 2, 4, 8), device="cpu")


@pytest.fixture(scope="module")
def cnn_runner(cnn):
    model, ps = cnn
    return opara_runtime.load(ps, model)


def eager(model, *inputs):
    with torch.no_grad():
        return model(*inputs)


def test_every_batch_up_to_the_largest_matches_eager(cnn, cnn_runner):
    model, _ = cnn
    assert isinstance(cnn_runner, BucketedRunner) and cnn_runner.max_batch == 8
    torch.manual_seed(1)
    for n in range(1, 9):
        x = torch.randn(n, 3, 16, 16)
        got = cnn_runner(x)
        assert got.shape == (n, 10)
        torch.testing.assert_close(got, eager(model, x), rtol=1e-5, atol=1e-5)


def test_the_smallest_bucket_that_fits_is_chosen(cnn_runner):
    chosen = [cnn_runner.bucket_for((torch.zeros(n, 3, 16, 16),)) for n in range(1, 9)]
    assert [cnn_runner.buckets[k].batch for k, _ in chosen] == [1, 2, 4, 4, 8, 8, 8, 8]
    assert [n for _, n in chosen] == list(range(1, 9))


def test_padding_never_leaks_between_calls(cnn, cnn_runner):
    model, _ = cnn
    big, small = torch.randn(4, 3, 16, 16), torch.randn(3, 3, 16, 16)
    cnn_runner(big)  # leaves the batch-4 buffers full of other samples
    torch.testing.assert_close(cnn_runner(small), eager(model, small), rtol=1e-5, atol=1e-5)


def test_requests_that_fit_no_bucket_are_refused(cnn_runner):
    with pytest.raises(InputError, match=r"batch: expected at most 8, got 9 \(the largest bucket of the plan set "
                                         r"for x: float32\[N, 3, 16, 16\]\)"):
        cnn_runner(torch.randn(9, 3, 16, 16))
    with pytest.raises(InputError, match=r"batch: expected 1..8, got 0"):
        cnn_runner(torch.randn(0, 3, 16, 16))
    with pytest.raises(InputError, match=r"inputs x: float32\[2, 3, 17, 16\]: no bucket has these dimensions besides "
                                         r"the batch; the plan set has x: float32\[N, 3, 16, 16\]"):
        cnn_runner(torch.randn(2, 3, 17, 16))
    with pytest.raises(InputError, match=r"input 0 'x': expected a float32 tensor of rank 4 on cpu, got "
                                         r"float64\[2, 3, 16, 16\]"):
        cnn_runner(torch.randn(2, 3, 16, 16, dtype=torch.float64))
    with pytest.raises(InputError, match=r"expected 1 inputs \('x'\), got 2"):
        cnn_runner(torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16))
    with pytest.raises(InputError, match="got list"):
        cnn_runner([1.0])


def test_weights_are_bound_once_for_all_buckets(cnn, cnn_runner):
    model, _ = cnn
    for runner in cnn_runner.runners:
        assert runner.plan in cnn_runner.plan_set.plans
        for i, node in enumerate(runner.plan.graph.nodes):
            if node.kind == "param":
                assert runner._base[i].data_ptr() == cnn_runner.weights[node.name].data_ptr()
    # float32 weights on the CPU are the model's own tensors: nothing was copied.
    assert cnn_runner.weights["stem.weight"].data_ptr() == model.stem.weight.data_ptr()


def test_weights_that_do_not_fit_are_refused(cnn):
    _, ps = cnn
    with pytest.raises(PlanMismatchError, match="has no parameter"):
        opara_runtime.load(ps, torch.nn.Linear(2, 2))


def test_a_set_file_loads_and_a_tampered_one_is_refused(cnn, tmp_path):
    model, ps = cnn
    ps.save(tmp_path / "cnn.plans")
    runner = opara_runtime.load(tmp_path / "cnn.plans", model)
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(runner(x), eager(model, x), rtol=1e-5, atol=1e-5)
    obj = msgpack.unpackb(plan_set_to_bytes(ps), raw=False)
    obj["buckets"][2]["batch"] = 3
    (tmp_path / "bad.plans").write_bytes(msgpack.packb(obj, use_bin_type=True))
    with pytest.raises(PlanFormatError, match="bucket 2 field batch: the descriptor says 3"):
        opara_runtime.load(tmp_path / "bad.plans", model)
    plan = ps.plans[1]
    forged = dataclasses.replace(ps, plans=(ps.plans[0], dataclasses.replace(
        plan, model=dataclasses.replace(plan.model, fingerprint="sha256:" + "0" * 64))) + ps.plans[2:])
    with pytest.raises(PlanFormatError, match=r"bucket 1 \(batch 2\).*fingerprint"):
        opara_runtime.load(forged, model)


@pytest.mark.slow
def test_structured_outputs_and_other_dimensions():
    model, inputs = tiny_text()
    ps = compile_buckets(model, inputs, batches=(2, 4), shapes=["ids:1x8:int64,mask:1x8", "ids:1x12:int64,mask:1x12"],
                         device="cpu")
    runner = opara_runtime.load(ps, model)
    for n, seq in [(1, 8), (3, 8), (4, 12), (2, 12)]:
        ids = torch.randint(0, 50, (n, seq))
        mask = (torch.rand(n, seq) > 0.2).float()
        got, want = runner(ids, mask), eager(model, ids, mask)
        assert set(got) == {"tokens", "pooled"} and got["tokens"].shape == (n, seq, 16)
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match=r"input 1 'mask': batch \(leading dimension\) 2, input 0 'ids' has 3"):
        runner(torch.zeros(3, 8, dtype=torch.int64), torch.ones(2, 8))
    with pytest.raises(InputError, match=r"ids: int64\[N, 8\], mask: float32\[N, 8\]; ids: int64\[N, 12\]"):
        runner(torch.zeros(1, 10, dtype=torch.int64), torch.ones(1, 10))


def test_outputs_without_a_batch_dimension_are_not_cut():
    model, inputs = with_table()
    runner = opara_runtime.load(compile_buckets(model, inputs, batches=(4,), device="cpu"), model)
    x = torch.randn(3, 8)
    y, table = runner(x)
    want_y, want_table = eager(model, x)
    assert y.shape == (3, 4) and table.shape == (4,)
    torch.testing.assert_close(y, want_y)
    torch.testing.assert_close(table, want_table)


def test_a_single_bucket_set_of_the_one_plan():
    model, inputs = small_cnn()
    ps = compile_buckets(model, inputs, device="cpu")  # no batches: the example's own batch, 2
    assert [b.batch for b in ps.buckets] == [2]
    runner = opara_runtime.load(make_plan_set(ps.plans), model)
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(runner(x), eager(model, x), rtol=1e-5, atol=1e-5)
