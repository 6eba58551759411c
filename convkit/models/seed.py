"""The 21 architectures of the seed study (see SEED_MODELS.md), layer for layer, registered by name."""

from __future__ import annotations

import torch.nn as nn
from torchvision.models.resnet import Bottleneck, ResNet

from convkit.models.layers import L2Pool2d, ResidualBlock, ScaledConv2d, SqueezeExcite, SwishPlusReLU, WideBlock
from convkit.models.registry import register_model


def _kaiming_init(model: nn.Module) -> nn.Module:
    """kaiming_normal(fan_out, relu) for convs, BN weight 1 / bias 0: the study's init for tables 2–3."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _residual_cnn(in_ch: int, widths=(32, 64, 64), strides=(1, 2, 1), fc_in: int = 1024, dropout_fc: float = 0.0,
                  stem_bias: bool = True, block_kw: list[dict] | None = None) -> nn.Sequential:
    """Stem conv+BN+ReLU → 3 residual blocks → AdaptiveAvgPool(4×4) → [Dropout] → Linear(fc_in→10)."""
    block_kw = block_kw or [{}, {}, {}]
    blocks, c = [], 32
    for w, s, kw in zip(widths, strides, block_kw):
        blocks.append(ResidualBlock(c, w, s, **kw))
        c = w
    head: list[nn.Module] = [nn.AdaptiveAvgPool2d(4), nn.Flatten()]
    if dropout_fc:
        head.append(nn.Dropout(dropout_fc))
    head.append(nn.Linear(fc_in, 10))
    return nn.Sequential(
        nn.Conv2d(in_ch, 32, 3, 1, 1, bias=stem_bias), nn.BatchNorm2d(32), nn.ReLU(inplace=True), *blocks, *head
    )


# ---- Table 1: MNIST -------------------------------------------------------------------------------------------

@register_model("mnist")
def fcn_mnist() -> nn.Module:
    """MLP 784→128→64→10 with ReLUs (109,386 parameters)."""
    return _mlp([784, 128, 64, 10])


@register_model("mnist")
def simple_cnn_mnist() -> nn.Module:
    """Two conv+pool layers, FC 3136→128, dropout 0.25 (421,642 parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(inplace=True), nn.Dropout(0.25), nn.Linear(128, 10),
    )


@register_model("mnist")
def residual_cnn_mnist() -> nn.Module:
    """Stem + RB(32,32,1) + RB(32,64,2) + RB(64,64,1), 4×4 pool, FC (160,906 parameters)."""
    return _residual_cnn(1)


# ---- Table 2: CIFAR-10 ----------------------------------------------------------------------------------------

@register_model("cifar10")
def fcn_cifar() -> nn.Module:
    """MLP 3072→1024→512→256→10 with ReLUs (3,805,450 parameters)."""
    return _mlp([3072, 1024, 512, 256, 10])


@register_model("cifar10")
def residual_cnn_cifar() -> nn.Module:
    """Table 1's residual CNN with 3 input channels (161,482 parameters)."""
    return _residual_cnn(3)


@register_model("cifar10")
def regularized_residual_cnn() -> nn.Module:
    """Stem + 5 residual blocks with Dropout2d(0.2), GAP, FC; kaiming init (678,058 parameters)."""
    spec = [(32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1)]
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.Dropout2d(0.2),
        *[ResidualBlock(a, b, s, dropout=0.2) for a, b, s in spec],
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
    )
    return _kaiming_init(model)


# ---- Table 3: kernel size -------------------------------------------------------------------------------------

def _kernel_cnn(first_kernel: int = 3, bottleneck_first: bool = False) -> nn.Module:
    kw = {"bottleneck_first": True} if bottleneck_first else {}
    return _kaiming_init(_residual_cnn(
        3, stem_bias=False, dropout_fc=0.25,
        block_kw=[{"first_kernel": first_kernel, **kw}, kw, kw],
    ))


@register_model("cifar10")
def kernel_cnn_k3() -> nn.Module:
    """CNNWithKernelSize(3) (161,450 parameters)."""
    return _kernel_cnn(3)


@register_model("cifar10")
def kernel_cnn_k5() -> nn.Module:
    """CNNWithKernelSize(5): first block's first conv is 5×5 (177,834 parameters)."""
    return _kernel_cnn(5)


@register_model("cifar10")
def kernel_cnn_k7() -> nn.Module:
    """CNNWithKernelSize(7): first block's first conv is 7×7 (202,410 parameters)."""
    return _kernel_cnn(7)


@register_model("cifar10")
def kernel_cnn_k1x3() -> nn.Module:
    """Every block's first conv becomes conv1×1(in→out/2)+BN+ReLU → conv3×3(out/2→out) (142,154 parameters)."""
    return _kernel_cnn(3, bottleneck_first=True)


