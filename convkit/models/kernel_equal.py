"""The equal-parameter kernel-size set the study's assignment asked for and the study did not deliver.

Every conv of the residual trunk uses the variant's kernel (not just the first one, as in table 3), and
the base width is chosen per variant so that all four models have the k=3 model's parameter count
within 2% (the test suite checks it). Widths were found by ``_search_width`` below.
"""

from __future__ import annotations

import torch.nn as nn

from convkit.models.layers import ResidualBlock
from convkit.models.registry import register_model

# kernel variant -> trunk widths (a, b): RB(a,a) → RB(a,b,s2) → RB(b,b); k=3 at (32, 64) is the reference.
EQUAL_PARAM_WIDTHS: dict[str, tuple[int, int]] = {"k3": (32, 64), "k5": (22, 38), "k7": (14, 28), "k1x3": (36, 68)}


def kernel_equal_net(variant: str, widths: tuple[int, int]) -> nn.Module:
    """Stem conv(3→a, k)+BN+ReLU → RB(a,a) → RB(a,b,s2) → RB(b,b), every conv k×k → 4×4 pool → dropout → FC."""
    bottleneck = variant == "k1x3"
    k = 3 if bottleneck else int(variant[1:])
    kw = {"kernel": k, "bottleneck_first": bottleneck}
    a, b = widths
    model = nn.Sequential(
        nn.Conv2d(3, a, k, 1, k // 2, bias=False), nn.BatchNorm2d(a), nn.ReLU(inplace=True),
        ResidualBlock(a, a, 1, **kw), ResidualBlock(a, b, 2, **kw), ResidualBlock(b, b, 1, **kw),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Dropout(0.25), nn.Linear(b * 16, 10),
    )
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _search_widths(variant: str, target: int) -> tuple[int, int]:
    """Return even widths (a, b) within 1% of ``target`` parameters, keeping b/a closest to the reference's 2.

    Slow (builds hundreds of models): a development tool whose answers are frozen in EQUAL_PARAM_WIDTHS.
    """
    pairs = [(a, b) for a in range(8, 65, 2) for b in range(a, 129, 2)]
    close = [ab for ab in pairs if abs(_count(kernel_equal_net(variant, ab)) / target - 1) <= 0.01]
    return min(close, key=lambda ab: abs(ab[1] / ab[0] - 2))


def _register(variant: str) -> None:
    def factory() -> nn.Module:
        return kernel_equal_net(variant, EQUAL_PARAM_WIDTHS[variant])

    factory.__name__ = f"kernel_eq_{variant}"
    factory.__doc__ = f"Equal-parameter kernel set, {variant}: every trunk conv {variant}, widths {EQUAL_PARAM_WIDTHS[variant]}."
    register_model("cifar10")(factory)


for _variant in EQUAL_PARAM_WIDTHS:
    _register(_variant)
