"""Building blocks shared by the seed models: residual blocks and the study's custom layers."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
    """Return [conv k×k (no bias, padding k//2), BatchNorm] as a list, for use in nn.Sequential."""
    return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]


def shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    """Return the identity, or conv1×1(stride, no bias)+BN when the block changes shape."""
    if stride != 1 or cin != cout:
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    return nn.Identity()


class _AddThenReLU(nn.Module):
    """relu(body(x) + shortcut(x)); subclasses build ``body`` and ``shortcut``."""

    body: nn.Module
    shortcut: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ResidualBlock(_AddThenReLU):
    """The study's basic block RB(a, b, s): conv-BN-ReLU → conv-BN, plus shortcut, then ReLU.

    ``first_kernel`` sets the first conv's size (table 3); ``bottleneck_first`` replaces the first conv
    with conv1x1(a→b/2, stride)+BN+ReLU → conv3x3(b/2→b) (table 3, row 4); ``dropout`` adds Dropout2d
    after each conv+BN (table 2, row 3); ``kernel`` sets every conv's size (equal-parameter set).
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int = 1,
        first_kernel: int | None = None,
        kernel: int = 3,
        bottleneck_first: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        k1 = first_kernel or kernel
        if bottleneck_first:
            mid = cout // 2
            first = [
                nn.Conv2d(cin, mid, 1, stride, 0, bias=False),
                nn.BatchNorm2d(mid),
                nn.ReLU(inplace=True),
                nn.Conv2d(mid, cout, kernel, 1, kernel // 2, bias=False),
            ]
        else:
            first = [nn.Conv2d(cin, cout, k1, stride, k1 // 2, bias=False)]
        drop = [nn.Dropout2d(dropout)] if dropout else []
        self.body = nn.Sequential(
            *first,
            nn.BatchNorm2d(cout),
            *drop,
            nn.ReLU(inplace=True),
            *conv_bn(cout, cout, kernel),
            *drop,
        )
        self.shortcut = shortcut(cin, cout, stride)


class WideBlock(_AddThenReLU):
    """WRN block as the study specifies: conv3x3-BN-ReLU-Dropout-conv3x3-BN + shortcut (1×1+BN projection), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn(cin, cout, 3, stride),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            *conv_bn(cout, cout, 3),
        )
        self.shortcut = shortcut(cin, cout, stride)


class ScaledConv2d(nn.Conv2d):
    """Conv2d whose output is multiplied by a fixed factor (a buffer, so it is saved but never trained)."""

    def __init__(self, *args, scale: float = 1.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale


class SwishPlusReLU(nn.Module):
    """The study's custom activation f(x) = x·sigmoid(x) + 0.02·ReLU(x)."""

    def __init__(self, leak: float = 0.02):
        super().__init__()
        self.leak = leak

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x) + self.leak * F.relu(x)


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: GAP → Linear(C→C/r, no bias) → ReLU → Linear(C/r→C, no bias) → Sigmoid → scale."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc(x.mean(dim=(2, 3)))
        return x * w[:, :, None, None]


class L2Pool2dFunction(torch.autograd.Function):
    """L2 pooling over non-overlapping 2×2 windows with a hand-written backward.

    forward: y = sqrt(sum_window x²); backward: dy/dx = x / y inside each window (0 where y = 0,
    the subgradient that keeps all-zero windows from producing NaN).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        # sum of squares over each 2×2 window == 4 × avg_pool(x²); same arithmetic as nn.LPPool2d.
        y = torch.sqrt(F.avg_pool2d(x * x, 2, 2) * 4.0)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        x, y = ctx.saved_tensors
        g = torch.where(y > 0, grad_out / y, torch.zeros_like(y))
        # Broadcast each window's factor back over its 2×2 inputs; odd trailing rows/cols get no gradient.
        g_up = F.interpolate(g, scale_factor=2, mode="nearest")
        grad_in = torch.zeros_like(x)
        h, w = g_up.shape[-2:]
        grad_in[..., :h, :w] = x[..., :h, :w] * g_up
        return grad_in


class L2Pool2d(nn.Module):
    """Module wrapper around L2Pool2dFunction; numerically equal to ``nn.LPPool2d(2, 2, 2)`` on real inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return L2Pool2dFunction.apply(x)
