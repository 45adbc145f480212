"""Hostile plans built as an attacker with write access to plan storage would build them: each is refused by
load() with PlanFormatError or PlanMismatchError naming the node and op, and none has any effect."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import opara_runtime
from opara_plan import ExecutionError, Node, PlanFormatError, PlanMismatchError, Ref, Sym, TensorMeta
from helpers.plan_kit import append_ops, compiled_small, replace_node, tamper, write_raw

F32 = "float32"


@pytest.fixture(scope="module")
def real():
    return compiled_small()


def ids(plan, kind):
    return [i for i, n in enumerate(plan.graph.nodes) if n.kind == kind]


def op(target, *args, out=((3, 6), F32), kwargs=(), name="evil"):
    return Node(kind="op", name=name, target=target, args=args, kwargs=kwargs, outputs=(TensorMeta(*out),))


def refused(plan, model, tmp_path, match, error=PlanFormatError):
    """load() from a file refuses the plan with `error` matching `match`; the model's weights are untouched."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=match) as info:
        opara_runtime.load(write_raw(plan, tmp_path / "evil.opara"), model, device="cpu")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"weight {k} changed"
    return info.value


def test_the_real_plan_loads_and_matches(real):
    plan, model, inputs = real
    got = opara_runtime.load(plan, model, device="cpu")(*inputs)
    for a, b in zip(got, model(*inputs)):
        torch.testing.assert_close(a, b)


def test_from_file_cannot_read_a_file(real, tmp_path):
    plan, model, _ = real
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    read = op("aten.from_file.default", str(secret), False, 10, kwargs=(("dtype", Sym("dtype", "uint8")),),
              out=((10,), "uint8"))
    n = len(plan.graph.nodes) - 1
    evil = append_ops(plan, [read], [Ref(n)])
    refused(evil, model, tmp_path, rf"plan node {n} \(aten.from_file.default 'evil'\): op aten.from_file.default is "
                                   rf"not on Opara's allowlist")


def test_from_file_shared_plus_copy_cannot_write_a_file(real, tmp_path):
    plan, model, _ = real
    target = tmp_path / "site-packages" / "evil.pth"
    target.parent.mkdir()
    const = Node(kind="constant", name="payload", outputs=(TensorMeta((16,), "uint8"),), data=b"import os;os._exit(1)"[:16])
    n = len(plan.graph.nodes) - 1
    mapped = op("aten.from_file.default", str(target), True, 16, kwargs=(("dtype", Sym("dtype", "uint8")),),
                out=((16,), "uint8"), name="map")
    write = op("aten.copy_.default", Ref(n + 1), Ref(n), out=((16,), "uint8"), name="write")
    evil = append_ops(plan, [const, mapped, write], [Ref(n + 2)])
    refused(evil, model, tmp_path, rf"plan node {n + 1} \(aten.from_file.default 'map'\)")
    assert not target.exists()
    # Without the from_file node, copy_ alone (into a weight) is refused just the same.
    p = ids(plan, "param")[0]
    meta = plan.graph.nodes[p].outputs[0]
    into_weight = append_ops(plan, [op("aten.copy_.default", Ref(p), Ref(p), out=(meta.shape, meta.dtype))], [Ref(n)])
    refused(into_weight, model, tmp_path, rf"plan node {n} \(aten.copy_.default 'evil'\)")


def test_a_sparse_tensor_with_forged_indices_cannot_be_built(real, tmp_path):
    plan, model, _ = real
    n = len(plan.graph.nodes) - 1
    idx = Node(kind="constant", name="idx", outputs=(TensorMeta((1, 1), "int64"),),
               data=(10**9).to_bytes(8, "little"))
    val = Node(kind="constant", name="val", outputs=(TensorMeta((1,), F32),), data=bytes(4))
    coo = op("aten._sparse_coo_tensor_unsafe.default", Ref(n), Ref(n + 1), (4,), out=((4,), F32), name="coo")
    dense = op("aten.to_dense.default", Ref(n + 2), out=((4,), F32), name="dense")
    evil = append_ops(plan, [idx, val, coo, dense], [Ref(n + 3)])
    refused(evil, model, tmp_path, rf"plan node {n + 2} \(aten._sparse_coo_tensor_unsafe.default 'coo'\)")
    layout = op("aten._to_copy.default", Ref(ids(plan, "input")[0]), kwargs=(("layout", Sym("layout", "sparse_coo")),),
                name="to_sparse")
    refused(append_ops(plan, [layout], [Ref(n)]), model, tmp_path,
            rf"plan node {n} \(aten._to_copy.default 'to_sparse'\): argument 'layout'")


