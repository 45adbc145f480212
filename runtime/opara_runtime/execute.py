"""Running a plan's ops: sequentially (CPU, correctness path) or on the plan's streams (CUDA)."""
from __future__ import annotations

import contextlib

import torch

from opara_plan import ExecutionError, OparaError, Plan, is_copy, iter_refs
from opara_runtime.devices import node_device, stream_devices
from opara_runtime.lifetimes import release_points
from opara_runtime.ops import op_failure, run_node


def run_sequential(plan: Plan, values: list, devices: list[torch.device]) -> None:
    """Execute every op in launch order on the current stream, dropping intermediates after last use.
    devices[d] is where the plan's device d runs (copy nodes move values between them). An op that raises
    becomes an ExecutionError naming it (the try costs nothing until something fails)."""
    nodes = plan.graph.nodes
    release = release_points(plan, sequential=True)
    memory_format = plan.model.memory_format
    i = -1
    try:
        for i in plan.schedule.launch_order:
            values[i] = run_node(nodes[i], values, devices[node_device(plan, i)], memory_format)
            for j in release.get(i, ()):
                values[j] = None
    except OparaError:
        raise
    except Exception as e:
        raise op_failure(i, nodes[i], values, e, f"on {devices[node_device(plan, i)]}") from e


def storage_ids(tensors) -> frozenset[int]:
    """The storages of these tensors (views share their base's)."""
    return frozenset(t.untyped_storage().data_ptr() for t in tensors if isinstance(t, torch.Tensor))


def unaliased(flat: list, leaves: frozenset[int]) -> list:
    """Outputs that share storage with a param, constant or input (a model returning a weight or a view of
    its input) are cloned: a caller is never handed the runner's weights to write into."""
    return [t.clone() if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() in leaves else t
            for t in flat]


def _no_context(node_id: int):
    return contextlib.nullcontext()


class StreamLauncher:
    """Launches the plan's ops on its streams with its waits; the same code warms up and captures.

    Several GPUs: every plan stream is a stream of its device; stream 0 is the calling stream of the first
    device, which forks every other stream (events work across devices) and joins them back, so one
    capture spans the GPUs. A copy node runs on its (destination) stream; torch runs a peer copy on the
    source device's current stream after a barrier with the destination's, so the copy is given a copy
    stream of the source device per destination stream instead of a plan stream there (which would then
    wait for the destination's work): each copy waits for the destination stream's state (which includes
    the copy's plan waits) and the destination stream waits for the copy.
    """

    def __init__(self, plan: Plan, devices: list[torch.device], programs=None, pool=None) -> None:
        """pool: a graph_pool.GraphPool whose streams this launcher uses (captures sharing a pool share streams)."""
        self.plan = plan
        self.devices = devices
        self.device = devices[0]
        self.programs = programs  # compiled fused segments, or None to launch op by op
        s = plan.schedule
        self.waits_of: dict[int, list[int]] = {}
        for consumer, producer in s.waits:
            self.waits_of.setdefault(consumer, []).append(producer)
        self.signalled = sorted({p for _, p in s.waits})
        self.release = release_points(plan, sequential=False)
        on = stream_devices(plan)
        self.side_streams = [pool.stream(devices[on[k]], k) if pool is not None
                             else torch.cuda.Stream(device=devices[on[k]]) for k in range(1, s.num_streams)]
        self.node_devices = [devices[node_device(plan, i)] for i in range(len(plan.graph.nodes))]
        self.copy_streams: dict[int, torch.cuda.Stream] = {}  # copy node -> its source device's copy stream
        by_pair: dict[tuple[int, int], torch.cuda.Stream] = {}
        for i in s.launch_order:
            node = plan.graph.nodes[i]
            if not is_copy(node):
                continue
            src = node_device(plan, next(iter_refs(node.args)).node)
            if src != node_device(plan, i):
                key = (src, s.stream[i])
                if key not in by_pair:
                    by_pair[key] = torch.cuda.Stream(device=devices[src])
                self.copy_streams[i] = by_pair[key]
        self.forked = self.side_streams + list(by_pair.values())

    def launch(self, values: list, around=None) -> None:
        """Launch everything from the current stream: fork side streams, run, join them back.

        around(node_id), if given, returns a context manager entered around each op's launch (tracing).
        """
        main = torch.cuda.current_stream(self.device)
        streams = [main, *self.side_streams]
        fork = torch.cuda.Event()
        fork.record(main)
        for st in self.forked:
            st.wait_event(fork)
        if self.programs is None:
            self._launch_ops(values, streams, around or _no_context)
        else:
            self._launch_segments(values, streams)
        for st in self.forked:
            main.wait_stream(st)

    def _launch_ops(self, values: list, streams: list, around) -> None:
        plan, nodes, stream = self.plan, self.plan.graph.nodes, self.plan.schedule.stream
        events = {p: torch.cuda.Event() for p in self.signalled}
        i = -1
        try:
            for i in plan.schedule.launch_order:
                st = streams[stream[i]]
                for p in self.waits_of.get(i, ()):
                    st.wait_event(events[p])
                source = self.copy_streams.get(i)
                # The source stream is entered first so that the destination device is current for the op.
                with around(i), (torch.cuda.stream(source) if source is not None else _no_context(i)), \
                        torch.cuda.stream(st):
                    values[i] = run_node(nodes[i], values, self.node_devices[i], plan.model.memory_format)
                if i in events:
                    events[i].record(st)
                for j in self.release.get(i, ()):
                    values[j] = None
        except OparaError:
            raise
        except Exception as e:
            raise op_failure(i, nodes[i], values, e, f"on {self.node_devices[i]} (stream {stream[i]})") from e

    def _launch_segments(self, values: list, streams: list) -> None:
        """Fused segments keep their outputs for the whole graph; their insides belong to inductor."""
        segments = self.plan.fusion.segments
        events = {w: torch.cuda.Event() for seg in segments for w in seg.waits}
        for k, program in enumerate(self.programs):
            st = streams[program.segment.stream]
            for w in program.segment.waits:
                st.wait_event(events[w])
            try:
                with torch.cuda.stream(st):
                    program(values)
            except OparaError:
                raise
            except Exception as e:
                ops = program.segment.ops
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise ExecutionError(f"plan fusion segment {k} (nodes {ops[0]}..{ops[-1]}, stream "
                                     f"{program.segment.stream}) failed on {self.device}: {type(e).__name__}: "
                                     f"{first[:300]}") from e
            if k in events:
                events[k].record(st)
