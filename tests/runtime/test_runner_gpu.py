"""The GPU path: profile, capture, replay, tune, precision, overhead and memory, on the device machine."""
from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

import opara_runtime
import oparac
from oparac.models import zoo
from oparac.bench.methods import SequentialGraph
from oparac.profile.measure import median_paired_diff_us, time_alternating, time_gpu
from oparac.verify import TOLERANCE, judge, verify

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("no_tf32")]
STREAMS = ("opara", "nimble", "critical", "single")


def test_googlenet_compiles_fast_and_matches_eager(tmp_path, monkeypatch):
    monkeypatch.setenv("OPARA_CACHE_DIR", str(tmp_path))
    model, inputs = zoo.googlenet()
    model, inputs = model.cuda(), tuple(x.cuda() for x in inputs)
    start = time.perf_counter()
    plan = oparac.compile(model, inputs, device="cuda")
    elapsed = time.perf_counter() - start
    assert elapsed < 30, f"GoogLeNet compile took {elapsed:.1f} s"
    assert plan.profile.method == "cuda-graph" and plan.target.device_type == "cuda"
    assert plan.schedule.num_streams > 1
    kernels = [op for op in plan.profile.ops if op.intensity != "free" and op.kernels]
    assert kernels and all(k.block and k.grid for op in kernels for k in op.kernels)
    assert verify(plan, model, device="cuda").ok
    # the cache makes the second compile skip profiling: the same op profile (the guard's measurements, also in
    # the profile, are taken afresh by every compile)
    start = time.perf_counter()
    again = oparac.compile(model, inputs, device="cuda")
    assert again.profile.ops == plan.profile.ops and again.profile.sequential_ms == plan.profile.sequential_ms
    assert plan.profile.guard.startswith("guard: ") and again.profile.guard.startswith("guard: ")
    assert time.perf_counter() - start < elapsed


@pytest.mark.parametrize("name", ["googlenet", "inception_v3", "resnet50", "densenet121", "bert"])
def test_suite_models_match_eager_under_every_stream_algorithm(name):
    model, inputs = getattr(zoo, name)()
    model = model.cuda()
    for streams in STREAMS:
        plan = oparac.compile(model, tuple(x.cuda() for x in inputs), device="cuda", streams=streams)
        verdict = verify(plan, model, device="cuda")
        assert verdict.ok, f"{name}/{streams}: rel {verdict.max_rel:.2e}"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_reduced_precision(dtype):
    model, inputs = zoo.googlenet()
    plan = oparac.compile(model, inputs, device="cuda", dtype=dtype)
    assert plan.model.precision == dtype
    verdict = verify(plan, model, device="cuda")
    assert verdict.ok, f"rel {verdict.max_rel:.2e} > {TOLERANCE[dtype]}"


def test_zero_copy_and_copies():
    model, inputs = zoo.squeezenet()
    plan = oparac.compile(model, inputs, device="cuda")
    runner = opara_runtime.load(plan, model, device="cuda")
    x1, x2 = torch.randn_like(inputs[0]).cuda(), torch.randn_like(inputs[0]).cuda()
    y1 = runner(x1)
    z1 = runner(x1, zero_copy=True)
    torch.testing.assert_close(y1, z1)
    y2 = runner(x2)
    assert not torch.equal(y1, y2), "copied outputs must not change on the next call"
    assert torch.equal(z1, y2), "zero-copy outputs are the static buffers, overwritten by the next call"


def test_calls_are_serialised_across_threads():
    model, inputs = zoo.squeezenet()
    model = model.cuda()
    plan = oparac.compile(model, inputs, device="cuda")
    runner = opara_runtime.load(plan, model, device="cuda")
    xs = [torch.randn_like(inputs[0]).cuda() for _ in range(8)]
    with torch.no_grad():
        wants = [model(x) for x in xs]
    errors = []

    def work(k):
        for _ in range(20):
            got = runner(xs[k])
            torch.cuda.current_stream().synchronize()
            if judge(got, wants[k], None, 1e-4, "float32").max_rel > 1e-4:
                errors.append(k)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_input_buffers_filled_in_place_skip_the_copy_and_match():
    model, inputs = zoo.squeezenet()
    x = inputs[0].cuda()
    runner = opara_runtime.load(oparac.compile(model, (x,), device="cuda"), model, device="cuda")
    (buf,) = runner.input_buffers()
    assert buf is runner.captured.static_inputs[0]
    expected = runner(x)
    buf.zero_()
    buf.copy_(x)
    torch.testing.assert_close(runner(buf), expected, rtol=0, atol=0)


