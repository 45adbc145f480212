"""Small models for the ingest's rewrites (tests/compiler/ingest), shared by their CPU and GPU tests."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class Attention(torch.nn.Module):
    """nn.MultiheadAttention(batch_first=True): its input projection multiplies [tokens, batch, dim], a
    transposed view, by the packed weight."""

    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


class WindowMask(torch.nn.Module):
    """Swin's shifted-window mask: a zeros tensor written slice by slice from shapes alone, added to scores."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x):
        mask = x.new_zeros((6, 6))
        count = 0
        for rows in (slice(0, 2), slice(2, 4), slice(4, 6)):
            for cols in (slice(0, 3), slice(3, 6)):
                mask[rows, cols] = count
                count += 1
        mask = (mask.unsqueeze(0) - mask.unsqueeze(1)).ne(0)
        scores = self.proj(x) @ x.transpose(-1, -2)
        return scores.masked_fill(mask[:, :, 0], float("-inf")).softmax(-1)


class Decoder(torch.nn.Module):
    """One attention layer masked the way traced decoders are: a mask built from the sequence length."""

    def __init__(self, mask: str = "bool"):
        super().__init__()
        self.qkv = torch.nn.Linear(16, 48)
        self.mask = mask

    def forward(self, x, pad=None):
        q, k, v = self.qkv(x).view(x.shape[0], x.shape[1], 3, 2, 8).permute(2, 0, 3, 1, 4)
        n = x.shape[1]
        keep = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        if self.mask == "float":
            mask = torch.zeros(n, n, device=x.device).masked_fill(~keep, torch.finfo(torch.float32).min)
        elif self.mask == "band":  # not causal: the diagonal is masked too
            mask = keep.tril(-1) | (torch.arange(n, device=x.device) == 0)[:, None]
        elif self.mask == "padded":  # causal and an input's padding: known only at run time
            mask = keep & pad[:, None, None, :]
        else:
            mask = keep[None, None].expand(x.shape[0], 1, n, n)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
