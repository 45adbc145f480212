"""Writes plans/opara_plan/allowlist.py: the ATen overloads a plan may run and the values its string arguments
may take, derived from what Opara's front ends emit and filtered by the rules of issue 16 (plans are untrusted).

Usage: python tools/gen_allowlist.py            regenerate the file (exports every zoo model: about a minute)
       python tools/gen_allowlist.py --check    exit 1 when the file differs from what this torch gives
       python tools/gen_allowlist.py --explain  also list every candidate overload that was left out, and why

Candidates: the ATen overloads tagged torch.Tag.core; every overload the lowerings name (`aten.<op>.<overload>`
in compiler/oparac/ingest, the copy node and the channels_last stand-in of the runtime); and every overload that
torch.export (our front end, `oparac.pipeline.ingest`) emits for the zoo models, the test models and a set of
layer probes, with both attention lowerings. Each candidate must pass every rule in `refusal`; a candidate that
the compiler itself emits and a rule refuses stops the generator, because the compiler would then write plans
the runtime refuses.
"""
from __future__ import annotations

import argparse
import functools
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "plans" / "opara_plan" / "allowlist.py"
for sub in ("plans", "compiler", "runtime", "tests"):
    if str(ROOT / sub) not in sys.path:
        sys.path.insert(0, str(ROOT / sub))

# Where the lowerings name the overloads they emit (ONNX handlers, torch_fx's batch norm, attention's math form,
# the runtime's copy node and its channels_last reshape stand-in).
LOWERING_SOURCES = ("compiler/oparac/ingest", "compiler/oparac/schedule/copies.py", "runtime/opara_runtime/ops.py",
                    "plans/opara_plan/validate.py")
NAMED = re.compile(r"\baten\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\b")

# _unsafe_view is what export emits for the reshape of a fresh (non-view) result. It is `view` with a
# different autograd contract (the result is not tracked as a view); the size check is the same and no memory
# is read unchecked, and plans hold only functional ops, so nothing can write through the alias. Every other
# `_unsafe` op skips a check (`_unsafe_index` has no bounds check when inductor lowers it,
# `_sparse_coo_tensor_unsafe` no index validation) and is refused.
UNSAFE_BUT_CHECKED = frozenset({"aten._unsafe_view.default"})

# The values a string argument may take, by argument name, then by (op, argument) where an op differs.
# From what the lowerings pass and what torch accepts; None is allowed where the schema says `str?`.
STRING_VALUES = {
    "rounding_mode": ("floor", "trunc"),
    "approximate": ("none", "tanh"),
    "reduce": ("amax", "amin", "mean", "prod", "sum"),
    "padding": ("same", "valid"),
    "mode": ("circular", "constant", "reflect", "replicate"),
    "side": ("left", "right"),
    "indexing": ("ij", "xy"),
    "interpolation": ("higher", "linear", "lower", "midpoint", "nearest"),
}
STRING_VALUES_BY_OP = {
    ("aten.scatter.reduce", "reduce"): ("add", "multiply"),
    ("aten.scatter.value_reduce", "reduce"): ("add", "multiply"),
}
# Free-form strings that can still be checked: an einsum equation is letters, commas, spaces, '...' and '->'.
STRING_PATTERNS = {
    ("aten.einsum.default", "equation"): r"[A-Za-z ,.]{0,256}(->[A-Za-z .]{0,64})?",
}

# Ops that draw random numbers only through one argument, which a plan must leave at zero: (target, argument).
# SDPA is tagged nondeterministic_seeded for its dropout; with dropout_p=0 (eval) it draws nothing.
PINNED_ARGS = {"aten.scaled_dot_product_attention.default": "dropout_p"}

# Argument types a plan cannot or must not express.
REFUSED_TYPES = {"GeneratorType": "takes a random generator", "StorageType": "takes a raw storage",
                 "StreamObjType": "takes a stream", "AnyType": "takes an untyped value",
                 "ComplexType": "takes a complex number", "TupleType": "takes a tuple value",
                 "DictType": "takes a dict", "QSchemeType": "takes a quantization scheme",
                 "ClassType": "takes an object", "DimnameType": "takes a dimension name (named tensors)"}
OK_TYPES = {"TensorType", "IntType", "SymIntType", "FloatType", "BoolType", "NumberType", "StringType",
            "ScalarTypeType", "LayoutType", "DeviceObjType", "MemoryFormatType"}

