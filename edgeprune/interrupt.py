"""Ctrl-C that always stops a run: exit 130, finished stages kept, nothing half-written.

Python turns SIGINT into a ``KeyboardInterrupt`` raised wherever the main thread happens
to be, and library code can lose it there: an ``except SomeError`` clause whose own
expression fails (``torch.onnx``'s capture strategies match ``torch._dynamo.exc.UserError``
-- a KeyboardInterrupt during the lazy ``import torch._dynamo`` leaves that attribute
missing, so the match raises an AttributeError that replaces the interrupt, the exporter
records a failed strategy and falls back to the next one), a ``__del__`` or callback whose
exceptions are "ignored", a C extension that clears the error, click turning it into
"Aborted!" with exit 1. The interrupt then comes out as an internal error, or the run just
goes on.

Two defences:

- The interrupt is not raised in the middle of an import (nor inside a ``held()`` region
  such as the ONNX export): a KeyboardInterrupt there leaves half-initialized modules and
  C extensions behind (seen: the AttributeError above; a segfault in protobuf's C module
  when the interrupted ``import onnxscript`` was used again). The handler looks at the
  interrupted frames; inside an import it defers, and a SIGALRM every 50 ms raises the
  interrupt as soon as the import is over.
- The handler also *records* the signal. Whatever became of the exception, the run stops
  at the next checkpoint (``check``: between stages, between evaluation batches, before a
  stage's output is committed, before the report is written), a stage that saw an
  interrupt is never committed (a library may have fallen back to another path), and the
  command's exit code is 130 (``exit_code``). While the run is already stopping
  (``stopping``), more SIGINTs are only counted, so its clean-up (removing a stage's
  ``.partial`` folder) is not cut short; a third one while stopping ends the process at
  once.

The handler is installed even when the process was started with SIGINT ignored (a shell
starts background jobs that way, and children inherit it): a run must be stoppable with
``kill -INT``, and the children it starts after installing (the profiler, training
workers) then get the default disposition on exec instead of an inherited "ignore".
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

EXIT_INTERRUPTED = 130
MESSAGE = ("interrupted: finished stages are kept under the output directory; run the same "
           "command again to resume")


class _State:
    count = 0  # SIGINTs received
    stopping = False  # the run is already on its way out: count, do not raise
    deferred = False  # an interrupt waits for the end of an import / a held region
    hold = 0  # depth of ``held()`` regions
    installed = False
    reported = False  # the "interrupted" message has been printed
    previous_alarm: Any = None


_state = _State()
IMPORT_FRAMES = "<frozen importlib._bootstrap"
RETRY_S = 0.05


def _unsafe(frame: Any) -> bool:
    """Is the main thread inside a module's import (or a ``held()`` region)? A
    KeyboardInterrupt there leaves half-initialized modules (and C extensions) behind:
    the code that goes on to use them fails for another reason, or crashes."""
    if _state.hold:
        return True
    while frame is not None:
        if frame.f_code.co_filename.startswith(IMPORT_FRAMES):
            return True
        frame = frame.f_back
    return False


def _handler(signum: int, frame: Any) -> None:
    _state.count += 1
    if _state.stopping:
        if _state.count >= 3:  # Ctrl-C three times: stop now, whatever it leaves behind
            os._exit(EXIT_INTERRUPTED)
        return
    if _unsafe(frame):
        _defer()
        return
    raise KeyboardInterrupt


def _defer() -> None:
    """Deliver the interrupt as soon as the import (or held region) is over: re-checked
    every RETRY_S by SIGALRM."""
    if _state.deferred:
        return
    _state.deferred = True
    _state.previous_alarm = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, RETRY_S, RETRY_S)


def _undefer() -> None:
    if _state.deferred:
        _state.deferred = False
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, _state.previous_alarm or signal.SIG_DFL)


def _alarm(signum: int, frame: Any) -> None:
    if _state.stopping:
        _undefer()
        return
    if _unsafe(frame):
        return
    _undefer()
    raise KeyboardInterrupt


def install() -> None:
    """Handle SIGINT in this process (idempotent; main thread only)."""
    if _state.installed:
        return
    try:
        signal.signal(signal.SIGINT, _handler)
    except ValueError:  # not the main thread (e.g. embedded in another program)
        return
    _state.installed = True
    os.register_at_fork(after_in_child=_forked)


def _forked() -> None:
    """A process forked from the run (multiprocessing: OpenVINO's telemetry sender, data
    loader workers) gets the default SIGINT: on Ctrl-C it just ends -- the run reports
    the interrupt -- instead of raising a KeyboardInterrupt with a traceback of its own."""
    with contextlib.suppress(ValueError, OSError):
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """A region a KeyboardInterrupt must not cut short (a library that would turn it into
    another error or a fallback path); an interrupt inside is raised when it ends."""
    _state.hold += 1
    try:
        yield
    finally:
        _state.hold -= 1
    if not _state.hold and _state.deferred and not _state.stopping:
        _undefer()
        raise KeyboardInterrupt


def interrupted() -> bool:
    """A SIGINT arrived (whether or not its KeyboardInterrupt survived)."""
    return _state.count > 0


def check() -> None:
    """Raise the interrupt again if one arrived and was lost on the way."""
    if _state.count and not _state.stopping:
        raise KeyboardInterrupt


def stopping() -> None:
    """The run is stopping because of an interrupt: further SIGINTs only count."""
    _state.stopping = True
    _undefer()


def report_once() -> None:
    """Print the interrupted message (once)."""
    if not _state.reported:
        _state.reported = True
        with contextlib.suppress(OSError, ValueError):
            print(MESSAGE, file=sys.stderr, flush=True)


def exit_code(code: int | None) -> int | None:
    """The exit code of a command: 130 whenever an interrupt arrived."""
    if _state.count:
        stopping()
        report_once()
        return EXIT_INTERRUPTED
    return code


def finish(code: Any) -> None:
    """End the process with the command's exit code (130 after any interrupt), without
    the interpreter's teardown. With PyTorch, OpenVINO and their threads loaded that
    teardown takes a few hundred ms, and a SIGINT in it -- after Python has put back the
    default handler -- killed the process by the signal (a report written, yet no exit
    code: seen in about one Ctrl-C in twenty)."""
    stopping()
    if isinstance(code, str):
        with contextlib.suppress(OSError, ValueError):
            print(code, file=sys.stderr)
        code = 1
    final = exit_code(code if isinstance(code, int) else 0)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    # A SIGINT from here on would be seen by the C handler but its Python handler would
    # never run (no more bytecode after os._exit's arguments): block it and look at it.
    with contextlib.suppress(ValueError, OSError, AttributeError):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        if signal.SIGINT in signal.sigpending():
            _state.count += 1
    os._exit(final if _state.count == 0 else EXIT_INTERRUPTED)
