"""ONNX conformance: every onnx test case of every op the importer supports, run through Opara on the CPU.

Writes docs/onnx_conformance.md (per-op table, every failure with its reason) and
benchmarks/results/onnx_conformance.json. Usage: python tools/onnx_conformance.py [--op Conv ...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA_SETS = ("simple", "pytorch-operator", "pytorch-converted")


@dataclass
class Case:
    name: str
    op: str  # the op the case tests; for data-set models the first supported op of the graph
    source: str  # 'node', or the data-set folder name
    model: object
    data_sets: list  # [(inputs, outputs)], numpy arrays
    rtol: float = 1e-3
    atol: float = 1e-7


@dataclass
class Outcome:
    case: Case
    passed: bool
    reason: str = ""


@dataclass
class Report:
    outcomes: list = field(default_factory=list)
    excluded: dict = field(default_factory=dict)  # data-set model -> unsupported ops it uses
    unsupported: dict = field(default_factory=dict)  # node case onnx generates for an unsupported op -> op


def supported_ops() -> set[str]:
    from oparac.ingest.onnx_ops import HANDLERS

    return set(HANDLERS)


def node_cases(ops: set[str], report: Report | None = None) -> list[Case]:
    """onnx's generated node test cases whose tested op is supported (expanded variants included); the others
    go to report.unsupported."""
    with warnings.catch_warnings(), open(os.devnull, "w") as null:
        warnings.simplefilter("ignore")
        stderr, sys.stderr = sys.stderr, null
        try:
            from onnx.backend.test.case.node import collect_testcases

            cases = collect_testcases(None)
        finally:
            sys.stderr = stderr
    op_of = {c.name: c.model.graph.node[0].op_type for c in cases if len(c.model.graph.node) == 1}
    out = []
    for c in cases:
        base = c.name.split("_expanded")[0]
        op = op_of.get(base) or op_of.get(c.name)
        if op is None and len(c.model.graph.node) == 1:
            op = c.model.graph.node[0].op_type
        if op in ops:
            out.append(Case(c.name, op, "node", c.model, c.data_sets, c.rtol, c.atol))
        elif report is not None:
            op_types = {n.op_type for n in c.model.graph.node}
            report.unsupported[c.name] = op or "+".join(sorted(op_types - ops)) or "+".join(sorted(op_types))
    return out


def data_set_cases(ops: set[str], report: Report) -> list[Case]:
    """Models shipped under onnx/backend/test/data whose every op is supported."""
    import onnx
    from onnx import numpy_helper

    root = Path(onnx.__file__).parent / "backend" / "test" / "data"
    out = []
    for kind in DATA_SETS:
        for folder in sorted((root / kind).iterdir()):
            model_path = folder / "model.onnx"
            if not model_path.is_file():
                continue
            model = onnx.load(str(model_path))
            used = [n.op_type for n in model.graph.node]
            missing = sorted({t for t in used if t not in ops})
            if missing:
                report.excluded[f"{kind}/{folder.name}"] = missing
                continue
            data_sets = []
            for ds in sorted(folder.glob("test_data_set_*")):
                read = lambda pattern: [numpy_helper.to_array(onnx.load_tensor(str(p)))  # noqa: E731
                                        for p in sorted(ds.glob(pattern), key=lambda p: int(p.stem.split("_")[1]))]
                data_sets.append((read("input_*.pb"), read("output_*.pb")))
            op = used[0] if used else "Identity"
            out.append(Case(f"{kind}/{folder.name}", op, kind, model, data_sets))
    return out


def run_case(case: Case) -> Outcome:
    """Compile the case's model with Opara (device cpu), run every data set, compare like onnx's runner."""
    from opara_plan import OparaError
    from oparac.adapters.onnx_backend import OparaBackend

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = OparaBackend.prepare(case.model, "CPU")
            for k, (inputs, expected) in enumerate(case.data_sets):
                got = rep.run(list(inputs))
                reason = compare(got, expected, case.rtol, case.atol)
                if reason:
                    return Outcome(case, False, f"data set {k}: {reason}")
    except OparaError as e:
        return Outcome(case, False, f"{type(e).__name__}: {e}")
    except Exception as e:  # a bug; the table still reports it
        return Outcome(case, False, f"bug: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return Outcome(case, True)


def compare(got, expected, rtol: float, atol: float) -> str:
    if len(got) != len(expected):
        return f"{len(got)} outputs, expected {len(expected)}"
    import onnx

    for i, (g, e) in enumerate(zip(got, expected)):
        e = onnx.numpy_helper.to_array(e) if isinstance(e, onnx.TensorProto) else np.asarray(e)
        if g.dtype != e.dtype:
            return f"output {i}: dtype {g.dtype}, expected {e.dtype}"
        if g.shape != e.shape:
            return f"output {i}: shape {list(g.shape)}, expected {list(e.shape)}"
        if e.dtype == object or e.dtype.kind in "biu":
            if not np.array_equal(g, e):
                return f"output {i}: values differ"
            continue
        try:
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)
        except AssertionError:
            with np.errstate(all="ignore"):
                diff = np.nanmax(np.abs(g.astype(np.float64) - e.astype(np.float64))) if e.size else 0.0
            return f"output {i}: max abs diff {diff:.3g} over rtol={rtol:g}, atol={atol:g}"
    return ""


def collect(ops: set[str] | None = None) -> tuple[list[Case], Report]:
    report = Report()
    supported = supported_ops()
    chosen = supported if not ops else supported & ops
    cases = node_cases(chosen, report) + data_set_cases(supported, report)
    if ops:
        cases = [c for c in cases if c.op in ops]
    return cases, report


def _first_line(text: str, limit: int = 200) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


def write_outputs(report: Report, md_path: Path, json_path: Path) -> None:
    import onnx
    import torch

    by_op: dict[str, list[Outcome]] = {}
    for o in report.outcomes:
        by_op.setdefault(o.case.op, []).append(o)
    total = len(report.outcomes)
    passed = sum(o.passed for o in report.outcomes)
    lines = [
        "# ONNX conformance",
        "",
        f"Generated by `python tools/onnx_conformance.py` with onnx {onnx.__version__}, torch {torch.__version__}, "
        f"on the CPU. Every test case that onnx generates for an op the importer supports "
        f"(`onnx.backend.test.case.node`, `_expanded` function bodies included) and every model of the data sets "
        f"{', '.join(DATA_SETS)} whose ops are all supported, compiled by oparac and run by opara_runtime, "
        f"compared with onnx's tolerances (rtol 1e-3, atol 1e-7 unless the case says otherwise) and exact "
        f"output dtypes.",
        "",
        f"**{passed} of {total} cases pass.**",
        "",
        "| op | cases | passed | failed |",
        "|---|---:|---:|---:|",
    ]
    for op in sorted(by_op):
        outs = by_op[op]
        ok = sum(o.passed for o in outs)
        lines.append(f"| {op} | {len(outs)} | {ok} | {len(outs) - ok} |")
    lines += ["", "## Failing cases", "", "| case | op | reason |", "|---|---|---|"]
    for o in sorted(report.outcomes, key=lambda o: (o.case.op, o.case.name)):
        if not o.passed:
            reason = _first_line(o.reason).replace("|", "\\|")
            lines.append(f"| {o.case.name} | {o.case.op} | {reason} |")
    lines += ["", "## Data-set models not run (they use ops the importer does not support)", ""]
    for name, missing in sorted(report.excluded.items()):
        lines.append(f"- {name}: {', '.join(missing)}")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text("\n".join(lines) + "\n")
    payload = {
        "onnx": onnx.__version__, "torch": torch.__version__, "total": total, "passed": passed,
        "per_op": {op: {"cases": len(v), "passed": sum(o.passed for o in v)} for op, v in sorted(by_op.items())},
        "failures": [{"case": o.case.name, "op": o.case.op, "reason": o.reason} for o in report.outcomes
                     if not o.passed],
        "excluded_data_set_models": report.excluded,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", action="append", help="only this op (repeatable)")
    parser.add_argument("--md", type=Path, default=ROOT / "docs" / "onnx_conformance.md")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "onnx_conformance.json")
    parser.add_argument("--no-write", action="store_true", help="print the summary only")
    args = parser.parse_args(argv)
    cases, report = collect(set(args.op) if args.op else None)
    for case in cases:
        report.outcomes.append(run_case(case))
    passed = sum(o.passed for o in report.outcomes)
    for o in report.outcomes:
        if not o.passed:
            print(f"FAIL {o.case.name} [{o.case.op}]: {_first_line(o.reason)}")
    print(f"{passed}/{len(report.outcomes)} cases pass")
    if not args.no_write:
        write_outputs(report, args.md, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
