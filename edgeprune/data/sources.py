"""Dataset sources: ImageFolder directories, IDX files, ``.npz`` arrays, ``module:callable``.

Every source exposes the same tiny interface (length, stable sample ids, labels, raw
images) so splits, manifests and preprocessing never care where pixels come from.

What a source accepts is checked when it is opened (arrays) or read (callable items), so
a wrong layout is an input error naming the file, never a crash later:

- images: ``(N, H, W)`` or ``(N, H, W, C)`` with C = 1, 3 or 4; integer pixels in
  [0, 255] (uint8, or any integer type within that range), or float pixels in [0, 1]
  (the same scale ``--mean``/``--std`` are given on); anything else is refused;
- labels: one class index per image, integers >= 0 (floats only when every value is a
  whole number); strings, booleans, NaN or fractions are refused. Labels beyond the
  model's outputs are refused by the load stage, which knows the model.
- targets (``class_labels=False``, a run with ``--metric``): any structure the metric
  understands (a mask, a multi-hot vector, boxes), N of them for N images; only the
  count is checked here, the values are the metric's job.
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
from edgeprune.oserrors import is_environment

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

    def __init__(self, images: np.ndarray, labels: np.ndarray, description: str, prefix: str,
                 class_labels: bool = True):
        images, labels = np.asarray(images), np.asarray(labels)
        if class_labels and labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if images.ndim == 0 or labels.ndim == 0 or (class_labels and labels.ndim != 1):
            raise InputError(
                f"{description}: labels have shape {labels.shape}, not (N,) class indices"
                if images.ndim else f"{description}: images is a single value, not an array",
                fix="save one integer class index per image (not one-hot vectors), e.g. "
                "labels=y.argmax(1)" if images.ndim else "save images as an (N, H, W[, C]) "
                "array")
        if len(images) != len(labels):
            raise InputError(
                f"{description}: {len(images)} images but {len(labels)} labels",
                fix="pass image and label arrays of the same length",
            )
        if len(images) == 0:
            raise InputError(f"{description} holds no images", fix="pass a non-empty dataset")
        self.images = check_images(images, description)
        self.labels = check_labels(labels, description) if class_labels else labels
        self.class_labels = class_labels
        self.description = description
        self._prefix = prefix

    def __len__(self) -> int:
        return len(self.images)

    def sample_id(self, index: int) -> str:
        return f"{self._prefix}{index}"

    def label(self, index: int) -> Any:
        return int(self.labels[index]) if self.class_labels else self.labels[index]

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
            if is_environment(exc):
                raise
            raise InputError(
                f"cannot read image {path}: {exc}",
                fix="remove or replace the corrupt file (every image in the data directory "
                "must decode)",
            ) from exc


class CallableSource:
    """A user dataset: items are (image, label) with image a PIL image, an HW/HWC integer
    array in [0, 255], or a model-ready float CHW tensor/array (then our preprocessing is
    skipped), and label an integer class index."""

    def __init__(self, dataset: Sequence[Any], description: str, class_labels: bool = True):
        self.dataset = dataset
        self.description = description
        self.class_labels = class_labels
        try:
            self._len = len(dataset)
        except Exception as exc:
            raise InputError(
                f"{description} returned {type(dataset).__name__}, which has no length",
                fix="return a dataset with __len__ and __getitem__ (a list of (image, label) "
                "pairs, or a torch Dataset)") from exc
        if self._len == 0:
            raise InputError(f"{description} returned an empty dataset",
                             fix="return a non-empty dataset of (image, label) pairs")
        self.preprocessed = _is_float_tensor(self._item(0)[0])

    def _item(self, index: int) -> tuple[Any, Any]:
        try:
            item = self.dataset[index]
        except InputError:
            raise
        except Exception as exc:
            raise InputError(
                f"{self.description}: cannot read item {index} ({type(exc).__name__}: {exc})",
                fix="the callable must return a dataset of (image, label) pairs",
            ) from exc
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            what = (f"a {len(item)}-element {type(item).__name__}"
                    if isinstance(item, (tuple, list)) else type(item).__name__)
            raise InputError(
                f"{self.description}: item {index} is {what}, not an (image, label) pair",
                fix="make the dataset's __getitem__ return (image, label)")
        return item[0], item[1]

    def __len__(self) -> int:
        return self._len

    def sample_id(self, index: int) -> str:
        return str(index)

    def label(self, index: int) -> Any:
        value = self._item(index)[1]
        if not self.class_labels:
            return target_value(value)
        return label_value(value, f"{self.description}: item {index}")

    def image(self, index: int) -> np.ndarray:
        item = self._item(index)[0]
        where = f"{self.description}: item {index}"
        if isinstance(item, Image.Image):
            return np.asarray(item.convert("RGB") if item.mode not in ("L", "RGB") else item)
        if hasattr(item, "numpy") and hasattr(item, "dtype"):
            item = item.detach().cpu().numpy() if hasattr(item, "detach") else item.numpy()
        if not isinstance(item, np.ndarray):
            raise InputError(
                f"{where}: the image is {type(item).__name__}, not a PIL image, array or "
                "tensor", fix="return (image, label) with image a PIL image, an HxWxC uint8 "
                "array or a float CHW tensor")
        if self.preprocessed:
            if not _is_float_tensor(item) or item.ndim != 3 or not np.isfinite(item).all():
                raise InputError(
                    f"{where}: the image is {item.dtype} {item.shape}, but item 0 was a "
                    "model-ready float CHW tensor, so every item must be one (finite)",
                    fix="return the same kind of image for every item")
            return item
        if item.ndim not in (2, 3):
            raise InputError(f"{where}: the image has shape {item.shape}, not HxW or HxWxC",
                             fix="return one image per item")
        return check_images(item[None], where)[0]


class DatasetSource(CallableSource):
    """An in-memory dataset handed to the Python API (``edgeprune.compile(model, data=ds)``):
    a ``torch.utils.data.Dataset`` (or anything with ``__len__``/``__getitem__``) of
    ``(image, label)`` items, read like a ``module:callable`` dataset.

    Its identity for the stage cache is a hash of its content (every image after it is
    read, and every label), computed once per run: a re-run with the same data resumes,
    changed data re-runs the stages. The object is shared, never copied (``deepcopy``
    returns it), since a dataset may hold open files or a large array.
    """

    def __init__(self, dataset: Sequence[Any], description: str, class_labels: bool = True):
        super().__init__(dataset, description, class_labels)
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        """sha256 over every item's image (dtype, shape, bytes) and label; reading every
        item here is also the check that each one is a usable (image, label) pair."""
        if self._fingerprint is None:
            import hashlib

            digest = hashlib.sha256(f"{self._len}|{self.preprocessed}\n".encode())
            for index in range(self._len):
                image = np.ascontiguousarray(self.image(index))
                label = self.label(index)
                digest.update(f"{image.dtype}|{image.shape}|"
                              f"{label if isinstance(label, int) else ''}\n".encode())
                if not isinstance(label, int):
                    update_target_digest(digest, np.asarray(label))
                digest.update(image.tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def __deepcopy__(self, memo: dict[int, Any]) -> DatasetSource:
        return self

    def __repr__(self) -> str:
        return f"<{self.description}>"


def _is_float_tensor(item: Any) -> bool:
    dtype = getattr(item, "dtype", None)
    return dtype is not None and "float" in str(dtype)


def check_images(images: np.ndarray, description: str) -> np.ndarray:
    """(N, H, W[, C]) pixels: integers in [0, 255] (returned as uint8) or floats in [0, 1]
    (returned as float32); see the module docstring."""
    shape = images.shape
    if images.ndim == 2:
        side = round(float(np.sqrt(shape[1])))
        hint = (f"e.g. images.reshape(-1, {side}, {side})" if side * side == shape[1] else
                "e.g. images.reshape(-1, H, W)")
        raise InputError(f"{description}: images have shape {shape}: flat vectors, not "
                         "(N, H, W[, C]) images", fix=f"reshape them to (N, H, W[, C]) before "
                         f"saving, {hint}")
    if images.ndim == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3, 4):
        raise InputError(f"{description}: images have shape {shape}: channels first (N, C, H, "
                         "W), but edgeprune reads (N, H, W, C)",
                         fix="save images.transpose(0, 2, 3, 1)")
    if images.ndim not in (3, 4) or (images.ndim == 4 and shape[3] not in (1, 3, 4)):
        raise InputError(f"{description}: images have shape {shape}, not (N, H, W) or (N, H, "
                         "W, C) with C = 1, 3 or 4", fix="save images as N×H×W(×C) pixels")
    kind = images.dtype.kind
    if kind == "u" and images.dtype.itemsize == 1:
        return images
    if kind in "iu":
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            raise InputError(
                f"{description}: {images.dtype} pixel values go from {low} to {high}, outside "
                "[0, 255]", fix="save 8-bit pixels (uint8, 0-255), e.g. (x / x.max() * 255)"
                ".round().astype(np.uint8); or floats in [0, 1]")
        return images.astype(np.uint8)
    if kind == "f":
        finite = np.isfinite(images)
        if not finite.all():
            raise InputError(f"{description}: {int((~finite).sum())} pixel values are NaN or "
                             "infinite", fix="fix or drop those images")
        low, high = float(images.min()), float(images.max())
        if low < 0 or high > 1:
            scaled = "0-255 pixel values" if high <= 255 and low >= 0 else "already normalized"
            raise InputError(
                f"{description}: float pixel values go from {low:g} to {high:g}; edgeprune "
                f"reads float images as pixels in [0, 1] (these look {scaled})",
                fix="save uint8 pixels (0-255), or floats divided by 255 into [0, 1]; do not "
                "normalize them yourself: pass --mean/--std")
        return images.astype(np.float32, copy=False)
    raise InputError(f"{description}: images are of type {images.dtype}, not pixel numbers",
                     fix="save images as uint8 (0-255) or float (0-1) arrays")


def check_labels(labels: np.ndarray, description: str) -> np.ndarray:
    """One integer class index >= 0 per image, as int64 (see the module docstring)."""
    kind = labels.dtype.kind
    if kind in "USO":
        example = labels[0].item() if len(labels) else ""
        what = "Python objects" if kind == "O" else "strings"
        raise InputError(f"{description}: labels are {what} (e.g. {example!r}), not class "
                         "indices", fix="map class names to integers 0..N-1 in the order the "
                         "model was trained with, and save those")
    if kind == "b" or kind not in "iuf":
        raise InputError(f"{description}: labels are of type {labels.dtype}, not integer "
                         "class indices", fix="save labels as integers 0..N-1")
    if kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            raise InputError(f"{description}: {int(bad.sum())} labels are not whole numbers "
                             f"(e.g. label {index} is {labels[index]!r})",
                             fix="save integer class indices (labels.astype(int) would "
                             "truncate them silently: check where they came from)")
    if (labels < 0).any():
        index = int(np.flatnonzero(labels < 0)[0])
        raise InputError(f"{description}: {int((labels < 0).sum())} labels are negative (e.g. "
                         f"label {index} is {labels[index]!r})",
                         fix="labels must be class indices 0..N-1: drop unlabeled (-1) images "
                         "or map them to their class")
    return labels.astype(np.int64)


def label_value(value: Any, where: str) -> int:
    """One label from a dataset item: an integer class index >= 0."""
    array = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
    if array.size != 1:
        raise InputError(f"{where}: the label has shape {array.shape}, not one class index",
                         fix="return (image, label) with label an integer class index")
    return int(check_labels(array.reshape(1), where)[0])


def target_value(value: Any) -> np.ndarray:
    """One sample's target for a user metric, as an array (a tensor leaves torch)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def stack_targets(values: list[Any]) -> np.ndarray:
    """A batch's labels: class ids as int64 (N,), as always; a metric's targets stacked
    (N, ...) when they share shape and type, else an object array of the N targets."""
    if all(isinstance(v, int) for v in values):
        return np.asarray(values, dtype=np.int64)
    arrays = [np.asarray(v) for v in values]
    if arrays and all(a.shape == arrays[0].shape and a.dtype == arrays[0].dtype
                      and a.dtype.kind != "O" for a in arrays):
        return np.stack(arrays)
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def update_target_digest(digest: Any, targets: np.ndarray) -> None:
    """Hash targets by content (an object array's bytes would be its pointers)."""
    if targets.dtype.kind != "O":
        digest.update(f"{targets.dtype}|{targets.shape}".encode())
        digest.update(np.ascontiguousarray(targets).tobytes())
        return
    for item in targets:
        update_target_digest(digest, np.asarray(item))


def idx_pair(root: Path, stem: str, class_labels: bool = True) -> ArraySource | None:
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
            return ArraySource(read_idx(images), read_idx(labels), f"IDX {images}", f"{stem}:",
                               class_labels)
    return None


def npz_source(path: Path, class_labels: bool = True) -> ArraySource:
    """An ``.npz`` with ``images`` (N,H,W[,C] uint8) and ``labels`` (N,).

    A ``labels_all`` array longer than ``images`` is read as labels of a prefix of a
    larger set (the layout of the shared CIFAR-10 lossless test prefix).
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # BadZipFile, a CRC error, object arrays, ...
        if is_environment(exc):
            raise
        raise InputError(
            f"cannot read {path} as .npz ({type(exc).__name__}: {exc})",
            fix="pass a complete numpy .npz file (np.savez(path, images=..., labels=...)); "
            "object arrays are refused (they would unpickle code)",
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
    return ArraySource(images, labels, f"npz {path}", "", class_labels)


def callable_source(spec: str, split: str, class_labels: bool = True) -> CallableSource:
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
    return CallableSource(dataset, f"callable {spec} (split={split})", class_labels)


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
