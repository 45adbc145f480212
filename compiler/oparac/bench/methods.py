"""Baselines and Opara plans timed the same way in one process (docs/design.md, section 8)."""
from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import asdict, dataclass

import torch
import torch.utils._pytree as pytree

from opara_runtime.workspaces import graph_owned_workspaces
from oparac.profile.measure import time_alternating, time_gpu, time_interleaved
from oparac.progress import Lines

METHODS = ("eager", "cudagraph", "torch_compile", "ort_cuda", "opara", "opara_tuned", "opara_fused",
           "opara_fused_tuned")
# Also understood, not run by default: "opara_math" (and "opara_math_tuned"): the plan with --attention math,
# which only differs from "opara" on models with attention; "opara_cl" and "opara_fused_cl" (any "_cl"
# method): the plan with --memory-format channels_last, for convolution models; "opara_fused_coarse": the fused
# plan with --cut coarse; "opara_fused_kernels" (and "opara_fused_segments"): the fused plan with --fuse-mode kernels
# (the whole graph fused, its kernels on streams) or segments; "opara_default": `--fuse inductor` with every other
# option at its default (layout 'auto', fuse mode 'auto', the guard), which is what a user gets;
# "opara_default_cl" and "opara_default_nchw": that plan with the layout fixed (NHWC, NCHW) instead of 'auto',
# to measure what 'auto' chooses between; "opara_default_unmerged": that plan with --no-merge-projections (any
# "_unmerged" method; "opara_default_merged" named the default plan with merging when it was not the default);
# "opara_default_noconvmerge": that plan with --no-merge-convolutions (any "_noconvmerge" method;
# "opara_default_convmerge" named the default plan with merged convolutions when they were not the default).
DEFAULT_LAYOUTS = {"opara_default": None, "opara_default_cl": "channels_last", "opara_default_nchw": "contiguous",
                   "opara_default_merged": None, "opara_default_unmerged": None, "opara_default_convmerge": None,
                   "opara_default_noconvmerge": None}


@dataclass
class Record:
    model: str
    batch: int
    dtype: str
    method: str
    ms_b2b: float | None = None
    ms_latency: float | None = None
    compile_s: float | None = None
    peak_mem_mb: float | None = None
    max_abs_diff: float | None = None
    error: str | None = None
    plan: str | None = None  # what an Opara method ran (plan_label): shows what the tuners chose
    # kernel-level plans: the longest path of the compiled program's measured kernel times, the bound any
    # schedule of those kernels can reach (BENCHMARKS.md reports it as a fraction of the replay time)
    critical_path_ms: float | None = None
    critical_path_calibrated: bool | None = None  # its kernel times were scaled to the one-stream replay
    # 'interleaved': timed in rounds with the other methods of its group (ms_b2b is the median of ms_b2b_rounds);
    # absent: timed alone, right after it was built
    timing: str | None = None
    ms_b2b_rounds: list[float] | None = None
    # Opara methods: where `oparac compile`'s time went (CompileLog): seconds per stage, and every progress line
    # inside them with the seconds since the compile began
    compile_stages: dict[str, float] | None = None
    compile_notes: list[list] | None = None
    # torch_compile: 'cold' where dynamo was reset before the compile (compiled_runner, from 2026-12-02); absent
    # in earlier records, whose compile could follow one of the same forward at another batch (report.py marks it)
    dynamo: str | None = None
    # 'empty' where the method compiled from empty inductor and Triton caches (cold_compile_caches, from
    # 2026-12-02T05:00); absent in earlier records, whose compile times after a group's first compile were warm
    caches: str | None = None
    # 'warm' where the group's process had imported dynamo, inductor and Triton before any method was built
    # (warm_imports, from 2026-12-06T21:30); absent in earlier records, where the group's first compiling method
    # (torch_compile, built before every Opara method) paid those first imports inside its compile time
    imports: str | None = None

    def as_dict(self) -> dict:
        d = asdict(self)
        if self.error is not None:
            for k in ("ms_b2b", "ms_latency", "compile_s", "peak_mem_mb", "max_abs_diff", "critical_path_ms",
                  "critical_path_calibrated"):
                d.pop(k)
        else:
            d.pop("error")
        if self.plan is None:
            d.pop("plan")
        for k in ("critical_path_ms", "critical_path_calibrated", "timing", "ms_b2b_rounds", "compile_stages",
                  "compile_notes", "dynamo", "caches", "imports"):
            if d.get(k, 0) is None:
                d.pop(k)
        return d


