"""The kernel-level search without a GPU: compiling, capturing and timing are faked; what is tested is that every
plan is captured once and its runner serves the calibration, the bit-for-bit check and the timing, that a schedule
which does not reproduce the one-stream program (or cannot be captured) is dropped, and that the guard's
head-to-head against the segment-level plan runs on those runners."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

import opara_runtime.fused as fused_pkg
from oparac.profile import measure
from oparac.schedule.dag import Dag
from opara_plan import HIGH_PRIORITY, validate
from oparac.search import guard, kernels, tune

CPU = torch.device("cpu")
# A diamond and a tail: 0 -> {1, 2} -> 3, and 4 on its own, so the uncapped schedule uses several streams.
EDGES = [(0, 1), (0, 2), (1, 3), (2, 3)]
MS = (0.2, 0.3, 0.3, 0.1, 0.4)


class FakeRunner:
    """What the search uses of a captured runner: its device, a call returning outputs, a graph to time."""

    def __init__(self, label: str, ms: float, output: torch.Tensor) -> None:
        self.device, self.label, self.output = CPU, label, output
        self.captured = type("Captured", (), {"graph": (label, ms)})()

    def __call__(self, *inputs):
        return (self.output.clone(),)


def _kernel_dag(monkeypatch, edges, ms):
    """kernel_dag faked: the whole graph's kernels are `ms` long with dependencies `edges`."""
    monkeypatch.setattr(kernels, "kernel_dag", lambda programs, base, device: kernels.KernelDag(
        dag=Dag.from_edges(len(ms), edges), ms=ms, launch=("triton",) * len(ms), digest="ab" * 32))


@pytest.fixture
def world(monkeypatch):
    """Fakes for compile_whole, kernel_dag, the artifact, timed_runner and replay timing; returns the record of
    what was built and timed, and the knobs (per-schedule replay ms, outputs, failures)."""
    rec = {"built": Counter(), "timed": [], "ms": {}, "differs": set(), "fails": set(), "configs": [], "ran": {}}

    def label(plan) -> str:
        if not plan.fusion.backend:
            return "unfused"
        if plan.fusion.mode != "kernels":
            return "segments"
        return plan.fusion.kernels.algorithm

    def timed_runner(plan, weights, device, devices=None, compiled=None):
        name = label(plan)
        rec["built"][name] += 1
        rec["ran"][name] = compiled
        if name in rec["fails"]:
            raise RuntimeError("capture failed")
        out = torch.ones(2) * (2.0 if name in rec["differs"] else 1.0)
        return FakeRunner(name, rec["ms"].get(name, 1.0), out)

    def replays(graph, device, *, repeats, replays):
        rec["timed"].append(graph[0])
        return graph[1]

    def compile_whole(plan, weights, device, config=None):
        rec["configs"].append(config)
        return [type("P", (), {"fn": rec.setdefault("program", object())})()], []
    monkeypatch.setattr(kernels, "compile_whole", compile_whole)
    _kernel_dag(monkeypatch, EDGES, MS)
    monkeypatch.setattr(fused_pkg, "artifact_bytes", lambda fn: b"program")
    monkeypatch.setattr(fused_pkg, "cache_key", lambda device: "cpu-test")
    monkeypatch.setattr(measure, "timed_runner", timed_runner)
    monkeypatch.setattr(tune, "timed_runner", timed_runner)  # measure_rounds captures through its own import
    monkeypatch.setattr(tune, "time_graph_replays", replays)
    return rec


def test_every_schedule_is_captured_once_and_the_fastest_kept(world, tiny_plan):
    world["ms"] = {"single/program": 1.0, "opara/opara": 0.7, "opara/opara/cap 4": 0.8, "opara/opara/cap 2": 0.9}
    search = kernels.kernel_fused(tiny_plan, {}, CPU, "inductor")
    assert search.plan.fusion.mode == "kernels" and search.plan.fusion.kernels.algorithm == "opara/opara"
    assert search.ms == 0.7 and search.head_to_head == {}
    assert set(world["built"].values()) == {1}, world["built"]
    assert "single/program" in world["built"] and "segments" not in world["built"]
    chosen = [c for c in search.plan.profile.candidates if c.chosen]
    assert len(chosen) == 1 and chosen[0].measured_ms == 0.7


