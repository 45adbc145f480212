"""PyTorch front end: nn.Module via torch.export (non-strict), or an ATen-level fx.GraphModule as given."""
from __future__ import annotations

import inspect
import operator

import torch
import torch.fx
import torch.utils._pytree as pytree

from opara_plan import ModelError, OparaError, OutTree, Ref, UnsupportedOpError
from opara_runtime.ops import op_packet, op_target
from oparac.ingest.export_errors import export_error, quiet_export
from oparac.ingest.causal_attention import causal_attention, mask_of
from oparac.ingest.fold_constants import FOLD_BUDGET_BYTES, fold_constants, nbytes, read_by_kept_ops
from oparac.ingest.graph_builder import MAX_CONSTANT_BYTES, GraphBuilder
from oparac.ingest.merge_projections import is_view, only_merged_use, sibling_projections
from oparac.ingest.module_state import kept_module_state
from oparac.ingest.weight_products import fold_weight_product
from oparac.models.reference import warn_if_training

# Ops that synchronise with the host or produce data-dependent shapes: a CUDA graph cannot hold them.
HOST_SYNC_OPS = frozenset({
    "aten._local_scalar_dense", "aten.item", "aten.nonzero", "aten.nonzero_static", "aten.masked_select",
    "aten.unique", "aten._unique", "aten._unique2", "aten.unique_dim", "aten.unique_consecutive",
    "aten.equal", "aten.is_nonzero", "aten.allclose", "aten._assert_async", "aten._assert_scalar",
    "aten.repeat_interleave", "aten.bincount", "aten.histc",
})

# Compile-time checks of static metadata that export leaves in the graph; shapes are fixed in a plan and
# the runtime checks every input's shape and dtype, so they are dropped.
METADATA_ASSERTIONS = frozenset({"aten._assert_tensor_metadata", "aten.sym_constrain_range_for_size",
                                 "aten.sym_constrain_range"})


def graph_from_module(model: torch.nn.Module, example_inputs: tuple, *, decompositions: dict | None = None,
                      fold: bool = True, merge: tuple[str, ...] = ()) -> tuple[GraphBuilder, str]:
    """Export `model` on `example_inputs` to the functional ATen graph (`decompositions`: ops lowered further,
    see ingest/attention.py; merge: the kinds of sibling ops merged into one, "linear" and "convolution",
    ingest/merge_projections.py). The model is exported in eval mode (warned about if it is in train mode) and
    left as it came in (ingest/module_state.py)."""
    _check_inputs(example_inputs)
    _check_arity(model, example_inputs)
    check_weights(model.named_parameters(), model.named_buffers())
    warn_if_training(model, "the model")
    try:
        with kept_module_state(model), quiet_export():
            model.eval()
            ep = torch.export.export(model, tuple(example_inputs), strict=False)
            ep = ep.run_decompositions(decompositions or {})
    except OparaError:
        raise
    except Exception as e:  # export raises many kinds of errors for untraceable models
        raise export_error(e) from None
    return graph_from_exported(ep, fold=fold, merge=merge), "torch.export"


def check_weights(*named) -> None:
    """Weights on the meta device have a shape but no data: a plan bound to them cannot run."""
    for items in named:
        for name, t in items:
            if isinstance(t, torch.Tensor) and t.is_meta:
                raise ModelError(f"weight {name!r}: expected a tensor with data, found one on the meta device "
                                 f"({_dtype(t)}{list(t.shape)}); load the real weights before compiling (e.g. "
                                 f"model.load_state_dict(state, assign=True), or model.to_empty(device='cpu') "
                                 f"then load_state_dict)")


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


_WRAP_HINT = ("plans take tensors only: compile a wrapper, e.g. `class Wrapped(nn.Module): def forward(self, a, "
              "b): return model([a, b])`, on the tensors as separate inputs")


