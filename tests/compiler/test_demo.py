"""`oparac demo`: the plan goes where the output says (never into the current folder by default), and a CPU
run labels its speed-up as the cost model's prediction."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from opara_plan import load_plan
from oparac.cli import main


@pytest.mark.slow
def test_demo_on_cpu_keeps_the_current_folder_clean_and_names_the_plan():
    runner = CliRunner()
    with runner.isolated_filesystem() as here:
        result = runner.invoke(main, ["demo", "--model", "squeezenet", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert os.listdir(here) == []  # nothing written where the demo was run
    written = re.search(r"plan written to (\S+)", result.output)
    assert written, result.output
    path = Path(written.group(1))
    try:
        assert path.name == "squeezenet.plan" and not path.is_relative_to(here)
        assert load_plan(path).model.source == "torch.export"
        assert "verify: OK: 1 output, plan error " in result.output and " vs float64; " in result.output
        prediction = re.search(r"predicted, not measured: the cost model \(no GPU here\) estimates .* a predicted "
                               r"speed-up of [0-9.]+x on a GPU", result.output)
        assert prediction, result.output
        assert "measured on" not in result.output
    finally:
        path.unlink(missing_ok=True)
        path.parent.rmdir()


@pytest.mark.slow
def test_demo_writes_where_it_is_told(tmp_path):
    out = tmp_path / "sub" / "mine.plan"
    result = CliRunner().invoke(main, ["demo", "--model", "squeezenet", "--device", "cpu", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"plan written to {out}" in result.output and load_plan(out).schedule.num_streams >= 1


def test_unknown_demo_model_is_one_error_line():
    result = CliRunner().invoke(main, ["demo", "--model", "alexnet", "--device", "cpu"])
    assert result.exit_code == 1
    assert "--model 'alexnet': expected one of googlenet" in result.output and "Traceback" not in result.output
