"""What every command shares: typer parameters built from the option table, error
handling (one paragraph and an exit code), and the run-and-print step."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeprune.errors import EXIT_INPUT, EXIT_INTERNAL, EdgepruneError
from edgeprune.options import Option, for_command

PANELS = {"model": "Model", "data": "Data", "target": "Target", "budget": "Budget",
          "pruning": "Pruning", "recovery": "Recovery", "quantization": "Quantization",
          "search": "Search", "device": "Device (over SSH)", "output": "Output"}
_TYPES: dict[str, Any] = {"str": str | None, "int": int | None, "float": float | None,
                          "path": Path | None, "csv": str | None, "json": str | None,
                          "multi": list[str] | None}


def _help_text(opt: Option) -> str:
    shown = opt.shown_default()
    choices = ""
    if opt.choices and not all(c in opt.help for c in opt.choices):
        choices = f" One of: {', '.join(opt.choices)}."
    return opt.help + choices + (f" [default: {shown}]" if shown else "")


def print_help(ctx: typer.Context, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        typer.echo(ctx.get_help())
        raise typer.Exit()


HELP = inspect.Parameter(
    "help_", inspect.Parameter.KEYWORD_ONLY, default=False,
    annotation=Annotated[bool, typer.Option("--help", "-h", is_eager=True, expose_value=False,
                                            callback=print_help, metavar="",
                                            rich_help_panel=PANELS["output"],
                                            help="Show this message and exit.")])


def parameter(opt: Option) -> inspect.Parameter:
    """The typer parameter of one option: no default of its own (None, or False for a
    flag: "not given"), so the table's default is the only one."""
    names = [opt.cli_flag, *([opt.short] if opt.short else [])]
    panel = PANELS[opt.group]
    if opt.kind == "bool":
        info = typer.Option(*names, help=_help_text(opt), metavar="", rich_help_panel=panel,
                            show_default=False)
        return inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, default=False,
                                 annotation=Annotated[bool, info])
    info = typer.Option(*names, help=_help_text(opt), metavar=opt.metavar or "VALUE",
                        rich_help_panel=panel, show_default=False)
    return inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[_TYPES[opt.kind], info])


def register(app: typer.Typer, name: str, body: Callable[[dict[str, Any]], None], *,
             doc: str, epilog: str, arguments: list[inspect.Parameter],
             options: list[Option] | None = None) -> None:
    """Add command ``name`` whose parameters are its arguments and the table's options for
    it; ``body`` receives them as one dict (name → value, None / False = not given)."""
    opts = for_command(name) if options is None else options
    params = [*arguments, *(parameter(o) for o in opts), HELP]

    def command(**values: Any) -> None:
        body(values)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = doc
    command.__name__ = name
    app.command(name, epilog=epilog, add_help_option=False)(command)


def guarded(debug: bool, body: Callable[[], int]) -> None:
    """Run a command; turn errors into one readable paragraph and the right exit code.
    Whatever an interrupt turned into on its way up (see edgeprune.interrupt), the exit is
    130."""
    from edgeprune import interrupt
    from edgeprune.oserrors import is_environment
    from edgeprune.oserrors import paragraph as os_paragraph

    debug = debug or os.environ.get("EDGEPRUNE_DEBUG") == "1"
    try:
        code = body()
    except typer.Exit:
        raise
    except BaseException as exc:
        if interrupt.interrupted() or isinstance(exc, KeyboardInterrupt):
            if debug and not isinstance(exc, KeyboardInterrupt):
                traceback.print_exc()
            interrupt.stopping()
            interrupt.report_once()
            raise typer.Exit(130) from None
        if not isinstance(exc, Exception):
            raise  # SystemExit, GeneratorExit
        if debug:
            traceback.print_exc()
        if isinstance(exc, EdgepruneError):
            typer.echo(exc.paragraph(), err=True)
            raise typer.Exit(exc.exit_code) from None
        if is_environment(exc):
            typer.echo(os_paragraph(exc), err=True)  # type: ignore[arg-type]
            raise typer.Exit(EXIT_INPUT) from None
        typer.echo(f"internal error: {type(exc).__name__}: {exc}\n  fix: re-run with --debug "
                   "for the traceback and report it", err=True)
        raise typer.Exit(EXIT_INTERNAL) from None
    raise typer.Exit(interrupt.exit_code(code))


@contextlib.contextmanager
def stdout_to_stderr(active: bool) -> Iterator[None]:
    """Under --json, stdout carries only the report: whatever libraries print (NNCF's
    progress, runtime logs written to fd 1) goes to stderr while the pipeline runs."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run_and_emit(config: Any, as_json: bool, quiet: bool, search: Any = None) -> int:
    """Run the compile pipeline (or the search), print the summary or the JSON report."""
    from rich.console import Console

    from edgeprune.job import run_compile
    from edgeprune.outlock import output_lock
    from edgeprune.report.console import print_summary
    from edgeprune.ui import UI

    with stdout_to_stderr(as_json), output_lock(config.out_dir, wait=config.wait_lock):
        if search is not None:
            from edgeprune.search import Search

            report, code = Search(config, search, UI(quiet or as_json)).run()
        else:
            report, code = run_compile(config, UI(quiet or as_json))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif not quiet:
        print_summary(report, Console(stderr=False))
    return code


def model_argument() -> inspect.Parameter:
    return inspect.Parameter(
        "model", inspect.Parameter.POSITIONAL_OR_KEYWORD,
        annotation=Annotated[Path, typer.Argument(
            help="Checkpoint: a state_dict, {'state_dict': ...} or {'model': ...}; `module.` "
            "prefixes are stripped.", metavar="MODEL", show_default=False)])
