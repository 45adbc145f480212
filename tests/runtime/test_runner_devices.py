"""A plan for two GPUs on the CPU path: copies run as CPU copies, weights are placed once per device."""
from __future__ import annotations

import pytest
import torch

import opara_runtime
from opara_plan import PlanMismatchError
from opara_runtime.bind import place_weights
from opara_runtime.devices import stream_devices
from opara_runtime.lifetimes import release_points

from helpers.plans import fork_join


def test_a_two_device_plan_runs_like_eager_on_the_cpu(two_device_plan):
    w = torch.randn(3, 3)
    runner = opara_runtime.load(two_device_plan, {"w": w}, device="cpu")
    assert runner.devices == [torch.device("cpu"), torch.device("cpu")]
    x = torch.randn(2, 3)
    torch.testing.assert_close(runner(x), fork_join(x, w))


def test_devices_can_be_named_and_must_match_the_plan(two_device_plan):
    w = torch.randn(3, 3)
    runner = opara_runtime.load(two_device_plan, {"w": w}, device="cpu", devices=["cpu", "cpu"])
    x = torch.randn(2, 3)
    torch.testing.assert_close(runner(x), fork_join(x, w))
    with pytest.raises(PlanMismatchError, match=r"devices: the plan runs on 2 devices, 1 were given \(cpu\)"):
        opara_runtime.load(two_device_plan, {"w": w}, device="cpu", devices=["cpu"])


def test_streams_belong_to_their_nodes_devices(two_device_plan):
    assert stream_devices(two_device_plan) == [0, 1]


def test_a_weight_is_placed_once_per_device(two_device_plan):
    import dataclasses

    from opara_plan import Graph

    nodes = two_device_plan.graph.nodes
    # weight 'w' read on both devices: a node per device (1 on device 0, 2 on device 1), and twice on device 1
    graph = Graph((nodes[0], nodes[1], nodes[1], nodes[1], *nodes[2:]))
    plan = dataclasses.replace(two_device_plan, graph=graph, schedule=dataclasses.replace(
        two_device_plan.schedule, device=(0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0)))
    w = torch.randn(3, 3, dtype=torch.float64)
    placed = place_weights(plan, {"w": w}, [torch.device("cpu"), torch.device("cpu")])
    assert set(placed) == {1, 2, 3}
    assert placed[2] is placed[3], "nodes of one device share its copy"
    assert placed[1] is not placed[2], "each device has its own copy"
    assert placed[1].dtype == torch.float32 and torch.equal(placed[1], placed[2])


def test_values_on_other_devices_are_never_released_during_capture(two_device_plan):
    released = {j for group in release_points(two_device_plan, sequential=False).values() for j in group}
    assert not released & {3, 4}, "device 1's values live for the whole graph"
    sequential = {j for group in release_points(two_device_plan, sequential=True).values() for j in group}
    assert {3, 4} <= sequential


def test_named_gpus_must_exist(two_device_plan, monkeypatch):
    from opara_runtime.devices import plan_devices

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    first = torch.device("cuda", 0)
    assert plan_devices(two_device_plan, first, ["cuda:1", "cuda:0"]) == [torch.device("cuda", 1), first]
    with pytest.raises(PlanMismatchError, match=r"devices: cuda:2 does not exist, this machine has 2 GPUs"):
        plan_devices(two_device_plan, first, ["cuda:1", "cuda:2"])