def _check_inputs(example_inputs) -> None:
    if not isinstance(example_inputs, (tuple, list)):
        raise ModelError(f"example_inputs: expected a tuple of tensors, found {type(example_inputs).__name__}")
    for i, x in enumerate(example_inputs):
        if isinstance(x, (list, tuple, dict)):
            raise ModelError(f"example input {i}: expected a tensor, found a {type(x).__name__} of {len(x)} "
                             f"items (the model takes a container of tensors); {_WRAP_HINT}")
        if not isinstance(x, torch.Tensor):
            raise ModelError(f"example input {i}: expected a tensor, found {type(x).__name__}")
        if x.is_meta:
            raise ModelError(f"example input {i}: expected a tensor with data, found one on the meta device")


def _check_arity(model: torch.nn.Module, example_inputs) -> None:
    """More example inputs than forward takes is usually a list of tensors spread into arguments."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(example_inputs) > len(positional):
        names = ", ".join(p.name for p in positional)
        raise ModelError(f"example_inputs: forward({names}) takes {len(positional)} inputs, "
                         f"{len(example_inputs)} tensors were given; if it takes a list of tensors, {_WRAP_HINT}")


def graph_from_exported(ep: torch.export.ExportedProgram, *, fold: bool = True,
                        merge: tuple[str, ...] = ()) -> GraphBuilder:
    """The plan graph of an exported program; fold: compute input-independent values now (ingest/fold_constants);
    merge: the kinds of op ("linear", "convolution") whose siblings reading one activation become one op over
    their stacked weights (ingest/merge_projections). Where a consumer cannot view a merged op's slice, the same
    program is built again without merging, and the builder's merge_refused says why."""
    if not merge:
        return _graph_of_exported(ep, fold, merge=())
    try:
        return _graph_of_exported(ep, fold, merge=tuple(merge))
    except UnsupportedOpError as e:
        b = _graph_of_exported(ep, fold, merge=())
        b.merge_refused = str(e)
        return b


def _graph_of_exported(ep: torch.export.ExportedProgram, fold: bool, *, merge: tuple[str, ...]) -> GraphBuilder:
    from torch.export.graph_signature import InputKind, OutputKind

    check_weights(ep.state_dict.items(), ep.constants.items())
    specs = {s.arg.name: s for s in ep.graph_signature.input_specs if hasattr(s.arg, "name")}
    for spec in ep.graph_signature.output_specs:
        if spec.kind != OutputKind.USER_OUTPUT:
            raise UnsupportedOpError(f"the model writes to {spec.target!r} during forward ({spec.kind.name}); "
                                     f"put it in eval mode or remove the in-place state update")
    b = GraphBuilder()
    env: dict[torch.fx.Node, object] = {}
    lifted = {node: ep.constants.get(specs[node.name].target) for node in ep.graph.nodes if node.op == "placeholder"
              and node.name in specs and specs[node.name].kind == InputKind.CONSTANT_TENSOR}
    constants = _Folded(ep.graph, {n: v for n, v in lifted.items() if isinstance(v, torch.Tensor)}, b, fold)
    parameters = {node: specs[node.name].target for node in ep.graph.nodes if node.op == "placeholder"
                  and node.name in specs and specs[node.name].kind == InputKind.PARAMETER}
    merges = sibling_projections(ep.graph, parameters, merge) if merge else {}
    b.merged_projections = (len(merges), len({id(m) for m in merges.values()}))
    strided: set[torch.fx.Node] = set()  # nodes reading a merged op's slice, directly or through others
    for node in ep.graph.nodes:
        if node.op == "placeholder":
            spec = specs.get(node.name)
            kind = spec.kind if spec is not None else InputKind.USER_INPUT
            val = node.meta.get("val")
            if not isinstance(val, torch.Tensor):
                raise ModelError(f"input {node.name!r}: expected a tensor input, found {type(val).__name__}")
            if kind == InputKind.USER_INPUT:
                env[node] = b.input(node.name, val.shape, val.dtype)
            elif node in parameters and only_merged_use(node, merges):
                env[node] = None  # bound only inside a stacked weight
            elif kind in (InputKind.PARAMETER, InputKind.BUFFER):
                # Non-persistent buffers (BERT's position_ids) are model state too: bound like weights.
                env[node] = b.param(spec.target, val.shape, val.dtype)
            elif kind == InputKind.CONSTANT_TENSOR:
                env[node] = _lifted_constant(ep, spec, b) if constants.needed(node) else None
            else:
                raise UnsupportedOpError(f"input {node.name!r}: {kind.name} inputs are not supported")
        elif node.op == "call_function" and node in merges:
            if node not in env:  # the group's first op builds them all
                _merged(merges[node], env, b)
            strided.add(node)
        elif node.op == "call_function":
            # A view of a slice (or of a view of one) has other strides than export traced: its metadata is worked
            # out afresh, so a view the slice cannot take is refused here, not at load. An op that computes a new
            # tensor lays it out as it did for the unmerged input (same dimension order), so its trace stands.
            reads_slice = is_view(node) and any(a in strided for a in node.all_input_nodes)
            if reads_slice:
                strided.add(node)
            env[node] = constants.build(node, env, traced_meta=not reads_slice)
        elif node.op == "output":
            _output(node, env, b, ep.call_spec.out_spec)
        else:
            raise UnsupportedOpError(f"node {node.name!r}: FX op {node.op!r} is not supported in an exported graph")
    return b


