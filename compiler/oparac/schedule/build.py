"""From a graph and its per-op profile to a plan Schedule: streams, launch order, waits, prediction."""
from __future__ import annotations

from opara_plan import Graph, OpProfile, Schedule
from oparac.profile.cost_model import numel
from oparac.profile.gpus import PREVIEW, GpuSpec
from oparac.schedule.dag import Dag
from oparac.schedule import (Costs, StreamAssignment, assign_streams, order_launches, reduce_waits, simulate)


def demand(op: OpProfile, graph: Graph, node_id: int, gpu: GpuSpec = PREVIEW) -> float:
    """Resource demand of the op's largest kernel relative to one SM of `gpu` (Opara's launch-order key); the
    per-SM limits only put kernels on a common 0..1 scale (PREVIEW: Hopper's)."""
    if op.intensity == "free":
        return 0.0
    if op.kernels:
        worst = 0.0
        for k in op.kernels:
            threads = max(1, k.block[0] * k.block[1] * k.block[2]) if k.block else 1
            worst = max(worst, threads / gpu.sm_threads, k.registers_per_thread * threads / gpu.sm_registers,
                        k.shared_memory / gpu.sm_shared_memory)
        return worst
    # No kernel records (cost model): the fraction of the GPU's threads the output would occupy.
    elements = sum(numel(m.shape) for m in graph.nodes[node_id].outputs)
    return min(1.0, elements / (gpu.sm_count * gpu.sm_threads))



def costs_of(graph: Graph, dag: Dag, ops: tuple[OpProfile, ...], gpu: GpuSpec = PREVIEW) -> Costs:
    return Costs(ms={i: ops[i].ms for i in dag.ops},
                 intensity={i: ops[i].intensity for i in dag.ops},
                 demand={i: demand(ops[i], graph, i, gpu) for i in dag.ops})


def dag_of(graph: Graph, ops: tuple[OpProfile, ...]) -> Dag:
    free = frozenset(i for i, n in enumerate(graph.nodes) if n.kind == "op" and ops[i].intensity == "free")
    return Dag.from_graph(graph, free)


def make_schedule(graph: Graph, ops: tuple[OpProfile, ...], *, streams: str, order: str,
                  max_streams: int, gpu: GpuSpec = PREVIEW) -> Schedule:
    """gpu: the figures of the plan's target (oparac.profile.gpus.gpu_spec); PREVIEW for a cost-model plan."""
    dag = dag_of(graph, ops)
    costs = costs_of(graph, dag, ops, gpu)
    assignment = assign_streams(dag, costs, algorithm=streams, max_streams=max_streams)
    return finish_schedule(graph, dag, costs, assignment, streams=streams, order=order, max_streams=max_streams)


def finish_schedule(graph: Graph, dag: Dag, costs: Costs, assignment: StreamAssignment, *, streams: str, order: str,
                    max_streams: int, **device_fields) -> Schedule:
    """Launch order, waits and prediction for a stream assignment; `device_fields` go into the Schedule."""
    launch = order_launches(dag, assignment, costs, algorithm=order)
    waits = reduce_waits(dag, assignment.stream, launch)
    predicted = simulate(dag, assignment.stream, launch, waits, costs).makespan_ms
    stream = tuple(assignment.stream.get(i, -1) for i in range(len(graph.nodes)))
    return Schedule(stream_algorithm=streams, order_algorithm=order, max_streams=max_streams,
                    num_streams=max(1, assignment.num_streams), stream=stream, launch_order=tuple(launch),
                    waits=tuple(waits), predicted_ms=float(predicted), **device_fields)