def test_every_schedule_runs_the_program_compiled_here_and_rivals_their_own(world, tiny_plan):
    # loading the stored program for each schedule would write and import every kernel again
    kernels.kernel_fused(tiny_plan, {}, CPU, "inductor", rivals={"unfused": guard.single_stream(tiny_plan)})
    assert world["ran"].pop("unfused") is None
    assert world["ran"] and all(c == [world["program"]] for c in world["ran"].values())


def test_the_progress_line_gives_each_schedule_measured_and_predicted(world, tiny_plan):
    world["ms"] = {"single/program": 1.0, "opara/opara": 0.7}
    said = []
    search = kernels.kernel_fused(tiny_plan, {}, CPU, "inductor", said.append)
    [line] = [s for s in said if s.startswith("fuse: kernel schedules ")]
    for c in search.plan.profile.candidates:
        name = c.streams.removesuffix("+kernels")
        assert f"{name} (" in line and f"ms (predicted {c.predicted_ms:.4f})" in line
    # The one-stream program's forecast is its calibrated kernels' sum: the replay it was scaled to.
    assert "single (1 streams) 1.0000 ms (predicted 1.0000)" in line
    # and where the search's time went, so that a slow compile can be told apart from a slow search
    assert " s capturing and checking them, " in line and line.endswith(" s timing them")


def test_the_whole_graph_compiles_with_the_mode_options_unless_told_otherwise(world, monkeypatch, tiny_plan):
    from opara_runtime.fused import compile as compile_mod

    kernels.kernel_fused(tiny_plan, {}, CPU, "inductor", config={"combo_kernels": True})
    assert world["configs"] == [{"combo_kernels": True}]
    monkeypatch.undo()  # the real compile_whole, with inductor's compile stubbed out
    seen = []
    monkeypatch.setattr(compile_mod, "compile_here", lambda programs, base, config: seen.append(config))
    whole = kernels.whole_graph(tiny_plan, "inductor")
    w = {"w": torch.randn(3, 3)}
    kernels.compile_whole(whole, w, CPU)
    kernels.compile_whole(whole, w, CPU, {"combo_kernels": True})
    assert seen == [compile_mod.INDUCTOR_KERNEL_CONFIG, {"combo_kernels": True}]


def test_calibration_scales_the_times_to_the_one_stream_replay(world, tiny_plan):
    world["ms"] = {"single/program": 2.6}  # the kernels sum to 1.3 eagerly
    search = kernels.kernel_fused(tiny_plan, {}, CPU, "inductor")
    assert sum(search.plan.fusion.kernels.ms) == pytest.approx(2.6)


def test_a_schedule_that_does_not_reproduce_or_capture_is_dropped(world, tiny_plan):
    # on this DAG the schedules are one stream, uncapped (its cap of 4 is the same schedule), a cap of 2, and the
    # uncapped one with its critical path's streams raised
    world["ms"] = {"single/program": 1.0, "opara/opara": 0.5, "opara/opara/cap 2": 0.6, "opara/opara/prio": 0.4}
    world["differs"] = {"opara/opara", "opara/opara/prio"}
    world["fails"] = {"opara/opara/cap 2"}
    notes = []
    search = kernels.kernel_fused(tiny_plan, {}, CPU, "inductor", notes.append)
    assert search.plan.fusion.kernels.algorithm == "single/program" and search.ms == 1.0
    assert {c.streams for c in search.plan.profile.candidates} == {"single+kernels"}
    assert any("opara/opara dropped: its outputs differ" in n for n in notes)
    assert any("cap 2 dropped: it failed to run" in n for n in notes)
    # what was dropped is never timed; the final rounds time only what was kept
    assert "opara/opara" not in world["timed"] and set(world["timed"]) == {"single/program"}


