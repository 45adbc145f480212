"""The Ray Serve deployment on a local Ray bound to 127.0.0.1, on the CPU path: concurrent requests get eager's
outputs, malformed requests get a 4xx with the Opara error while serving goes on, shutdown leaves no processes."""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

import oparac
from opara_plan import make_plan_set

from helpers.models import small_cnn

pytestmark = pytest.mark.slow
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine

# The serve extra (in dev, so CI has it); a machine without Ray (the GPU image) skips these tests.
ray = pytest.importorskip("ray")  # after the environment it reads at import
from ray import serve  # noqa: E402

from opara_runtime.serve import opara_app  # noqa: E402

JSON = "application/json"
BINARY = "application/octet-stream"


class Endpoint:
    def __init__(self, url: str, model, temp_dir: str, before: set[int], ray_pids: set[int]) -> None:
        self.url, self.model, self.temp_dir, self.before, self.ray_pids = url, model, temp_dir, before, ray_pids

    def at(self, route: str) -> Endpoint:
        """The same Ray instance, another application's route."""
        return Endpoint(self.url + route, self.model, self.temp_dir, self.before, self.ray_pids)

    def post(self, body: bytes, content_type: str = JSON) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url, data=body, headers={"Content-Type": content_type}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def infer(self, x: torch.Tensor, kind: str = JSON) -> torch.Tensor:
        status, body = self.post(encode(x, kind), kind)
        assert status == 200, body
        if kind == BINARY:
            return load_safetensors(body)["output"]
        out = json.loads(body)["outputs"]
        return torch.tensor(out["data"], dtype=getattr(torch, out["dtype"])).reshape(out["shape"])

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(x)


def encode(x: torch.Tensor, kind: str = JSON) -> bytes:
    if kind == BINARY:
        return save_safetensors({"x": x.contiguous()})
    return json.dumps({"inputs": {"x": {"dtype": str(x.dtype).removeprefix("torch."), "shape": list(x.shape),
                                        "data": x.flatten().tolist()}}}).encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every live (not zombie) process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            out[int(entry)] = (int(fields[1]), cmd)
    return out


def _ray_processes(temp_dir: str, before: set[int]) -> set[int]:
    """Ray's processes started by this test: new since `before`, below this process or naming our Ray temp dir, and
    Ray's by their command line (other tests' worker processes are left out)."""
    procs = _processes()
    mine, grew = {os.getpid()}, True
    while grew:
        more = {pid for pid, (ppid, _) in procs.items() if ppid in mine} - mine
        grew = bool(more)
        mine |= more
    return {pid for pid, (_, cmd) in procs.items()
            if pid not in before and (pid in mine or temp_dir in cmd) and pid != os.getpid()
            and (temp_dir in cmd or cmd.startswith("ray::") or "/ray/" in cmd)}


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    model, (x,) = small_cnn()  # a plan of batch 2, and a plan set of buckets 1 and 2
    d = tmp_path_factory.mktemp("serve")
    plans = [oparac.compile(model, (x[:n],), device="cpu") for n in (1, 2)]
    plans[1].save(d / "cnn.plan")
    make_plan_set(plans).save(d / "cnn.plans")
    torch.save(model.state_dict(), d / "cnn.pt")
    # Short: Ray's socket paths live under it and a Unix socket path is at most 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="oray", dir="/tmp")
    before = set(_processes())
    ray.init(address="local", include_dashboard=False, num_cpus=2, num_gpus=0, _node_ip_address="127.0.0.1",
             log_to_driver=False, _temp_dir=temp_dir)
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(opara_app(d / "cnn.plan", str(d / "cnn.pt"), batch_wait_timeout_s=0.02), route_prefix="/")
        serve.run(opara_app(d / "cnn.plans", str(d / "cnn.pt"), batch_wait_timeout_s=0.02), name="buckets",
                  route_prefix="/buckets")
        yield Endpoint(f"http://127.0.0.1:{port}/", model, temp_dir, before, _ray_processes(temp_dir, before))
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_concurrent_requests_get_eager_outputs(endpoint):
    torch.manual_seed(1)
    xs = [torch.randn(1 + k % 2, 3, 16, 16) for k in range(16)]  # one or two samples, packed into batches of two
    kinds = [JSON if k % 3 else BINARY for k in range(16)]
    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(endpoint.infer, xs, kinds))
    for x, y in zip(xs, got):
        torch.testing.assert_close(y, endpoint.eager(x), rtol=1e-4, atol=1e-5)