class _Folded:
    """The graph's values computed at compile time (ingest/fold_constants.py): a folded node that a kept op or
    the output reads becomes a plan constant, the others vanish."""

    def __init__(self, graph: torch.fx.Graph, known: dict, b: GraphBuilder, fold: bool) -> None:
        room = MAX_CONSTANT_BYTES - sum(nbytes(t) for t in known.values())
        # unused metadata assertions are left out (_call), so what only they read is not kept for them
        self.unbuilt = frozenset(n for n in graph.nodes if _unbuilt_assertion(n))
        self.values = fold_constants(graph, known, budget=max(0, min(FOLD_BUDGET_BYTES, room)),
                                     dropped=self.unbuilt) if fold else {}
        # attention calls whose folded mask is causal: rebuilt with is_causal=True, so they no longer read it
        self.rewrites = causal_attention(graph, {**known, **self.values}) if fold else {}
        self.unread = frozenset((mask_of(n), n) for n in self.rewrites)
        self.known = known
        self.b = b

    def _read(self, node: torch.fx.Node) -> bool:
        return read_by_kept_ops(node, self.values, self.unbuilt, self.unread)

    def build(self, node: torch.fx.Node, env, *, traced_meta: bool = True):
        """A call_function node in the plan graph: its folded value as a constant where a kept op reads it (None
        where none does), else the op itself (rewritten where causal_attention rewrote it; traced_meta: its
        output metadata from export's trace, else computed from its plan inputs)."""
        if node not in self.values:
            return _call(node, env, self.b, self.rewrites.get(node), traced_meta=traced_meta)
        return self.b.constant(node.name, self.values[node]) if self._read(node) else None

    def needed(self, node: torch.fx.Node) -> bool:
        """A constant of the model is built unless only folded ops (or rewritten attention) read it."""
        return node not in self.known or self._read(node)


def _lifted_constant(ep, spec, b: GraphBuilder) -> Ref:
    value = ep.constants.get(spec.target)
    if not isinstance(value, torch.Tensor):
        raise UnsupportedOpError(f"constant {spec.target!r}: expected a tensor, found {type(value).__name__}")
    return b.constant(spec.target, value)


