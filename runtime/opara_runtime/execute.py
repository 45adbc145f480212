"""Running a plan's ops: sequentially (CPU, correctness path) or on the plan's streams (CUDA)."""
from __future__ import annotations

import contextlib

import torch

from opara_plan import Plan
from opara_runtime.lifetimes import release_points
from opara_runtime.ops import run_node


def run_sequential(plan: Plan, values: list, device: torch.device) -> None:
    """Execute every op in launch order on the current stream, dropping intermediates after last use."""
    nodes = plan.graph.nodes
    release = release_points(plan, sequential=True)
    for i in plan.schedule.launch_order:
        values[i] = run_node(nodes[i], values, device)
        for j in release.get(i, ()):
            values[j] = None


def _no_context(node_id: int):
    return contextlib.nullcontext()


class StreamLauncher:
    """Launches the plan's ops on its streams with its waits; the same code warms up and captures."""

    def __init__(self, plan: Plan, device: torch.device, programs=None) -> None:
        self.plan = plan
        self.device = device
        self.programs = programs  # compiled fused segments, or None to launch op by op
        s = plan.schedule
        self.waits_of: dict[int, list[int]] = {}
        for consumer, producer in s.waits:
            self.waits_of.setdefault(consumer, []).append(producer)
        self.signalled = sorted({p for _, p in s.waits})
        self.release = release_points(plan, sequential=False)
        self.side_streams = [torch.cuda.Stream(device=device) for _ in range(s.num_streams - 1)]

    def launch(self, values: list, around=None) -> None:
        """Launch everything from the current stream: fork side streams, run, join them back.

        around(node_id), if given, returns a context manager entered around each op's launch (tracing).
        """
        main = torch.cuda.current_stream(self.device)
        streams = [main, *self.side_streams]
        fork = torch.cuda.Event()
        fork.record(main)
        for st in self.side_streams:
            st.wait_event(fork)
        if self.programs is None:
            self._launch_ops(values, streams, around or _no_context)
        else:
            self._launch_segments(values, streams)
        for st in self.side_streams:
            main.wait_stream(st)

    def _launch_ops(self, values: list, streams: list, around) -> None:
        plan, nodes, stream = self.plan, self.plan.graph.nodes, self.plan.schedule.stream
        events = {p: torch.cuda.Event() for p in self.signalled}
        for i in plan.schedule.launch_order:
            st = streams[stream[i]]
            for p in self.waits_of.get(i, ()):
                st.wait_event(events[p])
            with around(i), torch.cuda.stream(st):
                values[i] = run_node(nodes[i], values, self.device)
            if i in events:
                events[i].record(st)
            for j in self.release.get(i, ()):
                values[j] = None

    def _launch_segments(self, values: list, streams: list) -> None:
        """Fused segments keep their outputs for the whole graph; their insides belong to inductor."""
        segments = self.plan.fusion.segments
        events = {w: torch.cuda.Event() for seg in segments for w in seg.waits}
        for k, program in enumerate(self.programs):
            st = streams[program.segment.stream]
            for w in program.segment.waits:
                st.wait_event(events[w])
            with torch.cuda.stream(st):
                program(values)
            if k in events:
                events[k].record(st)
