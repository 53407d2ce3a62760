"""``edgeprune demo``: the whole product on the built-in Fashion-MNIST CNN, in minutes."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from edgeprune.cli.common import guarded, register, run_and_emit
from edgeprune.errors import InputError
from edgeprune.options import for_command

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian: dataset-fashion-mnist
DEMO_OUT = Path("out/demo")
# What the demo shows: D-Score pruning to half the FLOPs, compensation, a short recovery
# and INT8 on the target. Measured (helper runs, quiet machine): 1:47-1:51 wall, 90.18 →
# 89.31 top-1 in OpenVINO INT8; with the default kd weight (0.25) two epochs on this CNN
# did not add to the compensated 88.9, pure distillation (1.0) did.
RECIPE: dict[str, Any] = {
    "prune": "dscore", "flops_reduction": 0.5, "recover_epochs": 2.0, "kd_weight": 1.0,
    "sensitivity_samples": 500, "precision": "int8", "max_drop": 1.0,
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
    # the help shows what the demo uses when an option is not given (its recipe)
    shown = {"data": str(FASHION_DIR), "out": str(DEMO_OUT), "precision": RECIPE["precision"]}
    options = [replace(o, default_text=shown[o.name]) if o.name in shown else o
               for o in for_command("demo")]
    register(app, "demo", demo_command, doc=DOC, epilog="", arguments=[], options=options)