def test_streams_are_not_tried_where_the_critical_path_leaves_them_too_little(world, monkeypatch, tiny_plan):
    # a chain of four and a short branch beside it: 1.02x at best, under STREAMS_MIN_BOUND
    edges, ms = [(0, 1), (1, 2), (2, 3)], (0.5, 0.5, 0.5, 0.5, 0.04)
    _kernel_dag(monkeypatch, edges, ms)
    world["ms"] = {"single/program": 2.0, "unfused": 2.2}
    notes = []
    search = kernels.kernel_fused(tiny_plan, {}, CPU, "inductor", notes.append,
                                  rivals={"unfused": guard.single_stream(tiny_plan)})
    assert search.plan.fusion.kernels.algorithm == "single/program"
    assert set(world["built"]) == {"single/program", "unfused"}  # no other schedule captured
    # one stream is timed for calibration and then only against the rival: no rounds of its own
    assert world["timed"].count("unfused") == tune.FINAL_ROUNDS
    assert world["timed"].count("single/program") == 1 + tune.FINAL_ROUNDS
    assert search.ms == 2.0 and search.head_to_head == {"unfused": 2.2, "kernels": 2.0}
    assert search.schedules == {"single": (2.0, pytest.approx(2.0))}
    assert any("not tried: the critical path allows streams at most 1.020x one stream, less than the 1.03x" in n
               for n in notes), notes
    assert search.plan.profile.guard.startswith("guard: kernel schedules on streams not tried (the critical path")
    assert "kept single (1 streams): single 2.0000 ms" in search.plan.profile.guard
    # without rivals the one stream still gets its final rounds
    world["timed"].clear()
    assert kernels.kernel_fused(tiny_plan, {}, CPU, "inductor").ms == 2.0
    assert world["timed"] == ["single/program"] * (1 + tune.FINAL_ROUNDS)


def test_the_streams_bound_is_the_kernels_sum_over_their_critical_path():
    def bound(n, edges, ms):
        return kernels.streams_bound(kernels.KernelDag(dag=Dag.from_edges(n, edges), ms=ms, launch=("triton",) * n,
                                                       digest="ab" * 32))
    assert bound(2, [], (1.0, 1.0)) == 2.0
    assert bound(3, [(0, 1)], (1.0, 2.0, 0.5)) == pytest.approx(3.5 / 3.0)
    assert bound(2, [(0, 1)], (0.0, 0.0)) == 1.0  # nothing timed: nothing to win


def test_a_rival_may_not_take_the_kernel_plans_name(world, tiny_plan):
    with pytest.raises(ValueError, match="may not be named 'kernels'"):
        kernels.kernel_fused(tiny_plan, {}, CPU, "inductor", rivals={"kernels": tiny_plan})


def test_a_schedule_the_runtime_would_refuse_is_not_tried(world, monkeypatch, tiny_plan):
    from opara_runtime.fused.wrapper_ir import parse_wrapper

    # kernel 1 computes a size that kernel 2's buffer is allocated with: several streams are refused
    prog = parse_wrapper(SIZED_BY_A_KERNEL)
    assert prog.num_kernels == 4
    monkeypatch.setattr(kernels, "kernel_dag", lambda programs, base, device: kernels.KernelDag(
        dag=Dag.from_edges(prog.num_kernels, prog.edges()), ms=(0.3, 0.1, 0.3, 0.3),
        launch=tuple(s.launch for s in prog.kernels), digest=prog.digest, wrapper=prog))
    notes = []
    search = kernels.kernel_fused(tiny_plan, {}, CPU, "inductor", notes.append)
    assert any("not tried: an allocation depends on n0" in n for n in notes), notes
    assert set(world["built"]) == {"single/program"} and search.plan.fusion.kernels.algorithm == "single/program"


