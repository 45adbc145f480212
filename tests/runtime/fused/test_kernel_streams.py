"""The kernel-level mode on the CPU: inductor-shaped wrappers parsed into kernel DAGs, rewritten onto streams, and
run with a launcher that checks every dependency is synchronised; the outputs equal the original call's."""
from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers.wrappers import SimLauncher, World, inputs, random_wrapper
from opara_runtime.fused.kernel_streams import (KernelScheduleError, build_call, check_schedule, cross_stream_waits,
                                                streamed_code, streamed_source)
from opara_runtime.fused.wrapper_ir import WrapperFormatError, parse_wrapper

GPT2_LIKE = '''
import torch
triton_poi_0 = async_compile.triton('triton_poi_0', """
@triton.jit
def triton_poi_0(in_ptr0, out_ptr0, xnumel, XBLOCK : tl.constexpr):
    pass
""", device_str='cuda')
triton_per_1 = async_compile.triton('triton_per_1', """
@triton.jit
def triton_per_1(in_out_ptr0, in_ptr0, xnumel, r0_numel, XBLOCK : tl.constexpr):
    pass
""", device_str='cuda')

class Runner:
    def __init__(self, partitions):
        self.partitions = partitions

    def call(self, args):
        arg0_1, arg1_1, arg2_1 = args
        args.clear()
        assert_size_stride(arg0_1, (4, ), (1, ))
        with torch.cuda._DeviceGuard(0):
            torch.cuda.set_device(0)
            buf0 = empty_strided_cuda((4, ), (1, ), torch.float32)
            stream0 = get_raw_stream(0)
            triton_poi_0.run(arg0_1, buf0, 4, stream=stream0)
            buf1 = empty_strided_cuda((4, ), (1, ), torch.float32)
            extern_kernels.add(arg1_1, arg2_1, out=buf1)
            buf2 = reinterpret_tensor(buf1, (4, ), (1, ), 0); del buf1  # reuse
            stream0 = get_raw_stream(0)
            triton_per_1.run(buf2, buf0, 4, 4, stream=stream0)
            del buf0
        return (buf2, )
'''


def test_statements_are_classified_and_kernels_depend_through_storages():
    prog = parse_wrapper(GPT2_LIKE)
    kinds = [s.kind for s in prog.statements]
    assert kinds == ["host", "alloc", "drop", "kernel", "alloc", "kernel", "alias", "drop", "drop", "kernel", "drop"]
    assert [s.launch for s in prog.kernels] == ["triton", "torch", "triton"]
    assert prog.arg_names == ("arg0_1", "arg1_1", "arg2_1")
    # kernel 2 updates buf2 (buf1's storage, written by kernel 1) in place and reads buf0 (kernel 0)
    assert prog.preds == {0: (), 1: (), 2: (0, 1)}
    assert len(prog.digest) == 64


def test_write_after_read_orders_an_in_place_update_after_earlier_readers():
    src = GPT2_LIKE.replace("triton_per_1.run(buf2, buf0, 4, 4, stream=stream0)",
                            "triton_per_1.run(buf2, buf0, 4, 4, stream=stream0)\n"
                            "            buf3 = empty_strided_cuda((4, ), (1, ), torch.float32)\n"
                            "            triton_poi_0.run(arg0_1, buf3, 4, stream=stream0)\n"
                            "            triton_per_1.run(arg0_1, buf3, 4, 4, stream=stream0)")
    prog = parse_wrapper(src)
    # kernel 4 writes arg0_1 in place: after kernels 0 and 3, which read it
    assert set(prog.preds[4]) >= {0, 3}


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), streams=st.integers(1, 4), order_seed=st.integers(0, 1000))
def test_any_stream_assignment_is_synchronised_and_matches_the_original(seed, streams, order_seed):
    source = random_wrapper(seed)
    prog = parse_wrapper(source)
    rng = random.Random(order_seed)
    stream = tuple(rng.randrange(streams) for _ in range(prog.num_kernels))
    order = _random_topological_order(prog, rng)
    world = World()
    want = world.load(source)["call"](inputs())
    launcher = SimLauncher(prog.preds, stream, order)
    world.launcher = launcher
    call = build_call(prog, world.load(source), stream, order, launcher)
    got = call(inputs())
    assert launcher.violations == []
    assert launcher.launched == prog.num_kernels
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