def test_inputs_are_copied_inside_the_graph():
    """Each call re-points the captured input copy: alternating tensors, a non-contiguous one (copied ahead),
    the runner's own buffer (copy switched off) and a bare replay after a call all give the right answer."""
    from opara_runtime.graph_inputs import InputFeed

    model, inputs = zoo.googlenet()
    model = model.cuda()
    x = inputs[0].cuda()
    runner = opara_runtime.load(oparac.compile(model, (x,), device="cuda"), model, device="cuda")
    feed = runner.captured.inputs
    assert isinstance(feed, InputFeed) and feed.nodes[0] is not None, "the captured input copy was not found"
    xs = [torch.randn_like(x) for _ in range(3)] + [torch.randn(1, 3, 224, 448, device="cuda")[..., ::2]]
    assert not xs[-1].is_contiguous()
    with torch.no_grad():
        want = [model(v) for v in xs]
    first = [runner(v) for v in xs]
    for got, ref in zip(first, want):
        assert judge(got, ref, None, TOLERANCE["float32"], "float32").ok
    for _ in range(2):  # every input again, in a new order: each call reads its own tensor, bit for bit
        for k in (2, 0, 3, 1):
            torch.testing.assert_close(runner(xs[k]), first[k], rtol=0, atol=0)
            # the contiguous inputs went through the re-pointed node, not the copy-ahead fallback
            assert feed.enabled == [k != 3] and (k == 3 or feed.source == [xs[k].data_ptr()])
    (buf,) = runner.input_buffers()
    buf.copy_(xs[2])  # not the last call's input (xs[1]), which a copy left switched on would deliver instead
    torch.testing.assert_close(runner(buf), first[2], rtol=0, atol=0)
    assert feed.enabled == [False]
    torch.testing.assert_close(runner(xs[0]), first[0], rtol=0, atol=0)  # switched back on
    fresh = xs[2].clone()
    runner(fresh)
    del fresh  # the feed holds it: a bare replay still reads that input
    torch.empty_like(x).fill_(float("nan"))
    runner.captured.graph.replay()
    torch.testing.assert_close(runner.captured.static_outputs[0], first[2], rtol=0, atol=0)


def test_inputs_checked_on_every_call():
    model, inputs = zoo.squeezenet()
    plan = oparac.compile(model, inputs, device="cuda")
    runner = opara_runtime.load(plan, model, device="cuda")
    from opara_plan import InputError
    with pytest.raises(InputError, match=r"on cuda:0, got float32\[1, 3, 224, 224\] on cpu"):
        runner(inputs[0])


