"""Ctrl-C at random points of a short compile: every interrupt exits 130 with nothing
half-written, and the run resumed to the end writes the report an uninterrupted run writes
(timings aside). The quick version of ``bench/ctrl_c_stress.py --interrupts 50`` (whose
result is bench/results/ctrl_c_stress.json): interrupts chained on resumed runs."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests.conftest import REPO

INTERRUPTS = int(os.environ.get("EDGEPRUNE_CTRL_C_INTERRUPTS", "8"))


def _stress_module():
    spec = importlib.util.spec_from_file_location("ctrl_c_stress",
                                                  REPO / "bench" / "ctrl_c_stress.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_ctrl_c_at_random_points_exits_130_and_resumes(fashion_dir: Path,
                                                       tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    result = _stress_module().stress(INTERRUPTS, tmp_path, chain=True, seed=7, log=print)
    bad = [t for t in result["trials"] if not t["ok"]]
    assert not bad, bad
    assert result["exited_130"] == result["interrupts"] == INTERRUPTS
