"""release_points: memory is released only where no other stream can still read it."""
from __future__ import annotations

import dataclasses

from opara_runtime.lifetimes import release_points


def test_sequential_releases_after_last_use(tiny_plan):
    # mm (2) is last read by sigmoid (4); relu (3) and sigmoid by add (5); add is the output
    assert release_points(tiny_plan, sequential=True) == {4: (2,), 5: (3, 4)}


def test_streams_release_only_when_ordered_after_foreign_readers(tiny_plan):
    # relu (stream 1) reads mm; the first stream-0 op ordered after relu is add, through its wait.
    # relu's own storage: stream 1 has no op after add, so it lives for the whole graph.
    assert release_points(tiny_plan, sequential=False) == {5: (2, 4)}


def test_without_a_covering_wait_nothing_foreign_is_released(tiny_plan):
    # same graph, relu moved to stream 0 after sigmoid: everything is on one stream
    s = dataclasses.replace(tiny_plan.schedule, stream=(-1, -1, 0, 0, 0, 0, -1), num_streams=1, waits=(),
                            launch_order=(2, 4, 3, 5))
    plan = dataclasses.replace(tiny_plan, schedule=s)
    assert release_points(plan, sequential=False) == {3: (2,), 5: (3, 4)}
