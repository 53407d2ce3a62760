"""Error types that map to the CLI's documented exit codes.

0 budget met, 3 budget missed, 2 usage or input error, 1 internal failure,
4 artifact built but not measured (the target's device was not given or not reachable).
A user error always carries the problem and the fix, so the CLI can print one
readable paragraph instead of a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INPUT = 2
EXIT_BUDGET_MISSED = 3
EXIT_NEEDS_DEVICE = 4


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


class UnknownOptionError(InputError, TypeError):
    """The Python API got a keyword that is no option (exit 2); ``suggestions`` holds the
    closest option names. Also a TypeError, as Python's own unexpected-keyword error."""

    def __init__(self, problem: str, fix: str = "", name: str = "",
                 suggestions: list[str] | None = None) -> None:
        super().__init__(problem, fix)
        self.name = name
        self.suggestions = list(suggestions or [])


class StageFailure(EdgepruneError):
    """A pipeline check failed on valid input, e.g. ONNX parity (exit 1)."""

    exit_code = EXIT_INTERNAL


class DeviceRequired(EdgepruneError):
    """The artifact is built but nothing was measured: the target needs its device and none
    was given (exit 4). The message says how to build and profile it there."""

    exit_code = EXIT_NEEDS_DEVICE


class DeviceUnreachable(DeviceRequired):
    """A device was given but could not be reached over the network (exit 4)."""
