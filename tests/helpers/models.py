"""A small CNN with what channels_last plans must handle: convs, BN, ReLU, a residual add, a concat of two
branches, pooling, a flatten of a 2x2 map (a view an NHWC tensor cannot take) and a linear layer."""
from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.res = nn.Conv2d(8, 8, 3, padding=1)
        self.left = nn.Conv2d(8, 8, 3, padding=1)
        self.right = nn.Conv2d(8, 8, 1)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        y = torch.relu(self.bn(self.stem(x)))
        y = torch.relu(y + self.res(y))
        y = torch.cat([self.left(y), torch.relu(self.right(y))], dim=1)
        y = self.avg(self.pool(y))
        return self.fc(torch.flatten(y, 1))


def small_cnn():
    torch.manual_seed(0)
    return SmallCNN().eval(), (torch.randn(2, 3, 16, 16),)
