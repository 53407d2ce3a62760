"""Evaluation and calibration/training splits, resolved from the user's data options.

The evaluation split is never used to calibrate or train: when only one set is given,
a calibration subset is held out of it (deterministically, by seed) and the rest is
evaluated. Both subsets are recorded in manifests (ids + content hash) so a run can be
reproduced and a changed data set is noticed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.data.preprocess import Preprocess
from edgeprune.data.sources import (
    ImageFolderSource,
    Source,
    callable_source,
    idx_pair,
    npz_source,
    stack_targets,
    update_target_digest,
)
from edgeprune.errors import InputError
from edgeprune.options import default

_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass
class DataOptions:
    """Where the data is and how much of it each split uses."""

    # a path or module:callable (command line, job file), or an in-memory Source (the
    # Python API's DatasetSource)
    data: str | Source | None = None
    eval_data: str | Source | None = None
    train_data: str | Source | None = None
    calib_size: int = default("calib_size")
    eval_limit: int | None = None
    train_limit: int | None = None  # train on a seeded subset of the training split
    seed: int = default("seed")
    # labels are class ids (checked as such); False with --metric: any target structure
    class_labels: bool = True
    # splits up to this many MB (float32, all together) are decoded once and kept; larger
    # ones are decoded on the fly (data/stream.py). Neither changes a result.
    decoded_cache_mb: float = default("decoded_cache_mb")
    workers: int | None = None  # decode workers (None: one per core, at most 8)


@dataclass
class Subset:
    """Chosen indices of a source, with a manifest describing them."""

    source: Source
    indices: np.ndarray
    role: str  # "eval" | "calibration" | "train"
    how: str
    content_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)

    def ids(self) -> list[str]:
        return [self.source.sample_id(int(i)) for i in self.indices]

    def labels(self) -> np.ndarray:
        return stack_targets([self.source.label(int(i)) for i in self.indices])

    def manifest(self) -> dict[str, Any]:
        ids = self.ids()
        return {
            "role": self.role,
            "source": self.source.description,
            "count": len(ids),
            "selection": self.how,
            "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
            "content_sha256": self.content_sha256,
            "ids": ids,
            **self.extra,
        }


@dataclass
class Splits:
    eval: Subset
    calibration: Subset
    train: Subset  # what recovery / QAT train on: never an evaluation image


def check_output_outside_data(out_dir: Path, options: DataOptions) -> None:
    """Refuse an output folder that is a data folder or inside one: its stage folders would
    become image classes (ImageFolder) or files among the data."""
    out = Path(out_dir).resolve()
    for flag, spec in (("--data", options.data), ("--eval-data", options.eval_data),
                       ("--train-data", options.train_data)):
        if not spec or not isinstance(spec, str | Path) or not Path(spec).is_dir():
            continue  # an in-memory dataset has no folder
        root = Path(spec).resolve()
        if out == root or root in out.parents:
            raise InputError(
                f"--out {out_dir} is inside the {flag} folder {spec}: the run's folders would "
                "be read as part of the data (an extra class)",
                fix=f"pass an --out outside {spec}, e.g. --out {root.parent / 'out'}")


def open_source(spec: str | Source, split: str,
                class_labels: bool = True) -> tuple[Source, Source | None]:
    """One data spec → (this split's source, the other split if the spec holds both)."""
    if not isinstance(spec, str | Path):
        return spec, None  # already a source (an in-memory dataset from the Python API)
    path = Path(spec)
    if not path.exists() and _CALLABLE.match(spec):
        return callable_source(spec, split, class_labels), None
    if not path.exists():
        raise InputError(
            f"data path {path} does not exist",
            fix="pass an ImageFolder directory, a directory of IDX files, an .npz file, or "
            "module:callable",
        )
    if path.is_file():
        if path.suffix == ".npz":
            return npz_source(path, class_labels), None
        raise InputError(
            f"data file {path} is not a supported format",
            fix="pass an .npz (images, labels), an ImageFolder directory or IDX files' folder",
        )
    train_idx = idx_pair(path, "train", class_labels)
    test_idx = idx_pair(path, "t10k", class_labels) or idx_pair(path, "test", class_labels)
    if train_idx or test_idx:
        return (test_idx or train_idx), (train_idx if test_idx else None)  # type: ignore[return-value]
    test_dir = next((path / n for n in ("test", "val", "validation") if (path / n).is_dir()), None)
    if (path / "train").is_dir() and test_dir is not None:
        return ImageFolderSource(test_dir), ImageFolderSource(path / "train")
    return ImageFolderSource(path), None


def resolve_splits(options: DataOptions) -> Splits:
    """Decide the evaluation set, the training set and the calibration subset."""
    if not (options.data or options.eval_data):
        raise InputError(
            "no data given", fix="pass --data (or --eval-data and --train-data)"
        )
    if options.calib_size < 1:
        raise InputError(
            f"--calib-size {options.calib_size} must be at least 1",
            fix="pass e.g. --calib-size 300",
        )
    eval_src: Source | None = None
    train_src: Source | None = None
    labels = options.class_labels
    if options.data:
        eval_src, train_src = open_source(options.data, "eval", labels)
    if options.eval_data:
        eval_src, _ = open_source(options.eval_data, "eval", labels)
    if options.train_data:
        train_src, _ = open_source(options.train_data, "train", labels)
    assert eval_src is not None
    rng = np.random.default_rng(options.seed)
    eval_pool = np.arange(len(eval_src))
    if train_src is None:
        if len(eval_src) <= options.calib_size:
            raise InputError(
                f"{eval_src.description} has {len(eval_src)} images: too few to hold out "
                f"{options.calib_size} for calibration and still evaluate",
                fix="pass a separate training split with --train-data, or a smaller "
                "--calib-size",
            )
        held = np.sort(rng.choice(len(eval_src), options.calib_size, replace=False))
        calibration = Subset(
            eval_src, held, "calibration",
            f"held out of the evaluation source: uniform without replacement, seed {options.seed}",
        )
        eval_pool = np.setdiff1d(eval_pool, held)
        train = Subset(eval_src, held, "train",
                       "only the held-out calibration images (no --train-data was given)")
    else:
        count = min(options.calib_size, len(train_src))
        picked = np.sort(rng.choice(len(train_src), count, replace=False))
        calibration = Subset(
            train_src, picked, "calibration",
            f"uniform without replacement from the training split, seed {options.seed}",
        )
        train = Subset(train_src, np.arange(len(train_src)), "train",
                       "all images of the training split")
        limit = options.train_limit
        if limit is not None:
            if limit < 1:
                raise InputError(f"--train-limit {limit} must be at least 1",
                                 fix="pass e.g. --train-limit 5000")
            if limit < len(train_src):
                train_rng = np.random.default_rng(options.seed + 2)
                train = Subset(train_src, np.sort(train_rng.choice(len(train_src), limit,
                                                                   replace=False)), "train",
                               f"uniform subset of {limit} of the training split, seed "
                               f"{options.seed + 2}")
    how = "all images of the evaluation split"
    if options.eval_limit is not None and options.eval_limit < len(eval_pool):
        if options.eval_limit < 1:
            raise InputError(
                f"--eval-limit {options.eval_limit} must be at least 1", fix="pass e.g. 1000"
            )
        eval_pool = np.sort(rng.choice(eval_pool, options.eval_limit, replace=False))
        how = f"uniform subset of {options.eval_limit} without replacement, seed {options.seed}"
    return Splits(Subset(eval_src, eval_pool, "eval", how), calibration, train)


def iter_batches(
    subset: Subset,
    preprocess: Preprocess,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Preprocessed (images float32 NCHW, labels int64 -- or a metric's targets, see
    ``stack_targets``) batches, in manifest order."""
    first: tuple[str, tuple[int, ...]] | None = None
    for start in range(0, len(subset), batch_size):
        chunk = subset.indices[start : start + batch_size]
        images = [prepare_sample(subset.source, int(i), preprocess) for i in chunk]
        labels = stack_targets([subset.source.label(int(i)) for i in chunk])
        first = first or (subset.source.sample_id(int(chunk[0])), images[0].shape)
        for i, image in zip(chunk, images, strict=True):
            if image.shape != first[1]:
                raise InputError(
                    f"{subset.source.description}: images have different sizes: "
                    f"{first[0]} is {_size(first[1])} but {subset.source.sample_id(int(i))} "
                    f"is {_size(image.shape)} (after preprocessing)",
                    fix="pass --input-size HxW (the model's input; add --resize to keep the "
                    "aspect ratio with a center crop) so every image is resized to it")
        if on_batch:
            on_batch(len(chunk))
        yield np.stack(images), labels


def _size(chw: tuple[int, ...]) -> str:
    return f"{chw[1]}x{chw[2]}" + (f" with {chw[0]} channels" if len(chw) == 3 else "")


def prepare_sample(source: Source, index: int, preprocess: Preprocess) -> np.ndarray:
    raw = source.image(index)
    if source.preprocessed:
        return np.asarray(raw, dtype=np.float32)
    try:
        return preprocess(raw)
    except InputError:
        raise
    except (ValueError, OSError) as exc:
        raise InputError(
            f"cannot preprocess sample {source.sample_id(index)} of {source.description}: {exc}",
            fix="check --input-size/--channels against the images",
        ) from exc


def materialize(
    subset: Subset, preprocess: Preprocess, on_batch: Callable[[int], None] | None = None,
    keep: bool = True,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Decode and preprocess a whole subset (this is also the validation that every image
    decodes), and stamp its content hash into the manifest. ``keep=False`` only checks and
    hashes (a split decoded on the fly later, see data/stream.py): the targets are kept."""
    xs, ys = [], []
    digest = hashlib.sha256()
    for images, labels in iter_batches(subset, preprocess, 256, on_batch):
        if keep:
            xs.append(images)
        ys.append(labels)
        digest.update(images.tobytes())
        if labels.dtype == np.int64 and labels.ndim == 1:
            digest.update(labels.tobytes())  # class ids: the hash manifests always had
        else:
            update_target_digest(digest, labels)
    subset.content_sha256 = digest.hexdigest()
    return (np.concatenate(xs) if keep else None), _concat_targets(ys)


def _concat_targets(parts: list[np.ndarray]) -> np.ndarray:
    """Batches of targets as one array; an object array when the batches differ."""
    if all(p.dtype.kind != "O" for p in parts) and len({(p.shape[1:], p.dtype)
                                                         for p in parts}) == 1:
        return np.concatenate(parts)
    return stack_targets([t for p in parts for t in p])
