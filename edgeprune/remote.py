"""Run commands and move files on a Linux device over SSH, safely.

Uses the system ``ssh``/``scp`` (so ``~/.ssh/config``, agents and jump hosts work as the
user set them up) with key-based, non-interactive authentication and strict host-key
checking: an unknown or changed host key is an error, never silently trusted. Commands
are argument lists joined with ``shlex.join`` for the remote shell, so no user-supplied
string is ever interpolated unquoted. Every call has a timeout, and remote work happens in
a ``mktemp -d`` folder that is removed afterwards, also when the work failed.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.config import RemoteSettings
from edgeprune.errors import DeviceUnreachable, InputError, StageFailure

# [user@]host[:port]; host is a DNS name, an IPv4 address or a bracketed IPv6 address.
_DEVICE = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]{0,63})@)?"
    r"(?P<host>[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>\d{1,5}))?$"
)
_WORKDIR = re.compile(r"^/[A-Za-z0-9_./-]*/edgeprune\.[A-Za-z0-9]{8,}$")
_UNREACHABLE = (
    "Connection refused", "Connection timed out", "timed out", "No route to host",
    "Could not resolve hostname", "Network is unreachable", "Name or service not known",
    "Connection reset", "Connection closed by",
)
EXIT_MISSING_TOOL = 127  # POSIX shells: command not found


@dataclass(frozen=True)
class Address:
    """A parsed ``[user@]host[:port]`` device address."""

    host: str
    user: str = ""
    port: int = 22

    @property
    def destination(self) -> str:
        """``user@host`` for ssh (the port goes in ``-p``)."""
        host = self.host.strip("[]")
        return f"{self.user}@{host}" if self.user else host

    def __str__(self) -> str:
        text = self.destination
        return f"{text}:{self.port}" if self.port != 22 else text


def parse_address(spec: str) -> Address:
    """Validate a device address; anything that could be read as an option or shell syntax
    is refused here, before ssh ever sees it."""
    m = _DEVICE.match(spec.strip())
    port = int(m.group("port")) if m and m.group("port") else 22
    if not m or not 0 < port < 65536:
        raise InputError(
            f"--device {spec!r} is not a device address",
            fix="pass user@host or user@host:port, e.g. --device ubuntu@192.168.1.42 "
            "(a host name, IPv4 or [IPv6] address)",
        )
    return Address(host=m.group("host"), user=m.group("user") or "", port=port)


class RemoteError(InputError):
    """The device answered, but refused us or lacks something: a setup problem (exit 2)."""


class HostKeyError(RemoteError):
    """The host key is unknown or has changed: never trusted silently."""


class AuthError(RemoteError):
    """The key was refused (or unreadable)."""


class ToolMissing(RemoteError):
    """A program edgeprune needs is not installed on the device."""


@dataclass
class RemoteHost:
    """One device reachable over SSH, with the settings every call uses."""

    address: Address
    ssh_key: str = ""
    known_hosts: str = ""
    connect_timeout_s: int = 10
    python: str = "python3"
    ssh_config: str = ""  # "" = the user's ~/.ssh/config; "none" ignores it
    multiplex: bool = True  # one SSH connection for all calls (ControlMaster)
    cleaned: list[str] = field(default_factory=list)  # work dirs removed by this object
    _control_dir: str = field(default="", repr=False)

    def _control_path(self) -> str:
        """A private (0700) folder for the shared connection's socket, made on first use."""
        if not self._control_dir:
            self._control_dir = tempfile.mkdtemp(prefix="edgeprune-ssh-")
            atexit.register(self.close)
        return os.path.join(self._control_dir, "%C")

    def close(self) -> None:
        """Stop the shared connection (if any) and remove its socket folder."""
        if not self._control_dir:
            return
        subprocess.run(["ssh", *self._options(), "-O", "exit", "-p", str(self.address.port),
                        "--", self.address.destination], capture_output=True, timeout=10,
                       stdin=subprocess.DEVNULL, check=False)
        shutil.rmtree(self._control_dir, ignore_errors=True)
        self._control_dir = ""

    # --- argument lists ---------------------------------------------------------------
    def _options(self) -> list[str]:
        opts = [
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"ConnectTimeout={int(self.connect_timeout_s)}",
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=4",
            "-o", "PasswordAuthentication=no",
            "-o", "KbdInteractiveAuthentication=no",
        ]
        if self.ssh_config:
            opts[:0] = ["-F", self.ssh_config]
        if self.known_hosts:
            # Only this file decides, so a test or a CI pipeline pins exactly one key.
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}",
                     "-o", "GlobalKnownHostsFile=/dev/null"]
        if self.ssh_key:
            opts += ["-i", self.ssh_key, "-o", "IdentitiesOnly=yes"]
        if self.multiplex:
            # Later calls reuse the first (authenticated, host-key-checked) connection:
            # no handshake per command, which matters on a Jetson over Wi-Fi.
            opts += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_path()}",
                     "-o", "ControlPersist=60"]
        return opts

    def ssh_argv(self, remote_argv: Sequence[str]) -> list[str]:
        """The local ``ssh`` call running ``remote_argv`` (quoted for the remote shell)."""
        return ["ssh", *self._options(), "-p", str(self.address.port), "--",
                self.address.destination, shlex.join(remote_argv)]

    def scp_argv(self, sources: Sequence[str], target: str) -> list[str]:
        """The local ``scp`` call copying ``sources`` to ``target``."""
        return ["scp", "-q", "-B", *self._options(), "-P", str(self.address.port), "--",
                *sources, target]

    def _remote_path(self, path: str) -> str:
        host = self.address.host  # keeps IPv6 brackets, which scp needs
        user = f"{self.address.user}@" if self.address.user else ""
        return f"{user}{host}:{path}"

    # --- running ----------------------------------------------------------------------
    def run(self, remote_argv: Sequence[str], timeout: float, check: bool = True,
            what: str = "") -> subprocess.CompletedProcess[str]:
        """Run a command on the device; the remote side is bounded by ``timeout`` too (it
        is killed there, not left running when the connection drops)."""
        wrapped = ["timeout", "-k", "10", str(int(max(timeout, 1))), *remote_argv]
        proc = self._call(self.ssh_argv(wrapped), timeout + 20, what or remote_argv[0])
        if proc.returncode == 255:
            self._raise_ssh(proc.stderr)
        if check and proc.returncode != 0:
            self._raise_remote(proc, remote_argv, what)
        return proc

    def put(self, files: Sequence[Path], remote_dir: str, timeout: float = 300) -> None:
        """Copy local files into a remote folder (scp in SFTP mode: no remote shell)."""
        sources = [str(Path(f)) for f in files]
        proc = self._call(self.scp_argv(sources, self._remote_path(remote_dir + "/")),
                          timeout, "scp upload")
        if proc.returncode != 0:
            self._raise_scp(proc.stderr, "upload")

    def get(self, remote_files: Sequence[str], local_dir: Path, timeout: float = 300) -> None:
        """Copy remote files into a local folder."""
        local_dir.mkdir(parents=True, exist_ok=True)
        sources = [self._remote_path(f) for f in remote_files]
        proc = self._call(self.scp_argv(sources, str(local_dir) + "/"), timeout,
                          "scp download")
        if proc.returncode != 0:
            self._raise_scp(proc.stderr, "download")

    def _call(self, argv: list[str], timeout: float, what: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise StageFailure(
                f"{what} on {self.address} did not finish within {timeout:.0f} s",
                fix="check the device (load, thermal state) or raise the profile's "
                "[remote] command_timeout_s",
            ) from None
        except FileNotFoundError as exc:
            raise InputError(
                f"{exc.filename} is not installed on this machine",
                fix="install the OpenSSH client (Debian/Ubuntu: apt-get install "
                "openssh-client)",
            ) from None

    # --- work folders -----------------------------------------------------------------
    @contextmanager
    def workdir(self, timeout: float = 60) -> Iterator[str]:
        """A fresh remote folder, removed on exit whatever happened inside."""
        proc = self.run(["mktemp", "-d", "-t", "edgeprune.XXXXXXXXXX"], timeout,
                        what="mktemp")
        path = proc.stdout.strip()
        if not _WORKDIR.match(path):
            raise StageFailure(f"unexpected remote work folder {path!r} from mktemp on "
                               f"{self.address}", fix="check the device's TMPDIR")
        try:
            yield path
        finally:
            self.remove(path, timeout)

    def remove(self, path: str, timeout: float = 60) -> None:
        """Delete a work folder made by ``workdir`` (and only such a folder), and check that
        it is gone."""
        if not _WORKDIR.match(path):
            raise ValueError(f"refusing to delete {path!r}: not an edgeprune work folder")
        self.run(["sh", "-c", 'rm -rf -- "$1" && test ! -e "$1"', "sh", path], timeout,
                 what="cleanup")
        self.cleaned.append(path)

    def check_python(self, timeout: float = 60) -> str:
        """The device's edgeprune version through the configured interpreter, or a clear
        error saying what to install."""
        code = "import edgeprune, numpy; print(edgeprune.__version__)"
        proc = self.run([self.python, "-c", code], timeout, check=False, what="python check")
        if proc.returncode == 0:
            return proc.stdout.strip()
        missing = proc.returncode == EXIT_MISSING_TOOL or "No such file" in proc.stderr
        raise ToolMissing(
            f"{self.python!r} on {self.address} "
            + ("does not exist" if missing else "cannot import edgeprune/numpy")
            + f": {proc.stderr.strip()[-300:]}",
            fix=f"on the device: {self.python} -m pip install --no-deps edgeprune numpy "
            "(plus its runtime: openvino or onnxruntime), or point --remote-python at an "
            "interpreter that has it",
        )

    # --- error mapping ----------------------------------------------------------------
    def _raise_ssh(self, stderr: str) -> None:
        msg = stderr.strip()
        tail = msg.splitlines()[-1] if msg else "no message"
        kh = self.known_hosts or "~/.ssh/known_hosts"
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in msg:
            raise HostKeyError(
                f"the host key of {self.address} does not match the one in {kh}: the device "
                "was reinstalled, or someone is intercepting the connection",
                fix="check the new fingerprint on the device itself (ssh-keygen -lf "
                f"/etc/ssh/ssh_host_ed25519_key.pub), then remove the old entry with "
                f"ssh-keygen -R {shlex.quote(self._known_hosts_name())}"
                + (f" -f {shlex.quote(kh)}" if self.known_hosts else "")
                + " and connect once by hand to accept the verified key",
            )
        if "Host key verification failed" in msg or ("No " in msg and "host key is known" in msg):
            raise HostKeyError(
                f"{self.address} is not in {kh}; edgeprune never accepts an unknown host key",
                fix="verify the device's fingerprint, then add it: ssh-keyscan -p "
                f"{self.address.port} {shlex.quote(self.address.host.strip('[]'))} >> {kh} "
                "(compare with ssh-keygen -lf on the device), or pass --known-hosts FILE",
            )
        if "Permission denied" in msg or "Too many authentication failures" in msg:
            raise AuthError(
                f"{self.address} refused the SSH key"
                + (f" {self.ssh_key}" if self.ssh_key else "") + f" ({tail})",
                fix="install the public key on the device (ssh-copy-id -i KEY.pub "
                f"{self.address.destination}) or pass the right one with --ssh-key; "
                "password logins are not used (BatchMode)",
            )
        if ("Load key" in msg or "no such identity" in msg.lower()
                or "invalid format" in msg) and self.ssh_key:
            raise AuthError(f"cannot use the SSH key {self.ssh_key}: {tail}",
                            fix="pass a readable private key file with --ssh-key")
        if any(s in msg for s in _UNREACHABLE):
            raise DeviceUnreachable(
                f"cannot reach {self.address}: {tail}",
                fix="check that the device is on, on the network and runs sshd on port "
                f"{self.address.port} (try: ssh -p {self.address.port} "
                f"{self.address.destination} true)",
            )
        raise RemoteError(f"ssh to {self.address} failed: {msg[-500:] or 'exit 255'}",
                          fix=f"try by hand: ssh -p {self.address.port} "
                          f"{self.address.destination} true")

    def _known_hosts_name(self) -> str:
        host = self.address.host.strip("[]")
        return host if self.address.port == 22 else f"[{host}]:{self.address.port}"

    def _raise_scp(self, stderr: str, what: str) -> None:
        if "lost connection" in stderr or "ssh:" in stderr or "Host key" in stderr \
                or "Permission denied (publickey" in stderr:
            self._raise_ssh(stderr)
        raise StageFailure(f"scp {what} with {self.address} failed: {stderr.strip()[-500:]}",
                           fix="check free disk space and permissions under the device's "
                           "/tmp")

    def _raise_remote(self, proc: subprocess.CompletedProcess[str],
                      argv: Sequence[str], what: str) -> None:
        name = what or argv[0]
        if proc.returncode == EXIT_MISSING_TOOL:
            raise ToolMissing(f"{argv[0]!r} is not installed on {self.address}",
                              fix=f"install it on the device (it needs: {argv[0]})")
        if proc.returncode == 124:
            raise StageFailure(f"{name} on {self.address} timed out (killed on the device)",
                               fix="raise the profile's [remote] command_timeout_s")
        raise StageFailure(
            f"{name} failed on {self.address} (exit {proc.returncode}): "
            f"{proc.stderr.strip()[-1500:]}",
            fix="run the same command on the device by hand to see the full error",
        )


# --- the profiler process on the device -------------------------------------------------
def host_from_settings(settings: RemoteSettings) -> RemoteHost:
    """The RemoteHost for a profile's ``[remote]`` table; one per settings in a process, so
    all stages of a run share its SSH connection."""
    key = (settings.host, settings.ssh_key, settings.known_hosts, settings.connect_timeout_s,
           settings.python)
    if key not in _HOSTS:
        _HOSTS[key] = RemoteHost(
            address=parse_address(settings.host), ssh_key=settings.ssh_key,
            known_hosts=settings.known_hosts, connect_timeout_s=settings.connect_timeout_s,
            python=settings.python,
        )
    return _HOSTS[key]


def _runner(host: RemoteHost, wd: str, command: str, request: dict[str, Any],
            files: Sequence[Path], inputs: Path, timeout: float) -> dict[str, Any]:
    """Upload ``files`` + ``inputs`` + the request into ``wd`` and run
    ``PYTHON -m edgeprune.runner COMMAND request.json`` there; returns its JSON."""
    with tempfile.TemporaryDirectory(prefix="edgeprune-req-") as tmp:
        req_path = Path(tmp) / "request.json"
        req = {**request, "inputs": f"{wd}/{inputs.name}"}
        if command == "predict":
            req["output"] = f"{wd}/predictions.npy"
        req_path.write_text(json.dumps(req))
        host.put([*files, inputs, req_path], wd)
    proc = host.run([host.python, "-m", "edgeprune.runner", command, f"{wd}/request.json"],
                    timeout, check=False, what=f"edgeprune.runner {command}")
    if proc.returncode != 0:
        err = proc.stderr.strip()
        if proc.returncode == EXIT_MISSING_TOOL or "No module named 'edgeprune'" in err \
                or "No module named edgeprune" in err:
            host.check_python()  # raises ToolMissing with the install command
        raise StageFailure(
            f"the profiler failed on {host.address} (exit {proc.returncode}): {err[-2000:]}",
            fix="check that the device has the target's runtime installed for "
            f"{host.python} (e.g. pip install openvino / onnxruntime)",
        )
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise StageFailure(f"the device's profiler printed no JSON ({exc}): "
                           f"{proc.stdout[-500:]}", fix="run with --debug") from exc


def _record(host: RemoteHost, wd: str) -> dict[str, Any]:
    """Where the work ran, and whether its folder was removed (checked on the device)."""
    return {"host": str(host.address), "workdir": wd, "cleaned_up": wd in host.cleaned}


_HOSTS: dict[tuple[Any, ...], RemoteHost] = {}


def remote_profile(host: RemoteHost, request: dict[str, Any], files: Sequence[Path],
                   inputs: Path, timeout: float) -> dict[str, Any]:
    """Profile an artifact on the device with the same runner as a local profile."""
    with host.workdir() as wd:
        main = Path(request["artifact"]).name
        result = _runner(host, wd, "profile", {**request, "artifact": f"{wd}/{main}"}, files,
                         inputs, timeout)
    result["remote"] = _record(host, wd)
    return result


def run_table(host: RemoteHost, request: dict[str, Any], artifacts: Sequence[str],
              files: Sequence[Path], inputs: Path, timeout: float) -> dict[str, Any]:
    """Latency-table rounds on the device (``artifacts``: file names among ``files``)."""
    with host.workdir() as wd:
        result = _runner(host, wd, "table",
                         {**request, "artifacts": [f"{wd}/{a}" for a in artifacts]},
                         files, inputs, timeout)
    result["remote"] = _record(host, wd)
    return result


def run_runner(host: RemoteHost, wd: str, command: str, request: dict[str, Any],
               files: Sequence[Path], inputs: Path, timeout: float,
               local_dir: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """``predict`` in an open work folder: top-1 predictions and the runtime's facts."""
    out = _runner(host, wd, command, request, files, inputs, timeout)
    host.get([f"{wd}/predictions.npy"], local_dir)
    return np.load(local_dir / "predictions.npy"), out["runtime"]


def remote_predict(host: RemoteHost, request: dict[str, Any], files: Sequence[Path],
                   images: Path, timeout: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Top-1 predictions of an artifact on the device (accuracy in the device's runtime)."""
    with host.workdir() as wd, tempfile.TemporaryDirectory(prefix="edgeprune-pred-") as tmp:
        main = Path(request["artifact"]).name
        preds, runtime = run_runner(host, wd, "predict", {**request, "artifact": f"{wd}/{main}"},
                                    files, images, timeout, Path(tmp))
    runtime["remote"] = _record(host, wd)
    return preds, runtime