def test_a_plan_set_batches_requests_into_its_buckets(endpoint):
    buckets = endpoint.at("buckets")
    torch.manual_seed(2)
    xs = [torch.randn(1 + k % 2, 3, 16, 16) for k in range(8)]
    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(buckets.infer, xs, [BINARY] * 8))
    for x, y in zip(xs, got):
        torch.testing.assert_close(y, endpoint.eager(x), rtol=1e-4, atol=1e-5)
    status, reply = buckets.post(encode(torch.randn(3, 3, 16, 16)))
    assert status == 413 and "more than the largest batch" in json.loads(reply)["message"]


def test_a_handle_call_skips_http_and_gets_the_same_checks(endpoint):
    handle = serve.get_app_handle("default")
    torch.manual_seed(3)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(handle.infer.remote({"x": x}).result(timeout_s=60), endpoint.eager(x), rtol=1e-4,
                               atol=1e-5)
    torch.testing.assert_close(handle.infer.remote([x[:1]]).result(timeout_s=60), endpoint.eager(x[:1]), rtol=1e-4,
                               atol=1e-5)
    from opara_runtime.serve.codec import TooLargeError

    # Ray re-raises the replica's exception as a subclass of its class
    with pytest.raises(TooLargeError, match="more than the largest batch this deployment serves"):
        handle.infer.remote({"x": torch.randn(3, 3, 16, 16)}).result(timeout_s=60)


def test_get_describes_the_endpoint(endpoint):
    with urllib.request.urlopen(endpoint.url, timeout=60) as r:
        doc = json.loads(r.read())
    assert doc["max_batch"] == 2
    assert doc["inputs"] == [{"name": "x", "expected": "float32[n, 3, 16, 16] with 1 <= n <= 2"}]


@pytest.mark.parametrize("body, kind, status, message", [
    (encode(torch.randn(1, 3, 8, 8)), JSON, 400,
     "input 0 'x': expected float32[n, 3, 16, 16] with 1 <= n <= 2, got float32[1, 3, 8, 8]"),
    (encode(torch.randn(1, 3, 16, 16).double()), JSON, 400,
     "input 0 'x': expected float32[n, 3, 16, 16] with 1 <= n <= 2, got float64[1, 3, 16, 16]"),
    (encode(torch.randn(3, 3, 16, 16), BINARY), BINARY, 413,
     "request batch: 3 samples, more than the largest batch this deployment serves for these shapes (2)"),
    (b"\x00garbage{", JSON, 400, "request body: expected JSON {\"inputs\": ...}, found invalid JSON"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00garbage", BINARY, 400, "request body: expected safetensors bytes"),
    (json.dumps({"inputs": {"y": {"dtype": "float32", "shape": [1], "data": [0.0]}}}).encode(), JSON, 400,
     "request inputs: expected 'x', found 'y'"),
    (json.dumps({"inputs": {"x": {"dtype": "float32", "shape": [1, 3, 16, 16], "data": [1.0]}}}).encode(), JSON, 400,
     "request inputs['x']: data must be a flat list of 768 values for shape [1, 3, 16, 16], found 1 values"),
    (b"x" * 400_000, BINARY, 413, "request body: 400000 bytes, more than the"),
    (b"{}", "text/plain", 415, "request Content-Type: expected one of application/json, application/octet-stream"),
], ids=["wrong-shape", "wrong-dtype", "too-many-samples", "invalid-json", "bad-safetensors", "wrong-input-name",
        "wrong-data-length", "body-too-large", "wrong-content-type"])  # stable ids: the bodies are random
def test_malformed_requests_get_a_4xx_with_the_opara_error_and_serving_goes_on(endpoint, body, kind, status, message):
    got, reply = endpoint.post(body, kind)
    assert got == status, reply
    error = json.loads(reply)
    assert message in error["message"], error
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(endpoint.infer(x), endpoint.eager(x), rtol=1e-4, atol=1e-5)


def test_shutdown_is_clean_and_leaves_no_processes(endpoint):
    assert endpoint.ray_pids, "no Ray processes were found while serving"
    serve.shutdown()
    ray.shutdown()
    deadline = time.monotonic() + 30
    while (left := endpoint.ray_pids & set(_processes())) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {pid: cmd[:120] for pid, (_, cmd) in _processes().items() if pid in endpoint.ray_pids}
    assert not left, f"Ray processes still running after shutdown: {left}"
    assert not _ray_processes(endpoint.temp_dir, endpoint.before), "Ray processes appeared after shutdown"