# ---- Table 4: depth -------------------------------------------------------------------------------------------

def _plain_convs(spec: list[tuple[int, int, bool]]) -> list[nn.Module]:
    """conv3×3 (bias) + ReLU per (cin, cout, pool_after) entry."""
    layers: list[nn.Module] = []
    for cin, cout, pool in spec:
        layers += [nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU(inplace=True)]
        if pool:
            layers.append(nn.MaxPool2d(2))
    return layers


@register_model("cifar10")
def depth_2conv() -> nn.Module:
    """2 conv layers with pooling, FC 4096→128, dropout (545,098 parameters)."""
    return nn.Sequential(
        *_plain_convs([(3, 32, True), (32, 64, True)]),
        nn.Flatten(), nn.Linear(4096, 128), nn.ReLU(inplace=True), nn.Dropout(0.25), nn.Linear(128, 10),
    )


@register_model("cifar10")
def depth_4conv() -> nn.Module:
    """4 conv layers, 4×4 pool, FC 4096→256, dropout (1,439,818 parameters)."""
    return nn.Sequential(
        *_plain_convs([(3, 32, True), (32, 64, True), (64, 128, False), (128, 256, False)]),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        nn.Linear(4096, 256), nn.ReLU(inplace=True), nn.Dropout(0.25), nn.Linear(256, 10),
    )


@register_model("cifar10")
def depth_6conv() -> nn.Module:
    """6 conv layers, 4×4 pool, FC 2048→256 (814,122 parameters)."""
    return nn.Sequential(
        *_plain_convs([(3, 32, True), (32, 32, False), (32, 64, True), (64, 64, False), (64, 128, False),
                       (128, 128, False)]),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(2048, 256), nn.ReLU(inplace=True), nn.Linear(256, 10),
    )


@register_model("cifar10")
def depth_residual() -> nn.Module:
    """Stem + RB(32,32,1) + RB(32,64,2) + RB(64,128,2), 4×4 pool, FC 2048→10 (327,882 parameters)."""
    return _residual_cnn(3, widths=(32, 64, 128), strides=(1, 2, 2), fc_in=2048)


# ---- Table 5: custom layers -----------------------------------------------------------------------------------

def _custom_backbone(first_conv: nn.Module | None = None, act=nn.ReLU, pool=nn.MaxPool2d, se: bool = False) -> nn.Module:
    """L1(3→16)+act+pool [+SE] → conv(16→32)+act+pool [+SE] → Linear(2048→128)+act → Linear(128→10)."""
    first_conv = first_conv or nn.Conv2d(3, 16, 3, 1, 1)
    pool_kw = {"kernel_size": 2} if pool is nn.MaxPool2d else {}
    return nn.Sequential(
        first_conv, act(), *([SqueezeExcite(16)] if se else []), pool(**pool_kw),
        nn.Conv2d(16, 32, 3, 1, 1), act(), *([SqueezeExcite(32)] if se else []), pool(**pool_kw),
        nn.Flatten(), nn.Linear(2048, 128), act(), nn.Linear(128, 10),
    )


@register_model("cifar10")
def custom_conv_cnn() -> nn.Module:
    """First conv's output scaled by a fixed 1.5 (268,650 parameters)."""
    return _custom_backbone(first_conv=ScaledConv2d(3, 16, 3, 1, 1, scale=1.5))


@register_model("cifar10")
def se_attention_cnn() -> nn.Module:
    """Squeeze-excitation after each conv's ReLU (268,810 parameters)."""
    return _custom_backbone(se=True)


@register_model("cifar10")
def custom_activation_cnn() -> nn.Module:
    """Every ReLU replaced by x·sigmoid(x) + 0.02·ReLU(x) (268,650 parameters)."""
    return _custom_backbone(act=SwishPlusReLU)


@register_model("cifar10")
def custom_pooling_cnn() -> nn.Module:
    """MaxPool2 replaced by L2 pooling with a hand-written backward (268,650 parameters)."""
    return _custom_backbone(pool=L2Pool2d)


# ---- Table 6: block types -------------------------------------------------------------------------------------

@register_model("cifar10")
def resnet50_cifar() -> nn.Module:
    """ResNet-50 bottleneck layout for 32×32 inputs: 3×3 stem, no max-pool (23,520,842 parameters)."""
    model = ResNet(Bottleneck, [3, 4, 6, 3], num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


@register_model("cifar10")
def wrn16_4_cifar() -> nn.Module:
    """WRN-16-4 with dropout 0.2 between the block's convs (2,749,786 parameters)."""
    stages, cin, blocks = [(64, 1), (128, 2), (256, 2)], 16, []
    for width, stride in stages:
        blocks += [WideBlock(cin, width, stride, 0.2), WideBlock(width, width, 1, 0.2)]
        cin = width
    return _kaiming_init(nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10),
    ))
