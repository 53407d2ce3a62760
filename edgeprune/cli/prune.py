"""``edgeprune prune``: load → prune → recover, without compiling for a target."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from edgeprune.cli.common import guarded, model_argument, register, stdout_to_stderr

DOC = """Structurally prune MODEL (D-Score by default) and recover its accuracy, without
compiling for a target: load → prune → recover.

**Examples**

    edgeprune prune resnet20.th --arch resnet20 --data cifar10/ \\
        --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 \\
        --flops-reduction 0.5 --recover-epochs 3 --out pruned/

    edgeprune prune model.pt --arch mypkg.nets:build --train-data train/ --eval-data val/ \\
        --prune l1 --prune-ratio 0.3 --round-to 8 --recover distill --nproc 2
"""

EPILOG = """\
The pruned model is OUT/pruned.pt (weights + recipe; reload it with `edgeprune compile
OUT/pruned.pt` — no pickled code), the per-group plan OUT/03-prune/plan.json and the
sensitivity curves OUT/03-prune/sensitivity.json.
"""


def prune_command(values: dict[str, Any]) -> None:
    from edgeprune.configure import build_config, resolve
    from edgeprune.options import DEFAULT_CRITERION

    def body() -> int:
        from rich.console import Console

        from edgeprune.job import run_prune
        from edgeprune.outlock import output_lock
        from edgeprune.ui import UI

        options = resolve(values, "prune")
        options.given.setdefault("prune", DEFAULT_CRITERION)
        config = build_config(options, sys.argv)
        with stdout_to_stderr(values["as_json"]), output_lock(config.out_dir,
                                                              wait=config.wait_lock):
            summary = run_prune(config, UI(values["quiet"] or values["as_json"]))
        if values["as_json"]:
            sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        elif not values["quiet"]:
            from edgeprune.report.console import print_prune_summary

            print_prune_summary(summary, Console())
        return 0

    guarded(values["debug"], body)


def add(app: typer.Typer) -> None:
    register(app, "prune", prune_command, doc=DOC, epilog=EPILOG,
             arguments=[model_argument()])