def test_waits_are_only_those_not_implied():
    prog = parse_wrapper(random_wrapper(3, kernels=16))
    order = tuple(range(prog.num_kernels))
    one = cross_stream_waits(prog, (0,) * prog.num_kernels, order)
    assert one == {}
    alternating = tuple(k % 2 for k in range(prog.num_kernels))
    waits = cross_stream_waits(prog, alternating, order)
    cross = sum(1 for c, ps in prog.preds.items() for p in ps if alternating[p] != alternating[c])
    assert sum(map(len, waits.values())) <= cross


def test_an_order_breaking_a_dependency_is_refused():
    prog = parse_wrapper(GPT2_LIKE)
    with pytest.raises(KernelScheduleError, match="kernel 2 is launched before kernel 0"):
        check_schedule(prog, (0, 1, 0), (2, 0, 1))
    with pytest.raises(KernelScheduleError, match="one stream per kernel"):
        check_schedule(prog, (0, 1), (0, 1, 2))
    with pytest.raises(KernelScheduleError, match="permutation"):
        check_schedule(prog, (0, 1, 0), (0, 0, 1))
    with pytest.raises(KernelScheduleError, match="0..63"):
        check_schedule(prog, (0, 99, 0), (0, 1, 2))


def test_a_schedules_call_is_compiled_once_per_program_and_a_refused_one_is_not_kept():
    prog = parse_wrapper(GPT2_LIKE)
    two = streamed_code(prog, (0, 1, 0), (0, 1, 2))
    assert streamed_code(prog, (0, 1, 0), (0, 1, 2)) is two
    assert streamed_code(prog, (0, 1, 0), (1, 0, 2)) is not two  # another launch order is another call
    assert streamed_code(prog, (0, 1, 0), (0, 1, 2), free=False) is not two
    assert streamed_code(prog, (0, 0, 0), (0, 1, 2)) is not two
    kept = dict(prog.compiled_calls)
    with pytest.raises(KernelScheduleError, match="launched before kernel"):
        streamed_code(prog, (0, 1, 0), (2, 0, 1))
    assert prog.compiled_calls == kept
    # what is compiled is the schedule's source, the same as writing it afresh
    assert parse_wrapper(GPT2_LIKE).compiled_calls == {}
    assert two.co_consts == compile(streamed_source(prog, (0, 1, 0), (0, 1, 2)), "<opara kernel streams>",
                                    "exec").co_consts


def test_timed_source_ticks_after_every_kernel():
    prog = parse_wrapper(GPT2_LIKE)
    src = streamed_source(prog, (0, 0, 0), (0, 1, 2), timed=True)
    assert src.count("_L.tick(") == 3
    with pytest.raises(KernelScheduleError, match="one stream"):
        streamed_source(prog, (0, 1, 0), (0, 1, 2), timed=True)


def test_a_call_using_its_runner_state_is_refused():
    src = GPT2_LIKE.replace("args.clear()", "args.clear()\n        self.partitions[0](args)")
    with pytest.raises(WrapperFormatError, match="runner's state"):
        parse_wrapper(src)


def test_unknown_statements_become_barriers():
    src = GPT2_LIKE.replace("            buf1 = empty_strided_cuda(",
                            "            for _ in range(1):\n                pass\n            buf1 = empty_strided_cuda(")
    prog = parse_wrapper(src)
    barrier = [s for s in prog.kernels if s.kind == "barrier"]
    assert len(barrier) == 1
    b = barrier[0].kernel
    assert all(b in prog.preds[k] for k in range(b + 1, prog.num_kernels))
    assert set(prog.preds[b]) == set(range(b))


def _random_topological_order(prog, rng: random.Random) -> tuple[int, ...]:
    indegree = {k: len(ps) for k, ps in prog.preds.items()}
    succs: dict[int, list[int]] = {k: [] for k in prog.preds}
    for c, ps in prog.preds.items():
        for p in ps:
            succs[p].append(c)
    ready = [k for k, d in indegree.items() if d == 0]
    order = []
    while ready:
        k = ready.pop(rng.randrange(len(ready)))
        order.append(k)
        for c in succs[k]:
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    return tuple(order)


