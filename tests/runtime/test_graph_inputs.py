"""The in-graph input copies' bookkeeping (graph_inputs.InputFeed), against a fake cudart on CPU tensors: which
node is re-pointed, switched on or off, and what is copied ahead of the replay. The GPU test runs it for real."""
import contextlib
import ctypes
import gc
import weakref

import pytest
import torch

from opara_runtime import graph_inputs
from opara_runtime.graph_inputs import CopyAheadFeed, GraphApi, InputFeed, MemcpyNode, cudart_paths


class FakeGraph:
    def __init__(self):
        self.instantiated = 0

    def instantiate(self):
        self.instantiated += 1

    def raw_cuda_graph(self):
        return 1000

    def raw_cuda_graph_exec(self):
        assert self.instantiated, "the exec handle is read after instantiate()"
        return 2000

    def replay(self):
        pass


class FakeApi:
    """Remembers every update; set_source fails for the pointers in `refuse` (as cudart would for memory of
    another context)."""

    def __init__(self, nodes):
        self.nodes = nodes
        self.calls = []
        self.refuse = set()

    def memcpy_nodes(self, graph):
        assert graph == 1000
        return self.nodes

    def set_source(self, graph_exec, node, src):
        assert graph_exec == 2000
        self.calls.append(("src", node.node, src))
        return 1 if src in self.refuse else 0

    def set_enabled(self, graph_exec, node, enabled):
        assert graph_exec == 2000
        self.calls.append(("on" if enabled else "off", node.node))


def _feed(n_inputs=2, *, missing=()):
    bufs = [torch.zeros(4) for _ in range(n_inputs)]
    staging = [torch.zeros(4) for _ in range(n_inputs)]
    nodes = [MemcpyNode(node=10 + k, dst=b.data_ptr(), src=s.data_ptr(), nbytes=16, kind=3)
             for k, (b, s) in enumerate(zip(bufs, staging)) if k not in missing]
    nodes.append(MemcpyNode(node=99, dst=123, src=456, nbytes=8, kind=3))  # a copy of the model's own
    api = FakeApi(nodes)
    graph = FakeGraph()
    feed = InputFeed(api, graph, bufs, staging)
    return feed, api, bufs, staging, graph


def test_nodes_start_switched_off_so_a_bare_replay_reads_the_buffers():
    feed, api, _, _, graph = _feed()
    assert graph.instantiated == 1
    assert api.calls == [("off", 10), ("off", 11)]


def test_a_callers_tensor_is_read_in_the_graph_not_copied_ahead():
    feed, api, bufs, _, _ = _feed()
    api.calls.clear()
    x, y = torch.ones(4), torch.full((4,), 2.0)
    feed.feed([x, y])
    assert api.calls == [("src", 10, x.data_ptr()), ("on", 10), ("src", 11, y.data_ptr()), ("on", 11)]
    assert bufs[0].sum() == 0 and bufs[1].sum() == 0  # nothing copied on the host side
    assert feed.held == [x, y]  # kept alive: a later bare replay reads valid memory


def test_the_same_tensor_again_costs_no_update():
    feed, api, _, _, _ = _feed(1)
    x = torch.ones(4)
    feed.feed([x])
    api.calls.clear()
    feed.feed([x])
    assert api.calls == []


def test_the_buffer_itself_switches_its_copy_off_and_back_on():
    feed, api, bufs, _, _ = _feed(1)
    x = torch.ones(4)
    feed.feed([x])
    api.calls.clear()
    feed.feed([bufs[0]])
    assert api.calls == [("off", 10)]
    feed.feed([x])  # same source as before: only switched back on
    assert api.calls == [("off", 10), ("on", 10)]


def test_a_non_contiguous_input_is_copied_ahead_with_the_node_off():
    feed, api, bufs, _, _ = _feed(1)
    feed.feed([torch.ones(4)])
    api.calls.clear()
    x = torch.arange(8.0)[::2]
    feed.feed([x])
    assert api.calls == [("off", 10)]
    assert torch.equal(bufs[0], x)


def test_a_refused_update_falls_back_to_copying_ahead():
    feed, api, bufs, _, _ = _feed(1)
    x = torch.full((4,), 7.0)
    api.refuse.add(x.data_ptr())
    feed.feed([x])
    assert api.calls[-1] == ("src", 10, x.data_ptr())  # tried, refused, node stays off
    assert not feed.enabled[0] and torch.equal(bufs[0], x)


def test_a_copy_missing_from_the_graph_is_fed_through_its_staging_tensor():
    with pytest.warns(UserWarning, match="not among the graph's memcpy nodes"):
        feed, api, bufs, staging, _ = _feed(2, missing={1})
    x, y = torch.ones(4), torch.full((4,), 3.0)
    feed.feed([x, y])
    assert torch.equal(staging[1], y)  # the captured copy still runs, from staging into the buffer
    assert bufs[1].sum() == 0
    feed.feed([x, bufs[1]])  # even the buffer itself goes through staging: the copy cannot be switched off
    assert torch.equal(staging[1], bufs[1])


def test_inputs_without_a_captured_copy_are_copied_ahead():
    bufs = [torch.zeros(4)]
    feed = InputFeed(FakeApi([]), FakeGraph(), bufs, [None])
    x = torch.ones(4)
    feed.feed([x])
    assert torch.equal(bufs[0], x)


def test_copy_ahead_feed_skips_the_buffer_itself():
    bufs = [torch.zeros(4)]
    feed = CopyAheadFeed(bufs)
    feed.feed([torch.ones(4)])
    assert torch.equal(bufs[0], torch.ones(4))
    bufs[0].fill_(5.0)
    feed.feed([bufs[0]])
    assert torch.equal(bufs[0], torch.full((4,), 5.0))


