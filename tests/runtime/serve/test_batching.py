"""PlanBatcher: admission of requests against the plan, packing into plan batches, padding and slicing back."""
from __future__ import annotations

import pytest
import torch

import oparac
from opara_plan import OparaError, make_plan_set
from opara_runtime import RunnerPool
from opara_runtime.serve.batching import BucketBatcher, PlanBatcher, Request, batcher_for
from opara_runtime.serve.codec import JSON, SAFETENSORS, RequestError, TooLargeError

from helpers.models import small_cnn
from helpers.plans import fork_join


@pytest.fixture
def batcher(tiny_plan):  # x[2, 3] @ w: a plan of batch 2
    w = torch.randn(3, 3)
    b = PlanBatcher(RunnerPool(tiny_plan, {"w": w}, replicas=2))
    b.w = w
    yield b
    b.close()


def test_a_plan_with_the_batch_first_everywhere_is_batchable(batcher):
    assert batcher.batchable and batcher.max_batch == 2
    assert batcher.expected(0) == "float32[n, 3] with 1 <= n <= 2"


def test_requests_are_packed_padded_and_sliced_back(batcher):
    xs = [torch.randn(n, 3) for n in (1, 1, 2, 1, 2, 1)]
    outs = batcher.run([batcher.admit({"x": x}) for x in xs])
    assert [tuple(y.shape) for y in outs] == [tuple(x.shape) for x in xs]
    for x, y in zip(xs, outs):
        torch.testing.assert_close(y, fork_join(x, batcher.w))


def test_inputs_in_order_are_admitted_too(batcher):
    r = batcher.admit([torch.randn(1, 3)])
    assert isinstance(r, Request) and r.n == 1 and len(r.inputs) == 1


@pytest.mark.parametrize("tensors, error, message", [
    ({"x": torch.randn(1, 4)}, RequestError, r"input 0 'x': expected float32\[n, 3\] with 1 <= n <= 2, "
                                             r"got float32\[1, 4\]"),
    ({"x": torch.randn(1, 3).double()}, RequestError, r"got float64\[1, 3\]"),
    ({"x": torch.randn(3)}, RequestError, r"got float32\[3\]"),
    ({"x": torch.randn(0, 3)}, RequestError, r"got float32\[0, 3\]"),
    ({"x": torch.randn(1, 3, 1)}, RequestError, r"got float32\[1, 3, 1\]"),
    ({"y": torch.randn(1, 3)}, RequestError, r"request inputs: expected 'x', found 'y'"),
    ({}, RequestError, r"request inputs: expected 'x', found none"),
    ({"x": torch.randn(1, 3), "z": torch.randn(1)}, RequestError, r"expected 'x', found 'x', 'z'"),
    ([], RequestError, r"request inputs: expected 1 \('x'\), found 0"),
    ({"x": torch.randn(3, 3)}, TooLargeError, r"request batch: 3 samples, more than the largest batch this "
                                              r"deployment serves for these shapes \(2\)"),
])
def test_requests_that_do_not_fit_are_refused(batcher, tensors, error, message):
    with pytest.raises(error, match=message):
        batcher.admit(tensors)


def test_body_limits_cover_a_full_batch(batcher):
    assert batcher.max_body_bytes(SAFETENSORS) >= 6 * 4 and batcher.max_body_bytes(JSON) > batcher.max_body_bytes(
        SAFETENSORS)


def test_a_failing_pack_refuses_its_requests_and_the_rest_are_served(batcher, monkeypatch):
    good, bad = torch.randn(2, 3), torch.randn(2, 3)
    real = batcher.pool.__call__.__func__

    def failing(pool, x, **kw):
        if torch.equal(x, bad):
            raise OparaError("node 2 'mm' (aten.mm.default) failed")
        return real(pool, x, **kw)
    monkeypatch.setattr(RunnerPool, "__call__", failing)
    outs = batcher.run([batcher.admit({"x": good}), batcher.admit({"x": bad})])
    torch.testing.assert_close(outs[0], fork_join(good, batcher.w))
    assert isinstance(outs[1], OparaError) and "node 2 'mm'" in str(outs[1])


class WithATotal(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(3, 3))

    def forward(self, x):
        y = x @ self.w
        return y, y.sum()


def test_a_plan_with_an_output_off_the_batch_serves_whole_requests():
    model = WithATotal().eval()
    plan = oparac.compile(model, (torch.randn(2, 3),), device="cpu")
    b = PlanBatcher(RunnerPool(plan, model, replicas=1))
    try:
        assert not b.batchable and b.max_batch == 2  # a request is the plan's whole input
        assert b.expected(0) == "float32[2, 3]"
        with pytest.raises(RequestError, match=r"input 0 'x': expected float32\[2, 3\], got float32\[1, 3\]"):
            b.admit({"x": torch.randn(1, 3)})
        xs = [torch.randn(2, 3) for _ in range(3)]
        outs = b.run([b.admit({"x": x}) for x in xs])
        with torch.no_grad():
            for x, (y, total) in zip(xs, outs):
                want_y, want_total = model(x)
                torch.testing.assert_close(y, want_y)
                torch.testing.assert_close(total, want_total)
    finally:
        b.close()


@pytest.fixture(scope="module")
def bucketed():
    model, (x,) = small_cnn()
    plan_set = make_plan_set([oparac.compile(model, (x[:n],), device="cpu") for n in (1, 2)])
    b = batcher_for(RunnerPool(plan_set, model, replicas=2))
    yield b, model
    b.close()


def test_a_plan_set_is_batched_into_its_buckets(bucketed):
    b, model = bucketed
    assert isinstance(b, BucketBatcher) and b.batchable and b.max_batch == 2
    assert b.expected(0) == "float32[n, 3, 16, 16] with 1 <= n <= 2"
    xs = [torch.randn(n, 3, 16, 16) for n in (1, 1, 1, 2, 1)]  # packs: 1+1, 1, 2, 1 (a bucket of 1 each alone)
    outs = b.run([b.admit({"x": x}) for x in xs])
    with torch.no_grad():
        for x, y in zip(xs, outs):
            torch.testing.assert_close(y, model(x), rtol=1e-4, atol=1e-5)


def test_a_plan_set_refuses_what_no_bucket_serves(bucketed):
    b, _ = bucketed
    with pytest.raises(TooLargeError, match=r"request batch: 3 samples, more than the largest batch this deployment "
                                            r"serves for these shapes \(2\)"):
        b.admit({"x": torch.randn(3, 3, 16, 16)})
    with pytest.raises(RequestError, match=r"input 0 'x': expected float32\[n, 3, 16, 16\] with 1 <= n <= 2, got "
                                           r"float32\[1, 3, 8, 8\]"):
        b.admit({"x": torch.randn(1, 3, 8, 8)})


def test_packs_keep_groups_apart_and_within_their_largest_batch(batcher):
    rs = [Request((torch.zeros(n, 3),), n, ((3,),)) for n in (1, 2, 1, 1)]
    assert batcher._packs([0, 1, 2, 3], rs) == [[0], [1], [2, 3]]
