"""Console output: progress bars for long work, silent under --quiet/--json.

Everything human-facing goes to stderr so ``--json`` leaves stdout machine-readable.
On a terminal long work shows a progress bar. Anywhere else (a CI log, a pipe) a bar
would be noise, so long work prints a plain heartbeat line instead, at least every
``EDGEPRUNE_HEARTBEAT_S`` seconds (default 30), from a background thread: a single slow
step that never calls ``advance`` still shows that the run is alive.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

HEARTBEAT_ENV = "EDGEPRUNE_HEARTBEAT_S"
DEFAULT_HEARTBEAT_S = 30.0


def heartbeat_interval() -> float | None:
    """Seconds between heartbeat lines (``EDGEPRUNE_HEARTBEAT_S``); None when set to 0 or
    less (no heartbeat). An unreadable value falls back to the default."""
    raw = os.environ.get(HEARTBEAT_ENV, "").strip()
    if not raw:
        return DEFAULT_HEARTBEAT_S
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_HEARTBEAT_S
    if value != value or value == float("inf"):  # nan, inf
        return DEFAULT_HEARTBEAT_S
    return value if value > 0 else None


def _seconds(value: float) -> str:
    value = max(value, 0.0)
    if value < 120:
        return f"{value:.0f} s"
    minutes, seconds = divmod(round(value), 60)
    if minutes < 120:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def heartbeat_line(description: str, done: int, total: int | None, elapsed: float) -> str:
    """``   [heartbeat] sensitivity analysis: 120/400 (30%), 31 s elapsed, ETA 72 s``"""
    if total:
        progress = f"{done}/{total} ({100.0 * done / total:.0f}%)"
    elif done:
        progress = f"{done} done"
    else:
        progress = "working"
    line = f"   [heartbeat] {description}: {progress}, {_seconds(elapsed)} elapsed"
    if total and 0 < done < total:
        line += f", ETA {_seconds(elapsed / done * (total - done))}"
    return line


class Heartbeat:
    """Prints the latest state of one task from a daemon thread until stopped, whenever
    ``interval`` seconds passed since the log's last line (``last_output``: any line, this
    task's or another's, so back-to-back short tasks cannot leave a long silence).
    ``advance`` only updates a counter (cheap, any thread)."""

    def __init__(self, write: Callable[[str], None], description: str, total: int | None,
                 interval: float, last_output: Callable[[], float] | None = None) -> None:
        self._write = write
        self._last_output = last_output
        self.description = description
        self.total = total
        self.interval = interval
        self.done = 0
        self.beats = 0
        self._started = self._last_beat = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat: {description}",
                                        daemon=True)

    def advance(self, n: int = 1, total: int | None = None) -> None:
        self.done += n
        if total is not None:
            self.total = total

    def line(self) -> str:
        return heartbeat_line(self.description, self.done, self.total,
                              time.monotonic() - self._started)

    def _loop(self) -> None:
        while True:
            last = self._last_output() if self._last_output else self._last_beat
            wait = last + self.interval - time.monotonic()
            if wait > 0:
                if self._stop.wait(wait):
                    return
                continue
            if self._stop.is_set():
                return
            self._beat(self.line())

    def _beat(self, text: str) -> None:
        self.beats += 1
        self._last_beat = time.monotonic()
        with contextlib.suppress(Exception):  # a closed or broken stream must not kill the run
            self._write(text)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self, failed: bool = False) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.beats:  # the log said it was running: say how it ended
            elapsed = _seconds(time.monotonic() - self._started)
            count = (f"{self.done}/{self.total}" if self.total else
                     f"{self.done} done" if self.done else "")
            if failed:
                tail = f"stopped after {elapsed}" + (f" at {count}" if count else "")
            else:
                tail = f"{count or 'finished'} in {elapsed}"
            self._beat(f"   [heartbeat] {self.description}: {tail}")


Advance = Callable[..., None]  # advance(n: int, total: int | None = None)


def _ignore(n: int, total: int | None = None) -> None:
    pass


class UI:
    """Stage headers, progress bars and notes; no output at all when quiet."""

    def __init__(self, quiet: bool = False, file: IO[str] | None = None) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False, quiet=quiet, file=file)
        self._write_lock = threading.Lock()
        self._last_output = time.monotonic()  # when the last line went out (heartbeats)

    def stage(self, index: int, name: str, status: str, detail: str = "") -> None:
        colour = {"ran": "green", "cached": "cyan", "skipped": "dim"}.get(status, "yellow")
        tail = f" [dim]{detail}[/dim]" if detail else ""
        self._print(f"[bold]{index:02d} {name:<9}[/bold] [{colour}]{status}[/{colour}]{tail}")

    def note(self, text: str) -> None:
        self._print(f"   [dim]{text}[/dim]")

    def warn(self, text: str) -> None:
        self._print(f"   [yellow]warning:[/yellow] {text}")

    def _print(self, markup: str) -> None:
        self.console.print(markup)
        self._last_output = time.monotonic()

    def _plain(self, text: str) -> None:
        """One plain line (no markup, no ANSI) on the console's stream, flushed."""
        with self._write_lock:
            stream = self.console.file
            stream.write(text + "\n")
            stream.flush()
            self._last_output = time.monotonic()

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        """A progress bar on a terminal, a heartbeat line elsewhere; yields ``advance(n)``
        (``advance(n, total=T)`` sets a total learnt only once the work started)."""
        if self.quiet:
            yield _ignore
            return
        if not self.console.is_terminal:  # CI logs: plain heartbeat lines, no bar
            interval = heartbeat_interval()
            if interval is None:
                yield _ignore
                return
            beat = Heartbeat(self._plain, description, total, interval,
                             lambda: self._last_output).start()
            try:
                yield beat.advance
            except BaseException:  # an error or Ctrl-C: the task did not finish
                beat.stop(failed=True)
                raise
            beat.stop()
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

            def advance(n: int, total: int | None = None) -> None:
                if total is not None:
                    progress.update(task_id, total=total)
                progress.advance(task_id, n)

            yield advance
