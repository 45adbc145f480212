"""The in-graph input copies' bookkeeping (graph_inputs.InputFeed), against a fake cudart on CPU tensors: which
node is re-pointed, switched on or off, and what is copied ahead of the replay. The GPU test runs it for real."""
import pytest
import torch

from opara_runtime.graph_inputs import CopyAheadFeed, InputFeed, MemcpyNode


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
