"""``edgeprune compile``: argv → options → PipelineConfig → the pipeline (or the search)."""

from __future__ import annotations

import sys
from typing import Any

import typer

from edgeprune.cli.common import guarded, model_argument, register, run_and_emit

DOC = """Run the pipeline on MODEL for a target and check the result against the budget.

Stages: load → baseline → prune → recover → quantize → export → compile → profile →
evaluate → verdict, each written to OUT/NN-stage/ (re-runs reuse unchanged stages).
The report is OUT/report.json (also report.html and summary.md).

**Examples**

The built-in ResNet-20 on CIFAR-style ImageFolder data (train/ and test/
sub-folders), INT8 on this machine's CPU, 1 point of top-1 allowed:

    edgeprune compile resnet20.th --arch resnet20 --data cifar10/ \\
        --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --precision int8

Prune 50% of the FLOPs with D-Score (compensated, then recovered with labels +
distillation), then hyperspherical ternary QAT:

    edgeprune compile resnet20.th --arch resnet20 --data cifar10/ \\
        --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 \\
        --prune dscore --flops-reduction 0.5 --quant ternary

Search for the fastest model within the budget, your own architecture, JSON for CI:

    edgeprune compile model.pt --arch mypkg.nets:build \\
        --arch-kwargs '{"num_classes": 5}' --eval-data val/ \\
        --train-data train/ --input-size 224 --resize 256 \\
        --search --max-drop 1.0 \\
        --latency-ms 5 --percentile p99 --json > report.json
"""

EPILOG = """\
Every option can also come from a TOML job file (`--job job.toml`, keys named like the
options with underscores: `max_drop = 1.0`; docs/options.md lists them); options on the
command line win.

Exit codes: 0 budget met, 3 budget missed, 2 usage or input error, 1 internal failure,
4 built but not measured (the target's device was not given or not reachable).
"""


def compile_command(values: dict[str, Any]) -> None:
    from edgeprune.configure import build_config, resolve, search_options

    def body() -> int:
        options = resolve(values, "compile")
        search = search_options(options)
        if search is not None:
            # the search varies these per candidate; the base config carries the prune
            # options (criterion, min channels, ...) and recovery/QAT settings as templates
            options.given.update(quant="ternary" if options.has("search_ternary") else None,
                                 prune=search.criterion, prune_ratio=0.5)
        return run_and_emit(build_config(options, sys.argv), values["as_json"],
                            values["quiet"], search)

    guarded(values["debug"], body)


def add(app: typer.Typer) -> None:
    register(app, "compile", compile_command, doc=DOC, epilog=EPILOG,
             arguments=[model_argument()])
