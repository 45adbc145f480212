"""Several GPUs (HIOS): map ops onto devices, make cross-device copies explicit, then streams per device."""
from __future__ import annotations

from dataclasses import dataclass

import dataclasses

from opara_plan import Graph, Link, OpProfile, Plan, Schedule, graph_fingerprint
from oparac.profile.cost_model import tensor_bytes
from oparac.schedule.copies import split_across_devices
from oparac.schedule.dag import Dag
from oparac.schedule import StreamAssignment, assign_streams
from oparac.schedule.devices import map_devices, transfer_costs
from oparac.schedule.build import costs_of, dag_of, finish_schedule, make_schedule

DEVICE_ALGORITHM = "hios-lp"


@dataclass(frozen=True)
class Placed:
    """A schedule with the graph and per-node profile it indexes (copy nodes change both on several GPUs)."""

    graph: Graph
    ops: tuple[OpProfile, ...]
    schedule: Schedule


def with_placement(plan: Plan, placed: Placed) -> Plan:
    """`plan` with the placed graph (new fingerprint when copies were added), profile ops and schedule."""
    model = dataclasses.replace(plan.model, fingerprint=graph_fingerprint(placed.graph)) \
        if placed.graph is not plan.graph else plan.model
    return dataclasses.replace(plan, graph=placed.graph, model=model, schedule=placed.schedule,
                               profile=dataclasses.replace(plan.profile, ops=placed.ops))


def map_ops(graph: Graph, ops: tuple[OpProfile, ...], links: tuple[Link, ...], num_devices: int) -> dict[int, int]:
    """HIOS-LP over the profiled op DAG: op id -> device. All zeros when one GPU is predicted best."""
    dag = dag_of(graph, ops)
    costs = costs_of(graph, dag, ops)
    out_bytes = {i: sum(tensor_bytes(m) for m in graph.nodes[i].outputs) for i in dag.ops}
    return map_devices(dag, costs, out_bytes, num_devices=num_devices, transfer=transfer_costs(links)).device


def make_device_schedule(graph: Graph, ops: tuple[OpProfile, ...], *, links: tuple[Link, ...], num_devices: int,
                         streams: str, order: str, max_streams: int,
                         device_of: dict[int, int] | None = None) -> Placed:
    """The plan's graph, profile and schedule on `num_devices` GPUs; `device_of` reuses a mapping.

    When HIOS-LP keeps every op on device 0 the result is exactly the single-GPU schedule (no copies,
    num_devices 1): a narrow model or small input simply uses one GPU.
    """
    device_of = map_ops(graph, ops, links, num_devices) if device_of is None else device_of
    if num_devices == 1 or not any(device_of.values()):
        return Placed(graph, ops, make_schedule(graph, ops, streams=streams, order=order, max_streams=max_streams))
    graph, ops, device = split_across_devices(graph, ops, device_of, transfer_costs(links))
    dag = dag_of(graph, ops)
    costs = costs_of(graph, dag, ops)
    assignment = assign_device_streams(dag, costs, device, num_devices, algorithm=streams, max_streams=max_streams)
    schedule = finish_schedule(graph, dag, costs, assignment, streams=streams, order=order, max_streams=max_streams,
                               num_devices=num_devices, device=device, device_algorithm=DEVICE_ALGORITHM)
    return Placed(graph, ops, schedule)


def assign_device_streams(dag: Dag, costs, device: tuple[int, ...], num_devices: int, *, algorithm: str,
                          max_streams: int) -> StreamAssignment:
    """Streams inside each GPU by a single-GPU algorithm on that GPU's ops (edges from other GPUs end at
    copy nodes, which start their device's sub-DAG). Stream ids are global: device 0's come first, so stream 0
    is device 0's capture stream; `max_streams` caps each device."""
    stream: dict[int, int] = {}
    offset = 0
    for d in range(num_devices):
        mine = [i for i in dag.ops if device[i] == d]
        if not mine and d:
            continue
        sub = _sub_dag(dag, mine)
        a = assign_streams(sub, costs, algorithm=algorithm, max_streams=max_streams)
        stream.update({i: offset + s for i, s in a.stream.items()})
        offset += max(1, a.num_streams)
    return StreamAssignment(stream, offset)


def _sub_dag(dag: Dag, ops: list[int]) -> Dag:
    keep = set(ops)
    return Dag(tuple(ops), {i: tuple(p for p in dag.preds[i] if p in keep) for i in ops},
               {i: tuple(s for s in dag.succs[i] if s in keep) for i in ops}, frozenset(dag.free & keep))
