"""``edgeprune targets``: the shipped target profiles."""

from __future__ import annotations

import json
from typing import Any

import typer

from edgeprune.cli.common import register

DOC = """List the shipped target profiles (targets/*.toml).

**Example**

    edgeprune targets --json
"""


def targets_command(values: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from edgeprune.config import list_targets

    profiles = list_targets()
    if values["as_json"]:
        typer.echo(json.dumps([p.to_dict() for p in profiles], indent=2))
        return
    table = Table("name", "backend", "precisions", "batch", "description")
    for p in profiles:
        table.add_row(p.name, p.backend, ", ".join(p.precisions), str(p.batch), p.description)
    Console().print(table)


def add(app: typer.Typer) -> None:
    register(app, "targets", targets_command, doc=DOC, epilog="", arguments=[])
