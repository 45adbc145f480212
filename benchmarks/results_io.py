"""Result files of the benchmark scripts: a time-stamped path, the machine header, atomic JSON writes."""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path


def new_result(out, prefix: str, device=None, *, tag: str = "", **extra) -> tuple[Path, dict]:
    """(out/PREFIX-STAMP[-TAG].json, header): the GPU (or 'cpu'), torch and CUDA versions, the date, `extra`."""
    import torch

    now = datetime.datetime.now(datetime.timezone.utc)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{prefix}-{now.strftime('%Y%m%dT%H%M%S')}{'-' + tag if tag else ''}.json"
    on_gpu = device is None or getattr(device, "type", device) == "cuda"
    header = {"gpu": torch.cuda.get_device_name(device) if on_gpu else "cpu", "torch": torch.__version__,
              "cuda": torch.version.cuda, "date": now.isoformat(timespec="seconds"), **extra}
    return path, header


def write_result(path: Path, result: dict) -> None:
    """Atomically (temp file + os.replace): called after every record, so a killed run keeps its rows."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