class CompileLog(Lines):
    """A compile's progress kept for the benchmark JSON: seconds per stage, and every line the CLI would print with
    the seconds since the log was made (the compile's start), so a slow compile shows which step took the time.
    echo: also a callable given every line (run.py --progress)."""

    def __init__(self, echo=None) -> None:
        super().__init__(self._keep)
        self.start = time.perf_counter()
        self.stages: dict[str, float] = {}
        self.notes: list[list] = []
        self.echo = echo

    def stage_finished(self, stage: str, seconds: float) -> None:
        self.stages[stage] = round(self.stages.get(stage, 0.0) + seconds, 3)
        super().stage_finished(stage, seconds)

    def _keep(self, line: str) -> None:
        self.notes.append([round(time.perf_counter() - self.start, 3), line])
        if self.echo is not None:
            self.echo(line)

    def fill(self, rec: "Record") -> None:
        rec.compile_stages, rec.compile_notes = dict(self.stages), list(self.notes)


def plan_label(plan) -> str:
    """A plan's schedule, streams, fusion and layout in a few words, e.g.
    'opara/opara, 8 streams, inductor 46 segments, channels_last'."""
    s = plan.schedule
    parts = [f"{s.stream_algorithm}/{s.order_algorithm}", f"{s.num_streams} streams"]
    if s.num_devices > 1:
        parts.append(f"{s.num_devices} GPUs")
    if plan.fusion.mode == "kernels":
        k = plan.fusion.kernels
        parts.append(f"{plan.fusion.backend} whole graph, {len(k.stream)} kernels on {k.num_streams} "
                     f"streams ({k.algorithm})")
    elif plan.fusion.backend:
        parts.append(f"{plan.fusion.backend} {len(plan.fusion.segments)} segments")
    if plan.model.memory_format != "contiguous":
        parts.append(plan.model.memory_format)
    return ", ".join(parts)


def max_abs_diff(got, want) -> float:
    return max((a.float() - b.float()).abs().max().item()
               for a, b in zip(pytree.tree_leaves(got), pytree.tree_leaves(want)))


class SequentialGraph:
    """The model's forward captured as one single-stream CUDA graph: the baseline Opara must beat."""

    def __init__(self, model, inputs) -> None:
        self.static = [x.clone() for x in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(3):
                model(*self.static)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), graph_owned_workspaces(), torch.cuda.graph(self.graph):
            self.out = model(*self.static)

    def __call__(self, *inputs):
        for buf, x in zip(self.static, inputs):
            buf.copy_(x, non_blocking=True)
        self.graph.replay()
        return pytree.tree_map_only(torch.Tensor, lambda t: t.clone(), self.out)


def build(method: str, model, inputs, device: torch.device, *, plan_options: dict | None = None):
    """Returns a callable running the model by `method` (setup, capture or compile included). A method that
    compiles (torch_compile, every Opara method) compiles from empty caches (cold_compile_caches)."""
    if compiles(method):
        with cold_compile_caches():
            return _build(method, model, inputs, device, plan_options)
    return _build(method, model, inputs, device, plan_options)


def compiles(method: str) -> bool:
    """Whether building `method` compiles (build then runs it inside cold_compile_caches)."""
    return method == "torch_compile" or method.startswith("opara")


@contextlib.contextmanager
def cold_compile_caches():
    """Inductor's and Triton's caches empty, as on a user's first compile, for what runs inside.

    Both keep what they compile on disk (inductor under TORCHINDUCTOR_CACHE_DIR: FX graphs, generated Python,
    autotuning; Triton its kernels under TRITON_CACHE_DIR), and inductor keeps loaded modules in memory, all
    shared by every compile of the process and the machine. The methods of one benchmark group compile many of
    the same kernels (torch.compile's program and a plan's whole graph, the segments of two plans), so each
    compile after the first would find them cached and record a warm compile time: until 2026-12-02T05:00 the
    compile times of a group's later methods were such. Inside, both folders are new and empty and the
    in-memory caches cleared (inductor's fresh_cache); inductor's compile workers are restarted first, since a
    worker process keeps the cache folder it started with. The folders are kept until the process exits: a
    compiled program may still load from them. Opara's own profile cache (OPARA_CACHE_DIR, by default in the
    user's home and so shared by every run on the machine) gets a new empty folder too: until 2026-12-06T22:00
    a group measured twice in one session profiled its ops only the first time."""
    import atexit
    import shutil
    import tempfile
    from unittest import mock  # patch.dict: the variable set inside, and as it was (or unset) after

    from torch._inductor import async_compile, utils

    root = tempfile.mkdtemp(prefix="opara-bench-cache-")
    atexit.register(shutil.rmtree, root, True)
    async_compile.shutdown_compile_workers()
    fresh_cache = getattr(utils, "fresh_cache", None) or utils.fresh_inductor_cache  # its name before torch 2.8
    with mock.patch.dict(os.environ, {"OPARA_CACHE_DIR": os.path.join(root, "opara-profiles")}), \
            fresh_cache(dir=root, delete=False):
        yield