SIZED_BY_A_KERNEL = '''
import torch
triton_poi_0 = async_compile.triton('triton_poi_0', """
@triton.jit
def triton_poi_0(in_ptr0, out_ptr0, xnumel, XBLOCK : tl.constexpr):
    pass
""", device_str='cuda')

def call(args):
    arg0_1, arg1_1 = args
    args.clear()
    with torch.cuda._DeviceGuard(0):
        buf0 = empty_strided_cuda((4, ), (1, ), torch.float32)
        triton_poi_0.run(arg0_1, buf0, 4, stream=stream0)
        n0 = buf0.sum().item()
        buf1 = empty_strided_cuda((n0, ), (1, ), torch.float32)
        triton_poi_0.run(arg1_1, buf1, 4, stream=stream0)
        buf2 = empty_strided_cuda((4, ), (1, ), torch.float32)
        triton_poi_0.run(arg1_1, buf2, 4, stream=stream0)
    return (buf0, buf1, buf2)
'''


def test_kernels_mode_on_an_unreadable_program_is_a_clear_error(monkeypatch, tiny_plan):
    from opara_plan import ModelError
    from opara_runtime.fused.wrapper_ir import WrapperFormatError
    from oparac.search import fused as fused_search

    def unreadable(*a, **k):
        raise WrapperFormatError("no compiled inductor graph found in the program")
    monkeypatch.setattr(kernels, "kernel_fused", unreadable)
    with pytest.raises(ModelError, match="fuse_mode 'kernels': no compiled inductor graph.*use fuse_mode 'segments'"):
        fused_search.tune_fused(tiny_plan, {}, CPU, "inductor", mode="kernels")


def _predicted(plan, gain: float):
    """`plan` with its schedule predicted at `gain` times its sequential time."""
    import dataclasses

    sched = dataclasses.replace(plan.schedule, predicted_ms=plan.profile.sequential_ms / gain)
    return dataclasses.replace(plan, schedule=sched)


def test_the_profile_rules_segments_out_when_streams_are_predicted_not_to_pay(tiny_plan):
    assert tiny_plan.schedule.num_streams == 2
    assert "one stream" in guard.segments_cannot_pay(guard.single_stream(tiny_plan))
    assert "1.10x one stream, less than the 1.18x" in guard.segments_cannot_pay(_predicted(tiny_plan, 1.1))
    assert guard.segments_cannot_pay(_predicted(tiny_plan, 1.3)) is None


def _fuse_default(plan, notes):
    from oparac import pipeline
    from oparac.options import CompileOptions
    from oparac.progress import as_progress

    # device 'cuda' only selects the GPU path; every compile, capture and timing below is faked
    return pipeline.fuse_stage(plan, {}, torch.device("cuda"), CompileOptions(fuse="inductor"),
                               as_progress(notes.append))


def test_a_default_plan_whose_segments_cannot_pay_compiles_only_the_whole_graph(world, monkeypatch, tiny_plan):
    from oparac.fuse import segments

    monkeypatch.setattr(segments, "measure_fused_runner", lambda *a: pytest.fail("segments were compiled"))
    world["ms"] = {"single/program": 1.0, "opara/opara": 0.8, "opara/opara/cap 2": 0.9}
    notes = []
    out = _fuse_default(_predicted(tiny_plan, 1.05), notes)
    assert out.fusion.mode == "kernels" and out.fusion.kernels.algorithm == "opara/opara"
    # tiny_plan was made on the CPU, so its op times are the cost model's, and the guard says so
    assert out.profile.guard.startswith("guard: segments not compiled (the cost model predicts the 2-stream "
                                        "schedule at 1.05x one stream")
    assert "kept opara/opara" in out.profile.guard and "segments" not in world["built"]
    assert any("segments not compiled" in n for n in notes)
    # the plan written is the fastest the search measured, one stream included
    measured = {c.streams: c.measured_ms for c in out.profile.candidates if c.measured_ms >= 0}
    assert measured["single+kernels"] == 1.0 and min(measured.values()) == 0.8
    validate(out)


def _no_segments(monkeypatch):
    from oparac.fuse import segments

    monkeypatch.setattr(segments, "measure_fused_runner", lambda *a: pytest.fail("segments were compiled"))


def _segments_measured_at(monkeypatch, ms: float) -> list:
    """measure_fused_runner faked: the segment plan's runner replays in `ms`; returns the plans it compiled."""
    from oparac.fuse import segments

    compiled = []
    runner = FakeRunner("segments", ms, torch.ones(2))
    monkeypatch.setattr(segments, "measure_fused_runner",
                        lambda plan, w, d: (compiled.append(plan) or plan, ms, runner))
    return compiled


