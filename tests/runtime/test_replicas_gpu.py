"""RunnerPool on the GPU: a graph and a stream per replica, one copy of the weights, concurrent callers overlap."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import oparac
from opara_runtime import RunnerPool
from oparac.models import zoo

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("no_tf32")]


@pytest.fixture(scope="module")
def googlenet():
    model, (x,) = zoo.googlenet()
    model = model.cuda()
    plan = oparac.compile(model, (x.cuda(),), device="cuda")
    return plan, model, x.cuda()


def test_replicas_have_their_own_graphs_and_streams_and_share_the_weights(googlenet):
    plan, model, _ = googlenet
    pool = RunnerPool(plan, model, replicas=3)
    graphs = {id(r.captured.graph) for r in pool.runners}
    assert len(graphs) == 3
    with pool.checkout() as a, pool.checkout() as b:
        assert a.stream is not None and a.stream != b.stream
    # One copy of the weights: every replica's graph reads the same tensors (a memory comparison would also count
    # the cuBLAS workspaces each replica's capture thread gets).
    params = [i for i, n in enumerate(plan.graph.nodes) if n.kind == "param"]
    assert params
    for i in params:
        assert len({r.captured.base_values[i].data_ptr() for r in pool.runners}) == 1, plan.graph.nodes[i].name


def test_concurrent_callers_get_eager_outputs(googlenet):
    plan, model, x = googlenet
    pool = RunnerPool(plan, model, replicas=4)
    xs = [torch.randn_like(x) for _ in range(32)]
    with torch.no_grad():
        want = [model(xi) for xi in xs]
    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(pool, xs))
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


def test_four_callers_on_four_replicas_beat_one_replica(googlenet):
    plan, model, x = googlenet
    one = RunnerPool(plan, model, replicas=1)
    four = RunnerPool(plan, model, replicas=4)
    rate_one, rate_four = _throughput(one, x), _throughput(four, x)
    # The target is 1.5x (benchmarks/serve_load.py measures it); the test holds a margin for a shared machine.
    assert rate_four > 1.2 * rate_one, (rate_one, rate_four)


def _throughput(pool, x, callers: int = 4, calls: int = 200) -> float:
    for _ in range(10):
        pool(x)
    start = time.perf_counter()
    with ThreadPoolExecutor(callers) as ex:
        list(ex.map(lambda _: pool(x), range(calls)))
    return calls / (time.perf_counter() - start)


class GemmBranches(torch.nn.Module):
    """Four branches of matrix products: cuBLAS GEMMs on several streams, each using a workspace."""

    def __init__(self, width: int = 512) -> None:
        super().__init__()
        self.branches = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, width))
            for _ in range(4))

    def forward(self, x):
        return sum(b(x) for b in self.branches)


def test_eight_replicas_of_a_gemm_model_never_mix_results():
    # Eight replicas take more streams than torch's pool of 32 holds, so some share a stream; captured on threads
    # of their own they still have workspaces of their own, and concurrent replays cannot corrupt each other.
    torch.manual_seed(0)
    model = GemmBranches().cuda().eval()
    x = torch.randn(64, 512, device="cuda")
    # Unmerged: merged, its branches' GEMMs would be one (ingest/merge_projections.py), on one stream.
    plan = oparac.compile(model, (x,), device="cuda", merge_projections=False)
    assert plan.schedule.num_streams > 1
    pool = RunnerPool(plan, model, replicas=8)
    xs = [torch.randn_like(x) for _ in range(8)]
    with torch.no_grad():
        want = [model(xi) for xi in xs]

    def caller(k: int):
        worst = 0.0
        for _ in range(25):
            worst = max(worst, (pool(xs[k]) - want[k]).abs().max().item())
        return worst
    with ThreadPoolExecutor(8) as ex:
        worst = max(ex.map(caller, range(8)))
    assert worst < 1e-3, worst


def test_a_pool_of_a_plan_set_serves_every_batch_concurrently():
    from oparac.buckets import compile_buckets

    torch.manual_seed(0)
    model = GemmBranches(256).cuda().eval()
    plan_set = compile_buckets(model, (torch.randn(4, 256, device="cuda"),), batches=(1, 2, 4), device="cuda")
    pool = RunnerPool(plan_set, model, replicas=2)
    xs = [torch.randn(1 + k % 4, 256, device="cuda") for k in range(24)]
    with torch.no_grad():
        want = [model(x) for x in xs]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(pool, xs))
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