@pytest.mark.parametrize("kind", ["param", "input", "constant"])
def test_in_place_ops_cannot_change_weights_inputs_or_constants(real, tmp_path, kind):
    plan, model, inputs = real
    leaf = ids(plan, kind)[0]
    meta = plan.graph.nodes[leaf].outputs[0]
    n = len(plan.graph.nodes) - 1
    add_ = op("aten.add_.Tensor", Ref(leaf), 100.0, out=(meta.shape, meta.dtype))
    evil = append_ops(plan, [add_], list(plan.graph.nodes[-1].args) + [Ref(n)])
    x = inputs[0].clone()
    refused(evil, model, tmp_path, rf"plan node {n} \(aten.add_.Tensor 'evil'\): op aten.add_.Tensor is not on")
    assert torch.equal(x, inputs[0])


@pytest.mark.parametrize("target, args", [
    ("aten.manual_seed.default", (1234,)), ("aten.set_grad_enabled.default", (False,)),
    ("aten._print.default", ("pwned",)), ("aten.seed.default", ()),
])
def test_global_state_and_printing_are_refused(real, tmp_path, capfd, target, args):
    plan, model, _ = real
    seed, grad = torch.initial_seed(), torch.is_grad_enabled()
    n = len(plan.graph.nodes) - 1
    evil = append_ops(plan, [op(target, *args)], plan.graph.nodes[-1].args)
    refused(evil, model, tmp_path, rf"plan node {n} \({target} 'evil'\): op {target} is not on Opara's allowlist")
    assert (torch.initial_seed(), torch.is_grad_enabled()) == (seed, grad)
    assert "pwned" not in capfd.readouterr().out


def test_an_out_overload_is_refused(real, tmp_path):
    plan, model, _ = real
    x, p = ids(plan, "input")[0], ids(plan, "param")[0]
    n = len(plan.graph.nodes) - 1
    out = op("aten.add.out", Ref(x), Ref(x), kwargs=(("out", Ref(p)),))
    refused(append_ops(plan, [out], [Ref(n)]), model, tmp_path, rf"plan node {n} \(aten.add.out 'evil'\)")


@pytest.mark.parametrize("target, args, kwargs, where", [
    ("aten.div.Tensor_mode", (Ref(0), Ref(0)), (("rounding_mode", "/etc/passwd"),), "argument 'rounding_mode'"),
    ("aten.gelu.default", (Ref(0),), (("approximate", "sigmoid"),), "argument 'approximate'"),
    ("aten.pad.default", (Ref(0), (1, 1), "mirror"), (), r"argument 2 \(mode\)"),
    ("aten._to_copy.default", (Ref(0),), (("dtype", "torch.float64"),), "argument 'dtype'"),
    ("aten.relu.default", ("x",), (), r"argument 0 \(self\)"),
])
def test_a_bad_string_argument_is_refused(real, tmp_path, target, args, kwargs, where):
    plan, model, _ = real
    n = len(plan.graph.nodes) - 1
    out = (3, 8) if target == "aten.pad.default" else (3, 6)
    evil = append_ops(plan, [op(target, *args, kwargs=kwargs, out=(out, F32))], [Ref(n)])
    refused(evil, model, tmp_path, rf"plan node {n} \({target} 'evil'\): {where}")


def test_oversized_shapes_are_refused_before_any_allocation(real, tmp_path):
    plan, model, _ = real
    x = ids(plan, "input")[0]
    n = len(plan.graph.nodes) - 1
    huge = op("aten.new_zeros.default", Ref(x), (10**12,), out=((10**12,), F32))
    refused(append_ops(plan, [huge], [Ref(n)]), model, tmp_path,
            rf"plan node {n} \(aten.new_zeros.default 'evil'\) output 0: declares float32\[1000000000000\], "
            rf"4000000000000 bytes, above the limit")
    # An input or a weight declared huge is refused the same way, before the runner allocates its buffer.
    node = plan.graph.nodes[x]
    big_input = replace_node(plan, x, dataclasses.replace(node, outputs=(TensorMeta((10**12, 6), F32),)))
    refused(big_input, model, tmp_path, rf"plan node {x} \(input 'x'\) output 0: declares float32\[1000000000000, 6\]")


def test_mismatched_declared_shapes_are_refused(real, tmp_path):
    plan, model, _ = real
    i = ids(plan, "op")[0]
    node = plan.graph.nodes[i]
    meta = node.outputs[0]
    lying = dataclasses.replace(node, outputs=(TensorMeta((meta.shape[0] * 1000,) + meta.shape[1:], meta.dtype),))
    refused(replace_node(plan, i, lying), model, tmp_path,
            rf"plan node {i} \({node.target} '{node.name}'\) output 0: declared .* the op produces")
    short = dataclasses.replace(node, outputs=(TensorMeta(meta.shape, "float16"),))
    refused(replace_node(plan, i, short), model, tmp_path, rf"plan node {i} .*declared float16")


