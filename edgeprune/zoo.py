"""Reference architectures the project tests and benchmarks against.

Each builder returns a plain ``nn.Module`` so that pruners, quantizers and exporters see the
same structures users bring: residual adds (ResNet, MobileNetV2), parameter-free padded
shortcuts (CIFAR ResNet option A), depthwise convolutions (MobileNetV2), long plain chains
(VGG), channel concatenation (DenseNet), grouped convolutions (ResNeXt), LayerNorm and
layer scale (ConvNeXt), channel split + shuffle (ShuffleNetV2) and multi-head attention
with a class token and position embedding (ViT). The CIFAR ResNets match the attribute names of
the shared pretrained checkpoints, so their state dicts load without renaming.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ZOO",
    "BasicBlock",
    "CifarResNet",
    "DenseLayer",
    "DenseNetTiny",
    "DownsampleA",
    "FashionCNN",
    "InvertedResidual",
    "MobileNetV2Cifar",
    "Transition",
    "VGGCifar",
    "builtin_builder",
    "cifar_resnet",
    "densenet_tiny",
    "fashion_cnn",
    "mobilenetv2_cifar",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "shufflenet_tiny",
    "vgg16_cifar",
    "vit_tiny",
]


# --------------------------------------------------------------------------- CIFAR ResNet


class DownsampleA(nn.Module):
    """Parameter-free "option A" shortcut: stride-2 subsample, then zero-pad channels.

    A named module (rather than a lambda) so a structural pruner can find it and rewrite
    ``pad`` (or replace it by an explicit projection) when it removes residual channels.
    """

    def __init__(self, pad: int, stride: int = 2) -> None:
        super().__init__()
        self.pad = pad
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))

    def extra_repr(self) -> str:
        return f"pad={self.pad}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 convs plus a shortcut, as in the original ResNet paper's CIFAR models."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module
        if stride != 1 or in_planes != planes:
            # option A: planes // 4 zero channels on each side (16 -> 32 -> 64)
            self.shortcut = DownsampleA(planes // 4, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs; attribute names match the shared checkpoints."""

    def __init__(self, num_blocks: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks, stride=1)
        self.layer2 = self._make_layer(32, num_blocks, stride=2)
        self.layer3 = self._make_layer(64, num_blocks, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.flatten(self.avgpool(out), 1)
        return self.linear(out)


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet of depth 6n+2 (20, 32, 44, 56, 110, ...)."""
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
    return CifarResNet((depth - 2) // 6, num_classes=num_classes, in_channels=in_channels)


def resnet20(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-20 for CIFAR (269,722 params with 10 classes)."""
    return cifar_resnet(20, num_classes, in_channels)


def resnet32(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-32 for CIFAR."""
    return cifar_resnet(32, num_classes, in_channels)


def resnet44(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-44 for CIFAR."""
    return cifar_resnet(44, num_classes, in_channels)


def resnet56(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-56 for CIFAR (853,018 params with 10 classes)."""
    return cifar_resnet(56, num_classes, in_channels)


# --------------------------------------------------------------------------- Fashion CNN


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class FashionCNN(nn.Module):
    """Small conv net for 28x28 greyscale; static graph so ONNX export is trivial."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, 16),
            *_conv_bn_relu(16, 32),
            nn.MaxPool2d(2),
            *_conv_bn_relu(32, 64),
            nn.MaxPool2d(2),
            *_conv_bn_relu(64, 64),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def fashion_cnn(num_classes: int = 10, in_channels: int = 1) -> FashionCNN:
    """The built-in example model (Fashion-MNIST, 28x28 grey)."""
    return FashionCNN(num_classes=num_classes, in_channels=in_channels)


# --------------------------------------------------------------------------- MobileNetV2


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` (never dropping more than 10%)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> project (1x1, linear), residual when shapes match."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2Cifar(nn.Module):
    """MobileNetV2 adapted to 32x32: stride-1 stem, two fewer downsamplings, 512-wide head."""

    # (expansion t, channels c, repeats n, first stride s)
    CFG: tuple[tuple[int, int, int, int], ...] = (
        (1, 16, 1, 1),
        (6, 24, 2, 1),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(
        self,
        num_classes: int = 10,
        width_mult: float = 1.0,
        in_channels: int = 3,
        last_channel: int = 512,
    ) -> None:
        super().__init__()
        cin = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(last_channel * max(1.0, width_mult))
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, cin, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU6(),
        ]
        for t, c, n, s in self.CFG:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers += [
            nn.Conv2d(cin, self.last_channel, 1, bias=False),
            nn.BatchNorm2d(self.last_channel),
            nn.ReLU6(),
        ]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.last_channel, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def mobilenetv2_cifar(num_classes: int = 10, width_mult: float = 1.0) -> MobileNetV2Cifar:
    """MobileNetV2 for CIFAR-sized inputs (depthwise convs, ReLU6, inverted residuals)."""
    return MobileNetV2Cifar(num_classes=num_classes, width_mult=width_mult)


# --------------------------------------------------------------------------- VGG


VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


class VGGCifar(nn.Module):
    """Plain conv3x3+BN+ReLU stack with max pools: the easy case for channel pruning."""

    def __init__(
        self, cfg: tuple[int | str, ...] = VGG16_CFG, num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                assert isinstance(v, int)
                layers += _conv_bn_relu(cin, v)
                cin = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg16_cifar(num_classes: int = 10, in_channels: int = 3) -> VGGCifar:
    """VGG-16 with BatchNorm for 32x32 inputs (13 convs, 512 -> num_classes head)."""
    return VGGCifar(VGG16_CFG, num_classes=num_classes, in_channels=in_channels)


# --------------------------------------------------------------------------- DenseNet


class DenseLayer(nn.Module):
    """BN-ReLU-conv3x3 producing ``growth`` channels, concatenated onto its input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], dim=1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1 then 2x2 average pool, halving resolution between dense blocks."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(F.relu(self.bn(x))))


class DenseNetTiny(nn.Module):
    """Two dense blocks joined by a transition: exercises pruning through torch.cat."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        growth: int = 12,
        layers_per_block: int = 3,
        stem: int = 24,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        cin = stem
        block1: list[nn.Module] = []
        for _ in range(layers_per_block):
            block1.append(DenseLayer(cin, growth))
            cin += growth
        self.block1 = nn.Sequential(*block1)
        self.trans1 = Transition(cin, cin // 2)
        cin //= 2
        block2: list[nn.Module] = []
        for _ in range(layers_per_block):
            block2.append(DenseLayer(cin, growth))
            cin += growth
        self.block2 = nn.Sequential(*block2)
        self.bn = nn.BatchNorm2d(cin)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(self.conv1(x))
        x = self.block2(self.trans1(x))
        x = self.pool(F.relu(self.bn(x)))
        return self.classifier(torch.flatten(x, 1))


def densenet_tiny(num_classes: int = 10, in_channels: int = 3) -> DenseNetTiny:
    """Small DenseNet (2 blocks x 3 layers, growth 12) for 32x32 inputs."""
    return DenseNetTiny(num_classes=num_classes, in_channels=in_channels)


class GroupedBottleneck(nn.Module):
    """ResNeXt/RegNet's block: 1x1 → grouped 3x3 (``groups`` cardinality, not depthwise)
    → 1x1, BatchNorm after each, with an identity shortcut."""

    def __init__(self, channels: int, width: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(x + self.bn3(self.conv3(y)))


class ResNeXtTiny(nn.Module):
    """Grouped convolutions (cardinality 4 and 8) and a GroupNorm stem, for 32x32 inputs:
    the structures whose channels must be pruned per group."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 32, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(4, 32)
        self.block1 = GroupedBottleneck(32, 32, 4)
        self.block2 = GroupedBottleneck(32, 48, 8)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(self.stem(x)))
        x = self.block2(self.block1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnext_tiny(num_classes: int = 10, in_channels: int = 3) -> ResNeXtTiny:
    """Small ResNeXt-style net (grouped 3x3 convolutions, GroupNorm) for 32x32 inputs."""
    return ResNeXtTiny(num_classes=num_classes, in_channels=in_channels)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt's block: depthwise 7x7, LayerNorm over channels (channels-last), an
    inverted MLP, a learnt per-channel layer scale (a bare nn.Parameter), residual add."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pwconv1 = nn.Linear(channels, 4 * channels)
        self.pwconv2 = nn.Linear(4 * channels, channels)
        self.gamma = nn.Parameter(torch.full((channels,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXtTiny(nn.Module):
    """A two-stage ConvNeXt-style net for 32x32 inputs: LayerNorm, layer scale, GELU."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 32, 4, stride=4)
        self.stage1 = ConvNeXtBlock(32)
        self.down = nn.Conv2d(32, 64, 2, stride=2)
        self.stage2 = ConvNeXtBlock(64)
        self.head_norm = nn.LayerNorm(64, eps=1e-6)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(self.head_norm(x.mean((2, 3))))


def convnext_tiny(num_classes: int = 10, in_channels: int = 3) -> ConvNeXtTiny:
    """Small ConvNeXt-style net (LayerNorm, layer scale, depthwise 7x7) for 32x32 inputs."""
    return ConvNeXtTiny(num_classes=num_classes, in_channels=in_channels)


# --------------------------------------------------------------------------- segmentation


class TinySegNet(nn.Module):
    """A small encoder-decoder for per-pixel classes (output N×classes×H×W, H and W
    multiples of 4): two stride-2 convs, two dilated convs for context (the receptive
    field covers a 28² image: the class of a pixel depends on the whole object), then two
    nearest-upsampling stages, each added to the encoder's features of that size (skip
    connections the pruner couples), and a 1×1 head, which is never pruned."""

    def __init__(self, num_classes: int = 11, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation,
                                           bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.enc1 = block(in_channels, w)
        self.enc2 = block(w, 2 * w, stride=2)
        self.enc3 = block(2 * w, 4 * w, stride=2)
        self.context = nn.Sequential(block(4 * w, 4 * w, dilation=2),
                                     block(4 * w, 4 * w, dilation=2))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec2 = block(4 * w, 2 * w)
        self.dec1 = block(2 * w, w)
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        z = self.context(self.enc3(e2))
        d2 = self.dec2(self.up(z)) + e2
        d1 = self.dec1(self.up(d2)) + e1
        return self.head(d1)


def seg_tiny(num_classes: int = 11, in_channels: int = 1, width: int = 16) -> TinySegNet:
    """The built-in segmentation example (Fashion-MNIST masks: edgeprune.examples
    .segmentation)."""
    return TinySegNet(num_classes=num_classes, in_channels=in_channels, width=width)


# --------------------------------------------------------------------------- ShuffleNetV2


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: (B, g*c, H, W) -> view (B, g, c) -> transpose -> flatten,
    so channel i*c+j moves to j*g+i."""
    b, channels, h, w = x.shape
    x = x.view(b, groups, channels // groups, h, w).transpose(1, 2).contiguous()
    return x.view(b, channels, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's unit: stride 1 splits the channels in two (one half passes through),
    stride 2 runs two branches on the whole input; the halves are concatenated and
    shuffled."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        branch_in = cin if stride > 1 else cin // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                nn.Conv2d(cin, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())
        self.branch2 = nn.Sequential(
            nn.Conv2d(branch_in, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat([x1, self.branch2(x2)], dim=1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetTiny(nn.Module):
    """A two-stage ShuffleNetV2-style net for 32x32 inputs: channel split, concatenation and
    the view/transpose/view channel shuffle a dependency graph cannot index through."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 24, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(24), nn.ReLU())
        self.stage2 = nn.Sequential(ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1))
        self.stage3 = nn.Sequential(ShuffleUnit(48, 96, 2), ShuffleUnit(96, 96, 1))
        self.head = nn.Sequential(nn.Conv2d(96, 128, 1, bias=False), nn.BatchNorm2d(128),
                                  nn.ReLU())
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.stage3(self.stage2(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def shufflenet_tiny(num_classes: int = 10, in_channels: int = 3) -> ShuffleNetTiny:
    """Small ShuffleNetV2-style net (channel split + shuffle) for 32x32 inputs."""
    return ShuffleNetTiny(num_classes=num_classes, in_channels=in_channels)


# --------------------------------------------------------------------------- ViT


class Attention(nn.Module):
    """Multi-head self-attention as timm writes it: one qkv Linear, a reshape to
    (3, heads, tokens, head_dim), scaled dot product, heads concatenated, a projection.
    The head dimension is inferred (-1) from the qkv width and ``num_heads``, so whole
    heads can be removed by lowering ``num_heads`` (the pruner does, and records it)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ViTBlock(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTTiny(nn.Module):
    """A small vision transformer for 32x32 inputs: patch-embedding conv (4x4 patches),
    class token, learnt position embedding, pre-norm blocks with multi-head attention and a
    GELU MLP, final LayerNorm, linear head on the class token."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 patch: int = 4, dim: int = 64, depth: int = 2, num_heads: int = 4,
                 mlp_ratio: int = 2) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        tokens = (image_size // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[ViTBlock(dim, num_heads, mlp_ratio)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(x + self.pos_embed)
        return self.head(self.norm(x)[:, 0])


def vit_tiny(num_classes: int = 10, in_channels: int = 3) -> ViTTiny:
    """Small ViT (4 heads of 16, 2 blocks, 4x4 patches) for 32x32 inputs."""
    return ViTTiny(num_classes=num_classes, in_channels=in_channels)


# --------------------------------------------------------------------------- registry


ZOO: dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "fashion_cnn": fashion_cnn,
    "mobilenetv2_cifar": mobilenetv2_cifar,
    "vgg16_cifar": vgg16_cifar,
    "densenet_tiny": densenet_tiny,
    "resnext_tiny": resnext_tiny,
    "convnext_tiny": convnext_tiny,
    "seg_tiny": seg_tiny,
    "shufflenet_tiny": shufflenet_tiny,
    "vit_tiny": vit_tiny,
}


def builtin_builder(name: str) -> Callable[..., nn.Module] | None:
    """The built-in builder a name denotes (``resnet20`` or ``edgeprune.zoo:resnet20``), by
    exact lookup in ``ZOO`` -- never by importing or walking attributes, so a name read
    from a file can only ever select one of these functions."""
    if name.startswith("edgeprune.zoo:"):
        name = name[len("edgeprune.zoo:"):]
    return ZOO.get(name)
