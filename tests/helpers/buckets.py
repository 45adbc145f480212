"""Small models for shape buckets, importable as `helpers.buckets:NAME` model references: a text model of two
inputs whose sequence length varies, and one that also returns an output without a batch dimension (which the
bucketed runner must not cut)."""
from __future__ import annotations

import torch
from torch import nn


class TinyText(nn.Module):
    """Token ids and a mask [batch, seq] -> per-token features [batch, seq, 16] and a pooled [batch, 16]."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.proj = nn.Linear(16, 16)
        self.norm = nn.LayerNorm(16)

    def forward(self, ids, mask):
        h = self.norm(torch.relu(self.proj(self.embed(ids)))) * mask.unsqueeze(-1)
        return {"tokens": h, "pooled": h.sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)}


class WithTable(nn.Module):
    """x [batch, 8] -> (x @ w, the weight's column sums [4]): the second output has no batch dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 4))

    def forward(self, x):
        return x @ self.w, self.w.sum(0) * 2


def tiny_text():
    torch.manual_seed(0)
    return TinyText().eval(), (torch.randint(0, 50, (1, 8)), torch.ones(1, 8))


def with_table():
    torch.manual_seed(0)
    return WithTable().eval(), (torch.randn(1, 8),)
