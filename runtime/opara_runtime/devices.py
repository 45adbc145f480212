"""Which torch device each plan node and stream runs on: the plan's device ids mapped onto this machine."""
from __future__ import annotations

import torch

from opara_plan import Plan, PlanMismatchError


def indexed(device: torch.device) -> torch.device:
    """The device with its index: plain 'cuda' as the current GPU. torch.cuda.set_device, a worker process and a
    plan's device table need the index; callers often give the device without one."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def node_device(plan: Plan, i: int) -> int:
    """The plan's device id of node i (0 for single-GPU plans, whose device table is empty)."""
    device = plan.schedule.device
    return device[i] if device else 0


def stream_devices(plan: Plan) -> list[int]:
    """Plan stream -> device id (validate guarantees one device per stream; stream 0 is device 0's)."""
    out = [0] * plan.schedule.num_streams
    for i in plan.schedule.launch_order:
        out[plan.schedule.stream[i]] = node_device(plan, i)
    return out


def plan_devices(plan: Plan, first: torch.device, devices=None) -> list[torch.device]:
    """The torch device of every plan device id: `devices` as given, else consecutive GPUs from `first`
    (cuda:0, cuda:1 for a 2-GPU plan loaded on cuda:0); on the CPU every id is the CPU."""
    n = plan.schedule.num_devices
    if devices is not None:
        found = [torch.device(d) for d in devices]
        if len(found) != n:
            raise PlanMismatchError(f"devices: the plan runs on {n} devices, {len(found)} were given "
                                    f"({', '.join(map(str, found))})")
        if any(d.type != found[0].type for d in found) or (found[0].type == "cuda" and len(set(found)) != n):
            raise PlanMismatchError(f"devices: expected {n} different GPUs (or the CPU), found "
                                    f"{', '.join(map(str, found))}")
        count = torch.cuda.device_count() if found[0].type == "cuda" else 0
        for d in found:
            if d.type == "cuda" and (d.index or 0) >= count:
                raise PlanMismatchError(f"devices: {d} does not exist, this machine has {count} GPUs")
        return found
    if first.type != "cuda":
        return [first] * n
    start = indexed(first).index
    count = torch.cuda.device_count()
    if start + n > count:
        raise PlanMismatchError(f"plan schedule: needs {n} GPUs (cuda:{start}..cuda:{start + n - 1}), this "
                                f"machine has {count}; compile the plan for fewer devices or load it on a "
                                f"machine with more GPUs")
    return [torch.device("cuda", start + k) for k in range(n)]
