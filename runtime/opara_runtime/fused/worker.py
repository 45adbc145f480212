"""The compile worker's entry point: `python -m opara_runtime.fused.worker --serve DEVICE` serves compile jobs over
its pipes until end of input; `python -m opara_runtime.fused.worker JOB RESULT` runs one job from a file."""
from __future__ import annotations

import sys

import torch

from opara_runtime.fused.jobs import compile_job, warm_up
from opara_runtime.fused.pool import serve, serve_one


def main(argv: list[str]) -> None:
    if argv[0] == "--serve":
        device = torch.device(argv[1])
        serve(compile_job, ready=lambda: warm_up(device))
    else:
        serve_one(argv[0], argv[1], compile_job)


if __name__ == "__main__":
    main(sys.argv[1:])