def test_a_default_plan_compiles_the_whole_graph_first_and_skips_segments_that_cannot_beat_it(
        world, monkeypatch, tiny_plan):
    # Llama-style: the unfused streams are predicted at 1.3x, the kernels on streams measured 1.25x
    _no_segments(monkeypatch)
    world["ms"] = {"single/program": 1.0, "opara/opara": 0.8, "opara/opara/cap 2": 0.9, "unfused": 2.0}
    notes = []
    out = _fuse_default(_predicted(tiny_plan, 1.3), notes)
    assert out.fusion.mode == "kernels" and out.fusion.kernels.algorithm == "opara/opara"
    assert out.profile.guard.startswith("guard: segments not compiled (the profile predicts the 2-stream schedule "
                                        "at 1.30x one stream")
    assert "(1.25x their one stream) clearly needs 1.79x" in out.profile.guard
    assert out.profile.guard.endswith("the unfused plan on one stream: 2.0000 ms")
    assert notes[0].startswith("guard: compiling the whole graph first")
    validate(out)


def test_a_default_plan_compiles_segments_too_where_they_could_clearly_beat_the_kernels(
        world, monkeypatch, tiny_plan):
    compiled = _segments_measured_at(monkeypatch, 0.6)
    world["ms"] = {"single/program": 1.0, "opara/opara": 0.8, "opara/opara/cap 2": 0.9, "unfused": 2.0,
                   "segments": 0.6}
    notes = []
    out = _fuse_default(_predicted(tiny_plan, 3.5), notes)
    assert compiled and any(n.startswith("guard: compiling the segments too (the profile predicts") for n in notes)
    # timed against the kernel plan and the unfused plan in the same rounds, on the runner the segments were
    # measured on; the faster, segments, is written
    assert out.fusion.mode == "segments" and world["timed"].count("segments") > 0
    assert "segments" not in world["built"], "the segment plan was captured again"
    assert out.profile.guard.startswith("guard: kept: 0.6000 ms against 0.8000 ms for the whole graph's kernels on")
    validate(out)


def test_segments_compiled_next_to_the_kernel_plan_are_dropped_where_they_lose(world, monkeypatch, tiny_plan):
    _segments_measured_at(monkeypatch, 0.95)
    world["ms"] = {"single/program": 1.0, "opara/opara": 0.8, "opara/opara/cap 2": 0.9, "unfused": 2.0,
                   "segments": 0.95}
    out = _fuse_default(_predicted(tiny_plan, 3.5), [])
    assert out.fusion.mode == "kernels" and out.fusion.kernels.algorithm == "opara/opara"
    assert "the whole graph's kernels on 3 streams is faster: 0.8000 ms against 0.9500 ms" in out.profile.guard
    # the segment plan, the kernel plan, then the unfused plan on one stream, all from the one head-to-head
    last = out.profile.candidates[-3:]
    assert [(c.measured_ms, c.chosen) for c in last] == [(0.95, False), (0.8, True), (2.0, False)]
    assert last[2].streams == "single" and "segments" not in world["built"]
    validate(out)


def test_a_whole_graph_that_fails_to_compile_leaves_the_segments(monkeypatch, tiny_plan):
    from oparac.fuse import segments

    calls = []

    def crash(*a, **k):
        calls.append(1)
        raise RuntimeError("inductor: LoweringException on the whole graph")
    monkeypatch.setattr(kernels, "kernel_fused", crash)
    compiled, given = [], []
    monkeypatch.setattr(segments, "measure_fused_runner", lambda plan, w, d: (compiled.append(plan) or plan, 0.5, None))
    monkeypatch.setattr(guard, "guard_fused", lambda fused, ms, *a, **k: given.append(fused) or fused)
    notes = []
    out = _fuse_default(_predicted(tiny_plan, 3.5), notes)
    assert compiled and given == compiled and out.fusion.mode == "segments"
    assert calls == [1], "the whole graph is compiled once"
    assert any("whole graph failed to compile or run (RuntimeError: inductor: Lowering" in n for n in notes)


