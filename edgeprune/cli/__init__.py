"""The ``edgeprune`` command line: one module per command, each only translating argv into
the options of edgeprune.options (which declares every option once) and calling the
pipeline through edgeprune.configure.

Exit codes: 0 budget met, 3 budget missed, 2 usage or input error, 1 internal failure,
4 built but not measured (the target's device was not given or not reachable).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from edgeprune import __version__
from edgeprune.cli import compile, demo, prune, report, targets
from edgeprune.cli.common import print_help
from edgeprune.errors import EXIT_INPUT

app = typer.Typer(
    name="edgeprune",
    help="Prune, quantize, compile and prove a trained PyTorch vision model on an edge "
    "target.\n\nExit codes: 0 budget met, 3 budget missed, 2 usage or input error, "
    "1 internal failure, 4 built but not measured (the target's device was not given or not "
    "reachable).",
    no_args_is_help=True,
    add_completion=False,
    add_help_option=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeprune {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          metavar="", help="Print the version and exit.")]
    = False,
    help_: Annotated[bool, typer.Option("--help", "-h", callback=print_help, is_eager=True,
                                        expose_value=False, metavar="",
                                        help="Show this message and exit.")] = False,
) -> None:
    """edgeprune: compile a trained vision model for an edge target, within a budget."""


for _command in (compile, prune, report, targets, demo):
    _command.add(app)


def run() -> None:
    """Console-script entry point. SIGINT is handled from here on (edgeprune.interrupt): an
    interrupt anywhere -- even one click turned into "Aborted!" (exit 1) or one that came
    after the command's own handler -- ends the process with 130; the process ends without
    the interpreter's slow teardown (interrupt.finish)."""
    from edgeprune import interrupt

    interrupt.install()
    try:
        app()
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:
        code = 130
    interrupt.finish(code)


if __name__ == "__main__":
    sys.exit(run())

__all__ = ["EXIT_INPUT", "app", "run"]
