"""A non-classification example for ``--metric``: per-pixel segmentation of Fashion-MNIST.

Every image becomes a mask of 11 classes: 0 for background (pixel ≤ ``THRESHOLD``), else
1 + the garment's class, so the model has to recognise the object to label its pixels.
The model is ``edgeprune.zoo:seg_tiny`` (N×11×28×28 outputs), the checkpoint
``seg_tiny.pt`` is trained by ``python -m edgeprune.examples.train_segmentation``, and
the metric is the mean intersection-over-union ×100::

    edgeprune compile edgeprune/examples/seg_tiny.pt --arch seg_tiny \\
        --data edgeprune.examples.segmentation:data \\
        --train-data edgeprune.examples.segmentation:data \\
        --metric edgeprune.examples.segmentation:miou \\
        --channels 1 --mean 0.2860 --std 0.3530 --target openvino-cpu --max-drop 2

``data`` is a ``--data module:callable`` (``split="eval"``: the 10k test images,
``"train"``: the 60k training images; each item an (HxW uint8 image, HxW int64 mask)
pair), ``miou`` the streaming form of a metric (update per batch, a confusion matrix of
11×11 counts, never the outputs), ``pixel_accuracy`` the plain form (a function of the
whole set's outputs and targets).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.data.idx import read_idx

CLASSES = 11  # background + the 10 Fashion-MNIST classes
THRESHOLD = 51  # pixels above 20% grey are the object
DATA_DIR = Path(os.environ.get("EDGEPRUNE_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
_FILES = {"eval": "t10k", "train": "train"}


def masks(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-pixel targets: 0 where a pixel is background, else 1 + the image's class."""
    return np.where(images > THRESHOLD, labels[:, None, None].astype(np.int64) + 1, 0)


class MaskDataset:
    """(image, mask) pairs, the mask made when an item is read (no 60k×28×28 copy)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = self.images[index]
        return image, masks(image[None], self.labels[index : index + 1])[0]


def load(split: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images (N, 28, 28) uint8 and class labels of a split."""
    stem = _FILES[split]
    return (read_idx(DATA_DIR / f"{stem}-images-idx3-ubyte.gz"),
            read_idx(DATA_DIR / f"{stem}-labels-idx1-ubyte.gz"))


def data(split: str = "eval") -> MaskDataset:
    """``--data edgeprune.examples.segmentation:data``."""
    return MaskDataset(*load(split))


class miou:
    """Mean IoU over the classes present in the targets or predictions, ×100 (points)."""

    metric_name = "mIoU"

    def __init__(self, classes: int = CLASSES) -> None:
        self.classes = classes
        self.confusion = np.zeros((classes, classes), dtype=np.int64)

    def update(self, outputs: np.ndarray, targets: Any) -> None:
        preds = outputs.argmax(1).reshape(-1)
        truth = np.asarray(targets, dtype=np.int64).reshape(-1)
        if preds.shape != truth.shape:
            raise ValueError(f"outputs give {preds.size} pixels but targets {truth.size}")
        self.confusion += np.bincount(truth * self.classes + preds,
                                      minlength=self.classes ** 2).reshape(self.classes, -1)

    def compute(self) -> float:
        tp = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - tp
        present = union > 0
        return float((tp[present] / union[present]).mean() * 100.0)


def pixel_accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Percent of pixels labelled right: the plain form (called on the whole set)."""
    return float(np.mean(outputs.argmax(1) == targets) * 100.0)


pixel_accuracy.metric_name = "pixel accuracy"  # type: ignore[attr-defined]
