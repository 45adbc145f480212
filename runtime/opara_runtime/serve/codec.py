"""HTTP bodies of the serving endpoint: a request's named tensors from JSON or safetensors bytes, and the outputs back.

JSON (Content-Type application/json): {"inputs": {"x": {"dtype": "float32", "shape": [1, 3, 224, 224],
"data": [...]}}}, data flat in row-major order; "inputs" may also be a list in the plan's input order. The reply
is the model's output structure with each tensor in the same form ({"outputs": ...}).
safetensors (Content-Type application/octet-stream): one tensor per input name. The reply holds one tensor per
output, named by its path in the model's output structure ("output" for a lone tensor, "0", "1.logits", ...).
"""
from __future__ import annotations

import json
import math

import torch

from opara_plan import InputError

JSON = "application/json"
SAFETENSORS = "application/octet-stream"
FORMATS = (JSON, SAFETENSORS)
DTYPES = {name: getattr(torch, name) for name in (
    "float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")}
MAX_DIMS = 8  # the plans' inputs have at most this many dimensions; deeper shapes are refused before any allocation


class RequestError(InputError):
    """A request the endpoint cannot read (HTTP 400)."""


class MediaTypeError(RequestError):
    """A request body in a format the endpoint does not take (HTTP 415)."""


class TooLargeError(RequestError):
    """A request body or batch beyond what the deployment serves (HTTP 413)."""


def media_type(content_type: str | None) -> str:
    """'application/json; charset=utf-8' -> 'application/json'; MediaTypeError for a format not in FORMATS."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind not in FORMATS:
        raise MediaTypeError(f"request Content-Type: expected one of {', '.join(FORMATS)}, found "
                             f"{content_type or 'none'!r}")
    return kind


def decode(body: bytes, kind: str, *, max_bytes: int) -> dict[str, torch.Tensor] | list[torch.Tensor]:
    """The request's tensors (on the CPU): by name, or (JSON list form) in order. RequestError says what is wrong."""
    if len(body) > max_bytes:
        raise TooLargeError(f"request body: {len(body)} bytes, more than the {max_bytes} bytes this deployment's "
                            f"largest batch needs")
    if kind == SAFETENSORS:
        return _from_safetensors(body)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"request body: expected JSON {{\"inputs\": ...}}, found invalid JSON ({e})") from None
    if not isinstance(doc, dict) or "inputs" not in doc:
        raise RequestError(f"request body: expected a JSON object with key 'inputs', found {_kind(doc)}")
    inputs = doc["inputs"]
    if isinstance(inputs, dict):
        return {str(name): _tensor_from_json(value, f"inputs[{name!r}]") for name, value in inputs.items()}
    if isinstance(inputs, list):
        return [_tensor_from_json(value, f"inputs[{k}]") for k, value in enumerate(inputs)]
    raise RequestError(f"request 'inputs': expected an object of name -> tensor or a list of tensors, found "
                       f"{_kind(inputs)}")


def encode(outputs, kind: str) -> bytes:
    """The outputs (the model's structure, tensors on any device) as a reply body of the request's format."""
    if kind == SAFETENSORS:
        from safetensors.torch import save

        flat = {path: t.detach().cpu().contiguous().clone() for path, t in _paths(outputs, "")}
        return save({path or "output": t for path, t in flat.items()})
    return json.dumps({"outputs": _to_json(outputs)}).encode()


def error_body(error: Exception) -> bytes:
    """{"error": "InputError", "message": "..."}: what a refused request gets back."""
    return json.dumps({"error": type(error).__name__, "message": str(error)}).encode()


def _from_safetensors(body: bytes) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        # The library validates the header's offsets against the buffer before it reads a tensor.
        return load(body)
    except (SafetensorError, ValueError, TypeError, RuntimeError) as e:
        raise RequestError(f"request body: expected safetensors bytes ({SAFETENSORS}), which these are not ({e})") \
            from None


def _tensor_from_json(value, where: str) -> torch.Tensor:
    if not isinstance(value, dict) or not {"dtype", "shape", "data"} <= value.keys():
        raise RequestError(f"request {where}: expected {{\"dtype\": ..., \"shape\": [...], \"data\": [...]}}, "
                           f"found {_kind(value)}")
    dtype, shape, data = value["dtype"], value["shape"], value["data"]
    if dtype not in DTYPES:
        raise RequestError(f"request {where}: dtype must be one of {sorted(DTYPES)}, found {dtype!r}")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise RequestError(f"request {where}: shape must be a list of at most {MAX_DIMS} non-negative integers, "
                           f"found {shape!r:.80}")
    if not isinstance(data, list) or len(data) != math.prod(shape):
        got = f"{len(data)} values" if isinstance(data, list) else _kind(data)
        raise RequestError(f"request {where}: data must be a flat list of {math.prod(shape)} values for shape "
                           f"{shape}, found {got}")
    try:
        flat = torch.tensor(data, dtype=DTYPES[dtype])
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise RequestError(f"request {where}: data must be flat numbers of dtype {dtype} ({e})") from None
    if flat.dim() != 1:
        raise RequestError(f"request {where}: data must be flat numbers of dtype {dtype}, found nested lists "
                           f"(shape {list(flat.shape)})")
    return flat.reshape(shape)


def _to_json(out):
    if isinstance(out, torch.Tensor):
        t = out.detach().cpu()
        return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "data": t.flatten().tolist()}
    if isinstance(out, (list, tuple)):
        return [_to_json(x) for x in out]
    if isinstance(out, dict):
        return {str(k): _to_json(v) for k, v in out.items()}
    return out


def _paths(out, prefix: str):
    """(path, tensor) for every tensor in the output structure; None entries have no path."""
    if isinstance(out, torch.Tensor):
        yield prefix, out
    elif isinstance(out, (list, tuple)):
        for k, x in enumerate(out):
            yield from _paths(x, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(out, dict):
        for k, x in out.items():
            yield from _paths(x, f"{prefix}.{k}" if prefix else str(k))


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__