@pytest.mark.parametrize("free", [False, True])
def test_a_real_inductor_program_is_opened_and_its_streamed_call_matches(free):
    """CPU inductor's own wrapper: found inside the compiled artifact, parsed, rewritten onto two (simulated)
    streams (buffers freed during the call, or held to its end), installed in place of its call and restored."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from opara_runtime.fused.compile import INDUCTOR_KERNEL_CONFIG, compile_one
    from opara_runtime.fused.kernel_mode import KernelProgram

    def f(x, w, v):
        return (torch.relu(x @ w) + 1, torch.tanh(x @ v) * 2)

    x, w, v = torch.randn(8, 8), torch.randn(8, 8), torch.randn(8, 8)
    gm = make_fx(f)(x, w, v)
    compiled = compile_one(gm, [x, w, v], INDUCTOR_KERNEL_CONFIG)
    want = compiled(x, w, v)
    opened = KernelProgram(compiled)
    prog = opened.wrapper
    assert prog.num_kernels >= 2
    stream = tuple(k % 2 for k in range(prog.num_kernels))
    order = tuple(range(prog.num_kernels))
    sim = _CpuLauncher()
    opened._set(build_call(prog, opened.namespace, stream, order, sim, free=free))
    got = compiled(x, w, v)
    # Opened again with that schedule installed (the compiler's runners share one program): it finds the
    # wrapper's own call, not the streamed one, and installs its schedule in the same place.
    again = KernelProgram(compiled)
    assert again.original is opened.original and again.wrapper.digest == prog.digest
    assert again.wrapper is prog  # parsed once per source, however often it is opened
    other = _CpuLauncher()
    again._set(build_call(again.wrapper, again.namespace, (0,) * prog.num_kernels, order, other, free=free))
    assert all(torch.equal(a, b) for a, b in zip(compiled(x, w, v), want)) and other.forks == 1
    opened.restore()
    assert sim.forks == 1 and sim.joins == 1
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(compiled(x, w, v), want))
    assert other.forks == 1  # restored: the wrapper's own call runs, on no launcher


class _CpuLauncher:
    """A launcher for CPU kernels: no streams to switch; counts the fork and join of each call."""

    def __init__(self):
        self.forks = self.joins = 0

    def fork(self):
        self.forks += 1

    def join(self):
        self.joins += 1

    def on(self, k):
        import contextlib
        return contextlib.nullcontext()

    def raw(self, k):
        return 0

    def record(self, s, k):
        pass

    def wait(self, s, k):
        pass


@pytest.mark.parametrize("view", ["buf1.view(torch.int32)", "torch.ops.aten.view.dtype(buf1, torch.int32)",
                                  "buf1.as_strided((4, ), (1, ))", "torch.ops.aten.permute.default(buf1, [0])"])
def test_a_view_by_any_spelling_shares_its_storage(view):
    """An in-place update through a view is ordered after the readers of the viewed buffer."""
    src = GPT2_LIKE.replace("            buf2 = reinterpret_tensor(buf1, (4, ), (1, ), 0); del buf1  # reuse",
                            "            buf9 = empty_strided_cuda((4, ), (1, ), torch.float32)\n"
                            "            triton_poi_0.run(buf1, buf9, 4, stream=stream0)\n"
                            f"            buf2 = {view}")
    prog = parse_wrapper(src)
    reader = next(s.kernel for s in prog.kernels if "buf9" in s.uses)
    inplace = prog.kernels[-1].kernel  # triton_per_1 writes buf2 in place
    assert reader in _ancestors(prog, inplace)


def _ancestors(prog, k: int) -> set[int]:
    seen, todo = set(), list(prog.preds[k])
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(prog.preds[p])
    return seen


def test_without_freeing_every_buffer_is_allocated_before_the_first_launch():
    # An allocation after a launch, on the host with stream 0 current, could be given scratch memory a stream-0
    # call has just freed, while a kernel on another stream writes it (a cuDNN attention's workspace reused for a
    # mask, Llama fp16 on an H200). Freeing allocates each buffer on its first user's stream instead (below).
    for seed in range(20):
        prog = parse_wrapper(random_wrapper(seed, kernels=14))
        stream = tuple(k % 3 for k in range(prog.num_kernels))
        src = streamed_source(prog, stream, tuple(range(prog.num_kernels)), free=False)
        fork = src.index("_L.fork()")
        allocs = [i for i in range(len(src)) if src.startswith("empty_strided", i)]
        assert allocs and all(i < fork for i in allocs)


def test_an_allocation_sized_by_a_kernel_result_is_refused():
    src = GPT2_LIKE.replace("buf1 = empty_strided_cuda((4, ), (1, ), torch.float32)",
                            "n0 = buf0.sum().item()\n            buf1 = empty_strided_cuda((n0, ), (1, ), torch.float32)")
    prog = parse_wrapper(src)
    order = tuple(range(prog.num_kernels))
    with pytest.raises(KernelScheduleError, match="allocated before the first launch"):
        streamed_source(prog, tuple(k % 2 for k in range(prog.num_kernels)), order)
    # on one stream nothing changes hands between streams: the original's allocation points are kept
    one = streamed_source(prog, (0,) * prog.num_kernels, order)
    assert one.index("n0 = ") < one.index("empty_strided_cuda((n0")


def test_a_schedule_the_program_cannot_take_runs_it_on_one_stream_with_a_warning(monkeypatch):
    """The runtime's refusal covers writing the streamed call too (not only the order check)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from opara_plan import KernelStreams
    from opara_runtime.fused import kernel_mode
    from opara_runtime.fused.compile import INDUCTOR_KERNEL_CONFIG, compile_one

    x, w = torch.randn(8, 8), torch.randn(8, 8)
    compiled = compile_one(make_fx(lambda x, w: (torch.relu(x @ w),))(x, w), [x, w], INDUCTOR_KERNEL_CONFIG)
    want = compiled(x, w)
    prog = kernel_mode.KernelProgram(compiled).wrapper
    n = prog.num_kernels
    ks = KernelStreams(call_digest=prog.digest, stream=(0,) * n, launch_order=tuple(range(n)), ms=(0.1,) * n,
                       algorithm="opara/opara", critical_path_ms=0.1, predicted_ms=0.1)

    def refuse(*a, **k):
        raise KernelScheduleError("an allocation depends on n0, which a kernel computes")
    monkeypatch.setattr(kernel_mode, "streamed_maker", refuse)
    program = type("Program", (), {"fn": compiled})()
    with pytest.warns(UserWarning, match="runs on one stream: an allocation depends on n0"):
        assert kernel_mode.apply_kernel_streams([program], ks, torch.device("cpu")) is None
    assert all(torch.equal(a, b) for a, b in zip(compiled(x, w), want))


