"""One run per output folder: ``OUT/.lock``.

The lock is an ``fcntl.flock`` on the open file ``OUT/.lock``, which also records the
holder (PID, host, start time, command) for the message another run prints. The kernel
drops a flock when its holder exits in any way (kill -9 included), so a lock file left by
a killed run never blocks: the next run takes the lock and rewrites the file. A run that
finds the lock held exits 2 naming the holder, or, with ``--wait-lock``, waits for it.
The lock file is removed when the run ends (and with it the output folder, when the run
created it and left nothing else in it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from edgeprune.errors import InputError

LOCK_NAME = ".lock"


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder.get("pid"):
        return "another edgeprune run"
    return (f"edgeprune PID {holder['pid']} on {holder.get('host', '?')} (started "
            f"{holder.get('started', '?')}: {holder.get('command', '')})").replace(": )", ")")


@contextlib.contextmanager
def output_lock(out_dir: Path, wait: bool = False, poll_s: float = 0.5) -> Iterator[None]:
    """Hold ``OUT/.lock`` for the duration of a run."""
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_NAME
    announced = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = _holder(path)
            if not wait:
                raise InputError(
                    f"output directory {out_dir} is in use by {_describe(holder)}",
                    fix="wait for that run to finish (or stop it), pass --wait-lock to wait "
                    "for it, or use another --out",
                ) from None
            if not announced:
                print(f"waiting for {_describe(holder)} to release {out_dir} ...",
                      file=sys.stderr, flush=True)
                announced = True
            time.sleep(poll_s)
            continue
        # the holder before us may have removed the file after we opened it: then our
        # lock is on a file nobody else will find; start again on the current one
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(os.path.basename(a) if i == 0 else a
                                for i, a in enumerate(sys.argv))[:300],
        }).encode(), 0)
    except OSError:
        pass  # the lock holds without its description (e.g. a full disk)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # still holding the flock: a waiter re-checks the inode
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only succeeds when the run left nothing in it
