"""Inputs copied inside the captured graph: each call points the graph's input copies at the caller's tensors.

A copy launched ahead of every replay cost about 17 us of a synchronised call on an H100 (a launch, and the
graph waiting for it; benchmarks/results/call-overhead-20261123T185542.json), more than the replay itself. So
the capture starts with one device-to-device memcpy per input, from a staging tensor into the static input
buffer, and before a replay the call sets that memcpy node's source to the caller's tensor in the instantiated
graph (cudaGraphExecMemcpyNodeSetParams1D: a host-side update that takes effect from the next launch). The
node stays disabled while the buffer itself holds the input: before the first call (so a caller who fills the
static buffers and replays the graph gets what it wrote), and when the caller passes the buffer back.

The CUDA runtime's graph API is reached through ctypes, in the libcudart torch has loaded. Where that is not
possible (no such library in the process, an older torch without raw graph handles, a failed probe), inputs
are copied ahead of the replay as before.
"""
from __future__ import annotations

import ctypes
import functools
import warnings
from dataclasses import dataclass

import torch

from opara_runtime.devices import indexed

_MEMCPY_NODE = 1  # cudaGraphNodeTypeMemcpy


class _Pos(ctypes.Structure):
    _fields_ = [("x", ctypes.c_size_t), ("y", ctypes.c_size_t), ("z", ctypes.c_size_t)]


class _PitchedPtr(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("pitch", ctypes.c_size_t), ("xsize", ctypes.c_size_t),
                ("ysize", ctypes.c_size_t)]


class _Memcpy3DParms(ctypes.Structure):
    """struct cudaMemcpy3DParms (unchanged since CUDA 3)."""
    _fields_ = [("srcArray", ctypes.c_void_p), ("srcPos", _Pos), ("srcPtr", _PitchedPtr),
                ("dstArray", ctypes.c_void_p), ("dstPos", _Pos), ("dstPtr", _PitchedPtr),
                ("extent", _Pos), ("kind", ctypes.c_int)]


@dataclass(frozen=True)
class MemcpyNode:
    node: int  # cudaGraphNode_t
    dst: int
    src: int
    nbytes: int
    kind: int