def test_a_plans_stream_priorities_reach_its_side_streams(monkeypatch):
    """KernelStreams.priority is given to the side streams the launcher creates (stream 0 is the caller's)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from opara_plan import KernelStreams
    from opara_runtime.fused import kernel_mode
    from opara_runtime.fused.compile import INDUCTOR_KERNEL_CONFIG, compile_one
    from opara_runtime.fused.kernel_streams import CudaLauncher

    made = []

    class Stream:  # what CudaLauncher asks of torch.cuda.Stream, recorded: there is no GPU here
        def __init__(self, device=None, priority=0):
            made.append(priority)
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    CudaLauncher(3, torch.device("cpu"), priority=(0, -1, 0))
    CudaLauncher(3, torch.device("cpu"))
    assert made == [-1, 0, 0, 0]

    x, w = torch.randn(8, 8), torch.randn(8, 8)
    compiled = compile_one(make_fx(lambda x, w: (torch.relu(x @ w), torch.sigmoid(x)))(x, w), [x, w],
                           INDUCTOR_KERNEL_CONFIG)
    prog = kernel_mode.KernelProgram(compiled).wrapper
    n = prog.num_kernels
    assert n >= 2
    ks = KernelStreams(call_digest=prog.digest, stream=(0,) * (n - 1) + (1,), launch_order=tuple(range(n)),
                       ms=(0.1,) * n, algorithm="opara/opara/prio", critical_path_ms=0.1, predicted_ms=0.1,
                       priority=(0, -1))
    made.clear()
    program = type("Program", (), {"fn": compiled})()
    opened = kernel_mode.apply_kernel_streams([program], ks, torch.device("cpu"))
    assert opened is not None and made == [-1]
    opened.restore()


@pytest.mark.parametrize("seed", range(12))
def test_one_stream_in_program_order_keeps_the_programs_frees(seed):
    # The one-stream program is inductor's call as compiled, its `del`s included, so a buffer goes back to the
    # allocator after its last use (as under torch.compile) instead of living to the end of the call.
    source = random_wrapper(seed)
    prog = parse_wrapper(source)
    n = prog.num_kernels
    src = streamed_source(prog, (0,) * n, tuple(range(n)))
    assert src.count("del ") == source.count("del ") and "get_raw_stream" not in src
    assert src.count("_L.fork()") == 1 and src.count("_L.join()") == 1
    world = World()
    want = world.load(source)["call"](inputs())
    launcher = SimLauncher(prog.preds, (0,) * n, tuple(range(n)))
    world.launcher = launcher
    got = build_call(prog, world.load(source), (0,) * n, tuple(range(n)), launcher)(inputs())
    assert launcher.violations == [] and launcher.launched == n
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    timed = streamed_source(prog, (0,) * n, tuple(range(n)), timed=True)
    assert timed.count("_L.tick(") == n and timed.count("del ") == source.count("del ")


def test_what_frees_during_the_call_by_schedule():
    prog = parse_wrapper(GPT2_LIKE)
    assert "del " in streamed_source(prog, (0, 1, 0), (0, 1, 2))  # several streams: the default frees
    assert "del " not in streamed_source(prog, (0, 1, 0), (0, 1, 2), free=False)
    assert "del " not in streamed_source(prog, (0, 0, 0), (1, 0, 2))  # one stream in another order: held
    assert streamed_source(prog, (0, 0, 0), (0, 1, 2)).count("del ") == 2  # the program's own frees


def _run(source: str, stream, order, *, free: bool):
    prog = parse_wrapper(source)
    world = World()
    launcher = SimLauncher(prog.preds, stream, order)
    world.launcher = launcher
    got = build_call(prog, world.load(source), stream, order, launcher, free=free)(inputs())
    return got, launcher


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), streams=st.integers(2, 4), order_seed=st.integers(0, 1000))
def test_freeing_on_several_streams_hands_memory_on_only_in_order(seed, streams, order_seed):
    # Lazy allocation on the first user's stream and release after a same-stream launch ordered after every
    # user: the simulated allocator's per-stream pools then never give a block to a kernel while an earlier
    # holder on another stream may still use it, and the outputs are the original call's.
    source = random_wrapper(seed, kernels=16)
    prog = parse_wrapper(source)
    rng = random.Random(order_seed)
    stream = tuple(rng.randrange(streams) for _ in range(prog.num_kernels))
    order = _random_topological_order(prog, rng)
    want = World().load(source)["call"](inputs())
    got, launcher = _run(source, stream, order, free=True)
    assert launcher.violations == []
    assert launcher.launched == prog.num_kernels
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    _, held = _run(source, stream, order, free=False)
    assert launcher.peak <= held.peak


def test_freeing_lowers_the_memory_a_long_chain_holds():
    for seed in range(10):
        source = random_wrapper(seed, kernels=24)
        prog = parse_wrapper(source)
        stream = tuple(k % 2 for k in range(prog.num_kernels))
        order = tuple(range(prog.num_kernels))
        src = streamed_source(prog, stream, order, free=True)
        assert "del " in src and "del " not in streamed_source(prog, stream, order, free=False)
        _, freed = _run(source, stream, order, free=True)
        _, held = _run(source, stream, order, free=False)
        assert freed.violations == [] and freed.peak < held.peak, (seed, freed.peak, held.peak)


def test_a_buffer_is_allocated_with_its_first_users_stream_current():
    prog = parse_wrapper(GPT2_LIKE)
    src = streamed_source(prog, (1, 0, 0), (0, 1, 2), free=True)
    # buf0's first user, kernel 0, runs on stream 1: its allocation is made there, after the fork
    assert src.index("_L.fork()") < src.index("buf0 = empty_strided_cuda")
    assert "with _L.on(1):\n                buf0 = empty_strided_cuda" in src


def test_a_simulated_premature_free_is_caught(monkeypatch):
    # The simulator's model is what the freeing rule is checked against: freeing each buffer as soon as its last
    # user is launched, whatever the stream and without ordering, must show as a violation.
    import opara_runtime.fused.kernel_streams as ks

    ordered = ks._Frees.after

    def unordered(self, k):
        ordered(self, k)
        out = sorted(x for x in self.ready if x in self.home)
        self.ready.difference_update(out)
        return out
    monkeypatch.setattr(ks._Frees, "after", unordered)
    found = []
    for seed in range(40):
        source = random_wrapper(seed, kernels=16)
        n = parse_wrapper(source).num_kernels
        _, launcher = _run(source, tuple((k * 7 + seed) % 3 for k in range(n)), tuple(range(n)), free=True)
        found += launcher.violations
    assert any("may still be using" in v for v in found)
