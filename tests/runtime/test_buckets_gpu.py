"""Shape buckets on the GPU: every bucket captured into one shared graph pool, outputs equal to eager's for every
batch, and the buckets' graphs together within 1.3x of the largest bucket's graph alone (measured)."""
from __future__ import annotations

import pytest
import torch

import opara_runtime
from opara_plan import InputError, make_plan_set
from oparac.buckets import compile_buckets
from oparac.models import zoo

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("no_tf32")]
BATCHES = (1, 2, 4, 8)


@pytest.fixture(scope="module")
def googlenet_set():
    model, inputs = zoo.googlenet()
    # Cost-model plans keep the test short; they are captured on the GPU like profiled ones.
    plan_set = compile_buckets(model, inputs, batches=BATCHES, device="cpu")
    return model.cuda(), plan_set


def test_every_batch_matches_eager_and_oversized_is_refused(googlenet_set):
    model, ps = googlenet_set
    assert all(p.schedule.num_streams > 1 for p in ps.plans)
    runner = opara_runtime.load(ps, model, device="cuda")
    assert all(r.captured is not None for r in runner.runners)
    for n in range(1, 9):
        x = torch.randn(n, 3, 224, 224, device="cuda")
        with torch.no_grad():
            want = model(x)
        got = runner(x)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="expected at most 8, got 9"):
        runner(torch.randn(9, 3, 224, 224, device="cuda"))


def test_buckets_share_one_graph_pool_within_1_3x_of_the_largest(googlenet_set):
    model, ps = googlenet_set
    torch.cuda.empty_cache()
    largest_alone = opara_runtime.load(make_plan_set([ps.plans[-1]]), model, device="cuda")
    alone = largest_alone.graph_memory()["measured_total_bytes"]
    del largest_alone
    torch.cuda.empty_cache()
    runner = opara_runtime.load(ps, model, device="cuda")
    memory = runner.graph_memory()
    total = memory["measured_total_bytes"]
    print(f"graph memory: largest alone {alone / 2**20:.1f} MiB, all buckets {total / 2**20:.1f} MiB "
          f"({total / alone:.2f}x); per bucket {memory['buckets']}")
    assert alone > 0 and total <= 1.3 * alone
    # Without sharing the pool the buckets' graphs would add up to about 15/8 of the largest.
    unshared = sum(opara_runtime.load(make_plan_set([p]), model, device="cuda").graph_memory()["measured_total_bytes"]
                   for p in ps.plans)
    assert total < unshared
    print(f"without sharing {unshared / 2**20:.1f} MiB; predicted live tensors "
          f"{memory['predicted_total_bytes'] / 2**20:.1f} MiB")
    # The prediction (no GPU needed) counts live tensors only: a lower bound of what the pool holds.
    assert 0 < memory["predicted_total_bytes"] <= total
    # Replaying a small bucket between big ones leaves the big one's answers intact.
    x8, x1 = torch.randn(8, 3, 224, 224, device="cuda"), torch.randn(1, 3, 224, 224, device="cuda")
    first = runner(x8)
    runner(x1)
    torch.testing.assert_close(runner(x8), first, rtol=0, atol=0)


def test_weights_are_placed_once_for_all_buckets(googlenet_set):
    model, ps = googlenet_set
    runner = opara_runtime.load(ps, model, device="cuda")
    for r in runner.runners:
        for i, node in enumerate(r.plan.graph.nodes):
            if node.kind == "param":
                assert r.captured.base_values[i].data_ptr() == runner.weights[node.name].data_ptr()


def test_inspect_measures_each_bucket_on_the_gpu(googlenet_set, tmp_path):
    import json

    from click.testing import CliRunner

    from oparac.cli import main

    _, ps = googlenet_set
    path = tmp_path / "googlenet.plans"
    ps.save(path)
    result = CliRunner().invoke(main, ["inspect", str(path), "--measure", "oparac.models.zoo:googlenet", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    memory = info["graph_memory"]
    assert memory["measured_total_bytes"] > 0 and memory["measured_ratio"] <= 1.3
    assert all(b["graph_memory"]["measured_added_bytes"] is not None for b in info["buckets"])