# Name fragments of ops that reach outside the computation: files, printing, process and RNG state,
# uninitialised memory (it would show what the process freed before), and layouts a plan does not run.
REFUSED_NAMES = (
    ("from_file", "reads or writes a file"), ("_print", "prints"), ("save", "writes a file"),
    ("seed", "changes RNG state"), ("rand", "draws random numbers"), ("bernoulli", "draws random numbers"),
    ("dropout", "draws random numbers (training-form dropout)"), ("normal", "draws random numbers"),
    ("multinomial", "draws random numbers"), ("poisson", "draws random numbers"),
    ("grad_enabled", "changes global state"), ("_set_", "changes global state"),
    ("num_threads", "changes global state"), ("deterministic", "changes global state"),
    ("empty", "returns uninitialised memory"), ("resize", "returns uninitialised memory"),
    ("sparse", "builds or reads sparse tensors"), ("_coo", "builds sparse tensors"), ("csr", "sparse"),
    ("csc", "sparse"), ("bsr", "sparse"), ("bsc", "sparse"), ("to_dense", "reads sparse tensors"),
    ("nested", "builds nested tensors"), ("quantiz", "quantized"), ("q_", "quantized"), ("int_repr", "quantized"),
    ("mkldnn", "mkldnn layout"), ("fbgemm", "quantized"), ("_cslt", "sparse"), ("pin_memory", "pins host memory"),
    ("record_stream", "stream state"), ("_local_scalar", "returns a host value"), ("_assert", "host assertion"),
    # Core, but never in an inference plan, and they trust index arguments a plan could forge
    # (max_pool2d_with_indices_backward writes wherever its indices point; embedding_bag reads by its offsets).
    ("backward", "a training (backward) op; inference plans hold none, and some trust their index arguments"),
    ("embedding_bag", "reads where its offsets point; no supported model emits it"),
)


def candidate_name(op) -> str:
    return f"{op.namespace}.{op._opname}.{op._overloadname}"


def resolve(target: str):
    ns, name, overload = target.split(".")
    return getattr(getattr(getattr(torch.ops, ns), name), overload)


def core_ops() -> set[str]:
    found = set()
    for schema in torch._C._jit_get_all_schemas():
        if not schema.name.startswith("aten::"):
            continue
        target = f"aten.{schema.name[6:]}.{schema.overload_name or 'default'}"
        try:
            op = resolve(target)
        except (AttributeError, RuntimeError):
            continue
        if torch.Tag.core in op.tags:
            found.add(target)
    return found


def named_by_lowerings() -> dict[str, str]:
    """target -> the first source file naming it."""
    named: dict[str, str] = {}
    for src in LOWERING_SOURCES:
        path = ROOT / src
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            for m in NAMED.finditer(file.read_text()):
                named.setdefault(f"aten.{m.group(1)}.{m.group(2)}", str(file.relative_to(ROOT)))
    return named


def host_sync_packets() -> frozenset[str]:
    from oparac.ingest.torch_fx import HOST_SYNC_OPS, METADATA_ASSERTIONS

    return HOST_SYNC_OPS | METADATA_ASSERTIONS


def refusal(target: str, host_sync: frozenset[str]) -> str | None:
    """Why `target` may not be in a plan, or None when it may."""
    ns, name, overload = target.split(".")
    if ns != "aten":
        return "not an ATen op"
    try:
        op = resolve(target)
    except (AttributeError, RuntimeError):
        return f"does not exist in torch {torch.__version__}"
    schema = op._schema
    if f"{ns}.{name}" in host_sync:
        return "synchronises with the host or has a data-dependent shape"
    if schema.is_mutable or any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments):
        return "mutates an argument"
    if overload == "out" or overload.endswith("_out") or any(a.name == "out" for a in schema.arguments):
        return "an out= overload"
    if "_unsafe" in name and target not in UNSAFE_BUT_CHECKED:
        return "an _unsafe op (skips a check)"
    for fragment, why in REFUSED_NAMES:
        if fragment in name:
            return why
    if torch.Tag.nondeterministic_seeded in op.tags and target not in PINNED_ARGS:
        return "draws random numbers"
    for a in schema.arguments:
        why = _type_refusal(a.real_type)
        if why:
            return f"argument {a.name!r} {why}"
    if not schema.returns:
        return "returns nothing (a side effect)"
    for r in schema.returns:
        kind = r.real_type.kind()
        if not (kind == "TensorType" or (kind == "ListType" and r.real_type.getElementType().kind() == "TensorType")):
            return f"returns a {r.real_type} (host values cannot be captured)"
    if not torch._C._dispatch_has_computed_kernel_for_dispatch_key(op.name(), "Meta"):
        return "has no meta kernel (its output shapes cannot be checked before it runs)"
    for a in schema.arguments:
        if is_string(a.real_type) and string_rule(target, a.name) is None:
            return f"string argument {a.name!r} has no fixed set of values"
    return None


