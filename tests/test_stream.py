"""Data decoded on the fly: the same pixels, hashes and training as in memory, with
bounded memory (bench/streaming_memory.py measures the bound on 20k images at 224²)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeprune.data.preprocess import Preprocess
from edgeprune.data.splits import DataOptions, materialize, resolve_splits
from edgeprune.data.stream import DecodedSplit, train_loader
from edgeprune.train import TrainConfig, augment_policy, rrc_batch, train
from edgeprune.zoo import fashion_cnn
from tests.conftest import FASHION_ARGS, run_cli


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory, fashion_dir: Path) -> Path:
    """300 real Fashion-MNIST images as an ImageFolder of PNGs (10 classes)."""
    from edgeprune.data.idx import read_idx

    images = read_idx(fashion_dir / "t10k-images-idx3-ubyte.gz")[:300]
    labels = read_idx(fashion_dir / "t10k-labels-idx1-ubyte.gz")[:300]
    root = tmp_path_factory.mktemp("folder") / "data"
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / f"c{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    return root


def _split(root: Path, role: str = "eval"):
    splits = resolve_splits(DataOptions(data=str(root), calib_size=50))
    return getattr(splits, role)


PRE = Preprocess(channels=1, mean=[0.286], std=[0.353])


def test_decoded_split_slices_equal_the_decoded_array(image_folder: Path) -> None:
    subset = _split(image_folder)
    whole, _ = materialize(subset, PRE)
    lazy = DecodedSplit(subset, PRE, threads=2)
    assert lazy.shape == whole.shape and lazy.nbytes == whole.nbytes
    np.testing.assert_array_equal(lazy[10:47], whole[10:47])
    np.testing.assert_array_equal(lazy[[5, 3, 200]], whole[[5, 3, 200]])
    np.testing.assert_array_equal(lazy[len(lazy) - 3 :], whole[-3:])
    with pytest.raises(TypeError, match="batch by batch"):
        np.asarray(lazy)


def test_check_only_pass_hashes_as_the_kept_one(image_folder: Path) -> None:
    kept, checked = _split(image_folder), _split(image_folder)
    _, labels = materialize(kept, PRE)
    images, targets = materialize(checked, PRE, keep=False)
    assert images is None and checked.content_sha256 == kept.content_sha256
    np.testing.assert_array_equal(targets, labels)


def _train_both_ways(root: str) -> None:
    """In a child process (see test below): train in memory and on the fly, compare."""
    subset = _split(Path(root), "calibration")
    images, labels = materialize(subset, PRE)
    lazy = DecodedSplit(subset, PRE)
    config = TrainConfig(epochs=2, batch_size=16, loss="labels", memory_format="contiguous")
    weights = []
    for data, workers in ((images, 0), (lazy, 2)):
        torch.manual_seed(0)
        model = fashion_cnn()
        stats = train(model, data, labels, config, workers=workers)
        assert stats["data"]["streamed"] is (data is lazy)
        assert stats["data"]["workers"] == workers and stats["steps"] == 2 * (50 // 16)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)
    print("same weights")


def test_training_on_the_fly_with_workers_equals_in_memory(image_folder: Path) -> None:
    """Same sampler, augmentation drawn in the training process: decoding in two spawned
    worker processes changes nothing in the trained weights. In a fresh process, as the
    product trains streamed data (stages/recover.py): DataLoader workers started from a
    process holding an OpenVINO session crashed it (SIGSEGV) here."""
    code = ("from tests.test_stream import _train_both_ways; "
            f"_train_both_ways({str(image_folder)!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1], timeout=300, check=False)
    assert proc.returncode == 0 and "same weights" in proc.stdout, proc.stderr[-3000:]


def test_sampler_shards_ranks_without_overlap() -> None:
    images = np.zeros((103, 1, 4, 4), dtype=np.float32)
    seen = []
    for rank in range(2):
        loader = train_loader(images, None, 10, seed=3, rank=rank, world=2)
        loader.batch_sampler.sampler.set_epoch(1)
        seen.append([i for batch in loader.batch_sampler for i in batch])
    assert len(seen[0]) == len(seen[1]) == 50  # 51 per rank, full batches of 10
    assert not set(seen[0]) & set(seen[1])


def test_shard_smaller_than_a_batch_still_trains_one_batch() -> None:
    images = np.zeros((7, 1, 4, 4), dtype=np.float32)
    loader = train_loader(images, None, 32, seed=0)
    assert [len(b) for b in loader.batch_sampler] == [7]


def test_rrc_full_crop_is_the_image_or_its_mirror() -> None:
    x = torch.rand(6, 3, 40, 56)
    out = rrc_batch(x, torch.Generator().manual_seed(0), min_scale=1.0, ratios=(1.0, 1.0))
    for i in range(len(x)):
        assert torch.allclose(out[i], x[i], atol=1e-5) or torch.allclose(
            out[i], x[i].flip(-1), atol=1e-5)


def test_rrc_crops_differ_per_sample_and_keep_the_size() -> None:
    x = torch.arange(2 * 64 * 64, dtype=torch.float32).reshape(1, 2, 64, 64).repeat(8, 1, 1, 1)
    out = rrc_batch(x, torch.Generator().manual_seed(1), min_scale=0.25)
    assert out.shape == x.shape
    assert len({tuple(o.flatten()[:50].tolist()) for o in out}) == 8


@pytest.mark.parametrize(("policy", "size", "expected"), [
    ("auto", (32, 32), "pad-crop"), ("auto", (63, 200), "pad-crop"), ("auto", (64, 64), "rrc"),
    ("auto", (224, 224), "rrc"), ("none", (224, 224), "none"), ("rrc", (32, 32), "rrc")])
def test_augmentation_policy_by_input_size(policy: str, size: tuple, expected: str) -> None:
    assert augment_policy(TrainConfig(augment=policy), size) == expected


def test_compile_decoded_on_the_fly_gives_the_same_report(image_folder: Path,
                                                          tmp_path: Path) -> None:
    """--decoded-cache-mb 0: the evaluation and training splits decoded batch by batch
    (recovery in two worker processes); every stage's accuracy and the manifests' hashes
    are those of the in-memory run."""
    reports = []
    for cache in ("1024", "0"):
        out = tmp_path / f"out-{cache}"
        result = run_cli("compile", "--arch", "fashion_cnn",
                         Path(__file__).parents[1] / "edgeprune/examples/fashion_cnn.pt",
                         "--data", image_folder, *FASHION_ARGS, "--calib-size", "50",
                         "--iterations", "20", "--decoded-cache-mb", cache, "--workers", "2",
                         "--prune", "l1", "--prune-ratio", "0.3", "--recover-steps", "6",
                         "--recover-batch", "32", "--max-drop", "50", "--out", out, "--quiet")
        assert result.code == 0, result.stderr
        reports.append(json.loads((out / "report.json").read_text()))
    a, b = reports
    assert a["accuracy_by_stage"] == b["accuracy_by_stage"]
    assert a["baseline"]["accuracy"] == b["baseline"]["accuracy"] > 50
    hashes = [[json.loads(p.read_text())["content_sha256"]
               for p in sorted((tmp_path / f"out-{cache}").glob("*/calib/*.json"))]
              for cache in ("1024", "0")]
    assert len(hashes[0]) == 2 and hashes[0] == hashes[1]


def test_corrupt_image_met_while_streaming_is_exit_2(image_folder: Path, tmp_path: Path) -> None:
    """A training image that does not decode is found by the training process (the split
    is decoded on the fly): the run still stops with exit 2 naming the file, not a
    traceback of the child."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(image_folder, root / "train")
    shutil.copytree(image_folder, root / "test")
    options = DataOptions(data=str(root), calib_size=20)
    splits = resolve_splits(options)
    held = set(splits.calibration.indices.tolist())
    victim = next(i for i in range(len(splits.train.source) - 1, 0, -1) if i not in held)
    bad = splits.train.source.files[victim]
    bad.write_bytes(b"not a png at all")
    out = tmp_path / "out"
    result = run_cli("compile", "--arch", "fashion_cnn",
                     Path(__file__).parents[1] / "edgeprune/examples/fashion_cnn.pt",
                     "--data", root, *FASHION_ARGS, "--calib-size", "20", "--iterations",
                     "20", "--decoded-cache-mb", "0", "--prune", "l1", "--prune-ratio", "0.3",
                     "--compensate", "none", "--recover-batch", "32", "--recover-epochs", "1",
                     "--out", out)
    assert result.code == 2, result.stderr[-2000:]
    assert "cannot read image" in result.stderr and bad.name in result.stderr
    assert "fix:" in result.stderr and "Traceback" not in result.stderr
    assert not (out / "04-recover").exists()
