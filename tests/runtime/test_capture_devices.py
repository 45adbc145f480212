"""CapturedPlan and StreamLauncher on two GPUs without one: torch.cuda's streams, events, device switches, graph
capture and memory pools are faked (they only record), the ops run for real on the CPU. What is checked is what
the launcher asks of CUDA: each op on its device and stream, copies with their source GPU's copy stream current,
the capture on the first GPU, the other GPUs' allocations routed to pools that live with the graph."""
from __future__ import annotations

import contextlib
import functools

import pytest
import torch

import oparac
from opara_plan import is_copy, iter_refs
from opara_runtime import capture, execute
from opara_runtime.devices import node_device
from opara_runtime.runner import Runner
from oparac.profile.links import nominal_links
from oparac.pipeline import model_weights

from helpers.models import two_branches


class FakeCuda:
    def __init__(self, monkeypatch):
        self.device = 0                # the current device's index
        self.current: dict[int, FakeStream] = {}
        self.capture_stream = None     # set while a capture is under way
        self.routed: dict[int, object] = {}
        self.ran: list[dict] = []
        self.log: list[tuple] = []
        self.default_capture_stream = None
        self.captured_on = None        # the stream the last capture began on
        fake = self

        class FakeStream:
            def __init__(self, device=None, priority=0):
                self.device = torch.device("cuda", fake._index(device))

            def wait_event(self, event):
                assert event.stream is not None, "waits on an event never recorded"
                fake.log.append(("wait", self, event, fake.capture_stream is not None))

            def wait_stream(self, other):
                fake.log.append(("wait_stream", self, other, fake.capture_stream is not None))

        class FakeEvent:
            def __init__(self, *args, **kwargs):
                self.stream = None

            def record(self, stream=None):
                self.stream = stream or fake.current_stream()
                fake.log.append(("record", self, self.stream, fake.capture_stream is not None))

        class FakeMemPool:
            def __init__(self):
                self.device = fake.device

        self.Stream, self.Event = FakeStream, FakeEvent
        # CUDAGraph takes no keep_graph, as in torch < 2.8: the capture without in-graph input copies must not pass it.
        for name, value in {"Stream": FakeStream, "Event": FakeEvent, "current_stream": self.current_stream,
                            "stream": self.stream, "device": self.device_ctx, "graph": self.graph,
                            "CUDAGraph": object, "synchronize": lambda device=None: None,
                            "MemPool": FakeMemPool, "use_mem_pool": self.use_mem_pool}.items():
            monkeypatch.setattr(torch.cuda, name, value)
        real_run_node = execute.run_node

        def run_node(node, values, device, memory_format="contiguous"):
            self.ran.append({"node": node, "device": device, "current_device": self.device,
                             "streams": dict(self.current), "capturing": self.capture_stream is not None,
                             "routed": dict(self.routed)})
            return real_run_node(node, values, torch.device("cpu"), memory_format)
        monkeypatch.setattr(execute, "run_node", run_node)

    def _index(self, device) -> int:
        if device is None:
            return self.device
        return device if isinstance(device, int) else torch.device(device).index

    def current_stream(self, device=None):
        d = self._index(device)
        return self.current.setdefault(d, self.Stream(d))

    @contextlib.contextmanager
    def device_ctx(self, device):
        before, self.device = self.device, self._index(device)
        yield
        self.device = before

    @contextlib.contextmanager
    def stream(self, s):
        """Like torch: the stream's device becomes current, and the stream current on it."""
        d = s.device.index
        before_device, before_stream = self.device, self.current.get(d)
        self.device, self.current[d] = d, s
        yield
        self.device, self.current[d] = before_device, before_stream

    @contextlib.contextmanager
    def graph(self, graph, stream=None, **kwargs):
        if stream is None:  # torch's default capture stream: made once, on the device current at the first capture
            self.default_capture_stream = self.default_capture_stream or self.Stream()
            stream = self.default_capture_stream
        with self.stream(stream):
            self.capture_stream = self.captured_on = stream
            yield
            self.capture_stream = None

    @contextlib.contextmanager
    def use_mem_pool(self, pool, device=None):
        d = self._index(device)
        assert pool.device == d, "a pool is used on the device it was made on"
        self.routed[d] = pool
        yield
        del self.routed[d]


@functools.lru_cache(maxsize=1)
def _plan():
    model, inputs = two_branches()
    plan = oparac.compile(model, inputs, device="cpu", devices=["cuda:0", "cuda:1"],
                          links=nominal_links(2, latency_ms=0.001, ms_per_byte=1e-10))
    assert plan.schedule.num_devices == 2
    return model, plan


@pytest.mark.parametrize("gpus", [(0, 1), (1, 0)], ids=["cuda0-cuda1", "cuda1-cuda0"])
def test_the_capture_runs_each_op_on_its_gpu_and_stream_and_routes_other_gpus_to_graph_pools(monkeypatch, gpus):
    model, plan = _plan()
    base = Runner(plan, model_weights(model), torch.device("cpu"), capture=False)._base
    cuda = FakeCuda(monkeypatch)
    cuda.default_capture_stream = cuda.Stream(0)  # an earlier capture in this process made it on cuda:0
    devices = [torch.device("cuda", g) for g in gpus]
    captured = capture.CapturedPlan(plan, base, devices, warmup=1)
    launcher, s = captured.launcher, plan.schedule
    streams = {0: None, **{k: st for k, st in enumerate(launcher.side_streams, 1)}}

    capture_stream = cuda.captured_on
    assert capture_stream.device == devices[0], "the capture starts on the first GPU"
    during = [e for e in cuda.log if e[3]]
    assert during[0][0] == "record" and during[0][2] is capture_stream, "the fork is recorded on the capture stream"
    in_capture = [r for r in cuda.ran if r["capturing"]]
    assert len(in_capture) == len(s.launch_order)
    ids = {id(n): i for i, n in enumerate(plan.graph.nodes)}
    for r in in_capture:
        i = ids[id(r["node"])]
        want = devices[node_device(plan, i)]
        assert r["device"] == want and r["current_device"] == want.index, f"node {i} runs on its GPU"
        st = r["streams"][want.index]
        assert st is (streams[s.stream[i]] or capture_stream), f"node {i} runs on its plan stream"
        assert set(r["routed"]) == {d.index for d in devices[1:]}, "other GPUs allocate from the graph's pools"
        if is_copy(r["node"]):
            src = devices[node_device(plan, next(iter_refs(r["node"].args)).node)]
            assert src != want and r["streams"][src.index] is launcher.copy_streams[i], \
                f"copy node {i}: the source GPU's copy stream is current there"
    assert {d.index for d in captured.pools} == {d.index for d in devices[1:]}
    assert all(pool.device == d.index for d, pool in captured.pools.items())

    forked = {id(e[1]) for e in during if e[0] == "wait" and e[2] is during[0][1]}
    joined = {id(e[2]) for e in during if e[0] == "wait_stream" and e[1] is capture_stream}
    assert forked == {id(st) for st in launcher.forked}, "every side and copy stream waits on the fork"
    assert joined == {id(st) for st in launcher.forked}, "every forked stream joins the capture stream"
    with torch.no_grad():
        want = model(base[next(i for i, n in enumerate(plan.graph.nodes) if n.kind == "input")])
    for got, expected in zip(captured.static_outputs, want):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

