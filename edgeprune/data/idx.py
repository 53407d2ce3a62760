"""Reader for MNIST-style IDX files (optionally gzip-compressed).

IDX is the format Fashion-MNIST ships in (Debian's ``dataset-fashion-mnist``); reading it
ourselves keeps the built-in example free of torchvision.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from edgeprune.errors import InputError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file into a numpy array, with errors that name the file."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        from edgeprune.oserrors import is_environment

        if is_environment(exc):
            raise
        raise InputError(
            f"cannot read IDX file {path}: {exc}",
            fix="check that the file is a complete MNIST-style IDX file (re-download or "
            "reinstall it)",
        ) from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise InputError(
            f"{path} is not an IDX file (bad magic number)",
            fix="pass MNIST-style IDX files (e.g. train-images-idx3-ubyte.gz)",
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise InputError(
            f"{path} is truncated or corrupt: header says {dims} "
            f"({expected} bytes of data) but the file holds {len(raw) - header}",
            fix="re-download or reinstall the dataset file",
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))
