"""The reference architectures: shapes, exact parameter counts, and that the shared
pretrained CIFAR ResNets load key-for-key and keep their published accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.zoo import ZOO, DownsampleA, fashion_cnn, resnet20, resnet56

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WEIGHTS = SHARED / "weights"
LOSSLESS = SHARED / "cifar10" / "cifar10_test_lossless_prefix.npz"
EXAMPLE_CKPT = Path(__file__).resolve().parents[1] / "edgeprune" / "examples" / "fashion_cnn.pt"
CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)
CKPTS = {
    20: "resnet20-12fca82f.th",
    32: "resnet32-d509ac18.th",
    44: "resnet44-014dd654.th",
    56: "resnet56-4bfd9763.th",
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_shared_resnet(depth: int) -> nn.Module:
    """Build the zoo ResNet and load the shared weights strictly (bar num_batches_tracked)."""
    path = WEIGHTS / CKPTS[depth]
    if not path.is_file():
        pytest.skip(f"shared weights missing: {path} (expected ../shared/data next to the repo)")
    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    state = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    model = ZOO[f"resnet{depth}"]()
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    assert missing == [] and result.unexpected_keys == [], (missing, result.unexpected_keys)
    return model.eval()


def test_resnet_param_counts() -> None:
    assert n_params(resnet20()) == 269_722
    assert n_params(resnet56()) == 853_018


def test_resnet_uses_named_option_a_shortcuts() -> None:
    # a pruner must be able to find (and rewrite) the padded shortcuts by type
    pads = [m.pad for m in resnet20().modules() if isinstance(m, DownsampleA)]
    assert pads == [8, 16]


GREY = ("fashion_cnn", "seg_tiny")  # 28x28 one-channel models
SEGMENTATION = ("seg_tiny",)  # N x classes x H x W outputs (11 classes by default)


def _input(name: str) -> torch.Tensor:
    return torch.randn(2, 1, 28, 28) if name in GREY else torch.randn(2, 3, 32, 32)


def _expected(name: str, classes: int | None = None) -> tuple[int, ...]:
    if name in SEGMENTATION:
        return (2, classes or 11, 28, 28)
    return (2, classes or 10)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_forward_shape(name: str) -> None:
    torch.manual_seed(0)
    model = ZOO[name]().eval()
    with torch.no_grad():
        out = model(_input(name))
    assert out.shape == _expected(name)
    assert torch.isfinite(out).all()


def test_num_classes_is_honoured() -> None:
    for name, build in ZOO.items():
        with torch.no_grad():
            assert build(num_classes=7).eval()(_input(name)).shape == _expected(name, 7), name


def test_fashion_cnn_has_static_graph() -> None:
    # torch.export refuses data-dependent control flow, the same thing that breaks ONNX export
    exported = torch.export.export(fashion_cnn().eval(), (torch.randn(1, 1, 28, 28),))
    assert exported.module()(torch.randn(1, 1, 28, 28)).shape == (1, 10)


@pytest.mark.parametrize("depth", sorted(CKPTS))
def test_shared_resnet_weights_load_strictly(depth: int) -> None:
    load_shared_resnet(depth)


def test_resnet20_shared_weights_accuracy() -> None:
    if not LOSSLESS.is_file():
        pytest.skip(f"shared CIFAR-10 data missing: {LOSSLESS}")
    model = load_shared_resnet(20)
    data = np.load(LOSSLESS)
    images, labels = data["images"], data["labels_all"][: len(data["images"])]
    x = torch.from_numpy(images).float().div(255).permute(0, 3, 1, 2)
    x = (x - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        pred = torch.cat([model(b).argmax(1) for b in x.split(256)])
    top1 = 100.0 * float((pred.numpy() == labels).mean())
    # README measures 91.63 on these 932 images (this implementation: 91.63)
    assert top1 >= 90.0, f"ResNet-20 top-1 {top1:.2f}% on the lossless prefix"


def test_fashion_example_checkpoint() -> None:
    # the shipped example must stay small, weights_only-loadable and self-describing
    assert EXAMPLE_CKPT.is_file(), "run python -m edgeprune.examples.train_fashion_cnn"
    assert EXAMPLE_CKPT.stat().st_size < 500_000
    ckpt = torch.load(EXAMPLE_CKPT, weights_only=True, map_location="cpu")
    assert ckpt["arch"] == "edgeprune.zoo:fashion_cnn"
    assert ckpt["meta"]["mean"] == pytest.approx(0.2860)
    assert ckpt["meta"]["std"] == pytest.approx(0.3530)
    assert ckpt["meta"]["test_top1"] >= 89.0
    fashion_cnn().load_state_dict(ckpt["state_dict"], strict=True)
