"""Train the built-in Fashion-MNIST example model, reproducibly, on a CPU.

The shipped ``fashion_cnn.pt`` is produced by this script so anyone can regenerate (and
check) it from the Debian ``dataset-fashion-mnist`` IDX files without torchvision::

    python -m edgeprune.examples.train_fashion_cnn \
        --data /usr/share/datasets/fashion-mnist \
        --out edgeprune/examples/fashion_cnn.pt --epochs 2 --seed 0
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.data.idx import read_idx
from edgeprune.examples import FASHION_MNIST
from edgeprune.zoo import fashion_cnn

# Mean / std of the 60k Fashion-MNIST training pixels scaled to [0, 1]; the checkpoint's
# users must normalise with exactly these, so they are also stored in its "meta".
FASHION_MEAN = 0.2860
FASHION_STD = 0.3530
ARCH = "edgeprune.zoo:fashion_cnn"

assert FASHION_MNIST["mean"] == FASHION_MEAN and FASHION_MNIST["std"] == FASHION_STD

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def load_split(data_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split as normalised NCHW float32 images and int64 labels."""
    img_name, lbl_name = _FILES[split]
    images = read_idx(data_dir / img_name).astype(np.float32) / 255.0
    labels = read_idx(data_dir / lbl_name).astype(np.int64)
    x = torch.from_numpy((images - FASHION_MEAN) / FASHION_STD).unsqueeze(1)
    return x.contiguous(), torch.from_numpy(labels)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    return 100.0 * correct / len(x)


def train(
    data_dir: Path, epochs: int, seed: int, batch_size: int = 128, lr: float = 1e-2
) -> tuple[nn.Module, dict[str, object]]:
    """Adam with a per-iteration cosine schedule: converges to ~90% in two epochs."""
    torch.manual_seed(seed)
    x_train, y_train = load_split(data_dir, "train")
    x_test, y_test = load_split(data_dir, "test")
    model = fashion_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / total))
    )
    gen = torch.Generator().manual_seed(seed)
    top1 = 0.0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        running = 0.0
        for i in range(0, len(x_train), batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += float(loss.detach()) * len(idx)
        top1 = evaluate(model, x_test, y_test)
        print(
            f"epoch {epoch}/{epochs}: train loss {running / len(x_train):.4f}, "
            f"test top-1 {top1:.2f}% ({time.perf_counter() - start:.0f}s)",
            flush=True,
        )
    meta: dict[str, object] = {
        "mean": FASHION_MEAN,
        "std": FASHION_STD,
        "input_size": list(FASHION_MNIST["input_size"]),
        "channels": FASHION_MNIST["channels"],
        "classes": list(FASHION_MNIST["classes"]),
        "epochs": epochs,
        "seed": seed,
        "batch_size": batch_size,
        "optimizer": f"Adam lr={lr} cosine-per-iteration",
        "test_top1": round(top1, 2),
        "torch": str(torch.__version__),  # TorchVersion is not weights_only-safe
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    return model, meta


def save_checkpoint(model: nn.Module, meta: dict[str, object], out: Path,
                    arch: str = ARCH) -> None:
    """Write atomically (temp file + os.replace) so a crash never leaves a half file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": model.state_dict(), "arch": arch, "meta": meta}
    # a named temp file (not mkstemp) so the result gets umask permissions, not 0600
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        torch.load(tmp, weights_only=True)  # users load it this way: fail here, not there
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=Path("edgeprune/examples/fashion_cnn.pt"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, meta = train(args.data, args.epochs, args.seed)
    save_checkpoint(model, meta, args.out)
    size_kib = args.out.stat().st_size / 1024
    print(f"saved {args.out} ({size_kib:.0f} KiB), test top-1 {meta['test_top1']}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
