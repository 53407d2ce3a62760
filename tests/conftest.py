"""Shared fixtures: real data (Fashion-MNIST from Debian, CIFAR-10 from ../shared) and a
helper that runs the real CLI in a subprocess, as a user or CI would."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_ARGS = ["--channels", "1", "--mean", "0.2860", "--std", "0.3530"]


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str | Path, timeout: int = 600, env: dict | None = None) -> CliResult:
    """``python -m edgeprune ARGS`` in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-m", "edgeprune", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def run_cli_here(*args: str | Path) -> CliResult:
    """The same CLI (typer app, error handling, exit code) run in this process: for input
    errors found before or at the load stage, milliseconds instead of a new interpreter
    importing PyTorch (1.5 s). Cases about processes -- code a file names, locks, signals,
    the machine's limits -- use ``run_cli``. ``EDGEPRUNE_TEST_SUBPROCESS=1`` runs these
    through ``run_cli`` too (the real command, one process per case)."""
    if os.environ.get("EDGEPRUNE_TEST_SUBPROCESS") == "1":
        return run_cli(*args)
    import traceback

    from typer.testing import CliRunner

    from edgeprune.cli import app

    argv = [str(a) for a in args]
    assert "--json" not in argv, "--json redirects this process's stdout: use run_cli"
    result = CliRunner().invoke(app, argv)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return CliResult(result.exit_code, result.stdout, stderr)


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    if not (FASHION / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST missing: apt-get install dataset-fashion-mnist")
    return FASHION


@pytest.fixture(scope="session")
def fashion_small(tmp_path_factory: pytest.TempPathFactory, fashion_dir: Path) -> Path:
    """A real 600-image slice of the Fashion-MNIST test set as .npz (fast pipeline runs)."""
    from edgeprune.data.idx import read_idx

    images = read_idx(fashion_dir / "t10k-images-idx3-ubyte.gz")[:600]
    labels = read_idx(fashion_dir / "t10k-labels-idx1-ubyte.gz")[:600]
    path = tmp_path_factory.mktemp("fashion") / "fashion600.npz"
    np.savez(path, images=images, labels=labels)
    return path


@pytest.fixture(scope="session")
def fashion_ckpt() -> Path:
    """The shipped, trained Fashion-MNIST CNN."""
    from edgeprune.examples.paths import checkpoint_path

    return checkpoint_path()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared test data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def tiny_state_dict(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained fashion_cnn state_dict with a DataParallel prefix."""
    from edgeprune.zoo import fashion_cnn

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in fashion_cnn().state_dict().items()}},
               path)
    return path


@pytest.fixture
def compile_args(fashion_small: Path, tmp_path: Path):
    """``compile`` arguments for a quick run of the fashion CNN on 600 real images (50
    calibration images, 20 timed iterations), output in tmp_path/out."""
    def make(model: Path, *extra: str | Path, out: Path | None = None) -> list:
        return ["compile", model, "--arch", "fashion_cnn", "--data", fashion_small,
                *FASHION_ARGS, "--calib-size", "50", "--iterations", "20",
                "--out", out or tmp_path / "out", *extra]
    return make
