"""Dataset sources: ImageFolder directories, IDX files, ``.npz`` arrays, ``module:callable``.

Every source exposes the same tiny interface (length, stable sample ids, labels, raw
images) so splits, manifests and preprocessing never care where pixels come from.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgeprune.data.idx import read_idx
from edgeprune.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class Source(Protocol):
    """A labelled image set addressed by index."""

    description: str
    preprocessed: bool  # True when items are already model-ready float CHW tensors

    def __len__(self) -> int: ...

    def sample_id(self, index: int) -> str: ...

    def label(self, index: int) -> int: ...

    def image(self, index: int) -> np.ndarray: ...


class ArraySource:
    """Images and labels held in memory (IDX and npz)."""

    preprocessed = False

    def __init__(self, images: np.ndarray, labels: np.ndarray, description: str, prefix: str):
        if len(images) != len(labels):
            raise InputError(
                f"{description}: {len(images)} images but {len(labels)} labels",
                fix="pass image and label arrays of the same length",
            )
        if len(images) == 0:
            raise InputError(f"{description} holds no images", fix="pass a non-empty dataset")
        self.images = images
        self.labels = labels.astype(np.int64)
        self.description = description
        self._prefix = prefix

    def __len__(self) -> int:
        return len(self.images)

    def sample_id(self, index: int) -> str:
        return f"{self._prefix}{index}"

    def label(self, index: int) -> int:
        return int(self.labels[index])

    def image(self, index: int) -> np.ndarray:
        return self.images[index]


class ImageFolderSource:
    """``root/<class>/<image>`` with classes in sorted order (torchvision's convention)."""

    preprocessed = False

    def __init__(self, root: Path):
        if not root.is_dir():
            raise InputError(f"data directory {root} does not exist", fix="check the path")
        self.root = root
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.files: list[Path] = []
        self.labels: list[int] = []
        for label, name in enumerate(self.classes):
            for path in sorted((root / name).rglob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                    self.files.append(path)
                    self.labels.append(label)
        if not self.files:
            raise InputError(
                f"data directory {root} contains no images in class sub-folders",
                fix="use the ImageFolder layout root/<class name>/<image>.jpg, IDX files, an "
                ".npz with `images` and `labels`, or a module:callable dataset",
            )
        self.description = f"ImageFolder {root} ({len(self.classes)} classes)"

    def __len__(self) -> int:
        return len(self.files)

    def sample_id(self, index: int) -> str:
        return self.files[index].relative_to(self.root).as_posix()

    def label(self, index: int) -> int:
        return self.labels[index]

    def image(self, index: int) -> np.ndarray:
        path = self.files[index]
        try:
            with Image.open(path) as img:
                img.load()
                return np.asarray(img.convert("RGB"))
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            raise InputError(
                f"cannot read image {path}: {exc}",
                fix="remove or replace the corrupt file (every image in the data directory "
                "must decode)",
            ) from exc


class CallableSource:
    """A user dataset: items are (image, label) with image a PIL image, HWC uint8 array,
    or a model-ready float CHW tensor (then our preprocessing is skipped)."""

    def __init__(self, dataset: Sequence[Any], description: str):
        self.dataset = dataset
        self.description = description
        try:
            first = dataset[0]
        except Exception as exc:
            raise InputError(
                f"{description}: cannot read item 0 ({type(exc).__name__}: {exc})",
                fix="the callable must return a non-empty dataset of (image, label) pairs",
            ) from exc
        self.preprocessed = _is_float_tensor(first[0])

    def __len__(self) -> int:
        return len(self.dataset)

    def sample_id(self, index: int) -> str:
        return str(index)

    def label(self, index: int) -> int:
        return int(self.dataset[index][1])

    def image(self, index: int) -> np.ndarray:
        item = self.dataset[index][0]
        if isinstance(item, Image.Image):
            return np.asarray(item.convert("RGB") if item.mode not in ("L", "RGB") else item)
        return np.asarray(item.numpy() if hasattr(item, "numpy") else item)


def _is_float_tensor(item: Any) -> bool:
    dtype = getattr(item, "dtype", None)
    return dtype is not None and "float" in str(dtype)


def idx_pair(root: Path, stem: str) -> ArraySource | None:
    """The IDX image/label pair named ``<stem>-images-idx3-ubyte[.gz]`` under root."""
    for suffix in ("", ".gz"):
        images = root / f"{stem}-images-idx3-ubyte{suffix}"
        labels = root / f"{stem}-labels-idx1-ubyte{suffix}"
        if images.is_file():
            if not labels.is_file():
                raise InputError(
                    f"{images} has no matching label file {labels.name}",
                    fix="put the IDX labels file next to the images file",
                )
            return ArraySource(read_idx(images), read_idx(labels), f"IDX {images}", f"{stem}:")
    return None


def npz_source(path: Path) -> ArraySource:
    """An ``.npz`` with ``images`` (N,H,W[,C] uint8) and ``labels`` (N,).

    A ``labels_all`` array longer than ``images`` is read as labels of a prefix of a
    larger set (the layout of the shared CIFAR-10 lossless test prefix).
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(
            f"cannot read {path} as .npz: {exc}", fix="pass a valid numpy .npz file"
        ) from exc
    images = arrays.get("images", arrays.get("x"))
    labels = arrays.get("labels", arrays.get("y"))
    if labels is None and "labels_all" in arrays and images is not None:
        labels = arrays["labels_all"][: len(images)]
    if images is None or labels is None:
        raise InputError(
            f"{path} has arrays {sorted(arrays)} but needs `images` and `labels`",
            fix="save it with np.savez(path, images=uint8 N×H×W×C, labels=int N)",
        )
    return ArraySource(images, labels, f"npz {path}", "")


def callable_source(spec: str, split: str) -> CallableSource:
    """Import ``module:callable`` and call it (with ``split=`` when it accepts one)."""
    func = import_callable(spec, what="dataset")
    try:
        params = inspect.signature(func).parameters
        dataset = func(split=split) if "split" in params else func()
    except InputError:
        raise
    except (Exception, SystemExit) as exc:
        raise InputError(
            f"dataset callable {spec} failed: {type(exc).__name__}: {exc}",
            fix="run it in Python to debug; it must return a dataset of (image, label)",
        ) from exc
    return CallableSource(dataset, f"callable {spec} (split={split})")


def import_callable(spec: str, what: str) -> Any:
    """Resolve ``package.module:attribute`` with an error that says what to fix."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(
            f"{what} {spec!r} is not of the form module:callable",
            fix=f"pass e.g. mypkg.models:build_{what} (the module must be importable)",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(
            f"cannot import module {module_name!r} for {what} {spec!r}: {exc}",
            fix="install the package that defines it, or add its folder to PYTHONPATH",
        ) from exc
    except (Exception, SystemExit) as exc:  # a syntax error, or the module raised/exited
        raise InputError(
            f"importing module {module_name!r} for {what} {spec!r} failed: "
            f"{type(exc).__name__}: {exc}",
            fix=f"run python -c 'import {module_name}' to see the error, and fix the module",
        ) from exc
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise InputError(
                f"module {module_name!r} has no attribute {attr!r} ({what} {spec!r})",
                fix="check the name after the colon",
            )
        target = getattr(target, part)
    if not callable(target):
        raise InputError(f"{what} {spec!r} is not callable", fix="point at a function or class")
    return target
