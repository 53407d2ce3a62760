"""``edgeprune report A B``: compare two runs; exit 3 on a regression (the CI gate)."""

from __future__ import annotations

import inspect
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeprune.cli.common import guarded, register
from edgeprune.errors import InputError
from edgeprune.options import default, for_command

DOC = """Compare two compile runs and exit 3 when the candidate regressed (CI gate).

**Examples**

    edgeprune report reference/ out/ --max-accuracy-drop 0.5 --max-latency-increase 0.10

    edgeprune report out-openvino/report.json out-onnxruntime/report.json --json
"""
EPILOG = "Exit codes: 0 no regression, 3 regression (reasons printed), 2 bad input."


def _argument(name: str, text: str) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                             annotation=Annotated[Path, typer.Argument(
                                 help=text, metavar=name.upper(), show_default=False)])


def report_command(values: dict[str, Any]) -> None:
    def pick(name: str) -> Any:
        return default(name) if values.get(name) is None else values[name]

    def body() -> int:  # compare_reports checks the tolerances (finite, not negative)
        import json

        from rich.console import Console

        from edgeprune.errors import EXIT_BUDGET_MISSED
        from edgeprune.report.compare import (
            compare_reports,
            comparison_markdown,
            load_report,
            print_comparison,
        )

        result = compare_reports(load_report(values["reference"]),
                                 load_report(values["candidate"]),
                                 pick("max_accuracy_drop"), pick("max_latency_increase"),
                                 values.get("percentile"))
        markdown = values.get("markdown")
        if markdown is not None:
            try:
                with markdown.open("a") as fh:
                    fh.write(comparison_markdown(result))
            except OSError as exc:
                from edgeprune.oserrors import is_environment

                if is_environment(exc):
                    raise
                raise InputError(f"--markdown {markdown}: cannot append to it "
                                 f"({exc.strerror or exc})",
                                 fix="pass a file path in an existing folder") from exc
        if values["as_json"]:
            sys.stdout.write(json.dumps(result, indent=2) + "\n")
        else:
            print_comparison(result, Console())
        return 0 if result["passed"] else EXIT_BUDGET_MISSED

    guarded(values["debug"], body)


def add(app: typer.Typer) -> None:
    options = [replace(o, default_text="the reports' budget percentile")
               if o.name == "percentile" else o for o in for_command("report")]
    register(app, "report", report_command, doc=DOC, epilog=EPILOG, options=options,
             arguments=[
        _argument("reference", "Reference run: its --out folder or report.json."),
        _argument("candidate", "Run to check against the reference.")])