def _type_refusal(t) -> str | None:
    kind = t.kind()
    if kind in ("OptionalType", "ListType"):
        return _type_refusal(t.getElementType())
    if kind in OK_TYPES:
        return None
    return REFUSED_TYPES.get(kind, f"has type {t}")


def internal_refusal(target: str, emitted: set[str]) -> str | None:
    """An internal kernel (`aten._name`) comes in only where Opara emits it: internal kernels skip the checks
    their public op makes (`_pdist_forward` crashes on a 3-D input; `pdist` refuses one first)."""
    name = target.split(".")[1]
    if name.startswith("_") and not name.startswith("__") and target not in emitted:  # __and__ is an operator
        return "an internal kernel no front end emits (it trusts its caller's checks)"
    return None


def is_string(t) -> bool:
    kind = t.kind()
    if kind in ("OptionalType", "ListType"):
        return is_string(t.getElementType())
    return kind == "StringType"


def string_rule(target: str, arg: str):
    """('values', tuple) or ('pattern', regex) for a string argument, or None where no rule is known."""
    if (target, arg) in STRING_PATTERNS:
        return "pattern", STRING_PATTERNS[(target, arg)]
    values = STRING_VALUES_BY_OP.get((target, arg), STRING_VALUES.get(arg))
    return ("values", values) if values is not None else None


# ------------------------------------------------------------------------------------------------ models

