"""Request and reply bodies of the serving endpoint: JSON and safetensors, and what a malformed body is told."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from opara_runtime.serve.codec import (JSON, SAFETENSORS, MediaTypeError, RequestError, TooLargeError, decode,
                                       encode, error_body, media_type)


def _json(inputs) -> bytes:
    return json.dumps({"inputs": inputs}).encode()


def _spec(t: torch.Tensor) -> dict:
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "data": t.flatten().tolist()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bool])
def test_json_tensors_by_name_and_in_order(dtype):
    x = (torch.randn(2, 3) * 5).to(dtype)
    by_name = decode(_json({"x": _spec(x)}), JSON, max_bytes=1 << 20)
    assert by_name.keys() == {"x"} and torch.equal(by_name["x"], x)
    (first,) = decode(_json([_spec(x)]), JSON, max_bytes=1 << 20)
    assert torch.equal(first, x)


def test_safetensors_round_trip():
    x, ids = torch.randn(2, 3), torch.arange(4)
    got = decode(save_safetensors({"x": x, "ids": ids}), SAFETENSORS, max_bytes=1 << 20)
    assert torch.equal(got["x"], x) and torch.equal(got["ids"], ids)


def test_replies_keep_the_output_structure():
    out = {"logits": torch.randn(2, 3), "extra": (torch.ones(2), None)}
    doc = json.loads(encode(out, JSON))["outputs"]
    assert doc["logits"]["shape"] == [2, 3] and doc["extra"][1] is None
    assert torch.tensor(doc["extra"][0]["data"]).tolist() == [1.0, 1.0]
    flat = load_safetensors(encode(out, SAFETENSORS))
    assert flat.keys() == {"logits", "extra.0"} and torch.equal(flat["logits"], out["logits"])
    assert load_safetensors(encode(torch.zeros(1), SAFETENSORS)).keys() == {"output"}


def test_slices_of_one_batch_encode_apart():
    batch = torch.randn(4, 3)
    halves = (batch[:2], batch[2:])  # views of one storage, which safetensors refuses to save as they are
    assert load_safetensors(encode(halves, SAFETENSORS))["1"].tolist() == batch[2:].tolist()


@pytest.mark.parametrize("content_type, kind", [
    ("application/json", JSON), ("application/json; charset=utf-8", JSON), ("Application/Octet-Stream", SAFETENSORS),
])
def test_media_types(content_type, kind):
    assert media_type(content_type) == kind


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "multipart/form-data"])
def test_other_media_types_are_refused(content_type):
    with pytest.raises(MediaTypeError, match=r"request Content-Type: expected one of application/json, "
                                             r"application/octet-stream, found"):
        media_type(content_type)


@pytest.mark.parametrize("body, message", [
    (b"\xff\xfe", r"request body: expected JSON \{\"inputs\": ...\}, found invalid JSON"),
    (b"[1, 2]", r"request body: expected a JSON object with key 'inputs', found list"),
    (b'{"inputs": 3}', r"request 'inputs': expected an object of name -> tensor or a list of tensors, found int"),
    (_json({"x": [1, 2]}), r"request inputs\['x'\]: expected \{\"dtype\": ..., \"shape\": \[...\], "
                           r"\"data\": \[...\]\}, found list"),
    (_json({"x": {"dtype": "complex64", "shape": [1], "data": [0]}}), r"inputs\['x'\]: dtype must be one of"),
    (_json({"x": {"dtype": "float32", "shape": [-1], "data": []}}), r"shape must be a list of at most 8 non-negative"),
    (_json({"x": {"dtype": "float32", "shape": [1] * 9, "data": [0]}}), r"shape must be a list of at most 8"),
    (_json({"x": {"dtype": "float32", "shape": [True], "data": [0]}}), r"shape must be a list of at most 8"),
    (_json({"x": {"dtype": "float32", "shape": [2], "data": [0]}}), r"data must be a flat list of 2 values for "
                                                                    r"shape \[2\], found 1 values"),
    (_json({"x": {"dtype": "float32", "shape": [2], "data": "ab"}}), r"flat list of 2 values.*found str"),
    (_json({"x": {"dtype": "float32", "shape": [2], "data": ["a", "b"]}}), r"data must be flat numbers of dtype"),
    (_json({"x": {"dtype": "float32", "shape": [2], "data": [[1], [2]]}}), r"data must be flat numbers of dtype"),
    (_json({"x": {"dtype": "int8", "shape": [1], "data": [10 ** 30]}}), r"data must be flat numbers of dtype int8"),
])
def test_malformed_json_says_what_is_wrong(body, message):
    with pytest.raises(RequestError, match=message):
        decode(body, JSON, max_bytes=1 << 20)


@pytest.mark.parametrize("body", [b"", b"\x08\x00\x00\x00\x00\x00\x00\x00{}", b"\xff" * 64,
                                  b"\x00\x00\x00\x00\x00\x00\x00\x10" + b"{" * 32])
def test_garbage_safetensors_bodies_are_refused(body):
    with pytest.raises(RequestError, match=r"request body: expected safetensors bytes \(application/octet-stream\)"):
        decode(body, SAFETENSORS, max_bytes=1 << 20)


def test_a_body_over_the_limit_is_refused_unread():
    with pytest.raises(TooLargeError, match=r"request body: 101 bytes, more than the 100 bytes"):
        decode(b"{" * 101, JSON, max_bytes=100)


def test_error_bodies_name_the_error():
    assert json.loads(error_body(RequestError("bad"))) == {"error": "RequestError", "message": "bad"}


def test_only_the_deployment_imports_ray():
    import subprocess
    import sys

    code = ("import sys, opara_runtime, opara_runtime.serve, opara_runtime.serve.batching, opara_runtime.serve.weights;"
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
