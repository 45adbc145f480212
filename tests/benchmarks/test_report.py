"""benchmarks/report.py: the never-lose table is built from the newest run of each group, shows each plan's error
against eager, and a critical path only where its kernel times were calibrated."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "report.py"
_spec = importlib.util.spec_from_file_location("bench_report", _PATH)
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def _rec(method, ms, diff, **extra):
    return {"model": "llama", "batch": 1, "dtype": "float16", "method": method, "ms_b2b": ms, "ms_latency": ms * 1.1,
            "max_abs_diff": diff, **extra}


def _run(path: Path, date: str, records) -> Path:
    path.write_text(json.dumps({"gpu": "NVIDIA H200", "torch": "2.11", "cuda": "13.0", "date": date,
                                "records": records}))
    return path


def test_the_newest_run_of_a_group_replaces_it_whole_and_errors_are_shown(tmp_path):
    old = _run(tmp_path / "suite-20261201T114826.json", "2026-12-01T11:48:26", [
        _rec("torch_compile", 0.53, 7.8e-3), _rec("opara_default", 0.466, 0.5),
        _rec("opara_fused_kernels", 0.46, 0.5, critical_path_ms=0.6, critical_path_calibrated=False)])
    new = _run(tmp_path / "suite-20261201T142026.json", "2026-12-01T14:20:26", [
        _rec("torch_compile", 0.539, 7.8e-3), _rec("cudagraph", 1.102, 0.0), _rec("opara_default", 0.468, 7.8e-3),
        _rec("opara_fused_kernels", 0.464, 7.8e-3, critical_path_ms=0.340, critical_path_calibrated=True)])
    table = report.never_lose(report.merge([old, new]))
    row = next(line for line in table.splitlines() if line.startswith("| llama"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:6] == ["0.539", "0.468", "1.15x"]
    assert cells[9:12] == ["0.340", "73%", "7.8e-03, 7.8e-03"]
    assert "5.0e-01" not in table


def test_an_uncalibrated_critical_path_is_not_shown(tmp_path):
    only = _run(tmp_path / "suite-20261201T114826.json", "2026-12-01T11:48:26", [
        _rec("torch_compile", 0.53, 7.8e-3), _rec("opara_default", 0.466, 7.8e-3),
        _rec("opara_fused_kernels", 0.46, 7.8e-3, critical_path_ms=0.6, critical_path_calibrated=False)])
    row = next(line for line in report.never_lose(report.merge([only])).splitlines() if line.startswith("| llama"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[9:11] == ["-", "-"]


def test_each_row_says_how_it_was_timed(tmp_path):
    only = _run(tmp_path / "suite-20261201T191000.json", "2026-12-01T19:10:00", [
        _rec("torch_compile", 0.50, 7.8e-3, timing="interleaved"), _rec("opara_default", 0.49, 7.8e-3,
                                                                        timing="interleaved")])
    older = _run(tmp_path / "suite-20261201T114826.json", "2026-12-01T11:48:26", [
        dict(_rec("torch_compile", 0.53, 7.8e-3), model="gpt2"), dict(_rec("opara_default", 0.466, 7.8e-3),
                                                                     model="gpt2")])
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in report.never_lose(report.merge([older, only])).splitlines()[4:]}
    assert rows["llama"][14] == "interleaved" and rows["gpt2"][14] == "alone"


def test_a_torch_compile_recompiled_after_another_batch_of_its_forward_is_marked(tmp_path):
    def at(batch, method, ms, model="gpt2", **extra):
        return dict(_rec(method, ms, 7.8e-3, **extra), model=model, batch=batch)

    run = _run(tmp_path / "suite-20261202T005524.json", "2026-12-02T00:55:24", [
        at(8, "torch_compile", 0.73), at(8, "opara_default", 0.70),
        at(1, "torch_compile", 0.51), at(1, "opara_default", 0.48),  # gpt2 again, at another batch
        at(8, "torch_compile", 0.75, model="llama"), at(8, "opara_default", 0.66, model="llama"),  # same wrapper
        at(1, "torch_compile", 0.60, model="vit_b16"), at(1, "opara_default", 0.61, model="vit_b16"),
        at(8, "torch_compile", 1.17, model="vit_b16", dynamo="cold"), at(8, "opara_default", 1.08, model="vit_b16")])
    rows = {(cells[0], cells[1]): cells for cells in
            ([c.strip() for c in line.strip("|").split("|")]
             for line in report.never_lose(report.merge([run])).splitlines()[4:])}
    assert rows[("gpt2", "8")][5] == "1.04x"
    assert rows[("gpt2", "1")][5] == "1.06x (dyn)"
    assert rows[("llama", "8")][5] == "1.14x (dyn)"
    assert rows[("vit_b16", "1")][5] == "0.98x"
    assert rows[("vit_b16", "8")][5] == "1.08x"  # a reset dynamo compiles cold whatever ran before


def test_a_run_of_both_layouts_shows_the_nhwc_default_and_the_layout_table(tmp_path):
    both = _run(tmp_path / "suite-20261202T033800.json", "2026-12-02T03:38:00", [
        _rec("torch_compile", 1.153, 0.0), _rec("cudagraph", 1.129, 0.0),
        _rec("opara_default_cl", 1.087, 0.0, plan="whole graph, channels_last"),
        _rec("opara_default_nchw", 1.123, 0.0, plan="whole graph")])
    row = next(line for line in report.never_lose(report.merge([both])).splitlines() if line.startswith("| llama"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4:6] == ["1.087", "1.06x"] and cells[-1] == "whole graph, channels_last (opara_default_cl)"
    layout_row = report.layouts(report.merge([both])).splitlines()[2]
    assert [c.strip() for c in layout_row.strip("|").split("|")][3:] == ["1.087", "1.123", "1.03x", "1.153"]
    only_default = _run(tmp_path / "suite-20261202T032656.json", "2026-12-02T03:26:56", [
        _rec("torch_compile", 1.158, 0.0), _rec("opara_default", 1.137, 0.0)])
    assert report.layouts(report.merge([only_default])) == ""


def test_a_compile_time_taken_with_shared_caches_is_marked(tmp_path):
    run = _run(tmp_path / "suite-20261202T052221.json", "2026-12-02T05:22:21", [
        _rec("torch_compile", 0.556, 7.8e-3, compile_s=18.2, caches="empty"),
        _rec("opara_default", 0.412, 7.8e-3, compile_s=22.7, caches="empty"),
        dict(_rec("torch_compile", 0.607, 1e-2, compile_s=14.1), model="bert"),
        dict(_rec("opara_default", 0.588, 1e-2, compile_s=19.7), model="bert")])
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in report.never_lose(report.merge([run])).splitlines()[4:])}
    assert rows["llama"][12] == "23, 18"
    assert rows["bert"][12] == "20 (shared), 14 (shared)"


def test_a_compile_that_found_its_op_profile_cached_is_marked(tmp_path):
    notes = [[0.5, "profile: 294 ops on cuda"], [0.51, "profile: cache hit"], [0.52, "profile: done in 0.01 s"]]
    run = _run(tmp_path / "suite-20261206T210557.json", "2026-12-06T21:05:57", [
        _rec("torch_compile", 0.556, 7.8e-3, compile_s=18.2, caches="empty"),
        _rec("opara_default", 0.412, 7.8e-3, compile_s=22.7, caches="empty", compile_notes=notes),
        dict(_rec("torch_compile", 0.607, 1e-2, compile_s=14.1, caches="empty"), model="bert"),
        dict(_rec("opara_default", 0.588, 1e-2, compile_s=19.7, caches="empty",
                  compile_notes=[[0.5, "profile: done in 2.16 s"]]), model="bert")])
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in report.never_lose(report.merge([run])).splitlines()[4:])}
    assert rows["llama"][12] == "23 (profile cached), 18"
    assert rows["bert"][12] == "20, 14"


def test_a_run_that_failed_in_every_method_keeps_the_measurement_before_it_and_is_listed(tmp_path):
    old = _run(tmp_path / "suite-20261201T114826.json", "2026-12-01T11:48:26", [
        _rec("torch_compile", 0.53, 7.8e-3), _rec("opara_default", 0.466, 7.8e-3)])
    died = "not measured: the group's process exited with status 1 before this method's figures were written"
    crashed = _run(tmp_path / "suite-20261203T120546.json", "2026-12-03T12:05:46", [
        {**_rec("torch_compile", 0.0, None), "error": died}, {**_rec("opara_default", 0.0, None), "error": died}])
    table = report.never_lose(report.merge([old, crashed]))
    row = next(line for line in table.splitlines() if line.startswith("| llama"))
    assert [c.strip() for c in row.strip("|").split("|")][3:6] == ["0.530", "0.466", "1.14x"]
    assert (f"A later run of llama batch 1 float16 failed in every method (`suite-20261203T120546.json`: {died})"
            in table)
    # a run after it that measures the group again replaces both
    again = _run(tmp_path / "suite-20261203T130000.json", "2026-12-03T13:00:00", [
        _rec("torch_compile", 0.52, 7.8e-3), _rec("opara_default", 0.4, 7.8e-3)])
    table = report.never_lose(report.merge([old, crashed, again]))
    assert "failed in every method" not in table and "| 0.520 | 0.400 |" in table


def test_a_later_run_of_the_default_plan_alone_leaves_the_comparison_before_it(tmp_path):
    compared = _run(tmp_path / "suite-20261204T181533.json", "2026-12-04T18:15:33", [
        _rec("cudagraph", 1.9, 0.0), _rec("torch_compile", 0.873, 2e-3), _rec("opara_default", 0.481, 2e-3)])
    alone = _run(tmp_path / "suite-20261204T182134.json", "2026-12-04T18:21:34", [_rec("opara_default", 0.478, 2e-3)])
    table = report.never_lose(report.merge([compared, alone]))
    row = next(line for line in table.splitlines() if line.startswith("| llama"))
    assert [c.strip() for c in row.strip("|").split("|")][3:6] == ["0.873", "0.481", "1.81x"]
    # a later run that has a rival replaces it, as any newer run does
    again = _run(tmp_path / "suite-20261205T000000.json", "2026-12-05T00:00:00", [
        _rec("torch_compile", 0.9, 2e-3), _rec("opara_default", 0.45, 2e-3)])
    assert "| 0.900 | 0.450 |" in report.never_lose(report.merge([compared, alone, again]))


def test_the_seconds_after_the_whole_graph_compiled_are_shown_where_the_run_kept_progress_lines(tmp_path):
    notes = [[4.0, "profile: done in 1.40 s"], [21.7, "fuse: whole graph compiled, 83 kernels"],
             [26.0, "fuse: kernel schedules single (1 streams) 0.4892 ms"], [27.2, "fuse: done in 21.80 s"]]
    run = _run(tmp_path / "suite-20261204T181133.json", "2026-12-04T18:11:33", [
        _rec("torch_compile", 0.8, 2e-3), _rec("opara_default", 0.6, 2e-3, compile_notes=notes)])
    old = _run(tmp_path / "suite-20261201T114826.json", "2026-12-01T11:48:26", [
        {**_rec("torch_compile", 0.8, 2e-3), "batch": 8}, {**_rec("opara_default", 0.6, 2e-3), "batch": 8}])
    rows = [line for line in report.never_lose(report.merge([old, run])).splitlines() if line.startswith("| llama")]
    assert [[c.strip() for c in row.strip("|").split("|")][13] for row in rows] == ["5.5", "-"]
