"""Admission (opara_runtime.admit): schemas, the meta-tensor pass, outputs and the byte bound, before anything runs;
run-time failures as ExecutionError; outputs never alias the runner's weights or the caller's inputs."""
from __future__ import annotations

import dataclasses
import time

import pytest
import torch

import opara_runtime
from opara_plan import (ExecutionError, Graph, ModelInfo, Node, OparaError, OpProfile, OutTree, Plan,
                        PlanFormatError, Profile, Ref, Schedule, Sym, Target, TensorMeta, TensorSpec, Tool,
                        graph_fingerprint)
from opara_runtime.admit import DEFAULT_MAX_BYTES, MAX_BYTES_ENV, admit, max_bytes_setting
from opara_runtime.capture import named_failures

F32 = "float32"
FREE = OpProfile(ms=0.0, flops=0.0, bytes=0.0, intensity="free")


def edit(plan: Plan, i: int, **changes) -> Plan:
    """Node i changed as an attacker with write access would: fields replaced, the fingerprint recomputed."""
    nodes = list(plan.graph.nodes)
    nodes[i] = dataclasses.replace(nodes[i], **changes)
    return regraph(plan, nodes)


def regraph(plan: Plan, nodes) -> Plan:
    graph = Graph(tuple(nodes))
    return dataclasses.replace(plan, graph=graph, model=dataclasses.replace(plan.model, fingerprint=graph_fingerprint(graph)))


def chain_plan(nodes, outputs=None) -> Plan:
    """A one-stream CPU plan over `nodes` (inputs, params, constants and ops; the output node is added)."""
    outs = outputs if outputs is not None else (Ref(len(nodes) - 1),)
    nodes = tuple(nodes) + (Node(kind="output", name="output", args=tuple(outs)),)
    graph = Graph(nodes)
    ops = tuple(i for i, n in enumerate(nodes) if n.kind == "op")
    schedule = Schedule("opara", "topo", 0, 1, tuple(0 if n.kind == "op" else -1 for n in nodes), ops, (), 0.0)
    specs = tuple(TensorSpec(f"output_{k}", nodes[r.node].outputs[r.index].shape, nodes[r.node].outputs[r.index].dtype)
                  for k, r in enumerate(outs))
    model = ModelInfo("fx", graph_fingerprint(graph),
                      tuple(TensorSpec(n.name, n.outputs[0].shape, n.outputs[0].dtype) for n in nodes if n.kind == "input"),
                      specs, OutTree("tuple", children=tuple(OutTree("tensor", k) for k in range(len(outs)))), F32)
    return Plan(Tool("oparac", "0.1.0"), model, Target("cpu"), graph, schedule,
                Profile("cost-model", tuple(FREE for _ in nodes), 0.0))


def op(target, *args, out=((2, 3), F32), kwargs=(), name="", multi=False, outputs=None):
    metas = outputs if outputs is not None else (TensorMeta(*out),)
    return Node(kind="op", name=name or target.split(".")[1], target=target, args=args, kwargs=kwargs, outputs=metas,
                multi=multi)


X = Node(kind="input", name="x", outputs=(TensorMeta((2, 3), F32),))
W = Node(kind="param", name="w", outputs=(TensorMeta((3, 3), F32),))


def test_the_tiny_plans_and_a_compiled_plan_are_admitted(tiny_plan, two_device_plan):
    import oparac
    from helpers.models import small_cnn

    admit(tiny_plan)
    admit(two_device_plan)
    model, inputs = small_cnn()
    plan = oparac.compile(model, inputs, device="cpu")
    admit(plan)
    torch.testing.assert_close(opara_runtime.load(plan, model)(*inputs), model(*inputs))


# ------------------------------------------------------------------------------------------------ schemas