def test_segments_that_fail_to_compile_leave_the_measured_kernel_plan(world, monkeypatch, tiny_plan):
    from oparac.fuse import segments

    def fails(*a):
        raise RuntimeError("segment worker 3 exited with code 1")
    monkeypatch.setattr(segments, "measure_fused_runner", fails)
    world["ms"] = {"single/program": 1.0, "opara/opara": 0.8, "opara/opara/cap 2": 0.9, "unfused": 2.0}
    out = _fuse_default(_predicted(tiny_plan, 3.5), [])
    assert out.fusion.mode == "kernels" and out.fusion.kernels.algorithm == "opara/opara"
    assert out.profile.guard.startswith("guard: segments failed to compile (RuntimeError: segment worker 3 exited")
    validate(out)


def _search(schedules: dict) -> kernels.KernelSearch:
    best = min(schedules, key=lambda n: schedules[n][0])
    return kernels.KernelSearch(None, schedules[best][0], {}, schedules)


@pytest.mark.parametrize("predicted, schedules, worth", [
    # a Llama-style decoder (H200, fp16, b1): unfused 43 streams at 1.40x; kernels 0.5045 ms on one stream,
    # 0.4052 ms on 4 (that run did not record the forecast; 0.36 stands for one: any forecast gives this answer)
    (1.40, {"single": (0.5045, 0.5045), "opara/opara/cap 4": (0.4052, 0.36)}, False),
    # BERT-base: 1.18x predicted; the kernels on streams barely beat one stream
    (1.18, {"single": (0.5938, 0.5938), "opara/opara": (0.5855, 0.4659), "opara/opara/cap 2": (0.5746, 0.5310)},
     False),
    # HRNet-W18-small NCHW (suite-20261202T045957): 2.76x predicted; 4 streams of kernels measured 1.72x, 1.30x
    # slower than predicted; the NCHW segments measured 0.3943 ms against the kernels' 0.3947 there: a tie
    (2.76, {"single": (0.6768, 0.6745), "opara/opara/cap 4": (0.3935, 0.3018)}, False),
    # HRNet-W18-small NHWC (suite-20261202T051833): forecast 2.21x against 1.88x measured on 23 streams; the
    # segments compiled then measured 1.86x, 2% slower than the kernels: not a clear win
    (2.76, {"single": (0.5603, 0.5650), "opara/opara": (0.2988, 0.2390), "opara/opara/cap 4": (0.3399, 0.2855)},
     False),
    # merged convolutions, fp16, batch 8 (suite-20261204T181353, -182134, -182245): forecast at 1.08x, 1.02x and
    # 1.01x of what 0.8 needed, the segments won by 3% (GoogLeNet), lost by 2% (HRNet-W18-small), won by 7%
    # (Inception-v3), each for 25-28 s more compile
    (1.99, {"single": (0.4892, 0.4891), "opara/opara": (0.4246, 0.3322), "opara/opara/cap 16": (0.4253, 0.3322),
            "opara/opara/cap 2": (0.4453, 0.3719)}, False),
    (2.58, {"single": (0.6741, 0.6666), "opara/opara": (0.4708, 0.3328), "opara/opara/cap 4": (0.5023, 0.3588)},
     False),
    (1.79, {"single": (1.2278, 1.2271), "opara/opara": (1.0907, 0.8643), "opara/opara/cap 16": (1.0881, 0.8643)},
     False),
    # a graph far wider than its kernels' streams realise: segments forecast at 2.4x against 1.5x
    (3.0, {"single": (1.0, 1.0), "opara/opara": (0.6667, 0.5333)}, True),
    # a simulator that underrates streams is not taken at its word: its error counts as 1
    (1.7, {"single": (1.0, 1.0), "opara/opara": (0.9, 1.2)}, True),
])
def test_segments_may_beat_the_kernels_where_their_discounted_forecast_clearly_does(tiny_plan, predicted, schedules,
                                                                                    worth):
    ok, why = guard.segments_may_beat(_predicted(tiny_plan, predicted), _search(schedules))
    assert ok is worth, why
    assert f"at {predicted:.2f}x one stream" in why


