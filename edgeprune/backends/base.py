"""The small interface every hardware target implements.

A backend turns the exported ONNX model into something its runtime executes
(``compile``), opens that artifact for inference (``load``), and reports what the
runtime really did (precision per layer type), because a requested precision is not
always the one a runtime uses (OpenVINO on AMX CPUs silently runs "FP32" in bf16).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass
class CompileRequest:
    """What the compile stage asks of a backend."""

    onnx_path: Path
    out_dir: Path
    precision: str  # "fp32" | "bf16" | "fp16" | "int8"
    threads: int = 0  # 0 = the runtime's default
    options: dict[str, Any] = field(default_factory=dict)  # backend-specific profile keys
    # Calibration batches (float32 NCHW, already preprocessed) for INT8 post-training
    # quantization; None when the precision needs none.
    calibration: Iterable[np.ndarray] | None = None


@dataclass
class CompileResult:
    """What a backend produced: artifact files (relative to out_dir) and facts about them."""

    artifact: str  # main file, relative to out_dir (e.g. "model.xml")
    files: list[str]  # every file that belongs to the artifact
    precision_requested: str
    details: dict[str, Any] = field(default_factory=dict)


class Session(Protocol):
    """A loaded model ready to run one preprocessed float32 NCHW batch."""

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def runtime_info(self) -> dict[str, Any]:
        """Facts measured from the loaded runtime: inference precision, per-layer-type
        execution precisions, thread count, device name."""
        ...


class Backend(Protocol):
    """A hardware target's runtime, registered by name in ``edgeprune.backends``."""

    name: str

    def available(self) -> tuple[bool, str]:
        """(True, "") when the runtime imports here; else (False, reason)."""
        ...

    def compile(self, request: CompileRequest) -> CompileResult: ...

    def load(self, artifact: Path, precision: str, threads: int, batch: int,
             options: dict[str, Any]) -> Session: ...


def batches(array: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Split an (N, ...) array into contiguous batches."""
    for start in range(0, len(array), size):
        yield array[start : start + size]