def _call(node: torch.fx.Node, env, b: GraphBuilder, rewrite: tuple | None = None, *, traced_meta: bool = True):
    """The op `node` calls, built; rewrite: (args, kwargs) to call it with instead of the node's own;
    traced_meta=False: its output metadata computed on meta tensors of its plan inputs instead of export's."""
    target = node.target
    if target is operator.getitem:
        src, index = node.args
        refs = env[src]
        if not isinstance(refs, tuple):
            raise UnsupportedOpError(f"node {node.name!r}: getitem on a single-output op")
        return refs[index]
    if not isinstance(target, torch._ops.OpOverload):
        raise UnsupportedOpError(f"node {node.name!r}: {getattr(target, '__name__', target)!s} is not an ATen "
                                 f"operator (control flow, custom Python or symbolic-size code cannot be "
                                 f"captured in a CUDA graph)")
    packet = op_packet(target)
    if packet in HOST_SYNC_OPS:
        raise UnsupportedOpError(f"node {node.name!r}: {packet} synchronises with the host or has a "
                                 f"data-dependent shape; CUDA graphs cannot capture it")
    if _unbuilt_assertion(node):
        return None
    node_args, node_kwargs = rewrite if rewrite is not None else (node.args, node.kwargs)
    args = pytree.tree_map_only(torch.fx.Node, lambda n: _ref_of(n, env, node), node_args)
    kwargs = pytree.tree_map_only(torch.fx.Node, lambda n: _ref_of(n, env, node), node_kwargs)
    if target is torch.ops.aten._native_batch_norm_legit_no_training.default and _only_first_output_used(node):
        return _inference_batch_norm(node, args, b, traced_meta)
    folded = fold_weight_product(b, op_target(target), args, kwargs, node.name)
    if folded is not None:
        return folded
    return b.op(target, args, kwargs, name=node.name, meta=node.meta.get("val") if traced_meta else None)


def _merged(merge, env, b: GraphBuilder) -> None:
    """One linear (or convolution) over the group's stacked weights (and biases), and each of the group's ops as
    its slice of the output, placed where the group's first op was (every weight is a leaf, so all are defined
    there). A convolution keeps its first member's stride, padding and the rest: the group shares them."""
    first = merge.ops[0]
    weight_vals = [n.args[1].meta["val"] for n in merge.ops]
    dtype = weight_vals[0].dtype
    args = [env[first.args[0]], b.stacked_param(list(merge.weights), [tuple(v.shape) for v in weight_vals], dtype)]
    if merge.biases is not None:
        args.append(b.stacked_param(list(merge.biases), [tuple(n.args[2].meta["val"].shape) for n in merge.ops],
                                    dtype))
    elif len(first.args) > 2:  # a bias spelled None (a convolution's is positional) stays in place
        args.append(None)
    args += list(first.args[3:])
    out = b.op(first.target, tuple(args), name=f"{first.name}_merged")
    dim, start = merge.out_dim % b.meta_of(out).dim(), 0
    for node, width in zip(merge.ops, merge.widths):
        env[node] = b.op(torch.ops.aten.slice.Tensor, (out, dim, start, start + width), name=node.name)
        start += width


def _unbuilt_assertion(node: torch.fx.Node) -> bool:
    """An unused check of static metadata: dropped (METADATA_ASSERTIONS)."""
    target = node.target
    return (node.op == "call_function" and not node.users and isinstance(target, torch._ops.OpOverload)
            and op_packet(target) in METADATA_ASSERTIONS)


def _only_first_output_used(node: torch.fx.Node) -> bool:
    return all(u.target is operator.getitem and u.args[1] == 0 for u in node.users)


def _inference_batch_norm(node: torch.fx.Node, args, b: GraphBuilder, traced_meta: bool = True):
    """Export's functional inference batch norm launches ATen's native kernel; eager PyTorch runs
    `batch_norm`, which picks cuDNN on a GPU and is faster there. Same function, no state written
    (training=False), so the plan calls what eager calls. Only output 0 exists afterwards."""
    x, weight, bias, mean, var, momentum, eps = args
    val = node.meta.get("val")
    ref = b.op(torch.ops.aten.batch_norm.default, (x, weight, bias, mean, var, False, momentum, eps, True),
               name=node.name, meta=val[0] if val is not None and traced_meta else None)
    return (ref,)


def _ref_of(n: torch.fx.Node, env, user: torch.fx.Node) -> Ref:
    ref = env.get(n)
    if not isinstance(ref, Ref):
        raise UnsupportedOpError(f"node {user.name!r}: argument {n.name!r} is not a single tensor")
    return ref