def test_per_call_overhead_and_memory():
    """Overhead = median synchronised call minus back-to-back replay, for the default call (inputs copied in,
    outputs copied out). The machine's own floor is the same figure for a bare graph.replay(); the runner may
    add at most 20 us to it. The VM's synchronisation latency drifts over seconds by more than that, so what the
    runner adds is the median difference of runner and bare calls taken in alternation, a call apart."""
    model, inputs = zoo.googlenet()
    model = model.cuda()
    x = inputs[0].cuda()
    plan = oparac.compile(model, (x,), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    runner = opara_runtime.load(plan, model, device="cuda")
    opara_peak = torch.cuda.max_memory_allocated() - base
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    seq = SequentialGraph(model, (x,))
    seq_peak = torch.cuda.max_memory_allocated() - base
    dev = torch.device("cuda")
    graph = runner.captured.graph
    runner(*runner.input_buffers(), zero_copy=True)  # the in-graph input copy off: b2b is the graph alone
    b2b = time_gpu(graph.replay, dev).ms_b2b
    # Every runner(x) leaves the graph's input copy switched on, so the bare replays between them run that
    # memcpy node too: device-to-device, GPU time only, no host work. Switching it off before each bare replay
    # would make each runner(x) switch it back on, a host-side graph update a steady caller never pays. So the
    # floor here is the graph as runner(x) replays it, and "runner adds" is the runner's host work and output
    # copies, not the in-graph input copy; the absolute overhead (against the graph alone) still counts it.
    lat = time_alternating({"bare": graph.replay, "runner": lambda: runner(x)}, dev)
    bare_lat, call_lat = statistics.median(lat["bare"]), statistics.median(lat["runner"])
    floor_us, overhead_us = (bare_lat - b2b) * 1e3, (call_lat - b2b) * 1e3
    adds_us = median_paired_diff_us(lat, "runner", "bare")
    print(f"replay b2b {b2b:.4f} ms; bare replay+sync {bare_lat:.4f} ms (floor {floor_us:.1f} us); runner call "
          f"+sync {call_lat:.4f} ms (overhead {overhead_us:.1f} us, runner adds {adds_us:.1f} us, median of "
          f"paired differences); peak memory opara {opara_peak / 2**20:.1f} MiB, sequential graph "
          f"{seq_peak / 2**20:.1f} MiB ({opara_peak / seq_peak:.2f}x)")
    assert adds_us <= 20.0
    assert opara_peak <= 1.3 * seq_peak
    del seq


def test_tuned_plan_is_never_slower_than_one_stream():
    model, inputs = zoo.googlenet()
    model = model.cuda()
    plan = oparac.compile(model, tuple(x.cuda() for x in inputs), device="cuda", tune=True)
    cands = plan.profile.candidates
    chosen = [c for c in cands if c.chosen]
    single = [c for c in cands if c.streams == "single"]
    assert len(chosen) == 1 and single
    assert chosen[0].measured_ms <= single[0].measured_ms
    assert verify(plan, model, device="cuda").ok


def test_plan_for_another_gpu_is_refused():
    import dataclasses

    from opara_plan import PlanMismatchError
    model, inputs = zoo.squeezenet()
    plan = oparac.compile(model, inputs, device="cuda")
    target = dataclasses.replace(plan.target, compute_capability=(7, 5))
    with pytest.raises(PlanMismatchError, match="compute capability 7.5"):
        opara_runtime.load(dataclasses.replace(plan, target=target), model, device="cuda")


def test_a_plan_on_streams_survives_torch_compile_clearing_the_cublas_workspaces():
    # torch.compile(mode="reduce-overhead") drops every cached cuBLAS workspace whenever it records a graph. A plan
    # whose side streams used workspaces made by the warm-up, outside the graph's pool, then wrote memory that the
    # allocator had handed to other tensors or released (opara_runtime/workspaces.py). In a process of its own: an
    # illegal memory access would poison this one.
    code = textwrap.dedent("""
        import torch
        import opara_runtime, oparac

        class Wide(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.branches = torch.nn.ModuleList(torch.nn.Linear(1024, 1024) for _ in range(4))

            def forward(self, x):
                return torch.cat([b(x) for b in self.branches], dim=1)

        torch.backends.cuda.matmul.allow_tf32 = False
        model = Wide().cuda().eval()
        x = torch.randn(256, 1024, device="cuda")
        # Unmerged: merged, the four branches would be one GEMM on one stream (ingest/merge_projections.py).
        plan = oparac.compile(model, (x,), device="cuda", guard=False, merge_projections=False)
        assert plan.schedule.num_streams > 1, plan.schedule.num_streams
        runner = opara_runtime.load(plan, model)
        want = runner(x)
        for _ in range(3):
            torch._C._cuda_clearCublasWorkspaces()
            torch.cuda.empty_cache()
            filler = [torch.full((8 << 20,), 7.0, device="cuda") for _ in range(8)]  # takes freed memory
            got = runner(x)
            torch.cuda.synchronize()
            assert torch.equal(got, want)
            assert all(bool((f == 7.0).all()) for f in filler), "a replay wrote into another tensor"
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


@pytest.mark.parametrize("name, option, stacked", [
    ("bert", "merge_projections", 24),  # BERT-base's Q/K/V (and their biases) as one GEMM
    ("googlenet", "merge_convolutions", 9),  # each Inception block's 1x1 convolutions of its input as one
])
def test_merged_siblings_match_eager_fused_and_unfused(name, option, stacked):
    # Sibling ops as one over weights stacked at load (ingest/merge_projections.py), on the GPU, in each plan's
    # default layout (NHWC for GoogLeNet's fused plan).
    model, inputs = getattr(zoo, name)()
    model, inputs = model.cuda(), tuple(x.cuda() for x in inputs)
    for fuse in ("", "inductor"):
        plan = oparac.compile(model, inputs, device="cuda", fuse=fuse, **{option: True})
        assert sum(n.kind == "param" and n.target == "concat" for n in plan.graph.nodes) == stacked
        verdict = verify(plan, model, device="cuda", trust_compiled_code=True)  # compiled here, a moment ago
        assert verdict.ok, f"{name} fuse={fuse!r}: rel {verdict.max_rel:.2e}"
