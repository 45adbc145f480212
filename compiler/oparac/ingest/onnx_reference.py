"""onnxruntime on the CPU as the reference an ONNX plan is checked against."""
from __future__ import annotations

from pathlib import Path

import torch

from opara_plan import ModelError


def run_onnxruntime(path: Path, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Outputs of the model at `path` on `inputs` (CPU tensors, in graph-input order), in graph-output order."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelError(f"onnxruntime cannot load {str(path)!r}: {e}") from None
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(inputs):
        raise ModelError(f"onnxruntime: the model takes {len(names)} inputs {names}, got {len(inputs)}")
    feed = {}
    for name, x in zip(names, inputs):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            raise ModelError(f"input {name!r}: onnxruntime's reference is not run on bfloat16 inputs")
        feed[name] = x.numpy()
    outputs = session.run(None, feed)
    # np.dtype(str) names the canonical type: onnxruntime may return numpy's ulonglong, which torch does not take
    return tuple(torch.from_numpy(np.array(o, copy=True).view(np.dtype(o.dtype.str))) for o in outputs)
