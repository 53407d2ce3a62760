"""``edgeprune demo``: the whole product on the built-in Fashion-MNIST CNN, in minutes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from edgeprune.cli.common import guarded, register, run_and_emit
from edgeprune.errors import InputError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian: dataset-fashion-mnist
DEMO_OUT = Path("out/demo")
# What the demo shows: D-Score pruning (compensated, then a short recovery with labels +
# distillation) and INT8 on the target, on a training subset so it stays within minutes.
RECIPE: dict[str, Any] = {
    "prune": "dscore", "flops_reduction": 0.5, "recover_epochs": 1.0,
    "train_limit": 6000, "sensitivity_samples": 500, "compensate_samples": 500,
    "precision": "int8", "max_drop": 1.0,
}

DOC = f"""Compile the built-in Fashion-MNIST CNN (shipped with edgeprune) on this machine:
D-Score pruning to {RECIPE['flops_reduction']:.0%} fewer FLOPs, compensation, a short
recovery, INT8 on the target, and the report (OUT/report.html).

**Example**

    edgeprune demo --out out/demo

Needs the Debian package dataset-fashion-mnist (or --data pointing at its IDX files).
"""


def demo_command(values: dict[str, Any]) -> None:
    def body() -> int:
        from edgeprune.configure import build_config, resolve
        from edgeprune.examples import FASHION_MNIST
        from edgeprune.examples.paths import checkpoint_path

        data = Path(values.get("data") or FASHION_DIR)
        if not data.is_dir():
            raise InputError(f"Fashion-MNIST not found at {data}",
                             fix="install it: apt-get install dataset-fashion-mnist (or pass "
                             "--data to the folder holding its IDX files)")
        given = {k: v for k, v in values.items() if v is not None and v is not False}
        options = resolve({
            **RECIPE, "model": checkpoint_path(), "arch": FASHION_MNIST["arch"],
            "channels": FASHION_MNIST["channels"], "mean": [FASHION_MNIST["mean"]],
            "std": [FASHION_MNIST["std"]], **given, "data": str(data),
            "out": values.get("out") or DEMO_OUT}, "compile")
        return run_and_emit(build_config(options, sys.argv), values["as_json"],
                            values["quiet"])

    guarded(values["debug"], body)


def add(app: typer.Typer) -> None:
    register(app, "demo", demo_command, doc=DOC, epilog="", arguments=[])
