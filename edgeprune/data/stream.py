"""Splits too large to hold decoded: decoded on the fly, batch by batch.

A split is decoded into memory once per run when it fits the decoded-data budget
(``--decoded-cache-mb``; CIFAR-10's 50k training images are 614 MB as float32). A larger
one (50k images at 224² are 30 GB) is a :class:`DecodedSplit`: it looks like the
``(N, C, H, W)`` float32 array the stages slice batches from, but decodes only the
batch asked for (in ``workers`` threads: PIL decodes and resizes with the GIL released).
Training reads either kind through a ``torch.utils.data`` pipeline (:func:`train_loader`)
with worker processes and a ``DistributedSampler``, so memory stays bounded by
batch size × workers whatever the dataset's size.
"""

from __future__ import annotations

import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from edgeprune.data.preprocess import Preprocess
from edgeprune.data.splits import Subset, prepare_sample


def default_workers() -> int:
    """Decode workers when --workers is not given: one per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


class DecodedSplit:
    """A subset's preprocessed images, decoded when sliced (never all at once)."""

    dtype = np.dtype(np.float32)

    def __init__(self, subset: Subset, preprocess: Preprocess, threads: int = 1):
        self.subset = subset
        self.preprocess = preprocess
        self.threads = max(1, threads)
        self._pool: ThreadPoolExecutor | None = None
        first = self.sample(0)
        self.shape = (len(subset), *first.shape)

    def __len__(self) -> int:
        return len(self.subset)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def sample(self, position: int) -> np.ndarray:
        """The preprocessed image at ``position`` of the subset (CHW float32)."""
        subset = self.subset
        return prepare_sample(subset.source, int(subset.indices[position]), self.preprocess)

    def take(self, positions: np.ndarray | list[int]) -> np.ndarray:
        """Decode these positions into one (n, C, H, W) batch."""
        positions = [int(p) for p in positions]
        out = np.empty((len(positions), *self.shape[1:]), dtype=np.float32)
        if self.threads > 1 and len(positions) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="decode")
            images = self._pool.map(self.sample, positions)
        else:
            images = map(self.sample, positions)
        for row, image in enumerate(images):
            if image.shape != self.shape[1:]:  # the first image fixed the size
                raise ValueError(f"sample {positions[row]} preprocesses to {image.shape}, "
                                 f"not {self.shape[1:]}")
            out[row] = image
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            return self.take(range(*key.indices(len(self))))
        if isinstance(key, int | np.integer):
            return self.sample(int(key) % len(self))
        return self.take(np.asarray(key).reshape(-1))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError("a DecodedSplit is decoded batch by batch: slice it, do not convert "
                        "it to one array")

    def __getstate__(self) -> dict[str, Any]:  # to a DataLoader worker: no thread pool
        return {**self.__dict__, "_pool": None, "threads": 1}


Images = np.ndarray | DecodedSplit


@dataclass
class SplitDataset(Dataset):
    """(images, targets) by index for a DataLoader; ``__getitems__`` fetches a whole batch
    in one call (one NumPy gather for an in-memory split). Batches are NumPy arrays, made
    tensors by the training loop: a tensor from a worker process would travel through
    PyTorch's shared-memory handles, whose release crashed (SIGSEGV) a process that had
    OpenVINO loaded; an array is pickled through the pipe."""

    images: Images
    targets: np.ndarray | None  # None: label-free training never reads them

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> tuple[np.ndarray, Any]:
        order = np.asarray(indices, dtype=np.int64)
        images = np.ascontiguousarray(self.images[order])
        if self.targets is None:
            return images, None
        return images, np.asarray(self.targets[order], dtype=np.int64)


def keep_batch(batch: Any) -> Any:
    """The collate step of :func:`train_loader`: the dataset already built the batch."""
    return batch


def train_loader(images: Images, targets: np.ndarray | None, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1, workers: int = 0) -> DataLoader:
    """Shuffled, full batches of this rank's shard (``DistributedSampler``: a fresh
    permutation per ``set_epoch``, the same on every rank). Worker processes only when the
    split is decoded on the fly: an in-memory split is a gather, which workers slow down
    (measured in bench/streaming_epoch.py). Workers are spawned, never forked: the parent
    may hold OpenVINO / ONNX Runtime threads."""
    sampler = DistributedSampler(SplitDataset(images, None), num_replicas=world, rank=rank,
                                 shuffle=True, seed=seed, drop_last=True)
    dataset = SplitDataset(images, targets)
    full = len(sampler) >= batch_size  # a shard smaller than a batch: one partial batch
    workers = workers if isinstance(images, DecodedSplit) and _picklable(dataset) else 0
    return DataLoader(
        dataset, batch_sampler=BatchSampler(sampler, batch_size, drop_last=full),
        collate_fn=keep_batch, num_workers=workers, persistent_workers=workers > 0,
        multiprocessing_context="spawn" if workers else None,
        prefetch_factor=2 if workers else None)


def _picklable(dataset: SplitDataset) -> bool:
    """A user's callable dataset may hold what cannot cross to a worker process: then the
    batches are decoded in this process (threads)."""
    try:
        pickle.dumps(dataset)
    except Exception:  # any failure to pickle, whatever the user's object raises
        return False
    return True