class GraphApi:
    """The few cudart graph calls the input feed needs."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        vp, size_t = ctypes.c_void_p, ctypes.c_size_t
        self._get_nodes = _bind(lib, "cudaGraphGetNodes", vp, ctypes.POINTER(vp), ctypes.POINTER(size_t))
        self._node_type = _bind(lib, "cudaGraphNodeGetType", vp, ctypes.POINTER(ctypes.c_int))
        self._memcpy_params = _bind(lib, "cudaGraphMemcpyNodeGetParams", vp, ctypes.POINTER(_Memcpy3DParms))
        self._set_1d = _bind(lib, "cudaGraphExecMemcpyNodeSetParams1D", vp, vp, vp, vp, size_t, ctypes.c_int)
        self._set_enabled = _bind(lib, "cudaGraphNodeSetEnabled", vp, vp, ctypes.c_uint)
        self._error_string = lib.cudaGetErrorString
        self._error_string.restype, self._error_string.argtypes = ctypes.c_char_p, [ctypes.c_int]
        # A failed call also leaves its error as the thread's last error in torch's cudart, where torch's next
        # kernel launch check (cudaGetLastError) would raise it from an unrelated op: every failure clears it.
        self._last_error = _bind(lib, "cudaGetLastError")

    def memcpy_nodes(self, graph: int) -> list[MemcpyNode]:
        """Every 1-D memcpy node of a cudaGraph_t, with its operands."""
        count = ctypes.c_size_t(0)
        self._check(self._get_nodes(graph, None, ctypes.byref(count)), "cudaGraphGetNodes")
        nodes = (ctypes.c_void_p * count.value)()
        self._check(self._get_nodes(graph, nodes, ctypes.byref(count)), "cudaGraphGetNodes")
        found = []
        for node in nodes[:count.value]:
            kind = ctypes.c_int(-1)
            self._check(self._node_type(node, ctypes.byref(kind)), "cudaGraphNodeGetType")
            if kind.value != _MEMCPY_NODE:
                continue
            p = _Memcpy3DParms()
            self._check(self._memcpy_params(node, ctypes.byref(p)), "cudaGraphMemcpyNodeGetParams")
            if p.srcArray or p.dstArray or p.extent.y != 1 or p.extent.z != 1:
                continue  # not a plain 1-D copy between device pointers
            found.append(MemcpyNode(node=node, dst=(p.dstPtr.ptr or 0) + p.dstPos.x,
                                    src=(p.srcPtr.ptr or 0) + p.srcPos.x, nbytes=p.extent.x, kind=p.kind))
        return found

    def set_source(self, graph_exec: int, node: MemcpyNode, src: int) -> int:
        """0 on success, else the CUDA error code (not raised: the caller then copies the input itself)."""
        code = self._set_1d(graph_exec, node.node, node.dst, src, node.nbytes, node.kind)
        if code:
            self._last_error()
        return code

    def set_enabled(self, graph_exec: int, node: MemcpyNode, enabled: bool) -> None:
        self._check(self._set_enabled(graph_exec, node.node, 1 if enabled else 0), "cudaGraphNodeSetEnabled")

    def _check(self, code: int, what: str) -> None:
        if code:
            self._last_error()
            raise RuntimeError(f"{what} failed: CUDA error {code} ({self._error_string(code).decode()})")


def _bind(lib: ctypes.CDLL, name: str, *argtypes):
    fn = getattr(lib, name)
    fn.restype, fn.argtypes = ctypes.c_int, list(argtypes)
    return fn


@functools.cache
def graph_api() -> GraphApi | None:
    """The cudart that torch loaded, bound; None when it cannot be found (torch linked it statically) or
    this torch has no raw graph handles. A second cudart would be a second runtime, so none is loaded."""
    if not hasattr(torch.cuda.CUDAGraph, "raw_cuda_graph_exec"):
        return None
    try:
        with open("/proc/self/maps") as maps:
            paths = cudart_paths(maps, torch.version.cuda)
    except OSError:
        return None
    for path in paths:
        try:
            return GraphApi(ctypes.CDLL(path))
        except (OSError, AttributeError):
            continue
    return None


def cudart_paths(maps_lines, cuda_version: str | None) -> list[str]:
    """The mapped libcudart files of torch's CUDA major version. Another library may have mapped a cudart of
    its own (another major version): a separate runtime, whose last-error state and graph support are not
    torch's, so it is never used."""
    major = (cuda_version or "").split(".")[0]
    if not major:
        return []
    found = set()
    for line in maps_lines:
        path = line.split()[-1] if line.strip() else ""
        name = path.rsplit("/", 1)[-1]
        if name.startswith("libcudart.so.") and name.removeprefix("libcudart.so.").split(".")[0] == major:
            found.add(path)
    return sorted(found)


def in_graph_copies(device: torch.device) -> GraphApi | None:
    """The graph API when this process can patch captured input copies on `device`, checked once per device
    on a tiny graph (the real capture would be too late to find out)."""
    api = graph_api()
    if api is None or device.type != "cuda":
        return None
    return api if _probe(api, indexed(device).index) else None