@pytest.mark.parametrize("node, message", [
    (op("aten.relu.default", Ref(0), Ref(0)), r"takes at most 1 positional arguments, found 2"),
    (op("aten.add.Tensor", Ref(0), Ref(0), kwargs=(("beta", 1),)), r"has no argument named 'beta'"),
    (op("aten.add.Tensor", Ref(0), Ref(0), kwargs=(("other", Ref(0)),)), r"argument 'other' is given twice"),
    (op("aten.add.Tensor", Ref(0)), r"required argument 'other' \(Tensor\) is missing"),
    (op("aten.add.Tensor", Ref(0), "2.0"), r"argument 1 \(other\): expected Tensor, found str '2.0'"),
    (op("aten.add.Tensor", Ref(0), (Ref(0),)), r"argument 1 \(other\): expected Tensor, found a list of 1"),
    (op("aten.cat.default", (Ref(0), 1.5)), r"argument 0 \(tensors\): expected List\[Tensor\], found a list of 2"),
    (op("aten.add.Tensor", Ref(0), Ref(0), kwargs=(("alpha", "1"),)), r"argument 'alpha': expected number"),
    (op("aten.transpose.int", Ref(0), 0, True, out=((3, 2), F32)), r"argument 2 \(dim1\): expected int, found bool"),
    (op("aten.sum.dim_IntList", Ref(0), (1,), 1, out=((2,), F32)), r"argument 2 \(keepdim\): expected bool"),
    (op("aten._to_copy.default", Ref(0), kwargs=(("dtype", "float16"),), out=((2, 3), "float16")),
     r"argument 'dtype': expected Optional\[ScalarType\], found str"),
    (op("aten._to_copy.default", Ref(0), kwargs=(("layout", Sym("layout", "sparse_coo")),)),
     r"argument 'layout'.*layout 'sparse_coo'"),
    (op("aten._to_copy.default", Ref(0), kwargs=(("device", Sym("device", "/etc/passwd")),)), r"argument 'device'"),
    (op("aten.clone.default", Ref(0), kwargs=(("memory_format", Sym("memory_format", "strided")),)),
     r"argument 'memory_format'"),
    (op("aten.gelu.default", Ref(0), kwargs=(("approximate", "exact"),)), r"argument 'approximate': expected str, "
                                                                           r"found str 'exact'"),
    (op("aten.div.Tensor_mode", Ref(0), Ref(0), kwargs=(("rounding_mode", "__import__('os')"),)),
     r"argument 'rounding_mode'"),
    (op("aten.einsum.default", "ij;import os", (Ref(0),)), r"argument 0 \(equation\)"),
    (op("aten.add.Tensor", Ref(0), Ref(0), kwargs=(("alpha", 1 << 63),)), r"argument 'alpha'"),
])
def test_a_call_that_does_not_fit_its_schema_is_refused_naming_node_and_op(node, message):
    plan = chain_plan([X, node])
    with pytest.raises(PlanFormatError, match=rf"plan node 1 \({node.target} '{node.name}'\): {message}"):
        opara_runtime.load(plan, {}, device="cpu")


def test_sdpa_may_not_draw_random_numbers():
    q = Node(kind="input", name="q", outputs=(TensorMeta((1, 2, 4, 8), F32),))
    sdpa = op("aten.scaled_dot_product_attention.default", Ref(0), Ref(0), Ref(0), None, 0.5, out=((1, 2, 4, 8), F32))
    with pytest.raises(PlanFormatError, match=r"argument 4 \(dropout_p\)"):
        admit(chain_plan([q, sdpa]))
    admit(chain_plan([q, dataclasses.replace(sdpa, args=sdpa.args[:4] + (0.0,))]))


def test_good_string_arguments_pass():
    admit(chain_plan([X, op("aten.gelu.default", Ref(0), kwargs=(("approximate", "tanh"),))]))
    admit(chain_plan([X, op("aten.div.Tensor_mode", Ref(0), Ref(0), kwargs=(("rounding_mode", "floor"),))]))
    admit(chain_plan([X, op("aten.einsum.default", "ij,kj->ik", (Ref(0), Ref(0)), out=((2, 2), F32))]))


# ------------------------------------------------------------------------------------------------ meta pass

def test_a_declared_shape_the_op_does_not_produce_is_refused():
    plan = chain_plan([X, W, op("aten.mm.default", Ref(0), Ref(1), out=((2, 4), F32))])
    with pytest.raises(PlanFormatError, match=r"plan node 2 \(aten.mm.default 'mm'\) output 0: declared "
                                              r"float32\[2, 4\], the op produces float32\[2, 3\] from inputs "
                                              r"\(float32\[2, 3\], float32\[3, 3\]\)"):
        admit(plan)


def test_a_declared_dtype_the_op_does_not_produce_is_refused():
    with pytest.raises(PlanFormatError, match=r"declared int64\[2, 3\], the op produces float32\[2, 3\]"):
        admit(chain_plan([X, op("aten.relu.default", Ref(0), out=((2, 3), "int64"))]))


def test_an_op_that_rejects_its_declared_inputs_is_refused_with_their_shapes():
    w = Node(kind="param", name="w", outputs=(TensorMeta((4, 3), F32),))
    with pytest.raises(PlanFormatError, match=r"plan node 2 \(aten.mm.default 'mm'\): the op rejects its declared "
                                              r"inputs \(float32\[2, 3\], float32\[4, 3\]\): RuntimeError"):
        admit(chain_plan([X, w, op("aten.mm.default", Ref(0), Ref(1))]))