def layer_probes():
    """One small module per family of torch.nn inference layers and tensor functions beyond the zoo's."""
    from torch import nn

    F = nn.functional

    class Fn(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, *xs):
            return self.fn(*xs)

    torch.manual_seed(0)
    x3, x4 = torch.randn(1, 4, 16), torch.randn(1, 4, 8, 8)
    x5, seq = torch.randn(1, 2, 4, 4, 4), torch.randn(2, 5, 8)
    a, b = torch.randn(2, 3, 3), torch.randn(2, 3, 3)
    table, idx = torch.randn(6, 5), torch.tensor([0, 2, 1])
    return [
        ("conv1d", nn.Conv1d(4, 4, 3, padding=1), (x3,)),
        ("conv3d", nn.Conv3d(2, 2, 3, padding=1), (x5,)),
        ("conv_transpose", nn.Sequential(nn.ConvTranspose2d(4, 2, 2, stride=2)), (x4,)),
        ("conv_same", nn.Conv2d(4, 4, 3, padding="same"), (x4,)),
        ("norms", Fn(lambda x: (F.group_norm(x, 2), F.instance_norm(x), F.layer_norm(x, (8,)),
                                F.normalize(x, dim=1))), (x4,)),
        ("batch_norm1d", nn.BatchNorm1d(4).eval(), (x3,)),
        ("resample", Fn(lambda x: (F.interpolate(x, scale_factor=2), F.interpolate(x, scale_factor=2, mode="bilinear"),
                                   F.interpolate(x, size=(5, 5), mode="bicubic"), F.pixel_shuffle(x, 2),
                                   F.pixel_unshuffle(x, 2))), (x4,)),
        ("pools", Fn(lambda x: (F.max_pool1d(x, 2), F.avg_pool1d(x, 2), F.adaptive_avg_pool1d(x, 1),
                                F.adaptive_max_pool1d(x, 2))), (x3,)),
        ("pools2d", Fn(lambda x: (F.adaptive_max_pool2d(x, 1), F.max_pool2d(x, 3, 2, 1, ceil_mode=True),
                                  F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))), (x4,)),
        ("activations", Fn(lambda x: (F.silu(x), F.mish(x), F.elu(x), F.leaky_relu(x), F.relu6(x), F.hardtanh(x),
                                      F.softplus(x), F.gelu(x, approximate="tanh"), F.gelu(x), F.prelu(x, torch.ones(4)),
                                      F.hardswish(x), F.hardsigmoid(x), F.selu(x), F.celu(x), F.logsigmoid(x),
                                      F.softsign(x), F.tanhshrink(x), F.glu(x, 1))), (x4,)),
        ("softmax", Fn(lambda x: (F.softmax(x, -1), F.log_softmax(x, -1), F.softmin(x, 1))), (x3,)),
        ("attention", nn.MultiheadAttention(8, 2, batch_first=True).eval(), (seq, seq, seq)),
        ("transformer", nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval(), (seq,)),
        ("reductions", Fn(lambda x: (x.sum(-1), x.mean(), x.amax(1), x.amin(1), x.std(-1), x.var(1), x.norm(dim=-1),
                                     x.cumsum(-1), x.argmax(-1), x.logsumexp(-1), x.prod(-1), x.max(-1),
                                     x.min(1), x.sum(), x.all(), x.any(-1), x.mean(-1, keepdim=True))), (x3,)),
        ("shape", Fn(lambda x: (torch.flatten(x, 1), x.permute(0, 2, 1), *x.chunk(2, 1), *x.unbind(1),
                                torch.stack([x, x]), x.flip(-1), torch.roll(x, 1, -1), x.repeat(1, 2, 1),
                                x.transpose(1, 2).contiguous(), torch.tril(x[0]), torch.triu(x[0]),
                                x.narrow(-1, 0, 2), x.squeeze(0), x.reshape(4, 16), x.t() if x.dim() == 2 else x[0].t(),
                                torch.split(x, [1, 3], 1)[1], x.expand(2, 4, 16), x.unfold(-1, 4, 4),
                                x[:, ::2], x[..., None], x.movedim(1, 2))), (x3,)),
        ("pad", Fn(lambda x: (F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(x, (1, 1, 1, 1), mode="replicate"),
                              F.pad(x, (1, 1, 1, 1)), F.pad(x, (1, 1, 1, 1), mode="circular"))), (x4,)),
        ("elementwise", Fn(lambda x: (x.exp(), x.log1p(), x.expm1(), x.rsqrt(), x.abs().sqrt(), x.pow(2), torch.erf(x),
                                      x.clamp(-1, 1), torch.where(x > 0, x, -x), x.masked_fill(x < 0, 0),
                                      torch.floor(x), x.round(), x.sign(), torch.div(x, 2, rounding_mode="floor"),
                                      torch.div(x, 2, rounding_mode="trunc"), torch.remainder(x, 2), torch.fmod(x, 2),
                                      torch.maximum(x, -x), torch.minimum(x, -x), x.reciprocal(), torch.atan2(x, x + 1),
                                      x.log2(), x.log10(), 2 ** x, x.exp2(), x.trunc(), x.frac(), x.sin(), x.cos(),
                                      x.tan(), x.asin(), x.atan(), torch.lerp(x, -x, 0.5), torch.hypot(x, x),
                                      x.clamp_min(0), x.clamp_max(0), torch.isfinite(x), torch.nan_to_num(x),
                                      torch.logical_not(x > 0), (x > 0) & (x < 1), (x > 0) | (x < 1), ~(x > 0),
                                      x.square(), x.neg(), 1 - x, x * 2, x / 3, x - 1,
                                      x != 0, x == 1, x >= 0, x <= 0, torch.addcmul(x, x, x),
                                      torch.addcdiv(x, x, x.abs() + 1), torch.signbit(x))), (x3,)),
        ("integers", Fn(lambda i: (i // 2, i % 3, i << 1, i >> 1, i & 1, i | 1, i ^ 1, ~i, i.abs(), i * 2,
                                   torch.bitwise_and(i, i), i.float(), i.to(torch.int32))), (idx,)),
        ("matmul", Fn(lambda a, b: (a @ b, torch.bmm(a, b), torch.baddbmm(a @ b, a, b), torch.einsum("bij,bjk->bik", a, b),
                                    a[0] @ b[0], torch.addmm(a[0], a[0], b[0]), torch.mv(a[0], b[0, 0]),
                                    torch.outer(a[0, 0], b[0, 0]), F.linear(a, b[0]), torch.cdist(a, b),
                                    torch.dot(a[0, 0], b[0, 0]), F.cosine_similarity(a, b, dim=-1))), (a, b)),
        ("index", Fn(lambda x, i: (x[i], x.index_select(0, i), torch.gather(x, 0, i[:, None].expand(-1, x.size(1))),
                                   F.embedding(i, x), *x.topk(2, -1), *x.sort(-1), x.argsort(-1),
                                   torch.scatter(x, 0, i[:, None].expand(-1, 5), 1.0),
                                   torch.scatter_add(x, 0, i[:, None].expand(-1, 5), x[:3]),
                                   x.index_put((i,), x[:3]), x.index_add(0, i, x[:3]), x[:, 1], x[1:3],
                                   x.masked_fill(x > 0, float("-inf")), torch.take_along_dim(x, i[None, :], 1))),
         (table, idx)),
        ("factories", Fn(lambda x: (x.to(torch.float16), x.long(), x.bool(), x.half().float(), torch.zeros_like(x),
                                    torch.ones_like(x), torch.full_like(x, 2.0), x.new_zeros(3), x.new_ones(3),
                                    x.new_full((2,), 1.0), torch.arange(5), torch.arange(1, 9, 2),
                                    torch.zeros(3), torch.ones(2, 2), torch.full((2,), 3.0), torch.eye(3),
                                    torch.linspace(0, 1, 5), x.clone(), x.detach(), torch.scalar_tensor(2.0),
                                    x.type_as(torch.ones(1, dtype=torch.float64)), torch.tensor(3.0) * x)), (x3,)),
    ]


