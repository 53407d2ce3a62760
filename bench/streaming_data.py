"""Data for the streaming benchmarks, made once and cached (never shipped, never fetched).

- ``cifar_folder()``: the shared CIFAR-10 JPEG train/test sets unpacked as an ImageFolder
  (``train/<class>/``, ``test/<class>/``);
- ``cifar224_folder(train, test)``: the first ``train`` training and ``test`` test images
  of it, upscaled 32→224 (bicubic) and saved as 224x224 JPEG (quality 90): a 224²
  ImageFolder of real pictures with real labels (upscaled: smooth, so they decode a little
  faster than camera photos of that size);
- ``small224()``: a small 224² classifier (stride-4 stem), so a benchmark's time goes to
  the data pipeline it measures rather than to convolutions.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "cifar10"
CACHE = Path.home() / ".cache" / "edgeprune-bench"


def cifar_folder() -> Path:
    """CIFAR-10 JPEG train + test as ImageFolders under one root (unpacked once)."""
    root = CACHE / "cifar10-jpg"
    for split in ("train", "test"):
        if not (root / split / ".complete").is_file():
            root.mkdir(parents=True, exist_ok=True)
            with tarfile.open(SHARED / f"{split}_jpg.tar.gz") as tar:
                tar.extractall(root, filter="data")
            (root / split / ".complete").touch()
    return root


def cifar224_folder(train: int = 20_000, test: int = 2_000) -> Path:
    """``train`` + ``test`` CIFAR-10 images upscaled to 224x224 JPEG (class-balanced:
    the first N/10 of each class), made once."""
    source = cifar_folder()
    root = CACHE / f"cifar224-{train}-{test}"
    for split, count in (("train", train), ("test", test)):
        done = root / split / ".complete"
        if done.is_file():
            continue
        for folder in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            out = root / split / folder.name
            out.mkdir(parents=True, exist_ok=True)
            for path in sorted(folder.glob("*.jpg"))[: count // 10]:
                with Image.open(path) as img:
                    big = img.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
                big.save(out / path.name, quality=90)
        done.touch()
    return root


class Small224(nn.Module):
    """~26 MFLOPs at 224²: conv stem 4x4 stride 4, three stride-2 conv-BN-ReLU, pool, FC."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        widths = [(3, 24, 4, 4), (24, 48, 3, 2), (48, 96, 3, 2), (96, 128, 3, 2)]
        for cin, cout, k, stride in widths:
            layers += [nn.Conv2d(cin, cout, k, stride, padding=(k - 1) // 2 if k == 3 else 0,
                                 bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def small224(num_classes: int = 10) -> Small224:
    return Small224(num_classes)
