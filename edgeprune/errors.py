"""Error types that map to the CLI's documented exit codes.

0 budget met, 3 budget missed, 2 usage or input error, 1 internal failure.
A user error always carries the problem and the fix, so the CLI can print one
readable paragraph instead of a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INPUT = 2
EXIT_BUDGET_MISSED = 3


class EdgepruneError(Exception):
    """Base class: an error the CLI reports as a paragraph (no traceback)."""

    exit_code = EXIT_INTERNAL

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def paragraph(self) -> str:
        """The one-paragraph message shown to the user."""
        text = f"error: {self.problem}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class InputError(EdgepruneError):
    """Bad user input: a file, an option or data we cannot use (exit 2)."""

    exit_code = EXIT_INPUT


class StageFailure(EdgepruneError):
    """A pipeline check failed on valid input, e.g. ONNX parity (exit 1)."""

    exit_code = EXIT_INTERNAL
