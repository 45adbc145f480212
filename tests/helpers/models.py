"""Small models the tests compile, importable as `helpers.models:NAME` model references: a CNN with what
channels_last plans must handle, a two-branch model wide enough to split across GPUs, models the front end
must explain (a cache output, train mode), attention whose float32 error verify must judge, and attention with
sibling projections to merge."""
from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Convs, BN, ReLU, a residual add, a concat of two branches, pooling, a flatten of a 2x2 map (a view an NHWC
    tensor cannot take) and a linear layer."""

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


class TwoBranches(nn.Module):
    """A stem feeding two heavy branches of convolutions that meet in an add: wide enough to split."""

    def __init__(self, channels: int = 32, depth: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.a = nn.Sequential(*[nn.Conv2d(channels, channels, 3, padding=1) for _ in range(depth)])
        self.b = nn.Sequential(*[nn.Conv2d(channels, channels, 3, padding=1) for _ in range(depth)])
        self.scale = nn.Parameter(torch.ones(1))  # read by both branches: replicated, not copied

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return self.a(x) * self.scale + self.b(x) * self.scale, x.mean()


def two_branches(batch: int = 1):
    torch.manual_seed(0)
    return TwoBranches().eval(), (torch.randn(batch, 3, 64, 64),)


class DynamicCache:
    """An output container torch's pytree does not know, as transformers' key/value cache is."""

    def __init__(self, key, value):
        self.key, self.value = key, value


class CachingModel(nn.Module):
    """Returns a DynamicCache beside its tensor unless use_cache=False, as transformers' decoders do."""

    def __init__(self, use_cache: bool = True):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.use_cache = use_cache

    def forward(self, x):
        h = self.proj(x)
        return (h, DynamicCache(h * 2, h * 3)) if self.use_cache else h


def caching_model():
    return CachingModel(), (torch.randn(2, 4),)


class Dropper(nn.Module):
    """Dropout and batch norm: a model whose train() mode changes its numbers."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.drop = nn.Dropout(0.5)
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x):
        return self.bn(self.drop(self.fc(x)))


def dropper_in_train_mode():
    torch.manual_seed(0)
    return Dropper(), (torch.randn(4, 8),)


OFFSET = 3e3


class OffsetAttention(nn.Module):
    """Values ride on a large offset that is taken off after attention, so float32 keeps only about three
    digits of the result: eager float32 is ~5e-4 off float64, and a plan that lowers attention to matmuls and a
    softmax (attention='math') rounds differently from eager's fused kernel, ~7e-4 off eager and as close to
    float64 as eager is. `gain` != 1 makes a model whose plan is genuinely wrong for this one."""

    def __init__(self, gain: float = 1.0):
        super().__init__()
        self.register_buffer("offset", torch.tensor(OFFSET))
        self.gain = gain

    def forward(self, q, k, v):
        out = nn.functional.scaled_dot_product_attention(q, k, v + self.offset)
        return out * self.gain - self.offset * self.gain


def offset_attention():
    return OffsetAttention().eval(), tuple(torch.randn(1, 2, 16, 8) for _ in range(3))


def off_by_one_percent():
    return OffsetAttention(gain=1.01).eval(), tuple(torch.randn(1, 2, 16, 8) for _ in range(3))


class Attention(nn.Module):
    """Query, key and value projections of one input, split into heads (BERT's pattern), and an output one;
    flat_value adds a projection whose output is viewed across the sliced dimension, which a merge cannot take."""

    def __init__(self, dim: int = 32, heads: int = 4, bias: bool = True, flat_value: bool = False) -> None:
        super().__init__()
        self.heads, self.flat_value = heads, flat_value
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=bias) for _ in range(3))
        self.out = nn.Linear(dim, dim)
        self.flat = nn.Linear(dim, dim) if flat_value else None

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = (p(x).view(b, s, self.heads, d // self.heads).transpose(1, 2) for p in (self.q, self.k, self.v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, d)
        if self.flat_value:  # a view merging the sliced dimension with another: a slice cannot take it
            y = y + self.flat(x).view(b, s * d).view(b, s, d)
        return self.out(y)


def attention():
    """Attention and an example input: three sibling projections for --merge-projections."""
    return Attention().eval(), (torch.randn(1, 8, 32),)


class InceptionBlock(nn.Module):
    """An Inception block: three 1x1 convolutions of one input, each followed by batch norm and ReLU (GoogLeNet's
    BasicConv2d), then two of them widened by a 3x3 and a 5x5; plus a 1x1 after a pool and a strided 1x1, which
    read other activations or slide otherwise and so merge with nothing."""

    def __init__(self, cin: int = 16, bias: bool = False) -> None:
        super().__init__()

        def unit(i, o, k=1, stride=1):
            return nn.Sequential(nn.Conv2d(i, o, k, stride=stride, padding=k // 2, bias=bias), nn.BatchNorm2d(o),
                                 nn.ReLU())
        self.b1, self.r3, self.r5 = unit(cin, 8), unit(cin, 6), unit(cin, 4)
        self.c3, self.c5 = unit(6, 8, 3), unit(4, 8, 5)
        self.pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), unit(cin, 8))
        self.strided = unit(cin, 8, stride=2)
        for m in self.modules():  # running statistics of their own, so each branch's batch norm matters
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        y = torch.cat([self.b1(x), self.c3(self.r3(x)), self.c5(self.r5(x)), self.pool(x)], dim=1)
        return y, self.strided(x)


def inception_block():
    """InceptionBlock and an example input: three sibling 1x1 convolutions, which merged convolutions make one."""
    return InceptionBlock().eval(), (torch.randn(2, 16, 12, 12),)