def _output(node: torch.fx.Node, env, b: GraphBuilder, out_spec) -> None:
    flat = pytree.tree_leaves(node.args[0])
    refs = []
    for leaf in flat:
        if not isinstance(leaf, torch.fx.Node) or not isinstance(env.get(leaf), Ref):
            raise UnsupportedOpError(f"model output {leaf!r}: expected a tensor")
        refs.append(env[leaf])
    counter = iter(range(len(refs)))
    tree = _out_tree(out_spec, counter) if out_spec is not None else \
        OutTree("tuple", children=tuple(OutTree("tensor", i) for i in range(len(refs))))
    b.output(refs, tree)


def _out_tree(spec, counter) -> OutTree:
    """pytree TreeSpec -> OutTree. Dicts and dict-like containers (transformers ModelOutput) become dicts."""
    if spec.is_leaf():
        return OutTree("tensor", next(counter))
    children = tuple(_out_tree(c, counter) for c in (spec.children() if hasattr(spec, "children") else spec.children_specs))
    if spec.type is type(None):
        return OutTree("none")
    if spec.type is list:
        return OutTree("list", children=children)
    if spec.type is tuple or (isinstance(spec.type, type) and issubclass(spec.type, tuple)):
        return OutTree("tuple", children=children)
    keys = spec.context
    if isinstance(keys, (list, tuple)) and len(keys) == len(children) and all(isinstance(k, str) for k in keys):
        return OutTree("dict", keys=tuple(keys), children=children)
    if isinstance(keys, (list, tuple)) and len(keys) == 2 and isinstance(keys[1], (list, tuple)):
        return OutTree("dict", keys=tuple(str(k) for k in keys[1]), children=children)  # dataclass-style
    raise UnsupportedOpError(f"model output container {spec.type.__name__} is not supported "
                             f"(expected tensors in tuples, lists or dicts)")


def graph_from_fx(gm: torch.fx.GraphModule, example_inputs: tuple, *,
                  decompositions: dict | None = None, fold: bool = True) -> tuple[GraphBuilder, str]:
    """An ATen-level GraphModule (make_fx, export) is ingested as is; a torch-level one is exported."""
    _check_inputs(example_inputs)
    if not _is_aten_graph(gm):
        return graph_from_module(gm, example_inputs, decompositions=decompositions, fold=fold)
    b = GraphBuilder()
    env: dict[torch.fx.Node, object] = {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        raise ModelError(f"the GraphModule takes {len(placeholders)} inputs, {len(example_inputs)} were given")
    named = dict(gm.named_parameters()) | dict(gm.named_buffers())
    check_weights(named.items())
    inputs = dict(zip(placeholders, example_inputs))
    attrs = {node: _get_attr(gm, node.target) for node in gm.graph.nodes
             if node.op == "get_attr" and node.target not in named}
    constants = _Folded(gm.graph, attrs, b, fold)
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            x = inputs[node]
            env[node] = b.input(node.name, x.shape, x.dtype)
        elif node.op == "get_attr":
            value = named.get(node.target)
            if value is not None:
                env[node] = b.param(node.target, value.shape, value.dtype)
            else:
                env[node] = b.constant(node.target, attrs[node]) if constants.needed(node) else None
        elif node.op == "call_function":
            env[node] = constants.build(node, env)
        elif node.op == "output":
            out = node.args[0]
            spec = pytree.tree_flatten(out)[1]
            _output(node, env, b, spec)
    return b, "fx"


def _get_attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, torch.Tensor):
        raise UnsupportedOpError(f"get_attr {target!r}: expected a tensor, found {type(obj).__name__}")
    return obj


def _is_aten_graph(gm: torch.fx.GraphModule) -> bool:
    for node in gm.graph.nodes:
        if node.op in ("call_module", "call_method"):
            return False
        if node.op == "call_function" and not (isinstance(node.target, torch._ops.OpOverload)
                                               or node.target is operator.getitem):
            return False
    return True