def test_the_number_of_outputs_must_match():
    split = op("aten.split_with_sizes.default", Ref(0), (1, 1), multi=True,
               outputs=(TensorMeta((1, 3), F32),) * 3)
    with pytest.raises(PlanFormatError, match=r"the op returns 2 values, the plan declares 3 \(multi\)"):
        admit(chain_plan([X, split], outputs=(Ref(1, 0),)))
    single = dataclasses.replace(split, multi=False, outputs=split.outputs[:2])
    with pytest.raises(PlanFormatError, match="the op returns 2 values, the plan declares 2$"):
        admit(chain_plan([X, single], outputs=(Ref(1, 0),)))
    admit(chain_plan([X, dataclasses.replace(split, outputs=split.outputs[:2])], outputs=(Ref(1, 1),)))


def test_a_leaf_declares_exactly_one_output():
    two = dataclasses.replace(W, outputs=W.outputs * 2)
    with pytest.raises(PlanFormatError, match=r"plan node 1 \(param 'w'\): a param node has one output, found 2"):
        admit(chain_plan([X, two, op("aten.mm.default", Ref(0), Ref(1, 1))]))


def test_an_as_strided_view_beyond_its_storage_is_refused_before_it_runs():
    view = op("aten.as_strided.default", Ref(0), (2, 3), (1, 1), 1000)
    with pytest.raises(PlanFormatError, match=r"plan node 1 \(aten.as_strided.default 'as_strided'\): the view "
                                              r"needs 4016 bytes of storage from offset 1000, its input has 24"):
        admit(chain_plan([X, view]))


# ------------------------------------------------------------------------------------------------ outputs, bytes

def test_outputs_must_be_references_matching_the_declared_specs():
    relu = op("aten.relu.default", Ref(0))
    plan = chain_plan([X, relu])
    literal = dataclasses.replace(plan.graph.nodes[-1], args=(3.0,))
    with pytest.raises(PlanFormatError, match=r"plan output 0 \('output_0'\): expected a reference to a value the "
                                              r"graph computes, found float"):
        admit(regraph(plan, plan.graph.nodes[:-1] + (literal,)))
    wrong = dataclasses.replace(plan.model, outputs=(TensorSpec("output_0", (3, 2), F32),))
    with pytest.raises(PlanFormatError, match=r"model.outputs declares float32\[3, 2\], the graph gives float32\[2, 3\]"):
        admit(dataclasses.replace(plan, model=wrong))
    extra = dataclasses.replace(plan.model, outputs=plan.model.outputs * 2)
    with pytest.raises(PlanFormatError, match=r"returns 1 values, model.outputs declares 2"):
        admit(dataclasses.replace(plan, model=extra))


def test_the_byte_bound_per_tensor_and_in_total(monkeypatch):
    big = chain_plan([X, op("aten.expand.default", Ref(0), (10**6, 2, 3), out=((10**6, 2, 3), F32))])
    with pytest.raises(PlanFormatError, match=r"plan node 1 \(aten.expand.default 'expand'\) output 0: declares "
                                              r"float32\[1000000, 2, 3\], 24000000 bytes, above the limit of 1000000"):
        admit(big, max_bytes=10**6)
    admit(big, max_bytes=24 * 10**6 + 24)
    chain = [X] + [op("aten.relu.default", Ref(i)) for i in range(41)]
    with pytest.raises(PlanFormatError, match=r"plan node 41 .* total 1008 bytes, above the limit of 1000"):
        admit(chain_plan(chain), max_bytes=1000)
    monkeypatch.setenv(MAX_BYTES_ENV, "1000")
    with pytest.raises(PlanFormatError, match=rf"limit of 1000 bytes; .*\${MAX_BYTES_ENV}"):
        opara_runtime.load(chain_plan(chain), {}, device="cpu")
    opara_runtime.load(chain_plan(chain), {}, device="cpu", max_bytes=2000)
    monkeypatch.setenv(MAX_BYTES_ENV, "lots")
    with pytest.raises(OparaError, match=rf"\${MAX_BYTES_ENV}: expected a number of bytes, found 'lots'"):
        max_bytes_setting()
    monkeypatch.delenv(MAX_BYTES_ENV)
    assert max_bytes_setting() == DEFAULT_MAX_BYTES == 64 << 30
    with pytest.raises(OparaError, match="max_bytes: expected a positive number of bytes, found -1"):
        max_bytes_setting(-1)


