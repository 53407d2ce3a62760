"""Console output: progress bars for long work, silent under --quiet/--json.

Everything human-facing goes to stderr so ``--json`` leaves stdout machine-readable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class UI:
    """Stage headers, progress bars and notes; no output at all when quiet."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False, quiet=quiet)

    def stage(self, index: int, name: str, status: str, detail: str = "") -> None:
        colour = {"ran": "green", "cached": "cyan", "skipped": "dim"}.get(status, "yellow")
        tail = f" [dim]{detail}[/dim]" if detail else ""
        self.console.print(
            f"[bold]{index:02d} {name:<9}[/bold] [{colour}]{status}[/{colour}]{tail}"
        )

    def note(self, text: str) -> None:
        self.console.print(f"   [dim]{text}[/dim]")

    def warn(self, text: str) -> None:
        self.console.print(f"   [yellow]warning:[/yellow] {text}")

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """A progress bar; yields ``advance(n)``."""
        if self.quiet or not self.console.is_terminal:  # no bars in CI logs
            yield lambda n: None
            return
        progress = Progress(
            TextColumn("   {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        with progress:
            task_id = progress.add_task(description, total=total)
            yield lambda n: progress.advance(task_id, n)