def decoder_cases():
    """Tiny GPT-2 and Llama (grouped-query attention) decoders with random weights, as users compile them
    (use_cache=False): their masks and positions emit ops the encoders do not. Empty without transformers."""
    try:
        import transformers
    except ImportError:
        return []
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    ids = torch.randint(0, 32, (1, 8))
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=1, n_head=2, n_embd=8, vocab_size=32, n_positions=16, use_cache=False)).eval()
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        num_hidden_layers=1, hidden_size=16, intermediate_size=32, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=32, max_position_embeddings=16, use_cache=False)).eval()
    return [("tiny_gpt2", gpt2, (ids,)), ("tiny_llama", llama, (ids,))]


def model_cases():
    """(name, model, example inputs) for the test models, the layer probes and the tiny decoders."""
    from helpers import fused, models

    cases = [("small_cnn", *models.small_cnn()), ("multi_device_two_branches", *models.two_branches()),
             ("fused_two_branches", fused.TwoBranches().eval(), (torch.randn(4, 16),))]
    cases += [(f"probe:{name}", model, inputs) for name, model, inputs in layer_probes()]
    return cases + decoder_cases()


def zoo_names(quick: bool) -> tuple[str, ...]:
    from oparac.models import zoo

    return ("squeezenet", "mobilenet_v3") if quick else tuple(zoo.MODELS) + ("mobilenet_v3_large", "bert_model")


def zoo_case(name: str):
    """A zoo model and its example inputs as the list is built from them (transformers at short sequences: the
    same ops, sooner)."""
    from oparac.models import zoo

    return getattr(zoo, name)(1, 16) if name in ("bert", "bert_model", "gpt2", "llama") else getattr(zoo, name)(1)


def emitted_ops(model, inputs) -> frozenset[str]:
    """The ATen targets Opara's front end emits for a model, in both attention forms. Unfolded: folding only takes
    ops away, and a model over the folding budget is ingested with them (ingest/fold_constants.py)."""
    from oparac.pipeline import ingest

    found = set()
    for attention in ("sdpa", "math"):
        builder, _ = ingest(model, inputs, "float32", attention=attention, fold=False)
        found |= {node.target for node in builder.nodes if node.kind == "op"}
    return frozenset(found)


@functools.lru_cache(maxsize=None)
def zoo_ops(name: str) -> frozenset[str]:
    """emitted_ops of a zoo model, computed once per process: the test suite asks for each model twice (its own
    test, and regenerating the list), and the large ones take half a minute each to export on two cores."""
    return emitted_ops(*zoo_case(name))


def exported_by_models(quick: bool = False, say=print) -> dict[str, set[str]]:
    """target -> the models whose plans hold it, through Opara's own front end, in both attention forms."""
    found = [(name, emitted_ops(model, inputs)) for name, model, inputs in model_cases()]
    for name in zoo_names(quick):
        found.append((name, zoo_ops(name)))
        say(f"  exported {name}")
    seen: dict[str, set[str]] = {}
    for name, targets in found:
        for target in targets:
            seen.setdefault(target, set()).add(name)
    return seen


