"""Preprocessing from options: resize, center crop, channels, mean/std, NCHW layout.

Kept in numpy + Pillow (no torchvision, which does not import with the CPU torch here),
and deterministic so PyTorch and every runtime see bit-identical inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from edgeprune.errors import InputError


@dataclass
class Preprocess:
    """How a raw uint8 image becomes the model's float32 CHW input."""

    input_size: tuple[int, int] | None = None  # (H, W); None = keep the image's size
    resize: int | None = None  # shorter side before a center crop to input_size
    channels: int = 3  # 1 = grey, 3 = RGB
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])
    scale: float = 255.0  # raw pixel values are divided by this first

    def validate(self) -> Preprocess:
        if self.channels not in (1, 3):
            raise InputError(
                f"--channels {self.channels} is not supported",
                fix="use --channels 1 (grey) or --channels 3 (RGB)",
            )
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                raise InputError(
                    f"--{name} has {len(values)} values but the input has {self.channels} "
                    "channels",
                    fix=f"give one value or {self.channels} comma-separated values",
                )
        if any(s == 0 for s in self.std):
            raise InputError("--std contains 0", fix="pass the dataset's real std, e.g. 0.229")
        if self.input_size is not None and min(self.input_size) < 1:
            raise InputError(f"--input-size {self.input_size} must be positive",
                             fix="pass e.g. --input-size 224 or 32x32")
        if self.resize is not None:
            if self.input_size is None:
                raise InputError(f"--resize {self.resize} needs --input-size: it resizes the "
                                 "shorter side, then center-crops --input-size",
                                 fix="add --input-size (e.g. --resize 256 --input-size 224), "
                                 "or drop --resize")
            if self.resize < max(self.input_size):
                raise InputError(
                    f"--resize {self.resize} is smaller than --input-size "
                    f"{self.input_size[0]}x{self.input_size[1]}: the center crop would reach "
                    "outside the image", fix="pass a --resize at least as large as "
                    "--input-size (e.g. 256 for 224), or drop --resize")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __call__(self, image: np.ndarray | Image.Image) -> np.ndarray:
        """uint8 HWC (or HW, or PIL) → float32 CHW; float pixels are already on [0, 1]."""
        array = self._geometry(image)
        x = array.astype(np.float32) / (1.0 if array.dtype.kind == "f" else self.scale)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, 1, -1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, 1, -1)
        x = (x - mean) / std
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def _geometry(self, image: np.ndarray | Image.Image) -> np.ndarray:
        array = np.asarray(image) if isinstance(image, Image.Image) else image
        if array.ndim == 2:
            array = array[:, :, None]
        array = _to_channels(array, self.channels)
        h, w = array.shape[:2]
        if self.input_size is None or (h, w) == tuple(self.input_size):
            return array
        if array.dtype.kind == "f":  # PIL resizes floats one channel ("F" image) at a time
            planes = [self._resize(Image.fromarray(array[:, :, c].astype(np.float32)))
                      for c in range(array.shape[2])]
            return np.stack([np.asarray(p) for p in planes], axis=2)
        out = np.asarray(self._resize(Image.fromarray(
            array[:, :, 0] if self.channels == 1 else array)))
        return out[:, :, None] if out.ndim == 2 else out

    def _resize(self, pil: Image.Image) -> Image.Image:
        th, tw = self.input_size  # type: ignore[misc]
        if self.resize:
            ratio = self.resize / min(pil.height, pil.width)
            pil = pil.resize((round(pil.width * ratio), round(pil.height * ratio)),
                             Image.BILINEAR)
            left, top = (pil.width - tw) // 2, (pil.height - th) // 2
            return pil.crop((left, top, left + tw, top + th))
        return pil.resize((tw, th), Image.BILINEAR)


def _to_channels(array: np.ndarray, channels: int) -> np.ndarray:
    have = array.shape[2]
    if have == channels:
        return array
    if channels == 3 and have == 1:
        return np.repeat(array, 3, axis=2)
    if channels == 1 and have in (3, 4):
        rgb = array[:, :, :3].astype(np.float32)
        grey = rgb @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
        if array.dtype.kind == "f":
            return grey[:, :, None]
        return np.clip(grey + 0.5, 0, 255).astype(np.uint8)[:, :, None]
    if channels == 3 and have == 4:
        return array[:, :, :3]
    raise InputError(
        f"images have {have} channels but the model expects {channels}",
        fix="set --channels to match the model's first layer",
    )
