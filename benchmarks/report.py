"""BENCHMARKS.md from result JSON files: one table per file, figures as measured, ratios computed here."""
from __future__ import annotations

import json
import sys
from pathlib import Path

TARGETS_VS_CUDAGRAPH = {"googlenet": 1.6, "inception_v3": 1.45, "nasnet": 1.9}
ORDER = ("eager", "cudagraph", "torch_compile", "ort_cuda", "opara", "opara_cl", "opara_tuned", "opara_math",
         "opara_math_tuned", "opara_fused", "opara_fused_cl", "opara_fused_coarse",
         "opara_fused_tuned", "opara_fused_kernels", "opara_default", "opara_default_cl",
         "opara_default_nchw")


def _fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def _warm(tc: dict | None) -> str:
    """The mark of a ratio against a torch.compile that was a dynamic-shape recompile (mark_warm_dynamo)."""
    return " (dyn)" if tc and tc.get("warm_dynamo") else ""


def table(result: dict) -> str:
    rows = result["records"]
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["batch"], r["dtype"]), {})[r["method"]] = r
    lines = [f"GPU **{result['gpu']}**, torch {result['torch']}, CUDA {result['cuda']}, run {result['date']}.",
             "",
             "| model | batch | dtype | method | ms b2b | ms latency | vs cudagraph (b2b) | vs torch.compile (b2b) "
             "| compile s | peak MiB | max abs diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (model, batch, dtype), methods in groups.items():
        seq = methods.get("cudagraph", {}).get("ms_b2b")
        tc = methods.get("torch_compile", {}).get("ms_b2b")
        for name in ORDER:
            r = methods.get(name)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {model} | {batch} | {dtype} | {name} | not run: {r['error']} | | | | | | |")
                continue
            ms = r["ms_b2b"]
            vs_seq = f"{seq / ms:.2f}x" if seq else "-"
            vs_tc = f"{tc / ms:.2f}x{_warm(methods['torch_compile'])}" if tc else "-"
            lines.append(f"| {model} | {batch} | {dtype} | {name} | {ms:.3f} | {r['ms_latency']:.3f} | {vs_seq} | "
                         f"{vs_tc} | {_fmt(r['compile_s'], '.1f')} | {_fmt(r['peak_mem_mb'], '.1f')} | "
                         f"{_fmt(r['max_abs_diff'], '.1e')} |")
    return "\n".join(lines)


def targets(result: dict) -> str:
    by = {(r["model"], r["batch"], r["dtype"], r["method"]): r for r in result["records"] if "error" not in r}
    lines = ["| model | target vs cudagraph | opara | opara_tuned | met? | beats torch.compile? |", "|---|---|---|---|---|---|"]
    for model in sorted({r["model"] for r in result["records"]}):
        seq = by.get((model, 1, "float32", "cudagraph"))
        tc = by.get((model, 1, "float32", "torch_compile"))
        if not seq:
            continue
        best = {}
        for m in ("opara", "opara_tuned"):
            r = by.get((model, 1, "float32", m))
            best[m] = seq["ms_b2b"] / r["ms_b2b"] if r else None
        goal = TARGETS_VS_CUDAGRAPH.get(model, 1.0)
        got = max((v for v in best.values() if v is not None), default=None)
        fastest = min((by[(model, 1, "float32", m)]["ms_b2b"] for m in ("opara", "opara_tuned")
                       if (model, 1, "float32", m) in by), default=None)
        beats = "-" if not tc or fastest is None else ("yes" if fastest < tc["ms_b2b"] else "no")
        lines.append(f"| {model} | {goal:.2f}x | {_fmt(best['opara'], '.2f')}x | {_fmt(best['opara_tuned'], '.2f')}x | "
                     f"{'yes' if got is not None and got >= goal else 'no'} | {beats} |")
    return "\n".join(lines)


# Zoo models whose top-level forward is one code object (oparac.models.zoo.HiddenStates): dynamo keeps its
# automatic-dynamic state per code object, so these count as one forward below.
SHARED_FORWARD = {"gpt2": "HiddenStates", "llama": "HiddenStates"}


def mark_warm_dynamo(records: list[dict]) -> None:
    """Marks `warm_dynamo` on each torch_compile record of one run (in the order it was measured) that was
    compiled, without a dynamo reset, after the same forward at another batch: dynamo then made the batch
    symbolic (automatic dynamic shapes), so it timed a dynamic-shape program, not a first compile's."""
    last: dict[str, int] = {}
    for r in records:
        if r["method"] != "torch_compile":
            continue
        forward = SHARED_FORWARD.get(r["model"], r["model"])
        if r.get("dynamo") != "cold" and last.get(forward, r["batch"]) != r["batch"]:
            r["warm_dynamo"] = True
        last[forward] = r["batch"]


RIVALS = frozenset({"cudagraph", "torch_compile"})


def _rivals(group: list[dict]) -> set:
    """The baselines a group of records measured without error."""
    return {rec["method"] for rec in group if "error" not in rec} & RIVALS


def merge(paths: list[Path]) -> dict:
    """Records of several runs of one session (same GPU, torch and CUDA) as one result."""
    paths = sorted(paths)
    results = [json.loads(Path(p).read_text()) for p in paths]
    for r in results:
        mark_warm_dynamo(r["records"])
    first = results[0]
    for r in results[1:]:
        if (r["gpu"], r["torch"], r["cuda"]) != (first["gpu"], first["torch"], first["cuda"]):
            raise SystemExit(f"cannot merge runs of different machines: {r['gpu']} vs {first['gpu']}")
    dates = sorted(r["date"] for r in results)
    # Ratios compare methods of one run: each (model, batch, dtype) group comes whole from the newest file
    # (names sort by time) that measured it. A newer run in which every method of a group failed (its process
    # died, say) does not erase the measurement before it: it is kept aside as `failed`, which the never-lose
    # table lists under its rows. Nor does a newer run of neither rival (the default plan alone, run again for
    # its compile log): it has no ratio to show, so a group that has one stays.
    groups: dict[tuple, list] = {}
    failed: dict[tuple, dict] = {}
    for r, path in zip(results, paths):
        mine: dict[tuple, list] = {}
        for rec in r["records"]:
            mine.setdefault((rec["model"], rec["batch"], rec["dtype"]), []).append(rec)
        for key, group in mine.items():
            if all("error" in rec for rec in group):
                failed[key] = {"file": Path(path).name, "error": group[0]["error"]}
            elif key in groups and _rivals(groups[key]) and not _rivals(group):
                continue
            else:
                groups[key] = group
                failed.pop(key, None)
    records = [rec for group in groups.values() for rec in group]
    return {"gpu": first["gpu"], "torch": first["torch"], "cuda": first["cuda"],
            "date": dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}", "records": records,
            "failed": failed}


