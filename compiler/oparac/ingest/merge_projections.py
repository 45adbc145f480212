"""Sibling projections merged into one op: linears (compile option merge_projections, on by default) and
convolutions (merge_convolutions, experimental).

Linears that read the same activation through weights of their own (BERT's query, key and value; a Llama block's
q, k and v, and its MLP's gate and up) become one linear over their weights stacked, and each consumer reads its
slice of the output, a view. At batch 1 each of those GEMMs is too small to fill the GPU, so several of them take
about as long each as one over the stacked weight (same rows, the columns of all), and streams recovered little of
that (BERT-base fp16 on the H200: its best kernel schedule was 3% faster than one stream, docs/design.md 6.1);
torch.compile does not merge them either. Convolutions of one activation with the same kernel size, stride,
padding and dilation (an Inception block's 1x1 convolutions) merge the same way along their output channels, as
TensorRT's horizontal fusion does; whether that beats running them on parallel streams is not yet measured.

The stacked weight is no constant of the plan: its param node names the weights it stacks (CONCAT_PARAM), and the
runtime concatenates them when it binds the model's weights, so new weights still take effect and the plan
carries no weight bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx

from oparac.ingest.weight_products import leading_dims_merge

LINEAR = torch.ops.aten.linear.default
CONVOLUTION = torch.ops.aten.convolution.default
CONV2D = torch.ops.aten.conv2d.default  # what export leaves of nn.Conv2d
CONVOLUTIONS = (CONVOLUTION, CONV2D)
# What can merge: "linear" (merge_projections, on by default) and "convolution" (merge_convolutions, experimental).
MERGEABLE = {"linear": (LINEAR,), "convolution": CONVOLUTIONS}


@dataclass(frozen=True)
class Merge:
    """Linears (or convolutions) reading one activation, in graph order, their weights' (and biases') parameter
    names. The merged op's output stacks theirs along `out_dim`: a linear's last dimension, a convolution's
    channels."""

    ops: tuple[torch.fx.Node, ...]
    weights: tuple[str, ...]
    biases: tuple[str, ...] | None

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(int(n.args[1].meta["val"].shape[0]) for n in self.ops)

    @property
    def out_dim(self) -> int:
        return 1 if self.ops[0].target in CONVOLUTIONS else -1


def sibling_projections(graph: torch.fx.Graph, parameters: dict[torch.fx.Node, str],
                        kinds: tuple[str, ...] = ("linear",)) -> dict[torch.fx.Node, Merge]:
    """Each linear (or convolution, where `kinds` names it) of a mergeable group -> its Merge. `parameters`: the
    placeholders that are the model's parameters, with their names. A group is two or more linears reading the
    same activation (one whose leading dimensions merge, as ATen's own GEMM wants), each weight a distinct 2-D
    parameter of one dtype, and each with a parameter bias or none without one; or two or more convolutions reading
    the same activation with the same kernel size, stride, padding and dilation (not transposed, not grouped),
    likewise."""
    targets = {t for k in kinds for t in MERGEABLE[k]}
    groups: dict[tuple, list[torch.fx.Node]] = {}
    for node in graph.nodes:
        key = _group_key(node, parameters) if node.target in targets else None
        if key is not None:
            groups.setdefault(key, []).append(node)
    merges = {}
    for members in groups.values():
        weights = tuple(parameters[n.args[1]] for n in members)
        if len(members) < 2 or len(set(weights)) != len(weights):
            continue
        has_bias = len(members[0].args) > 2 and members[0].args[2] is not None
        biases = tuple(parameters[n.args[2]] for n in members) if has_bias else None
        if biases is not None and len(set(biases)) != len(biases):
            continue
        merge = Merge(tuple(members), weights, biases)
        merges.update((n, merge) for n in members)
    return merges


def _group_key(node: torch.fx.Node, parameters: dict) -> tuple | None:
    """(activation, dtype, bias or not) for a linear that may merge with others of the same key; None otherwise."""
    if node.op == "call_function" and node.target in CONVOLUTIONS:
        return _convolution_key(node, parameters)
    if node.op != "call_function" or node.target is not LINEAR or node.kwargs or len(node.args) not in (2, 3):
        return None
    x, w = node.args[0], node.args[1]
    bias = node.args[2] if len(node.args) > 2 else None
    if not isinstance(x, torch.fx.Node) or w not in parameters or not _no_or_vector_param(bias, parameters):
        return None
    xv, wv = x.meta.get("val"), w.meta.get("val")
    if not isinstance(xv, torch.Tensor) or not isinstance(wv, torch.Tensor) or wv.dim() != 2 or xv.dim() < 2:
        return None
    if xv.dim() > 2 and not leading_dims_merge(xv):  # weight_products spells those out as eager runs them
        return None
    return (x, wv.dtype, bias is not None)


def _convolution_key(node: torch.fx.Node, parameters: dict) -> tuple | None:
    """(activation, dtype, bias or not, the weight's shape past its output channels, stride, padding, dilation,
    output padding) for a plain convolution that may merge with others of the same key; None otherwise. Output
    channels of a convolution are independent of each other, so stacking weights along dimension 0 computes each
    member's channels as a slice of the merged output."""
    if node.kwargs:
        return None
    if node.target is CONV2D:  # (input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1)
        x, w, bias, stride, padding, dilation, groups = (*node.args, *(None, [1, 1], [0, 0], [1, 1], 1)[
            len(node.args) - 2:])
        transposed, output_padding = False, ()
    elif len(node.args) == 9:
        x, w, bias, stride, padding, dilation, transposed, output_padding, groups = node.args
    else:
        return None
    if transposed or groups != 1 or not isinstance(x, torch.fx.Node) or w not in parameters:
        return None
    if not _no_or_vector_param(bias, parameters):
        return None
    xv, wv = x.meta.get("val"), w.meta.get("val")
    if not isinstance(xv, torch.Tensor) or not isinstance(wv, torch.Tensor) or wv.dim() < 3:
        return None
    return (x, wv.dtype, bias is not None, tuple(wv.shape[1:]), _ints(stride), _ints(padding), _ints(dilation),
            _ints(output_padding), node.target)


def _no_or_vector_param(bias, parameters: dict) -> bool:
    """Whether a member's bias is absent or a 1-D parameter (what a stacked bias is made of)."""
    if bias is None:
        return True
    val = bias.meta.get("val") if isinstance(bias, torch.fx.Node) else None
    return bias in parameters and isinstance(val, torch.Tensor) and val.dim() == 1


def _ints(v) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


def is_view(node: torch.fx.Node) -> bool:
    """Whether `node` is an ATen view (its output aliases its input: strides follow the input's), or
    _unsafe_view, which is one without saying so in its schema."""
    target = node.target
    if not isinstance(target, torch._ops.OpOverload) or not target._schema.returns or target._schema.is_mutable:
        return False
    return target._schema.returns[0].alias_info is not None or target is torch.ops.aten._unsafe_view.default


def only_merged_use(placeholder: torch.fx.Node, merges: dict) -> bool:
    """Whether every user of a parameter reads it as a merged op's weight or bias (it then needs no node)."""
    users = list(placeholder.users)
    return bool(users) and all(u in merges and placeholder in u.args[1:3] for u in users)