def test_a_staging_tensor_outlives_the_first_call():
    """The staging tensors are the copies' operands at instantiation: their memory must stay mapped."""
    feed, _, _, staging, _ = _feed(1)
    gone = weakref.ref(staging[0])
    del staging
    feed.feed([torch.ones(4)])
    gc.collect()
    assert gone() is not None


def test_a_conjugate_view_is_copied_ahead_not_memcpyed():
    bufs, staging = [torch.zeros(4, dtype=torch.complex64)], [torch.zeros(4, dtype=torch.complex64)]
    node = MemcpyNode(node=10, dst=bufs[0].data_ptr(), src=staging[0].data_ptr(), nbytes=32, kind=3)
    api = FakeApi([node])
    feed = InputFeed(api, FakeGraph(), bufs, staging)
    z = torch.tensor([1 + 2j, 3 - 1j, 0 + 1j, 2 + 0j], dtype=torch.complex64)
    assert z.conj().is_contiguous() and z.conj().is_conj()
    feed.feed([z.conj()])
    assert not feed.enabled[0] and torch.equal(bufs[0], z.conj().resolve_conj())


class FakeCudart:
    """ctypes-like functions: each returns `fail` (a CUDA error code) and is logged; cudaGetLastError clears."""

    def __init__(self, fail: int):
        self.log = []
        for name in ("cudaGraphGetNodes", "cudaGraphNodeGetType", "cudaGraphMemcpyNodeGetParams",
                     "cudaGraphExecMemcpyNodeSetParams1D", "cudaGraphNodeSetEnabled"):
            setattr(self, name, self._fn(name, fail))
        self.cudaGetLastError = self._fn("cudaGetLastError", 0)
        self.cudaGetErrorString = lambda code: b"invalid argument"

    def _fn(self, name, code):
        def call(*args):
            self.log.append(name)
            return code
        return call


def test_a_failed_call_clears_the_last_cuda_error_it_leaves():
    """Else torch's next kernel launch check (cudaGetLastError) raises it from an unrelated op."""
    lib = FakeCudart(fail=1)
    api = GraphApi(lib)
    node = MemcpyNode(node=10, dst=1, src=2, nbytes=16, kind=3)
    assert api.set_source(2000, node, 3) == 1
    assert lib.log == ["cudaGraphExecMemcpyNodeSetParams1D", "cudaGetLastError"]
    lib.log.clear()
    with pytest.raises(RuntimeError, match="cudaGraphNodeSetEnabled failed: CUDA error 1"):
        api.set_enabled(2000, node, True)
    assert lib.log == ["cudaGraphNodeSetEnabled", "cudaGetLastError"]


def test_a_successful_update_leaves_the_last_error_alone():
    lib = FakeCudart(fail=0)
    GraphApi(lib).set_source(2000, MemcpyNode(node=10, dst=1, src=2, nbytes=16, kind=3), 3)
    assert lib.log == ["cudaGraphExecMemcpyNodeSetParams1D"]


def test_the_memcpy_params_struct_has_the_cuda_header_layout():
    """struct cudaMemcpy3DParms on LP64: arrays and pointers 8 bytes, cudaPos/cudaExtent 3 size_t, cudaPitchedPtr
    a pointer and 3 size_t, the kind an int padded to 8."""
    p = graph_inputs._Memcpy3DParms
    offsets = {name: getattr(p, name).offset for name, _ in p._fields_}
    assert offsets == {"srcArray": 0, "srcPos": 8, "srcPtr": 32, "dstArray": 64, "dstPos": 72, "dstPtr": 96,
                       "extent": 128, "kind": 152}
    assert ctypes.sizeof(p) == 160


def test_only_torchs_cudart_major_version_is_used():
    maps = ["7f00-7f01 r-xp 00000000 08:01 11 /site/nvidia/cu13/lib/libcudart.so.13\n",
            "7f02-7f03 r--p 00001000 08:01 11 /site/nvidia/cu13/lib/libcudart.so.13\n",
            "7f04-7f05 r-xp 00000000 08:01 12 /opt/other/lib/libcudart.so.12.4.127\n",
            "7f06-7f07 r-xp 00000000 08:01 13 /opt/other/lib/libcudart_static_helper.so\n",
            "7f08-7f09 rw-p 00000000 00:00 0\n"]
    assert cudart_paths(maps, "13.0") == ["/site/nvidia/cu13/lib/libcudart.so.13"]
    assert cudart_paths(maps, "12.8") == ["/opt/other/lib/libcudart.so.12.4.127"]
    assert cudart_paths(maps, "11.8") == []
    assert cudart_paths(maps, None) == []  # a CPU or ROCm build of torch


def test_the_probe_fails_with_a_warning_when_the_captured_copy_is_not_found(monkeypatch):
    """Fed through its staging tensor, the probe's input would still arrive: finding the node is the check."""
    class Stream:
        def wait_stream(self, other):
            pass

    for name, value in {"device": lambda device: contextlib.nullcontext(), "Stream": lambda device=None: Stream(),
                        "current_stream": lambda device=None: Stream(), "synchronize": lambda device=None: None,
                        "graph": lambda graph, stream=None: contextlib.nullcontext(),
                        "CUDAGraph": lambda keep_graph=False: FakeGraph()}.items():
        monkeypatch.setattr(torch.cuda, name, value)
    real_full = torch.full
    monkeypatch.setattr(torch, "full", lambda size, value, device=None: real_full(size, value))
    with pytest.warns(UserWarning, match="not found among the graph's memcpy nodes"):
        assert graph_inputs._probe.__wrapped__(FakeApi([]), 0) is False