def test_a_param_declared_unlike_the_weight_is_a_mismatch(real, tmp_path):
    plan, model, _ = real
    p = ids(plan, "param")[0]
    node = plan.graph.nodes[p]
    # Every op reading it must then be declared consistently, or the meta pass refuses first: the attacker
    # here changes the param alone, so the mismatch shows at the first reader.
    wrong = dataclasses.replace(node, outputs=(TensorMeta((1,), F32),))
    err = refused(replace_node(plan, p, wrong), model, tmp_path, r"plan node \d+", (PlanFormatError, PlanMismatchError))
    assert "aten." in str(err) or node.name in str(err)


def test_outputs_that_are_not_graph_values_are_refused(real, tmp_path):
    plan, model, _ = real
    out = plan.graph.nodes[-1]
    for args, match in [((3.0,), r"plan output 0 .*expected a reference to a value the graph computes, found float"),
                        (((Ref(0), Ref(0)),), r"plan output 0 .*found tuple"),
                        ((Ref(len(plan.graph.nodes) - 1),), r"refers to node \d+, expected an earlier node"),
                        ((Ref(0, 5),), r"refers to output 5 of node 0, which has 1 outputs")]:
        refused(tamper(plan, plan.graph.nodes[:-1] + (dataclasses.replace(out, args=args),)), model, tmp_path, match)


def test_a_long_chain_beyond_the_byte_bound_is_refused_before_it_runs(real, tmp_path):
    plan, model, _ = real
    x = ids(plan, "input")[0]
    n = len(plan.graph.nodes) - 1
    chain, shape, src = [], (3, 6), Ref(x)
    for k in range(48):  # each cat doubles the tensor: 2**48 * 72 bytes at the end
        shape = (shape[0] * 2, 6)
        chain.append(op("aten.cat.default", (src, src), out=(shape, F32), name=f"grow{k}"))
        src = Ref(n + k)
    err = refused(append_ops(plan, chain, [src]), model, tmp_path,
                  r"plan node \d+ \(aten.cat.default 'grow\d+'\) output 0: .*above the limit of 68719476736 bytes")
    assert "grow2" in str(err)
    # Many modest tensors add up: 80 expands of 1 GiB each pass one by one but not in total.
    rows = 2**28 // 18  # float32[rows, 3, 6]: just under 1 GiB
    wide = [op("aten.expand.default", Ref(x), (rows, 3, 6), out=((rows, 3, 6), F32), name=f"wide{k}")
            for k in range(80)]
    refused(append_ops(plan, wide, [Ref(n + 79)]), model, tmp_path,
            r"plan node \d+ \(aten.expand.default 'wide\d+'\) output 0: the tensors the plan declares up to here total")


def test_an_out_of_bounds_strided_view_is_refused(real, tmp_path):
    plan, model, _ = real
    x = ids(plan, "input")[0]
    n = len(plan.graph.nodes) - 1
    peek = op("aten.as_strided.default", Ref(x), (3, 6), (6, 1), 10**6)
    refused(append_ops(plan, [peek], [Ref(n)]), model, tmp_path,
            rf"plan node {n} \(aten.as_strided.default 'evil'\): the view needs")


def test_ops_outside_aten_not_in_torch_or_internal_are_refused(real, tmp_path):
    plan, model, _ = real
    n = len(plan.graph.nodes) - 1
    # aten._pdist_forward is a core op that segfaults on a 3-D input (its public op pdist checks the rank first).
    for target in ("os.system.default", "prims.convert_element_type.default", "aten.no_such_op.default",
                   "aten._pdist_forward.default"):
        refused(append_ops(plan, [op(target, "rm -rf /")], [Ref(n)]), model, tmp_path,
                rf"plan node {n} \({target} 'evil'\): op {target} is not on Opara's allowlist")


def test_an_index_out_of_range_that_only_shows_at_run_time_is_an_execution_error(real, tmp_path):
    plan, model, inputs = real
    x = ids(plan, "input")[0]
    n = len(plan.graph.nodes) - 1
    idx = Node(kind="constant", name="idx", outputs=(TensorMeta((1,), "int64"),), data=(10**6).to_bytes(8, "little"))
    pick = op("aten.index_select.default", Ref(x), 0, Ref(n), out=((1, 6), F32), name="pick")
    runner = opara_runtime.load(write_raw(append_ops(plan, [idx, pick], [Ref(n + 1)]), tmp_path / "p"), model,
                                device="cpu")
    with pytest.raises(ExecutionError, match=rf"plan node {n + 1} \(aten.index_select.default 'pick'\) failed on cpu "
                                             r"on inputs \(float32\[3, 6\], int64\[1\]\)"):
        runner(inputs[0])