@functools.cache
def _probe(api: GraphApi, index: int) -> bool:
    device = torch.device("cuda", index)
    try:
        with torch.cuda.device(device):
            a, b, c = (torch.full((64,), v, device=device) for v in (1.0, 2.0, 3.0))
            graph, stream = torch.cuda.CUDAGraph(keep_graph=True), torch.cuda.Stream(device=device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.graph(graph, stream=stream):
                b.copy_(a)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a copy not found is reported below, once
                feed = InputFeed(api, graph, [b], [a])
            # Without its node the feed would fill the staging tensor ahead of the replay and still get the
            # right answer: the check must not pass on that.
            if feed.nodes[0] is None:
                raise RuntimeError("the captured copy was not found among the graph's memcpy nodes")
            feed.feed([c])
            if not feed.enabled[0]:
                raise RuntimeError("re-pointing the captured copy was refused")
            graph.replay()
            torch.cuda.synchronize(device)
            if not bool((b == 3.0).all()):
                raise RuntimeError("the re-pointed copy did not deliver the input")
            b.fill_(5.0)
            feed.feed([b])  # the buffer itself: its copy is switched off
            graph.replay()
            torch.cuda.synchronize(device)
            if not bool((b == 5.0).all()):
                raise RuntimeError("the switched-off copy still ran")
            return True
    except Exception as e:  # any failure means: copy ahead of the replay, as without this feature
        warnings.warn(f"inputs will be copied ahead of each replay: patching the captured input copies failed "
                      f"({type(e).__name__}: {e})", stacklevel=2)
        return False


class InputFeed:
    """Per call, points each input's in-graph copy at the caller's tensor, or switches it off.

    buffers: the static inputs; staging[k]: the tensor input k's captured copy reads from, or None where no copy
    was captured (a buffer whose layout differs from the caller's, e.g. channels_last), which is then filled
    ahead of the replay. Not thread-safe: the runner serialises calls.
    """

    def __init__(self, api: GraphApi, graph: torch.cuda.CUDAGraph, buffers: list, staging: list) -> None:
        graph.instantiate()
        self.api = api
        self.exec = graph.raw_cuda_graph_exec()
        by_operands = {(n.dst, n.src): n for n in api.memcpy_nodes(graph.raw_cuda_graph())}
        self.buffers = list(buffers)
        self.nodes: list[MemcpyNode | None] = []
        # Where an input is copied ahead of the replay when its node is off: the buffer, or the staging tensor
        # where the captured copy could not be found (it then always runs, from there).
        self.copy_into = []
        for buf, st in zip(buffers, staging):
            node = None if st is None else by_operands.get((buf.data_ptr(), st.data_ptr()))
            if st is not None and node is None:
                warnings.warn(f"the captured copy into input buffer {buf.data_ptr():#x} is not among the graph's "
                              f"memcpy nodes: this input is copied ahead of each replay", stacklevel=3)
            self.nodes.append(node)
            self.copy_into.append(st if st is not None and node is None else buf)
        self.source = [0] * len(buffers)  # the source each node was last set to
        # The staging tensors are the copies' operands at instantiation, kept for the graph's life: CUDA refuses
        # an update once those operands' mappings have changed, and empty_cache (which every later capture
        # calls) may release their memory.
        self.staging = list(staging)
        # What each enabled node reads, kept alive until the next call replaces it: a later bare replay of the
        # graph then reads valid memory (the last call's input).
        self.held: list = list(staging)
        self.enabled = [False] * len(buffers)
        for node in self.nodes:
            if node is not None:
                api.set_enabled(self.exec, node, False)

    def feed(self, inputs) -> None:
        api, exec_ = self.api, self.exec
        for k, (buf, x, node) in enumerate(zip(self.buffers, inputs, self.nodes)):
            # A memcpy ignores the conjugate and negative view bits, which a copy_ resolves.
            if node is not None and x is not buf and x.is_contiguous() and not (x.is_conj() or x.is_neg()):
                ptr = x.data_ptr()
                if ptr == self.source[k] or api.set_source(exec_, node, ptr) == 0:
                    self.source[k] = ptr
                    self.held[k] = x
                    if not self.enabled[k]:
                        api.set_enabled(exec_, node, True)
                        self.enabled[k] = True
                    continue
            # The buffer holds the input (the caller's own, or a copy made here): the in-graph copy is off.
            if node is not None and self.enabled[k]:
                api.set_enabled(exec_, node, False)
                self.enabled[k] = False
            target = self.copy_into[k]
            if x is not target:
                target.copy_(x, non_blocking=True)


class CopyAheadFeed:
    """Without the graph API: each input is copied into its static buffer ahead of the replay."""

    def __init__(self, buffers: list) -> None:
        self.buffers = list(buffers)

    def feed(self, inputs) -> None:
        for buf, x in zip(self.buffers, inputs):
            if x is not buf:  # a caller that filled the static buffer itself saves the copy (a launch)
                buf.copy_(x, non_blocking=True)
