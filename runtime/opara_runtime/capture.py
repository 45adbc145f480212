"""One multi-stream CUDA graph per plan: warm up in the plan's stream layout, capture, replay."""
from __future__ import annotations

import contextlib

import torch

from opara_plan import ExecutionError, OparaError, Plan
from opara_runtime.devices import node_device
from opara_runtime.execute import StreamLauncher
from opara_runtime.graph_inputs import CopyAheadFeed, InputFeed, in_graph_copies
from opara_runtime.ops import materialize
from opara_runtime.workspaces import graph_owned_workspaces


class CapturedPlan:
    """Static input buffers, the captured graph and its static outputs."""

    def __init__(self, plan: Plan, base_values: list, devices: list[torch.device], *, warmup: int = 2,
                 programs=None, pool=None) -> None:
        """devices: one per plan device id; the capture starts on the first and forks to the others. pool: a
        graph_pool.GraphPool shared with other captures (its memory and streams), else the graph's own pool."""
        self.plan = plan
        self.device = device = devices[0]
        self.launcher = StreamLauncher(plan, devices, programs, pool=pool)
        self.static_inputs = [base_values[i] for i, n in enumerate(plan.graph.nodes) if n.kind == "input"]
        self.base_values = base_values
        with torch.cuda.device(device):
            # Warm-up creates cuBLAS/cuDNN handles for every stream before capture (their workspaces are made
            # again inside it, from the graph's pool: workspaces.py).
            side = torch.cuda.Stream(device=device)
            side.wait_stream(torch.cuda.current_stream(device))
            with named_failures("warm-up", device), torch.cuda.stream(side):
                for _ in range(warmup):
                    self.launcher.launch(list(base_values))
                torch.cuda.current_stream(device).wait_stream(side)
                _synchronize(devices)  # a kernel's asynchronous error surfaces here, inside the warm-up
            api = in_graph_copies(device)
            # Inputs the caller passes are copied inside the graph (graph_inputs): one captured memcpy per
            # input whose buffer has the caller's layout, switched and re-pointed per call.
            staging = [torch.zeros_like(buf) if api is not None and _patchable(buf) else None
                       for buf in self.static_inputs]
            # keep_graph only where the feed needs the graph's nodes: torch < 2.8 has no such argument.
            self.graph = torch.cuda.CUDAGraph(keep_graph=True) if api is not None else torch.cuda.CUDAGraph()
            # The capture's private pool is the first device's only. What the ops allocate on the other
            # GPUs during capture (values, and workspaces they free again) goes to a pool per GPU that lives
            # as long as the graph: from the ordinary pool, a freed workspace would be handed to other
            # tensors or released by empty_cache() (which every later capture calls) while replays still
            # write it. Each pool is created on its GPU, so it holds that GPU's memory.
            pools = {}
            for d in dict.fromkeys(devices[1:]):
                with torch.cuda.device(d):
                    pools[d] = torch.cuda.MemPool()
            values = list(base_values)
            # An explicit capture stream on the first device: torch.cuda.graph's default one is made once per
            # process, on whichever device was current at the first capture.
            capture_stream = pool.stream(device, 0) if pool is not None else torch.cuda.Stream(device=device)
            with named_failures("capture", device), graph_owned_workspaces(), contextlib.ExitStack() as routed:
                for d, device_pool in pools.items():  # not `pool`: that names the shared GraphPool
                    routed.enter_context(torch.cuda.use_mem_pool(device_pool, device=d))
                with torch.cuda.graph(self.graph, stream=capture_stream,
                                      pool=pool.handle if pool is not None else None):
                    for buf, st in zip(self.static_inputs, staging):
                        if st is not None:
                            buf.copy_(st)
                    self.launcher.launch(values)
            self.inputs = (InputFeed(api, self.graph, self.static_inputs, staging) if api is not None
                           else CopyAheadFeed(self.static_inputs))
            out_node = plan.graph.nodes[-1]
            self.static_outputs = [materialize(r, values, device) for r in out_node.args]
            # Values on the other GPUs stay referenced for the graph's life (lifetimes never releases them
            # during capture either).
            self.held = [v for i, v in enumerate(values) if node_device(plan, i) != 0 and v is not None]
            self.pools = pools  # set after the graph and the tensors in the pools, so released after them
            del values
            _synchronize(devices)

    def replay(self, inputs) -> list[torch.Tensor]:
        self.inputs.feed(inputs)
        self.graph.replay()
        return self.static_outputs


@contextlib.contextmanager
def named_failures(stage: str, device: torch.device):
    """Any failure of the warm-up or the capture as an ExecutionError: the failing node's own message where
    the launcher gave one (ending a broken capture raises again and would hide it), else the stage's."""
    try:
        yield
    except ExecutionError as e:
        raise ExecutionError(f"plan {stage} on {device}: {e}") from e
    except OparaError:
        raise
    except Exception as e:
        named = _execution_error_in(e)
        if named is not None:
            raise ExecutionError(f"plan {stage} on {device}: {named}") from e
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExecutionError(f"plan {stage} on {device} failed: {type(e).__name__}: {first[:300]}") from e


def _execution_error_in(e: BaseException) -> ExecutionError | None:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, ExecutionError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _patchable(buf: torch.Tensor) -> bool:
    """A caller's (contiguous) input reaches this buffer by a plain memcpy, which a graph node can re-point.
    A channels_last buffer needs a transposing kernel instead; an empty one no copy at all."""
    return buf.is_contiguous() and buf.numel() > 0


def _synchronize(devices: list[torch.device]) -> None:
    for d in dict.fromkeys(devices):
        torch.cuda.synchronize(d)
