"""The op allowlist: plain data, derived from what Opara emits, and enforced by validate and at compile time."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from opara_plan import PlanFormatError, UnsupportedOpError, graph_fingerprint, save_plan, validate
from opara_plan.allowlist import ALLOWED_OPS, STRING_PATTERNS, STRING_VALUES, ZERO_ARGS
from opara_plan.validate import require_allowed_ops

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import gen_allowlist  # noqa: E402


def with_target(plan, i, target):
    nodes = list(plan.graph.nodes)
    nodes[i] = dataclasses.replace(nodes[i], target=target)
    graph = dataclasses.replace(plan.graph, nodes=tuple(nodes))
    return dataclasses.replace(plan, graph=graph, model=dataclasses.replace(plan.model, fingerprint=graph_fingerprint(graph)))


def test_the_allowlist_is_plain_data_that_needs_no_torch():
    code = ("import sys; import opara_plan.allowlist as a; assert 'torch' not in sys.modules; "
            "print(len(a.ALLOWED_OPS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(ALLOWED_OPS) > 100
    assert isinstance(ALLOWED_OPS, frozenset)
    for target in ALLOWED_OPS:
        assert isinstance(target, str) and target.startswith("aten.") and target.count(".") == 2
    for table in (STRING_VALUES, STRING_PATTERNS, ZERO_ARGS):
        assert isinstance(table, tuple) and all(isinstance(row, tuple) for row in table)


def test_every_overload_the_lowerings_name_is_listed():
    named = gen_allowlist.named_by_lowerings()
    assert "aten._to_copy.default" in named and "aten.reshape.default" in named  # copy node, NHWC stand-in
    assert any(src.startswith("compiler/oparac/ingest/onnx_ops") for src in named.values())
    missing = {t: src for t, src in named.items() if t not in ALLOWED_OPS}
    assert not missing, f"named by a lowering but not on the allowlist: {missing}"


def test_every_listed_op_obeys_the_rules_under_this_torch():
    host_sync = gen_allowlist.host_sync_packets()
    broken = {t: why for t in sorted(ALLOWED_OPS) if (why := gen_allowlist.refusal(t, host_sync))}
    assert not broken


def test_every_public_core_op_the_rules_accept_is_listed():
    host_sync = gen_allowlist.host_sync_packets()
    accepted = {t for t in gen_allowlist.core_ops() if gen_allowlist.refusal(t, host_sync) is None}
    public = {t for t in accepted if gen_allowlist.internal_refusal(t, set()) is None}
    assert public <= ALLOWED_OPS, sorted(public - ALLOWED_OPS)


def test_internal_kernels_are_listed_only_where_opara_emits_them():
    internal = {t for t in ALLOWED_OPS if t.split(".")[1].startswith("_") and not t.split(".")[1].startswith("__")}
    named = set(gen_allowlist.named_by_lowerings())
    # Export emits these two for the zoo (_safe_softmax only under attention='math', also named by it).
    assert internal - named <= {"aten._unsafe_view.default", "aten._native_batch_norm_legit_no_training.default"}
    assert "aten._pdist_forward.default" not in ALLOWED_OPS  # crashes on a 3-D input; pdist checks first
    assert "an internal kernel" in gen_allowlist.internal_refusal("aten._pdist_forward.default", named)


@pytest.mark.parametrize("target, why", [
    ("aten.from_file.default", "file"), ("aten.add_.Tensor", "mutates"), ("aten.copy_.default", "mutates"),
    ("aten.add.out", "mutates"), ("aten._sparse_coo_tensor_unsafe.default", "_unsafe"),
    ("aten._unsafe_index.Tensor", "_unsafe"), ("aten.bernoulli.p", "random"), ("aten.rand.default", "random"),
    ("aten.native_dropout.default", "random"), ("aten._print.default", "print"),
    ("aten.empty.memory_format", "uninitialised"), ("aten.nonzero.default", "host"),
    ("aten.to_dense.default", "sparse"), ("aten.max_pool2d_with_indices_backward.default", "backward"),
    ("aten.sym_size.int", "returns"), ("aten.quantize_per_tensor.default", "quantized"),
])
def test_the_rules_refuse_what_a_plan_must_not_run(target, why):
    assert target not in ALLOWED_OPS
    assert why in gen_allowlist.refusal(target, gen_allowlist.host_sync_packets())


def test_unsafe_view_is_the_one_unsafe_op_and_it_is_a_checked_view():
    assert {t for t in ALLOWED_OPS if "_unsafe" in t} == {"aten._unsafe_view.default"}
    with pytest.raises(RuntimeError):
        torch.ops.aten._unsafe_view.default(torch.zeros(6), [4, 2])  # the size is checked as for view


def test_every_string_argument_of_a_listed_op_has_a_fixed_rule():
    rules = {(t, a) for t, a, _ in STRING_VALUES} | {(t, a) for t, a, _ in STRING_PATTERNS}
    for target in ALLOWED_OPS:
        for arg in gen_allowlist.resolve(target)._schema.arguments:
            if gen_allowlist.is_string(arg.real_type):
                assert (target, arg.name) in rules, (target, arg.name)
    assert ("aten.div.Tensor_mode", "rounding_mode", ("floor", "trunc")) in STRING_VALUES
    assert ("aten.gelu.default", "approximate", ("none", "tanh")) in STRING_VALUES


def test_the_test_models_emit_only_listed_ops(tiny_plan, two_device_plan):
    from helpers import fused, models

    emitted = {n.target for p in (tiny_plan, two_device_plan) for n in p.graph.nodes if n.kind == "op"}
    emitted |= gen_allowlist.emitted_ops(*models.small_cnn())
    emitted |= gen_allowlist.emitted_ops(*models.two_branches())
    emitted |= gen_allowlist.emitted_ops(fused.TwoBranches().eval(), (torch.randn(4, 16),))
    assert emitted - ALLOWED_OPS == set()


ZOO_QUICK = ("squeezenet", "bert")


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in ZOO_QUICK else (pytest.mark.slow,))
                                  for n in ("squeezenet", "bert", "googlenet", "inception_v3", "resnet50",
                                            "densenet121", "mobilenet_v3", "inception_timm", "nasnet")])
def test_the_zoo_emits_only_listed_ops(name):
    # gen_allowlist.zoo_ops is cached per process: regenerating the list below reuses these exports.
    assert gen_allowlist.zoo_ops(name) - ALLOWED_OPS == set()


@pytest.mark.slow
def test_the_generator_reproduces_the_file_under_this_torch():
    allowed, rules, _, _ = gen_allowlist.build(say=lambda msg: None)
    assert gen_allowlist.render(allowed, rules) == gen_allowlist.OUT.read_text(), \
        "plans/opara_plan/allowlist.py is stale: rerun python tools/gen_allowlist.py"


def test_validate_refuses_an_op_off_the_list_naming_node_and_op(tiny_plan):
    bad = with_target(tiny_plan, 3, "aten.from_file.default")
    with pytest.raises(PlanFormatError, match=r"node 3 \(aten.from_file.default 'relu'\).*not on Opara's allowlist"):
        validate(bad)


def test_save_plan_refuses_to_write_an_op_off_the_list(tiny_plan, tmp_path):
    bad = with_target(tiny_plan, 5, "aten.add_.Tensor")
    with pytest.raises(PlanFormatError, match="aten.add_.Tensor"):
        save_plan(bad, tmp_path / "p.opara")
    assert not list(tmp_path.iterdir())


def test_the_compile_side_refusal_is_an_unsupported_op_error_saying_what_to_do(tiny_plan):
    require_allowed_ops(tiny_plan.graph)
    bad = with_target(tiny_plan, 4, "aten.bernoulli.p")
    with pytest.raises(UnsupportedOpError, match=r"node 4 \('sigmoid'\): aten.bernoulli.p is not on Opara's "
                                                 r"allowlist.*tools/gen_allowlist.py"):
        require_allowed_ops(bad.graph)