# ------------------------------------------------------------------------------------------------ output

def build(quick: bool = False, say=print):
    """(allowed targets, string rules, refused candidates {target: reason}, sources {target: why listed})."""
    host_sync = host_sync_packets()
    named = named_by_lowerings()
    seen = exported_by_models(quick, say)
    core = core_ops()
    candidates = core | set(named) | set(seen)
    allowed, refused = set(), {}
    for target in sorted(candidates):
        why = refusal(target, host_sync) or internal_refusal(target, set(named) | set(seen))
        if why is None:
            allowed.add(target)
        else:
            refused[target] = why
    emitted_but_refused = {t: refused[t] for t in refused if t in named or t in seen}
    if emitted_but_refused:
        lines = "\n".join(f"  {t}: {why} (emitted by {named.get(t) or ', '.join(sorted(seen[t]))})"
                          for t, why in sorted(emitted_but_refused.items()))
        raise SystemExit(f"the compiler emits ops the rules refuse; change the lowering or the rule:\n{lines}")
    rules = [(t, a, "zero", 0.0) for t, a in sorted(PINNED_ARGS.items()) if t in allowed]
    for target in sorted(allowed):
        for a in resolve(target)._schema.arguments:
            if is_string(a.real_type):
                kind, value = string_rule(target, a.name)
                rules.append((target, a.name, kind, value))
    sources = {t: ("core" if t in core else "") + (" lowering" if t in named else "") + (" export" if t in seen else "")
               for t in allowed}
    return sorted(allowed), rules, refused, sources


def render(allowed, rules) -> str:
    ops = "\n".join(f"    {t!r}," for t in allowed)
    values = "\n".join(f"    ({t!r}, {a!r}, {v!r})," for t, a, kind, v in rules if kind == "values")
    patterns = "\n".join(f"    ({t!r}, {a!r}, {v!r})," for t, a, kind, v in rules if kind == "pattern")
    zeros = "\n".join(f"    ({t!r}, {a!r})," for t, a, kind, v in rules if kind == "zero")
    return f'''"""The ATen overloads a plan may run and the values their string arguments may take (generated data)."""
# Generated by tools/gen_allowlist.py under torch {torch.__version__.split("+")[0]}; do not edit by hand, rerun it
# (tests/plans/test_allowlist.py regenerates it and compares). Candidates: the ATen ops tagged core, the overloads
# the lowerings name (compiler/oparac/ingest, the copy node, the channels_last stand-in) and what torch.export
# emits through oparac for the zoo, the test models and the layer probes. Refused: ops that mutate an argument,
# out= overloads, _unsafe ops (but _unsafe_view: a checked view), sparse, nested, quantized and mkldnn ops, RNG,
# global state, files, printing, uninitialised memory, host syncs, backward ops and embedding_bag (they trust index
# arguments), internal kernels (`aten._x`) that Opara does not emit (they trust their callers' checks), arguments of
# types a plan cannot hold (Generator, Storage, Stream, ...), non-tensor returns, ops without a meta kernel, and
# string arguments without a fixed set of values. A string argument takes one of a fixed set of values (or matches
# a pattern); SDPA's dropout_p must be zero.

ALLOWED_OPS = frozenset({{
{ops}
}})

# (target, argument, values): a string argument takes one of these (or None where the schema says `str?`).
STRING_VALUES = (
{values}
)

# (target, argument, regex): a free-form string argument must match the whole regex.
STRING_PATTERNS = (
{patterns}
)

# (target, argument): a number that must be zero or absent (SDPA's dropout_p: nonzero would draw random numbers).
ZERO_ARGS = (
{zeros}
)
'''


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    p.add_argument("--explain", action="store_true", help="list the refused candidates and the reasons")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    allowed, rules, refused, sources = build(say=lambda msg: print(msg, file=sys.stderr))
    text = render(allowed, rules)
    if args.explain:
        for t, why in sorted(refused.items()):
            print(f"refused {t}: {why}")
        for t in allowed:
            print(f"allowed {t}:{sources[t]}")
    if args.check:
        same = OUT.exists() and OUT.read_text() == text
        print("allowlist is up to date" if same else f"{OUT.relative_to(ROOT)} differs: rerun tools/gen_allowlist.py")
        return 0 if same else 1
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}: {len(allowed)} ops, {len(rules)} string arguments")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
