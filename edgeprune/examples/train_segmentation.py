"""Train the built-in segmentation example (``seg_tiny`` on Fashion-MNIST masks), on a CPU.

The shipped ``seg_tiny.pt`` is produced by::

    python -m edgeprune.examples.train_segmentation \\
        --out edgeprune/examples/seg_tiny.pt --train-images 20000 --epochs 2 --seed 0

Masks and the mIoU metric: ``edgeprune.examples.segmentation``. Adam with a cosine
schedule, per-pixel cross-entropy; the test mIoU on the first 2000 test images is
printed and stored in the checkpoint's ``meta``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.examples.segmentation import load, masks, miou
from edgeprune.examples.train_fashion_cnn import FASHION_MEAN, FASHION_STD, save_checkpoint
from edgeprune.zoo import seg_tiny

ARCH = "edgeprune.zoo:seg_tiny"


def tensors(split: str, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised NCHW images and int64 masks of a split's first ``limit`` images."""
    images, labels = load(split)
    images, labels = images[:limit], labels[:limit]
    x = (images.astype(np.float32) / 255.0 - FASHION_MEAN) / FASHION_STD
    return torch.from_numpy(x).unsqueeze(1).contiguous(), torch.from_numpy(masks(images, labels))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    metric = miou()
    for i in range(0, len(x), batch):
        metric.update(model(x[i : i + batch]).numpy(), y[i : i + batch].numpy())
    return metric.compute()


def train(train_images: int, epochs: int, seed: int, batch_size: int = 128,
          lr: float = 3e-3) -> tuple[nn.Module, dict[str, object]]:
    torch.manual_seed(seed)
    x_train, y_train = tensors("train", train_images)
    x_test, y_test = tensors("eval", 2000)
    model = seg_tiny()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total = epochs * math.ceil(len(x_train) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / total)))
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    score = 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(x_train), batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        score = evaluate(model, x_test, y_test)
        print(f"epoch {epoch}/{epochs}: loss {float(loss.detach()):.4f}, test mIoU {score:.2f} "
              f"({time.perf_counter() - start:.0f}s)", flush=True)
    meta: dict[str, object] = {
        "mean": FASHION_MEAN, "std": FASHION_STD, "input_size": [28, 28], "channels": 1,
        "task": "segmentation: 0 background, 1 + Fashion-MNIST class",
        "train_images": len(x_train), "epochs": epochs, "seed": seed,
        "batch_size": batch_size, "optimizer": f"Adam lr={lr} cosine-per-iteration",
        "test_miou_first_2000": round(score, 2), "torch": str(torch.__version__),
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    return model, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("edgeprune/examples/seg_tiny.pt"))
    parser.add_argument("--train-images", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, meta = train(args.train_images, args.epochs, args.seed)
    save_checkpoint(model, meta, args.out, arch=ARCH)
    print(f"saved {args.out} ({args.out.stat().st_size / 1024:.0f} KiB), test mIoU "
          f"{meta['test_miou_first_2000']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
