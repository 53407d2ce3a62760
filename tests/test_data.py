"""Data sources, splits, manifests and preprocessing on real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeprune.data.preprocess import Preprocess
from edgeprune.data.splits import DataOptions, materialize, resolve_splits
from edgeprune.errors import InputError


def test_idx_folder_gives_train_and_test_splits(fashion_dir: Path) -> None:
    splits = resolve_splits(DataOptions(data=str(fashion_dir), calib_size=64, seed=3))
    assert len(splits.eval) == 10_000  # the t10k set, whole
    assert len(splits.train) == 60_000
    assert splits.calibration.source is splits.train.source  # never calibrate on eval images
    again = resolve_splits(DataOptions(data=str(fashion_dir), calib_size=64, seed=3))
    assert splits.calibration.ids() == again.calibration.ids()  # reproducible by seed
    other = resolve_splits(DataOptions(data=str(fashion_dir), calib_size=64, seed=4))
    assert splits.calibration.ids() != other.calibration.ids()


def test_single_set_holds_out_calibration(fashion_small: Path) -> None:
    splits = resolve_splits(DataOptions(data=str(fashion_small), calib_size=100))
    assert len(splits.eval) == 500 and len(splits.calibration) == 100
    assert not set(splits.eval.ids()) & set(splits.calibration.ids())
    assert splits.train.ids() == splits.calibration.ids()  # never train on eval images


def test_eval_limit_is_a_seeded_subset(fashion_dir: Path) -> None:
    splits = resolve_splits(DataOptions(data=str(fashion_dir), eval_limit=500))
    labels = splits.eval.labels()
    assert len(labels) == 500 and len(set(labels.tolist())) == 10


def test_manifest_hash_changes_with_content(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (50, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 50)
    np.savez(tmp_path / "a.npz", images=images, labels=labels)
    images[:, 0, 0, 0] ^= 1  # every image, whichever land in the eval subset
    np.savez(tmp_path / "b.npz", images=images, labels=labels)
    hashes = []
    for name in ("a.npz", "b.npz"):
        subset = resolve_splits(DataOptions(data=str(tmp_path / name), calib_size=10)).eval
        materialize(subset, Preprocess())
        hashes.append(subset.manifest()["content_sha256"])
    assert hashes[0] != hashes[1]


def test_imagefolder_with_train_and_test(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (12, 10), (i * 20, 0, 0)).save(tmp_path / split / cls / f"{i}.jpg")
    splits = resolve_splits(DataOptions(data=str(tmp_path), calib_size=4))
    assert len(splits.eval) == 12 and splits.eval.ids()[0] == "cat/0.jpg"
    x, y = materialize(splits.eval, Preprocess(input_size=(8, 8)).validate())
    assert x.shape == (12, 3, 8, 8) and x.dtype == np.float32 and sorted(set(y)) == [0, 1]


def test_preprocess_matches_hand_computation() -> None:
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    pre = Preprocess(mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.2]).validate()
    out = pre(image)
    expected = ((image / 255.0 - [0.5, 0.4, 0.3]) / 0.2).transpose(2, 0, 1)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    grey = Preprocess(channels=1, input_size=(2, 2)).validate()(image)
    assert grey.shape == (1, 2, 2)
    crop = Preprocess(input_size=(2, 2), resize=3).validate()(image)
    assert crop.shape == (3, 2, 2)


@pytest.mark.parametrize("kwargs", [{"channels": 2}, {"mean": [0.1, 0.2]}, {"std": [0.0]}])
def test_preprocess_rejects_bad_options(kwargs: dict) -> None:
    with pytest.raises(InputError):
        Preprocess(**kwargs).validate()


def test_too_small_single_set(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", images=np.zeros((5, 4, 4), np.uint8), labels=np.zeros(5))
    with pytest.raises(InputError, match="too few"):
        resolve_splits(DataOptions(data=str(tmp_path / "x.npz"), calib_size=10))