def test_the_uncapped_kernel_schedule_is_held_to_the_runtimes_stream_limit():
    from opara_plan.validate import MAX_KERNEL_STREAMS

    n = MAX_KERNEL_STREAMS + 30  # that many independent kernels after one: the algorithm opens a stream each
    kd = kernels.KernelDag(dag=Dag.from_edges(n + 1, [(0, k) for k in range(1, n + 1)]), ms=(0.1,) * (n + 1),
                           launch=("triton",) * (n + 1), digest="ab" * 32)
    ks = kernels.kernel_schedule(kd, "opara", "opara", 0)
    assert ks.num_streams == MAX_KERNEL_STREAMS and ks.algorithm == f"opara/opara/cap {MAX_KERNEL_STREAMS}"
    assert kernels.kernel_schedule(kd, "opara", "opara", 16).num_streams == 16


def test_segments_are_fused_when_the_whole_graph_cannot_be_read(monkeypatch, tiny_plan):
    from opara_runtime.fused.wrapper_ir import WrapperFormatError
    from oparac.fuse import segments

    def unreadable(*a, **k):
        raise WrapperFormatError("no compiled inductor graph found in the program")
    monkeypatch.setattr(kernels, "kernel_fused", unreadable)
    compiled = []
    monkeypatch.setattr(segments, "measure_fused_runner", lambda plan, w, d: (compiled.append(plan) or plan, 0.5, None))
    monkeypatch.setattr(guard, "guard_fused", lambda fused, ms, *a, **k: fused)
    notes = []
    out = _fuse_default(guard.single_stream(tiny_plan), notes)
    assert compiled and out.fusion.mode == "segments"
    assert any("fusing segments instead" in n for n in notes)


def test_a_plan_that_kept_the_cost_models_op_times_is_timed_before_its_segments_are_cut(monkeypatch, tiny_plan):
    """profile_stage left a GPU plan the cost model's op times; where the whole graph then cannot be read, the
    segments are cut from a schedule on measured times."""
    import dataclasses

    from opara_plan import Target
    from opara_runtime.fused.wrapper_ir import WrapperFormatError
    from oparac import pipeline
    from oparac.fuse import segments

    def unreadable(*a, **k):
        raise WrapperFormatError("no compiled inductor graph found in the program")
    monkeypatch.setattr(kernels, "kernel_fused", unreadable)
    timed = []

    def measured(plan, dev, opts, cache, progress):
        timed.append(plan.profile.method)
        return dataclasses.replace(plan, profile=dataclasses.replace(plan.profile, method="cuda-graph"))
    monkeypatch.setattr(pipeline, "measured_profile", measured)
    cut = []
    monkeypatch.setattr(segments, "measure_fused_runner", lambda plan, w, d: (cut.append(plan) or plan, 0.5, None))
    monkeypatch.setattr(guard, "guard_fused", lambda fused, ms, *a, **k: fused)
    on_gpu = dataclasses.replace(guard.single_stream(tiny_plan), target=Target(device_type="cuda", gpu_name="H100"))
    out = _fuse_default(on_gpu, [])
    assert timed == ["cost-model"] and [p.profile.method for p in cut] == ["cuda-graph"]
    assert out.fusion.mode == "segments"
    timed.clear()
    _fuse_default(guard.single_stream(tiny_plan), [])  # a preview plan made on the CPU is not timed
    assert timed == []


def test_the_unfused_plan_is_written_where_it_beats_the_whole_graph(world, monkeypatch, tiny_plan):
    # ViT-B/16 fp16 at batch 8 on an H200: inductor's whole-graph program was slower than the eager kernels
    from oparac.fuse import segments

    monkeypatch.setattr(segments, "measure_fused_runner", lambda *a: pytest.fail("segments were compiled"))
    world["ms"] = {"single/program": 1.7, "opara/opara": 1.8, "opara/opara/cap 2": 1.9, "opara/opara/prio": 1.8,
                   "unfused": 1.1}
    out = _fuse_default(_predicted(tiny_plan, 1.05), [])
    assert not out.fusion.backend and out.schedule.num_streams == 1 and not out.fusion.programs
    assert out.profile.guard.startswith("guard: the unfused plan on one stream is faster: 1.1000 ms against "
                                        "1.7000 ms for the fused plan (segments not compiled")
    assert [c for c in out.profile.candidates if c.chosen][0].measured_ms == 1.1
    validate(out)


