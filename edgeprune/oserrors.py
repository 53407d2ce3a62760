"""Problems of the machine, not of edgeprune: a full disk, a denied permission, a read-only
file system, too many open files. They are exit 2 with the path and the fix, never
"internal error ... report it".

Libraries do not always keep the ``OSError``: on a full disk ``torch.save`` raises a
RuntimeError ("unexpected pos 100160 vs 100056"), OpenVINO and ONNX one from a C++ stream
("basic_ios::clear: iostream error"), a runtime may say "No space left on device" in its
own exception, and an exporter may wrap it again. ``environment_error`` finds the cause
in the exception chain, in the message, or -- when a stage failed for a reason that says
nothing -- in the free space left on the output folder's file system.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

# errno -> (what happened, how to fix it); {path} / {dir} are filled in
KNOWN: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device",
                   "free space there (df -h {dir}), or pass --out on a disk with room; "
                   "finished stages are kept, so the same command resumes"),
    errno.EDQUOT: ("the disk quota is exceeded",
                   "free space within your quota (quota -s), or pass --out elsewhere"),
    errno.EACCES: ("permission denied",
                   "check the owner and permissions (ls -ld {path}); run as the user who "
                   "owns it, or pass another --out"),
    errno.EPERM: ("operation not permitted",
                  "check the owner, permissions and attributes (ls -ld {path}; lsattr -d "
                  "{path}); or pass another --out"),
    errno.EROFS: ("the file system is read-only",
                  "pass --out on a writable file system"),
    errno.EMFILE: ("too many open files in this process",
                   "raise the limit (ulimit -n 4096) and run the same command again"),
    errno.ENFILE: ("too many open files on this system",
                   "close other programs (or raise fs.file-max) and run the same command again"),
    errno.EFBIG: ("a file is too large for the file system or the file size limit",
                  "check ulimit -f, or pass --out on another file system"),
    errno.EIO: ("an input/output error (the disk or network file system failed)",
                "check the disk (dmesg), then run the same command again"),
    errno.ENAMETOOLONG: ("a path is too long", "use a shorter --out path"),
    errno.ESTALE: ("a stale network file handle",
                   "remount the network file system, then run the same command again"),
}

# the same causes as libraries spell them in messages
MESSAGES = [
    (re.compile(r"no space left on device", re.I), errno.ENOSPC),
    (re.compile(r"disk quota exceeded", re.I), errno.EDQUOT),
    (re.compile(r"read-only file ?system", re.I), errno.EROFS),
    (re.compile(r"permission denied", re.I), errno.EACCES),
    (re.compile(r"operation not permitted", re.I), errno.EPERM),
    (re.compile(r"too many open files", re.I), errno.EMFILE),
]
# below this, a stage that failed with no reason of its own ran out of disk space
LOW_SPACE_BYTES = 1 << 20


class EnvironmentProblem(OSError):
    """An environment OSError found behind another exception (kept as ``detail``)."""

    detail = ""


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def free_bytes(path: Path) -> int | None:
    """Free space for this user on the file system holding ``path`` (or its parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def environment_error(exc: BaseException, out_dir: Path | None = None
                      ) -> EnvironmentProblem | None:
    """An ``OSError`` (errno, message, path: the file, else the output folder) when ``exc``
    was caused by the environment, else None. Call it before cleaning up, while the space
    the failed stage took is still taken."""
    where = str(out_dir) if out_dir is not None else None

    def problem(code: int, filename: str | None, inferred: bool) -> EnvironmentProblem:
        found = EnvironmentProblem(code, os.strerror(code), filename or where)
        if inferred:
            first = str(exc).splitlines()[0] if str(exc) else ""
            found.detail = f"{type(exc).__name__}: {first[:200]}"
        return found

    for link in _chain(exc):
        if isinstance(link, OSError) and link.errno in KNOWN:
            return problem(link.errno, link.filename, link is not exc)
    text = " ".join(str(link) for link in _chain(exc))
    for pattern, code in MESSAGES:
        if pattern.search(text):
            return problem(code, None, True)
    if out_dir is not None:
        free = free_bytes(out_dir)
        if free is not None and free < LOW_SPACE_BYTES:
            return problem(errno.ENOSPC, None, True)
    return None


def is_environment(exc: BaseException) -> bool:
    """True for an OSError whose errno is a problem of the machine (see KNOWN)."""
    return isinstance(exc, OSError) and exc.errno in KNOWN


def paragraph(exc: OSError, out_dir: Path | None = None) -> str:
    """The ``error:`` / ``fix:`` paragraph for an environment OSError."""
    what, fix = KNOWN[exc.errno]
    path = exc.filename or (str(out_dir) if out_dir else None)
    where = f" at {path}" if path else ""
    if exc.filename2:
        where += f" (and {exc.filename2})"
    folder = Path(path).parent if path and not Path(path).is_dir() else Path(path or ".")
    detail = ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = free_bytes(folder)
        if free is not None:
            detail = f"; {free / 1e6:.1f} MB free there now"
    text = f"error: {what}{where} ({exc.strerror or os.strerror(exc.errno)}{detail})"
    if getattr(exc, "detail", ""):
        text += f"\n  (it surfaced as {exc.detail})"
    fix = fix.format(path=path or ".", dir=folder)
    return f"{text}\n  fix: {fix}"
