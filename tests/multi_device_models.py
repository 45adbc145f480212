"""Small models for the several-GPU tests, importable as `multi_device_models:NAME` model references."""
from __future__ import annotations

import torch


class TwoBranches(torch.nn.Module):
    """A stem feeding two heavy branches of convolutions that meet in an add: wide enough to split."""

    def __init__(self, channels: int = 32, depth: int = 4) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, channels, 3, padding=1)
        self.a = torch.nn.Sequential(*[torch.nn.Conv2d(channels, channels, 3, padding=1) for _ in range(depth)])
        self.b = torch.nn.Sequential(*[torch.nn.Conv2d(channels, channels, 3, padding=1) for _ in range(depth)])
        self.scale = torch.nn.Parameter(torch.ones(1))  # read by both branches: replicated, not copied

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return self.a(x) * self.scale + self.b(x) * self.scale, x.mean()


def two_branches(batch: int = 1):
    torch.manual_seed(0)
    return TwoBranches().eval(), (torch.randn(batch, 3, 64, 64),)