FUSED_TARGETS_VS_TORCH_COMPILE = {"googlenet": 1.25, "inception_v3": 1.25, "nasnet": 1.25, "resnet50": 1.0,
                                  "densenet121": 1.0, "bert": 1.0}


def fused_targets(result: dict) -> str:
    """Batch 1, per dtype: the best fused plan against torch.compile, back-to-back and per-call latency."""
    by = {(r["model"], r["batch"], r["dtype"], r["method"]): r for r in result["records"] if "error" not in r}
    lines = ["| model | dtype | target b2b | fused b2b vs torch.compile | met? | fused latency ms | torch.compile "
             "latency ms | latency better? |", "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["model"], r["dtype"]) for r in result["records"] if r["batch"] == 1})
    for model, dtype in keys:
        tc = by.get((model, 1, dtype, "torch_compile"))
        # Every fused configuration a user can compile counts (default, tuned, channels_last, coarse); the
        # table names the one that won.
        fused = [r for (m, b, d, method), r in by.items() if (m, b, d) == (model, 1, dtype)
                 and method.startswith("opara_fused")]
        if not tc or not fused:
            continue
        best = min(fused, key=lambda r: r["ms_b2b"])
        goal = FUSED_TARGETS_VS_TORCH_COMPILE.get(model, 1.0)
        ratio = tc["ms_b2b"] / best["ms_b2b"]
        lat = min(r["ms_latency"] for r in fused)
        lines.append(f"| {model} | {dtype} | {goal:.2f}x | {ratio:.2f}x{_warm(tc)} ({best['method']}) | "
                     f"{'yes' if ratio >= goal else 'no'} | {lat:.3f} | {tc['ms_latency']:.3f} | "
                     f"{'yes' if lat < tc['ms_latency'] else 'no'} |")
    return "\n".join(lines)


def serving(paths: list[Path]) -> str:
    """One table per serving load test (benchmarks/serve_load.py): each method at each number of callers."""
    lines = []
    for path in paths:
        r = json.loads(path.read_text())
        lines += [f"GPU **{r['gpu']}**, torch {r['torch']}, CUDA {r['cuda']}, run {r['date']} "
                  f"(`benchmarks/results/{path.name}`): {r['model']} at batch {r['batch']}, a plan of "
                  f"{r['plan_streams']} streams; each row at most {r['requests']} calls or {r['duration_s']:g} s; "
                  f"torch.compile in mode `{r['compile_mode']}` behind a lock.", "",
                  "| method | callers | calls/s | p50 ms | p99 ms | max abs diff |", "|---|---|---|---|---|---|"]
        for rec in r["records"]:
            flags = rec.get("max_abs_err_vs_default_flags")
            diff = f"{rec['max_abs_err']:.1e}" + (f" ({flags:.1e})" if flags is not None else "")
            lines.append(f"| {rec['method']} | {rec['callers']} | {rec['throughput_rps']:.1f} | {rec['p50_ms']:.3f} | "
                         f"{rec['p99_ms']:.3f} | {diff} |")
        lines += [""] + [f"- {line}" for line in r["summary"]["lines"]] + [""]
    return "\n".join(lines)


def _measured_groups(result: dict) -> dict[tuple, dict[str, dict]]:
    """(model, batch, dtype) -> method -> record, for the records that measured (no error)."""
    by: dict[tuple, dict[str, dict]] = {}
    for r in result["records"]:
        if "error" not in r:
            by.setdefault((r["model"], r["batch"], r["dtype"]), {})[r["method"]] = r
    return by


def never_lose(result: dict) -> str:
    """The default `--fuse inductor` plan against torch.compile (reduce-overhead) and the sequential CUDA graph,
    with the kernel-level plan and how close it comes to its critical path (the longest path of its compiled
    program's measured kernel times: no schedule of those kernels can be faster)."""
    by = _measured_groups(result)
    lines = [f"GPU **{result['gpu']}**, torch {result['torch']}, CUDA {result['cuda']}, run {result['date']}.", "",
             "| model | batch | dtype | torch.compile ms | default plan ms | vs torch.compile | vs cudagraph | "
             "default latency vs torch.compile | kernel-level ms | critical path ms | reached | max abs diff: "
             "default, torch.compile | compile s: default, torch.compile | of it measuring s | timed | what the "
             "default plan is |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (model, batch, dtype), m in sorted(by.items()):
        d, tc, seq, k = (m.get(x) for x in ("opara_default", "torch_compile", "cudagraph", "opara_fused_kernels"))
        # A run from before convolutions were merged by default that measured the plan with them merged: that
        # plan is what the default is now.
        d = m.get("opara_default_convmerge") or d
        if d is None:  # a run that built the default plan in each layout: the one 'auto' gives a convolution model
            d = m.get("opara_default_cl")
        if d is None:
            continue
        def ratio(base, key="ms_b2b"):
            return f"{base[key] / d[key]:.2f}x{_warm(base)}" if base else "-"  # only torch_compile is marked
        # Only a critical path of calibrated kernel times is a bound (earlier runs timed kernels eagerly, each
        # charged its event's cost, and overstated it).
        cp = next((x["critical_path_ms"] for x in (k, d) if x and x.get("critical_path_calibrated")), None)
        best = min(x["ms_b2b"] for x in (d, k) if x)
        lines.append(f"| {model} | {batch} | {dtype} | {_fmt(tc and tc['ms_b2b'])} | {d['ms_b2b']:.3f} | "
                     f"{ratio(tc)} | {ratio(seq)} | {ratio(tc, 'ms_latency')} | {_fmt(k and k['ms_b2b'])} | "
                     f"{_fmt(cp)} | {f'{cp / best:.0%}' if cp else '-'} | {_fmt(d.get('max_abs_diff'), '.1e')}, "
                     f"{_fmt(tc and tc.get('max_abs_diff'), '.1e')} | {_compile_s(d)}, "
                     f"{_compile_s(tc)} | {_fmt(_measuring_s(d), '.1f')} | {d.get('timing', 'alone')} | "
                     f"{d.get('plan', '')}{'' if d['method'] == 'opara_default' else ' (' + d['method'] + ')'} |")
    for (model, batch, dtype), f in sorted(result.get("failed", {}).items()):
        lines += ["", f"A later run of {model} batch {batch} {dtype} failed in every method (`{f['file']}`: "
                      f"{f['error']}); its row, if any, is from the run before."]
    return "\n".join(lines)


def _measuring_s(rec: dict) -> float | None:
    """Seconds of a fused default compile after inductor compiled the whole graph, from its progress lines: what
    the kernel search and the guard add (capturing and timing the schedules, the rounds against the unfused plan on
    one stream) and the segments where they were compiled too. None where the run kept no progress lines or the
    whole graph was not compiled first."""
    def stamp(prefix: str) -> float | None:
        return next((t for t, line in rec.get("compile_notes") or () if line.startswith(prefix)), None)
    whole, done = stamp("fuse: whole graph compiled"), stamp("fuse: done in")
    return done - whole if whole is not None and done is not None else None


def _compile_s(rec: dict | None) -> str:
    """A compile time, marked *(shared)* where it was not compiled from empty caches (Record.caches): before
    2026-12-02T05:00 a group's methods shared inductor's and Triton's caches, so a later compile could be warm;
    and *(profile cached)* where Opara's compile found its op profile in the profile cache (its progress lines say
    so), which cold_compile_caches did not empty before 2026-12-06T22:00."""
    if not rec:
        return "-"
    cached = any(line == "profile: cache hit" for _, line in rec.get("compile_notes") or ())
    return (_fmt(rec.get("compile_s"), ".0f") + ("" if rec.get("caches") == "empty" else " (shared)")
            + (" (profile cached)" if cached else ""))


def layouts(result: dict) -> str:
    """The default plan built NHWC and NCHW in the same run (methods opara_default_cl, opara_default_nchw): what
    memory_format 'auto' chooses between for a model with convolutions."""
    by = _measured_groups(result)
    lines = ["| model | batch | dtype | NHWC ms | NCHW ms | NHWC gain | torch.compile ms |",
             "|---|---|---|---|---|---|---|"]
    for (model, batch, dtype), m in sorted(by.items()):
        cl, nchw, tc = (m.get(x) for x in ("opara_default_cl", "opara_default_nchw", "torch_compile"))
        if cl and nchw:
            lines.append(f"| {model} | {batch} | {dtype} | {cl['ms_b2b']:.3f} | {nchw['ms_b2b']:.3f} | "
                         f"{nchw['ms_b2b'] / cl['ms_b2b']:.2f}x | {_fmt(tc and tc['ms_b2b'])} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def write_markdown(paths: list[Path], out: Path) -> None:
    paths = [Path(p) for p in paths]
    result = merge(paths)
    names = ", ".join(f"`benchmarks/results/{p.name}`" for p in paths)
    text = ["# Benchmarks", "",
            f"Generated by `benchmarks/report.py` from {names}; every figure is what `benchmarks/run.py` "
            "measured. Do not edit by hand.", "",
            "Method (docs/design.md, section 8): each method is built and timed in the same process. *ms b2b*: N calls "
            "between two CUDA events, mean per call; where a row is *interleaved*, every method of its model, batch "
            "and dtype was built first and then timed in 15 rounds of 100 calls each, methods in turn, and *ms b2b* "
            "is the median of the rounds (earlier rows timed each method *alone*, right after building it). "
            "*ms latency*: median wall time of one call followed by a synchronize. Every method's call includes "
            "copying the input in and the output out, like a user's call. "
            "*cudagraph* is the model's forward captured as one single-stream CUDA graph; *torch_compile* is "
            "`torch.compile(mode=\"reduce-overhead\")`; *opara* is the default plan (opara streams, opara order), "
            "*opara_tuned* the plan chosen by `--tune`. Peak MiB is the peak allocated during the method's setup and "
            "run beyond what was allocated before (weights already on the GPU are not counted). *(dyn)* after a "
            "ratio against torch.compile: that torch.compile was compiled in a process that had compiled the same "
            "forward at another batch before, so dynamo made the batch symbolic (automatic dynamic shapes) and it "
            "ran a dynamic-shape program with a warm compile; such a ratio may favour Opara. From "
            "2026-12-02 every torch.compile build starts from a reset dynamo. *(shared)* after a compile time: that "
            "method compiled with inductor's and Triton's caches shared with the methods built before it in its "
            "group, so kernels they had compiled were cached and its compile time may be warm; from "
            "2026-12-02T05:00 every compiling method starts from empty caches.", "",
            (Path(__file__).resolve().parent / "notes.md").read_text(), "",
            "## Batch-1 targets (fp32, back-to-back, against the sequential CUDA graph)", "", targets(result), "",
            "## Fused and parallel (`--fuse inductor`) against torch.compile, batch 1", "", fused_targets(result), "",
            "## All measurements", "", table(result), ""]
    h200 = [p for p in sorted((Path(__file__).resolve().parent / "results").glob("suite-*.json"))
            if "H200" in json.loads(p.read_text())["gpu"] and p not in paths]
    if h200:
        merged = merge(h200)
        text += ["## Never lose: the default fused plan on other model families (H200)", "",
                 f"From {', '.join(f'`benchmarks/results/{p.name}`' for p in h200)}. *default plan* is "
                 "`oparac compile --fuse inductor` with every other option at its default (method *opara_default*): "
                 "the guard measures the segment-level plan against the whole graph compiled once with its kernels "
                 "on streams (or on one stream) and keeps the faster; in runs from 2026-12-01T19:31 on, the kept fused "
                 "plan is then timed against the unfused plan on one stream, which is written where it is faster; "
                 "in runs from 2026-12-02T05:00 on, the whole graph is compiled first and segments only where the "
                 "profile says they could clearly beat its kernels on streams (docs/design.md, section 5); in runs "
                 "from 2026-12-03T17:00 on, linears reading the same activation (BERT's query, key and value, the "
                 "decoder's q/k/v and gate/up) are one GEMM over their stacked weights (docs/design.md, section "
                 "2); in runs from 2026-12-03T19:00 on, convolutions reading the same activation with the same "
                 "geometry (an Inception block's 1x1 convolutions) are one convolution likewise: where a run of that "
                 "day measured the plan with them merged (*opara_default_convmerge*) beside the plan without, the "
                 "row shows the merged one, which is the default since. Runs up to 2026-12-04T18:30 compiled "
                 "segments where their forecast was 1.25x the gain of the kernels on streams; the margin is 1.43x "
                 "since (docs/design.md, section 5), under which the rows whose plan reads *inductor N segments* "
                 "at batch 8 (GoogLeNet and Inception-v3 fp16) would keep the kernel-level plan: 3% and 7% slower "
                 "as their compiles measured it, in about half the compile time. A later run of the default plan "
                 "alone, for its compile log, leaves the row of the run before it. "
                 "*kernel-level* is `--fuse-mode kernels` "
                 "(*opara_fused_kernels*); *critical path* is the longest path of its compiled program's measured "
                 "kernel times, and *reached* is that bound over the best Opara plan's time. It is shown only where the "
                 "kernel times were scaled to the one-stream replay (runs from 2026-12-01T14:00); earlier runs took "
                 "them eagerly, each with its timing event's cost, which overstated the path; and not where the "
                 "default plan kept segments, whose kernels are others than the whole graph's. *max abs diff* is "
                 "against eager in the same precision. *compile s* is each method's setup: `oparac compile` (export, "
                 "profile, compile, measure) against torch.compile's compile and three warm-up calls, in the same "
                 "process; *of it measuring s* is the part of the default's compile after inductor compiled the "
                 "whole graph (the kernel search capturing and timing its schedules, the guard's rounds against the "
                 "unfused plan on one stream, and the segments where they were compiled too), from the compile's "
                 "progress lines where the run kept them. In every run listed here torch.compile was built "
                 "before the Opara methods of its group, in the same process, and its compile time includes that "
                 "process's first imports of dynamo, inductor and Triton, which Opara's compile then found done: "
                 "the compile ratios favour Opara by those imports and that first start-up. How much is not "
                 "measured per group; on the H100 a fresh process's first inductor compile of a tiny graph took "
                 "7.1 s and its second 0.2 s (`probes/worker-startup-20261124T002936.json`), so up to about 7 s of "
                 "each torch.compile time here may be that. Runs from 2026-12-06T21:30 warm the compilers up before "
                 "any method is built (records marked `imports: warm`). *(profile cached)* after a compile time: that Opara "
                 "compile found its op profile in Opara's profile cache, left there by an earlier run of the same "
                 "group on the machine, and skipped profiling (1-3 s); from 2026-12-06T22:00 each compile starts from "
                 "an empty profile cache too. Each model, batch and precision comes whole from the newest file that measured it: Llama fp16 from the run after the kernel-streams memory fix (its earlier "
                 "kernel-level plans were 0.5 off, design.md section 6.1). *timed* says how: *interleaved* rows (from "
                 "2026-12-01T19:16) built every method of the group first and timed them in 15 interleaved rounds "
                 "(the figure is the median round), *alone* rows timed each method right after building it. At batch "
                 "1 torch.compile's rounds spread widely (GPT-2 fp16: 0.523-0.701 ms, EfficientNet-B0 fp16: "
                 "0.639-0.908 ms, where Opara's stayed within 1%), and its per-call latency is well above its "
                 "back-to-back time: its figure there is most likely bounded by its host-side work per call "
                 "(docs/design.md, section 8). The same model read differently in different runs too: "
                 "torch.compile's ViT-B/16 fp16 batch 8 was 1.443 ms in one run and 1.172 in the next, each run's "
                 "rounds within 4%. Runs from 2026-12-02 (ViT-B/16, GPT-2, the Llama decoder and Swin-T in fp16 at "
                 "batch 1 and 8, ViT-B/16 in fp32) include three changes to the ingest that earlier rows predate "
                 "(docs/design.md, section 2): a strided activation times a weight is one GEMM (of the models here "
                 "that changes only ViT-B/16, whose attention input projection ran as a batch of 197 small GEMMs in Opara's plans); values "
                 "computed from shapes alone are folded into constants (Swin-T's graph goes from 906 ops to 521; "
                 "GPT-2, BERT and the Llama decoder lose their mask ops); and attention given a folded causal mask "
                 "is built causal, without the mask (GPT-2, Llama). ViT-B/16 rows before 2026-12-02T17:00 showed a "
                 "max abs diff of 0 that checked nothing: torchvision zero-initialises ViT's classification head, "
                 "so the zoo's model returned zeros whatever its backbone computed (their timings stood: the same "
                 "kernels run on any weights); the zoo now draws that head at random, and the rows here are from "
                 "after that. ViT-B/16 float32 at batch 8 differs from eager by 6.7e-4 where torch.compile differs "
                 "by 5.1e-6: that is cuDNN's TF32 convolution (PyTorch's default for float32) in the NHWC layout "
                 "the default plan runs the patch embedding in. Against the model in float64, eager in NHWC is off "
                 "by the same 6.7e-4 and the plan by 6.6e-4, and with TF32 convolutions off eager, eager NHWC and "
                 "the plan are all within 5e-6 (`benchmarks/layout_precision.py`, "
                 "`layout-precision-20261202T181737.json`).", "",
                 never_lose(merged), ""]
        chosen = layouts(merged)
        if chosen:
            text += ["### The default plan's layout (H200)", "",
                     "The default plan built NHWC (*opara_default_cl*) and NCHW (*opara_default_nchw*) in the same "
                     "run, interleaved: what `--memory-format auto` chooses between for a model with convolutions "
                     "(it builds NHWC). Where a run measured these two instead of *opara_default*, the table above "
                     "shows the NHWC one, named in its last column.", "", chosen, ""]
    h100 = [p for p in sorted((Path(__file__).resolve().parent / "results").glob("suite-*.json"))
            if p not in paths and "H100" in (run := json.loads(p.read_text()))["gpu"]
            and any(r.get("method") == "opara_default" for r in run["records"])]
    if h100:
        text += ["## Never lose on the H100", "",
                 f"From {', '.join(f'`benchmarks/results/{p.name}`' for p in h100)}: the groups of the never-lose "
                 "grid that no H200 run had measured (and ConvNeXt-T b1 fp16, whose H200 torch.compile had "
                 "recompiled with a symbolic batch), run on an H100 when no H200 was lent (2026-12-06), with the "
                 "default plan as it stood then (merged projections and convolutions, the 1.43x segments margin, "
                 "the raised-priority kernel schedule among the candidates). Methods and columns as in the H200 "
                 "section above, the caveat on torch.compile's compile time included (these runs predate the "
                 "warm-up of the imports); these figures are the H100's and are not comparable with that "
                 "section's.", "",
                 never_lose(merge(h100)), ""]
    served = sorted((Path(__file__).resolve().parent / "results").glob("serve-load-*.json"))
    if served:
        text += ["## Serving: concurrent callers on one GPU", "",
                 "*pool-4* is `RunnerPool` with 4 replicas (own graphs and streams, shared weights), *one-replica* a "
                 "pool of one, *runner* a plain `Runner` (one graph behind its lock); each caller is a thread "
                 "calling back to back with its input already on the GPU; *torch-compile* is torch.compile behind a "
                 "lock, its outputs copied out inside it. *ray-serve* is the Ray Serve deployment "
                 "(`opara_runtime.serve`, one GPU replica holding a pool of 4 graphs, `@serve.batch`) on a local Ray, "
                 "each caller a keep-alive HTTP connection over loopback sending and receiving safetensors bodies: its "
                 "rows include HTTP, Ray's proxy and router, and copies between host and GPU. *max abs diff* is against "
                 "eager in the benchmark's process, which turns TF32 off; the Ray replica is a fresh process with "
                 "torch's default flags, and where a run recorded it the diff against eager under those flags follows "
                 "in brackets.", "", serving(served)]
    out.write_text("\n".join(text))


if __name__ == "__main__":
    # report.py RESULT.json [RESULT.json ...] -> BENCHMARKS.md at the repository root
    write_markdown([Path(a) for a in sys.argv[1:]], Path(__file__).resolve().parent.parent / "BENCHMARKS.md")
