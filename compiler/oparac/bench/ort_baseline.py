"""ONNX Runtime's CUDA provider as a benchmark baseline, where it is installed."""
from __future__ import annotations

import io

import torch


def ort_cuda_runner(model, inputs):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError(f"onnxruntime {ort.__version__} here has no CUDAExecutionProvider "
                           f"(providers: {', '.join(ort.get_available_providers())})")
    buf = io.BytesIO()
    cpu_model = model
    torch.onnx.export(cpu_model, tuple(inputs), buf, dynamo=False, opset_version=17)
    session = ort.InferenceSession(buf.getvalue(), providers=["CUDAExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*xs):
        binding = session.io_binding()
        for name, x in zip(names, xs):
            x = x.contiguous()
            binding.bind_input(name, "cuda", x.device.index or 0, _np_dtype(x.dtype), list(x.shape), x.data_ptr())
        for out in session.get_outputs():
            binding.bind_output(out.name, "cuda")
        session.run_with_iobinding(binding)
        return tuple(torch.from_numpy(o) for o in binding.copy_outputs_to_cpu())
    return run


def _np_dtype(dtype: torch.dtype):
    import numpy as np

    return {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64,
            torch.int32: np.int32, torch.bool: np.bool_}[dtype]
