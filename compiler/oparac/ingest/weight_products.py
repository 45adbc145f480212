"""A strided activation times a 2-D weight is ingested as one GEMM over all its rows, as eager PyTorch runs it.

ATen's matmul, and linear on a non-contiguous input, multiply a [..., M, K] activation whose leading dimensions
cannot be merged into one by a 2-D operand as a batched GEMM over those dimensions, the operand broadcast to each
(at::matmul's should_fold), unless that operand requires grad: then the activation is copied to contiguous and
multiplied as one [rows, K] GEMM. A model's weights are Parameters, which require grad even under no_grad and
inference_mode, so eager PyTorch and torch.compile take the copy and the one GEMM. A plan's bound weights do not
require grad, so its ops took the batched GEMM instead: nn.MultiheadAttention(batch_first=True) transposes its
input to [tokens, batch, dim] before the input projection, and ViT-B/16 at batch 8 multiplied 197 blocks of 8
rows each by the same weight where eager multiplies one block of 1576 rows.

The ingest spells the fold out (reshape to [rows, K], the 2-D product, view back), so the unfused plan runs the
kernels eager runs and inductor compiles the GEMM torch.compile compiles. Where the leading dimensions merge
without a copy the op is left as it is: ATen folds it anyway.
"""
from __future__ import annotations

import torch

from opara_plan import Ref
from oparac.ingest.graph_builder import GraphBuilder

LINEAR = "aten.linear.default"
MATMUL = "aten.matmul.default"
# Ops through which a weight stays a view of the Parameter, which still requires grad (so eager still folds).
_WEIGHT_VIEWS = frozenset({"aten.t.default", "aten.permute.default", "aten.transpose.int", "aten.view.default",
                           "aten.alias.default"})


def fold_weight_product(b: GraphBuilder, target: str, args: tuple, kwargs: dict, name: str):
    """The Ref of `target(*args, **kwargs)` built as reshape, 2-D product and view where eager PyTorch would fold
    it and ATen on unbound weights would not; None where the op is to be built as it is."""
    if target not in (LINEAR, MATMUL) or kwargs or len(args) < 2:
        return None
    x, w = args[0], args[1]
    if not (isinstance(x, Ref) and isinstance(w, Ref)):
        return None
    xm, wm = b.meta_of(x), b.meta_of(w)
    if xm.dim() < 3 or wm.dim() != 2 or xm.numel() == 0 or leading_dims_merge(xm) or not is_weight(b, w):
        return None
    # ATen's own fold (at::matmul; linear adds its bias afterwards, in place), op for op, so the kernels are eager's
    width = wm.shape[0] if target == LINEAR else wm.shape[1]
    rows = b.op("aten.reshape.default", (x, [-1, xm.shape[-1]]), name=f"{name}_rows")
    weight = b.op("aten.t.default", (w,), name=f"{name}_weight_t") if target == LINEAR else w
    product = b.op("aten.mm.default", (rows, weight), name=name)
    out = b.op("aten.view.default", (product, [*xm.shape[:-1], width]), name=f"{name}_unfold")
    bias = args[2] if target == LINEAR and len(args) > 2 else None
    return out if bias is None else b.op("aten.add.Tensor", (out, bias), name=f"{name}_bias")


def leading_dims_merge(t: torch.Tensor) -> bool:
    """Every dimension but the last can be viewed as one (at::matmul's test for folding without a copy)."""
    size, stride = t.shape, t.stride()
    return all(stride[i] == stride[i + 1] * size[i + 1] for i in range(t.dim() - 2))


def is_weight(b: GraphBuilder, ref: Ref) -> bool:
    """`ref` is one of the model's weights or a view of one: in eager PyTorch, a tensor that requires grad."""
    node = b.nodes[ref.node]
    while node.kind == "op" and node.target in _WEIGHT_VIEWS and node.args and isinstance(node.args[0], Ref):
        node = b.nodes[node.args[0].node]
    return node.kind == "param"