def test_a_thousands_of_nodes_plan_admits_quickly():
    n = 4000
    nodes = [X, W] + [op("aten.mm.default", Ref(i + 1), Ref(1)) if i % 4 == 0 else
                      op("aten.add.Tensor", Ref(i + 1), Ref(0), kwargs=(("alpha", 1),)) if i % 4 == 1 else
                      op("aten.relu.default", Ref(i + 1)) if i % 4 == 2 else
                      op("aten.view.default", Ref(i + 1), (2, 3)) for i in range(n)]
    nodes[2] = op("aten.mm.default", Ref(0), Ref(1))
    plan = chain_plan(nodes)
    admit(plan)  # warms the per-target caches
    start = time.perf_counter()
    admit(plan)
    assert time.perf_counter() - start < 1.5


# ------------------------------------------------------------------------------------------------ run time

def u16_plan() -> Plan:
    """Admitted (meta kernels do not check dtypes' kernels) but no CPU kernel adds uint16 tensors."""
    u = Node(kind="input", name="u", outputs=(TensorMeta((2, 3), "uint16"),))
    return chain_plan([u, op("aten.add.Tensor", Ref(0), Ref(0), out=((2, 3), "uint16"))])


def test_an_op_failing_at_run_time_is_an_execution_error_naming_node_op_and_inputs():
    runner = opara_runtime.load(u16_plan(), {}, device="cpu")
    with pytest.raises(ExecutionError, match=r"plan node 1 \(aten.add.Tensor 'add'\) failed on cpu on inputs "
                                             r"\(uint16\[2, 3\], uint16\[2, 3\]\): "):
        runner(torch.zeros(2, 3, dtype=torch.uint16))


def test_an_index_out_of_range_is_an_execution_error():
    table = Node(kind="param", name="table", outputs=(TensorMeta((4, 3), F32),))
    ids = Node(kind="input", name="ids", outputs=(TensorMeta((2,), "int64"),))
    plan = chain_plan([table, ids, op("aten.embedding.default", Ref(0), Ref(1), out=((2, 3), F32))])
    runner = opara_runtime.load(plan, {"table": torch.randn(4, 3)}, device="cpu")
    with pytest.raises(ExecutionError, match=r"plan node 2 \(aten.embedding.default 'embedding'\) failed on cpu "
                                             r"on inputs \(float32\[4, 3\], int64\[2\]\): IndexError"):
        runner(torch.tensor([1, 99]))
    runner(torch.tensor([1, 3]))  # the runner still works


def test_warm_up_and_capture_failures_are_named():
    with pytest.raises(ExecutionError, match=r"plan warm-up on cuda:0 failed: RuntimeError: CUDA error: an illegal"):
        with named_failures("warm-up", torch.device("cuda:0")):
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore")
    inner = ExecutionError("plan node 3 (aten.add.Tensor 'add') failed on cuda:0 (stream 1) on inputs (...)")
    with pytest.raises(ExecutionError, match=r"^plan capture on cuda:0: plan node 3 \(aten.add.Tensor 'add'\)"):
        with named_failures("capture", torch.device("cuda:0")):
            try:
                raise inner
            finally:
                raise RuntimeError("operation failed due to a previous error during capture")


@pytest.mark.gpu
def test_a_failure_at_warm_up_on_the_gpu_is_an_execution_error():
    with pytest.raises(ExecutionError, match=r"plan warm-up on cuda:0: plan node 1 \(aten.add.Tensor 'add'\)"):
        opara_runtime.load(u16_plan(), {}, device="cuda")


def test_outputs_never_alias_weights_or_inputs():
    w = Node(kind="param", name="w", outputs=(TensorMeta((2, 3), F32),))
    c = Node(kind="constant", name="c", outputs=(TensorMeta((2, 3), F32),), data=bytes(24))
    view = op("aten.view.default", Ref(1), (3, 2), out=((3, 2), F32))
    plan = chain_plan([X, w, c, view, op("aten.relu.default", Ref(0))], outputs=(Ref(1), Ref(3), Ref(2), Ref(0), Ref(4)))
    weight = torch.ones(2, 3)
    runner = opara_runtime.load(plan, {"w": weight}, device="cpu")
    x = torch.ones(2, 3)
    outs = runner(x)
    for t in outs:
        t.add_(5)
    assert torch.equal(weight, torch.ones(2, 3)) and torch.equal(x, torch.ones(2, 3))
    again = runner(torch.ones(2, 3))
    assert torch.equal(again[0], torch.ones(2, 3)) and torch.equal(again[2], torch.zeros(2, 3))