def warm_imports(device: torch.device) -> None:
    """Compile and run a one-line function with torch.compile, from empty caches, and forget it: afterwards the
    process has imported what every compiling method imports on its first compile (dynamo, inductor, Triton and
    their dependencies). A group's methods are built one after another in one process, so without this the first
    to compile (torch_compile) would carry those imports in its compile time and the methods after it not (on
    the device machines, whose packages keep no compiled bytecode, that was seconds). A user's fresh process
    pays them once whichever compiler it runs, so neither side is charged here."""
    with cold_compile_caches():
        torch._dynamo.reset()
        x = torch.ones(8, device=device)
        torch.compile(lambda t: t * 2 + 1)(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        torch._dynamo.reset()


def _build(method: str, model, inputs, device: torch.device, plan_options: dict | None):
    if method == "eager":
        def eager(*xs):
            with torch.no_grad():
                return model(*xs)
        return eager
    if method == "cudagraph":
        return SequentialGraph(model, inputs)
    if method == "torch_compile":
        return compiled_runner(model, inputs, mode="reduce-overhead")
    if method == "ort_cuda":
        from oparac.bench.ort_baseline import ort_cuda_runner

        return ort_cuda_runner(model, inputs)
    if method.startswith("opara"):
        import opara_runtime
        from oparac.pipeline import compile

        options = dict(plan_options or {})
        if "fused" in method:
            options["fuse"] = "inductor"
        if "math" in method:
            options["attention"] = "math"
        if "coarse" in method:
            options["cut"] = "coarse"
        if "unmerged" in method:
            options["merge_projections"] = False
        if "noconvmerge" in method:
            options["merge_convolutions"] = False
        elif "convmerge" in method:
            options["merge_convolutions"] = True
        if "kernels" in method:
            options["fuse_mode"] = "kernels"
        elif "segments" in method:
            options["fuse_mode"] = "segments"
        # Each method names one layout, so a method means the same in every run: the plain fused methods stay
        # NCHW (what they measured before 'auto' made NHWC the default of a fused convolution plan); *_cl is
        # NHWC, which is what `--fuse inductor` now gives a convolution model; the tuned ones leave the layout
        # to 'auto', which lets the fused tuner try both.
        if method.startswith("opara_default"):  # `oparac compile --fuse inductor`, other options at their default
            if method not in DEFAULT_LAYOUTS:
                raise ValueError(f"unknown method {method!r}: expected one of {', '.join(DEFAULT_LAYOUTS)}")
            options["fuse"] = "inductor"
            if DEFAULT_LAYOUTS[method]:
                options["memory_format"] = DEFAULT_LAYOUTS[method]
        elif method.endswith("_cl"):
            options["memory_format"] = "channels_last"
        elif not method.endswith("tuned"):
            options["memory_format"] = "contiguous"
        plan = compile(model, inputs, device=device, tune=method.endswith("tuned"), **options)
        # The plan was compiled in this process a moment ago, so its stored programs are its own.
        return opara_runtime.load(plan, model, device=device, trust_compiled_code=True)
    raise ValueError(f"unknown method {method!r}")


def zoo_model(name: str, batch: int, dtype: str, device: torch.device):
    """(model, inputs, reference): oparac.models.zoo's `name` at `batch` in `dtype` on `device`, in eval mode,
    its floating-point inputs in `dtype` too, and its eager output on them."""
    from oparac.models import zoo

    model, inputs = getattr(zoo, name)(batch)
    dt = getattr(torch, dtype)
    model = model.to(device=device, dtype=dt).eval()
    inputs = tuple((x.to(dt) if x.is_floating_point() else x).to(device) for x in inputs)
    with torch.no_grad():
        reference = model(*inputs)
    return model, inputs, reference


def compiled_runner(model, inputs, **compile_kwargs):
    """torch.compile(model, **compile_kwargs) as a no-grad callable, compiled and warmed up (three calls: a CUDA
    graph is recorded on the second or third) on `inputs`.

    Each build starts from a cold dynamo, as a user's fresh process does: dynamo keeps per-code-object state
    across torch.compile calls, so the same model class compiled before at another batch would be recompiled
    with that dimension symbolic (automatic dynamic shapes), a different and slower program than a first compile,
    and the recorded compile time would be a warm one."""
    torch._dynamo.reset()
    compiled = torch.compile(model, **compile_kwargs)

    def run(*xs):
        with torch.no_grad():
            return compiled(*xs)
    for _ in range(3):
        run(*inputs)
    return run


def bench_method(method: str, name: str, model, inputs, dtype: str, device: torch.device, reference,
                 *, iters: int = 200, warmup: int = 20, plan_options: dict | None = None) -> Record:
    rec = Record(model=name, batch=int(inputs[0].shape[0]), dtype=dtype, method=method,
                 caches="empty" if compiles(method) else None)
    return measure_into(rec, lambda: build(method, model, inputs, device, plan_options=plan_options), inputs,
                        reference, device, iters=iters, warmup=warmup)


def measure_into(rec: Record, make, inputs, reference, device: torch.device, *, iters: int, warmup: int) -> Record:
    """Fill `rec` from the callable `make()` builds: setup time, timings, peak memory, error vs reference.
    A method that cannot run is recorded with its error, not raised."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    fn = build_into(rec, make, inputs, reference, device)
    if fn is not None:
        try:
            timing = time_gpu(lambda: fn(*inputs), device, iters=iters, warmup=warmup)
            rec.ms_b2b, rec.ms_latency = timing.ms_b2b, timing.ms_latency
            rec.peak_mem_mb = (torch.cuda.max_memory_allocated(device) - before) / 2**20  # the timed calls too
        except Exception as e:  # a baseline that cannot run is reported, not fatal
            rec.error = _error(e)
    fn = None
    free_cached_memory([rec])
    return rec


def measure_group(recs: list[Record], makes: list, inputs, reference, device: torch.device, *, rounds: int,
                  iters: int, warmup: int) -> list[Record]:
    """Build every method of one model, batch and dtype, then time them together (time_interleaved, and the
    latency by time_alternating): each method's figure is taken at the same moments as the others'. A method
    that cannot be built is recorded with its error and left out of the timing."""
    fns = {}
    for rec, make in zip(recs, makes, strict=True):
        fn = build_into(rec, make, inputs, reference, device)
        if fn is not None:
            fns[rec.method] = (lambda f=fn: f(*inputs))
    if fns:
        try:
            b2b = time_interleaved(fns, device, rounds=rounds, iters=iters, warmup=warmup)
            walls = time_alternating(fns, device, iters=100, warmup=5)
        except Exception as e:  # which method failed is not known here: none of them has a figure
            for rec in recs:
                if rec.method in fns:
                    rec.error = f"timing the group failed: {_error(e)}"[:300]
        else:
            for rec in recs:
                if rec.method in fns:
                    rec.ms_b2b, rec.ms_b2b_rounds = statistics.median(b2b[rec.method]), b2b[rec.method]
                    rec.ms_latency, rec.timing = statistics.median(walls[rec.method]), "interleaved"
    fns.clear()
    free_cached_memory(recs)
    return recs


def free_cached_memory(recs: list[Record]) -> bool:
    """torch.cuda.empty_cache() after a group; False where it reports a CUDA error the group's work left behind.

    An error such as an illegal memory access is reported by whatever call synchronizes next, and it poisons the
    process: every figure taken since may be wrong. Each of `recs` then drops its figures and says so (keeping
    an error it already had), so the group's results are written with the reason instead of its process dying
    with nothing written (benchmarks/group_probe.py finds the step that failed)."""
    try:
        torch.cuda.empty_cache()
    except Exception as e:  # the CUDA context is unusable: report it in every record
        for rec in recs:
            rec.ms_b2b = rec.ms_latency = rec.ms_b2b_rounds = rec.timing = None
            rec.error = rec.error or f"a CUDA error surfaced after the group ran, figures dropped: {_error(e)}"[:300]
        return False
    return True


def build_into(rec: Record, make, inputs, reference, device: torch.device):
    """The callable `make()` builds, run once; fills `rec`'s setup time, plan, peak memory of the setup and that
    call (beyond what was allocated before), and error vs reference. None (and `rec.error`) where it cannot be
    built or run."""
    try:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        t0 = time.perf_counter()
        fn = make()
        torch.cuda.synchronize(device)
        rec.compile_s = time.perf_counter() - t0
        if rec.method == "torch_compile":
            rec.dynamo = "cold"  # compiled_runner resets dynamo before it compiles
        if getattr(fn, "plan", None) is not None:  # an Opara runner
            rec.plan = plan_label(fn.plan)
            if fn.plan.fusion.mode == "kernels":
                rec.critical_path_ms = fn.plan.fusion.kernels.critical_path_ms
                rec.critical_path_calibrated = True
        out = fn(*inputs)
        torch.cuda.synchronize(device)
        rec.peak_mem_mb = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        rec.max_abs_diff = max_abs_diff(out, reference)
        return fn
    except Exception as e:  # a baseline that cannot run is reported, not fatal
        rec.error = _error(e)
        return None


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]


def measure_pair(plan, model, device: torch.device) -> tuple[float, float]:
    """(sequential CUDA graph ms, plan ms), back-to-back, for `oparac demo`."""
    import opara_runtime
    from oparac.verify import inputs_for

    runner = opara_runtime.load(plan, model, device=device)
    inputs = inputs_for(plan, device)
    model = model.to(device)
    seq = SequentialGraph(model, inputs)
    return time_gpu(lambda: seq(*inputs), device).ms_b2b, time_gpu(lambda: runner(*inputs), device).ms_b2b
