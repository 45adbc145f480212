"""Named test DAGs, a random-DAG strategy and independent checks (networkx) for the scheduler tests."""
from __future__ import annotations

import itertools

import networkx as nx
from hypothesis import strategies as st

from oparac.schedule.dag import Dag
from oparac.schedule import Costs, assign_streams, order_launches, reduce_waits, simulate

STREAM_ALGOS = ("opara", "nimble", "critical", "window", "single")
PARALLEL_ALGOS = ("opara", "nimble", "critical", "window")
ORDERS = ("topo", "opara", "critical")

CHAIN = Dag.from_edges(4, [(0, 1), (1, 2), (2, 3)])
DIAMOND = Dag.from_edges(4, [(0, 1), (0, 2), (1, 3), (2, 3)])
FORK_JOIN = Dag.from_edges(6, [(0, 1), (0, 2), (0, 3), (0, 4), (1, 5), (2, 5), (3, 5), (4, 5)])
TWO_BRANCHES = Dag.from_edges(6, [(0, 1), (1, 2), (3, 4), (4, 5)])
# A chain with shortcut edges: more edges, still no two ops can overlap.
NO_PARALLELISM = Dag.from_edges(5, [(0, 1), (1, 2), (2, 3), (3, 4), (0, 2), (0, 4), (1, 3)])
# Width 3 ({1, 2, 3}), and 1 -> 5 makes the three branches unequal.
WIDTH_THREE = Dag.from_edges(7, [(0, 1), (0, 2), (0, 3), (1, 4), (2, 5), (3, 6), (1, 5)])


def relabel(dag: Dag, label: dict[int, int]) -> Dag:
    """The same DAG with op ids renamed (the compiler's op ids are graph node ids, not 0..n-1)."""
    return Dag(tuple(label[i] for i in dag.ops),
               {label[i]: tuple(label[p] for p in ps) for i, ps in dag.preds.items()},
               {label[i]: tuple(label[s] for s in ss) for i, ss in dag.succs.items()},
               frozenset(label[i] for i in dag.free))


def relabel_costs(costs: Costs, label: dict[int, int]) -> Costs:
    return Costs(ms={label[i]: v for i, v in costs.ms.items()},
                 intensity={label[i]: v for i, v in costs.intensity.items()},
                 demand={label[i]: v for i, v in costs.demand.items()})


@st.composite
def dags(draw, max_ops: int = 40):
    """A random DAG (edges producer < consumer, some free ops) with random costs and op ids."""
    n = draw(st.integers(1, max_ops))
    edges = set()
    for c in range(1, n):
        for p in draw(st.lists(st.integers(0, c - 1), max_size=3)):
            edges.add((p, c))
    free = draw(st.sets(st.integers(0, n - 1), max_size=n // 4))
    ms = draw(st.lists(st.floats(0.01, 5.0), min_size=n, max_size=n))
    kinds = draw(st.lists(st.sampled_from(["compute", "memory"]), min_size=n, max_size=n))
    demand = draw(st.lists(st.sampled_from([0.1, 0.25, 0.5, 1.0]), min_size=n, max_size=n))
    dag = Dag.from_edges(n, sorted(edges), free)
    costs = Costs(ms={i: 0.0 if i in dag.free else ms[i] for i in range(n)},
                  intensity={i: "free" if i in dag.free else kinds[i] for i in range(n)},
                  demand={i: 0.0 if i in dag.free else demand[i] for i in range(n)})
    ids = sorted(draw(st.sets(st.integers(0, 10 * max_ops), min_size=n, max_size=n)))
    label = dict(enumerate(ids))
    return relabel(dag, label), relabel_costs(costs, label)


def schedule(dag, algo, order="topo", cap=0, costs=None):
    """assignment, launch order, waits and simulation, as the compiler chains them."""
    costs = costs or Costs.uniform(dag)
    a = assign_streams(dag, costs, algorithm=algo, max_streams=cap)
    launch = order_launches(dag, a, costs, algorithm=order)
    waits = reduce_waits(dag, a.stream, launch)
    return a, launch, waits, simulate(dag, a.stream, launch, waits, costs)


def dependency_graph(dag) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(dag.ops)
    g.add_edges_from((p, c) for c in dag.ops for p in dag.preds[c])
    return g


def covered(dag, stream, launch, waits) -> bool:
    """Every dependency is ordered by the happens-before graph: same-stream launch order plus waits."""
    hb = nx.DiGraph()
    hb.add_nodes_from(dag.ops)
    last = {}
    for i in launch:
        if stream[i] in last:
            hb.add_edge(last[stream[i]], i)
        last[stream[i]] = i
    hb.add_edges_from((p, c) for c, p in waits)
    closure = nx.transitive_closure_dag(hb)
    return all(closure.has_edge(p, c) for c in dag.ops for p in dag.preds[c])


def kernel_width(dag) -> int:
    """Width of the kernels' partial order (free ops left out; two kernels are ordered when one reaches
    the other, possibly through free ops). Dilworth/Fulkerson: kernels minus a maximum matching of the
    comparability bipartite graph."""
    kernels = [i for i in dag.ops if i not in dag.free]
    closure = nx.transitive_closure_dag(dependency_graph(dag))
    bip = nx.Graph()
    left = [("out", k) for k in kernels]
    bip.add_nodes_from(left)
    bip.add_nodes_from(("in", k) for k in kernels)
    bip.add_edges_from((("out", a), ("in", b)) for a in kernels for b in kernels if closure.has_edge(a, b))
    matching = nx.bipartite.hopcroft_karp_matching(bip, top_nodes=left)
    return len(kernels) - len(matching) // 2


def brute_force_width(dag) -> int:
    """The largest antichain of kernels by enumeration; for tiny DAGs, to check kernel_width."""
    kernels = [i for i in dag.ops if i not in dag.free]
    closure = nx.transitive_closure_dag(dependency_graph(dag))
    for size in range(len(kernels), 0, -1):
        for combo in itertools.combinations(kernels, size):
            if all(not closure.has_edge(a, b) and not closure.has_edge(b, a)
                   for a, b in itertools.combinations(combo, 2)):
                return size
    return 0