@pytest.mark.parametrize("requested, rival_layout", [("auto", "contiguous"), ("channels_last", "channels_last")])
def test_the_unfused_rival_has_the_layout_an_unfused_plan_gets(world, monkeypatch, tiny_plan, requested,
                                                               rival_layout):
    # Under 'auto' a fused convolution plan is NHWC but an unfused one NCHW (eager's kernels, bit for bit); a
    # layout the user named is kept for both.
    import dataclasses

    from oparac import pipeline
    from oparac.options import CompileOptions
    from oparac.progress import as_progress

    seen = []
    real = kernels.kernel_fused

    def spy(plan, *a, rivals=None, **k):
        seen.append(dict(rivals or {}))
        return real(plan, *a, rivals=rivals, **k)
    monkeypatch.setattr(kernels, "kernel_fused", spy)
    world["ms"] = {"single/program": 1.0, "opara/opara": 0.8, "unfused": 0.5}
    nhwc = dataclasses.replace(_predicted(tiny_plan, 1.05), model=dataclasses.replace(
        tiny_plan.model, memory_format="channels_last"))
    out = pipeline.fuse_stage(nhwc, {}, torch.device("cuda"),
                              CompileOptions(fuse="inductor", memory_format=requested), as_progress(None))
    [given] = seen
    assert given[guard.UNFUSED].model.memory_format == rival_layout
    assert not out.fusion.backend and out.model.memory_format == rival_layout  # it won, and is written so


def test_the_critical_paths_streams_are_raised_with_a_stream_off_the_path_as_stream_0():
    # 0 -> 1 -> 3 is the path (0.9 ms); 2 beside 1 and 4 on its own are off it
    kd = kernels.KernelDag(dag=Dag.from_edges(5, EDGES), ms=(0.2, 0.4, 0.3, 0.3, 0.1), launch=("triton",) * 5,
                           digest="ab" * 32)
    ks = kernels.kernel_schedule(kd, "opara", "opara", 0)
    on_path = {ks.stream[k] for k in (0, 1, 3)}
    assert 0 in on_path and ks.num_streams > len(on_path)
    raised = kernels.prioritized(kd, ks)
    assert raised.algorithm == "opara/opara/prio" and raised.launch_order == ks.launch_order
    assert raised.priority[0] == 0 and {raised.stream[k] for k in (0, 1, 3)} == {
        s for s, p in enumerate(raised.priority) if p == HIGH_PRIORITY}
    # the same schedule, its streams renumbered: kernels that shared a stream still do
    pairs = lambda s: {(a, b) for a in range(5) for b in range(5) if s[a] == s[b]}
    assert pairs(raised.stream) == pairs(ks.stream)
    # every stream on the path: nothing to raise
    assert kernels.prioritized(kd, kernels.one_stream(kd)) is None


def test_the_raised_schedule_is_kept_where_it_measures_fastest_and_the_plan_validates(world, tiny_plan):
    world["ms"] = {"single/program": 1.0, "opara/opara": 0.7, "opara/opara/cap 2": 0.9, "opara/opara/prio": 0.6}
    search = kernels.kernel_fused(tiny_plan, {}, CPU, "inductor")
    kept = search.plan.fusion.kernels
    assert kept.algorithm == "opara/opara/prio" and HIGH_PRIORITY in kept.priority and search.ms == 0.6
    validate(search.plan)
    # where it is slower the plain schedule is kept, with no priorities
    world["ms"]["opara/opara/prio"] = 0.8
    assert kernels.kernel_fused(tiny_plan, {}, CPU, "inductor").plan.fusion.kernels.priority == ()
