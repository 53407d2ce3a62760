"""The SSH remote runner against a REAL OpenSSH server on loopback.

The tests start their own ``/usr/sbin/sshd`` (throw-away host key and client key, a free
127.0.0.1 port, ``AuthorizedKeysFile`` in a temp folder) and stop it at the end. The
"device" is this machine: the remote side runs the real ONNX Runtime / OpenVINO profiler
through ``python -m edgeprune.runner`` with this venv's interpreter. CI needs the
``openssh-server`` package (the tests skip, saying so, without ``/usr/sbin/sshd``).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgeprune.errors import EXIT_NEEDS_DEVICE, DeviceUnreachable, StageFailure
from edgeprune.remote import (
    AuthError,
    HostKeyError,
    RemoteHost,
    ToolMissing,
    parse_address,
    remote_profile,
)
from tests.conftest import FASHION_ARGS, run_cli

SSHD = Path("/usr/sbin/sshd")
LOOP = {"warmup_iterations": 20, "min_iterations": 300, "min_seconds": 0.0,
        "max_seconds": 20.0}


@dataclass
class Sshd:
    """A running throw-away sshd and what a client needs to reach it."""

    port: int
    user: str
    key: Path
    known_hosts: Path
    host_pub: str
    dir: Path

    def host(self, **kw) -> RemoteHost:
        opts = {"ssh_key": str(self.key), "known_hosts": str(self.known_hosts),
                "python": sys.executable, "ssh_config": "none", **kw}
        return RemoteHost(parse_address(f"{self.user}@127.0.0.1:{self.port}"), **opts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeprune-test",
                    "-f", str(path)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def sshd() -> Iterator[Sshd]:
    if not SSHD.is_file():
        pytest.skip("/usr/sbin/sshd missing: apt-get install openssh-server")
    if shutil.which("ssh") is None or shutil.which("scp") is None:
        pytest.skip("OpenSSH client missing: apt-get install openssh-client")
    tmp = Path(tempfile.mkdtemp(prefix="edgeprune-sshd-"))
    _keygen(tmp / "host_key")
    _keygen(tmp / "id_test")
    (tmp / "authorized_keys").write_text((tmp / "id_test.pub").read_text())
    port = _free_port()
    host_pub = (tmp / "host_key.pub").read_text().split()
    (tmp / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (tmp / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {tmp}/host_key
AuthorizedKeysFile {tmp}/authorized_keys
PidFile {tmp}/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
""")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
    check = subprocess.run([str(SSHD), "-t", "-f", str(tmp / "sshd_config")],
                           capture_output=True, text=True)
    if check.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"sshd cannot run here: {check.stderr.strip()}")
    log = (tmp / "sshd.log").open("w")
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(tmp / "sshd_config")],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.terminate()
        pytest.skip(f"sshd did not start: {(tmp / 'sshd.log').read_text()[-500:]}")
    try:
        yield Sshd(port, getpass.getuser(), tmp / "id_test", tmp / "known_hosts",
                   " ".join(host_pub[:2]), tmp)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _leftover_workdirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("edgeprune.*"))


# --- addresses and argument lists (no server needed) ----------------------------------
@pytest.mark.parametrize("spec", ["-oProxyCommand=touch /tmp/x", "user@host;reboot",
                                  "a b@host", "user@-host", "user@host:99999", "$(id)@h",
                                  "user@host:22:1"])
def test_odd_device_addresses_are_refused_before_ssh(spec: str):
    from edgeprune.errors import InputError

    with pytest.raises(InputError, match="not a device address"):
        parse_address(spec)


def test_addresses_parse_and_commands_are_quoted():
    a = parse_address("nvidia@[fe80::1]:2222")
    assert (a.user, a.host, a.port) == ("nvidia", "[fe80::1]", 2222)
    assert a.destination == "nvidia@fe80::1"
    host = RemoteHost(parse_address("ubuntu@jetson.local"), known_hosts="/k", ssh_key="/id")
    argv = host.ssh_argv(["ls", "a b", "$(reboot)"])
    assert argv[0] == "ssh" and "--" in argv and argv[-2] == "ubuntu@jetson.local"
    assert argv[-1] == "ls 'a b' '$(reboot)'"
    for opt in ("BatchMode=yes", "StrictHostKeyChecking=yes", "UserKnownHostsFile=/k",
                "IdentitiesOnly=yes"):
        assert opt in argv


# --- against the real sshd ------------------------------------------------------------
def test_commands_run_quoted_and_nothing_is_interpolated(sshd: Sshd, tmp_path: Path):
    marker = tmp_path / "pwned"
    payload = f"a b; touch {marker} $(touch {marker}) `touch {marker}` 'q\" \\"
    out = sshd.host().run(["printf", "%s", payload], timeout=20)
    assert out.stdout == payload
    assert not marker.exists()


def test_workdir_is_removed_even_when_the_work_fails(sshd: Sshd):
    host = sshd.host()
    before = _leftover_workdirs()
    with pytest.raises(RuntimeError), host.workdir() as wd:
        assert Path(wd).is_dir()  # loopback: the device's /tmp is this /tmp
        raise RuntimeError("work failed")
    assert not Path(wd).exists() and host.cleaned == [wd]
    assert _leftover_workdirs() == before


def test_remote_profile_matches_local_and_cleans_up(sshd: Sshd, tmp_path: Path):
    """The same ONNX Runtime artifact profiled locally and through the loopback sshd."""
    from edgeprune.runner import profile as local_profile
    from tests.test_tensorrt import export_fashion_onnx

    onnx_path = export_fashion_onnx(tmp_path)
    inputs = tmp_path / "inputs.npy"
    np.save(inputs, np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype("f4"))
    request = {"backend": "onnxruntime", "artifact": str(onnx_path), "precision": "fp32",
               "threads": 1, "batch": 1, "options": {}, "inputs": str(inputs), "loop": LOOP}
    before = _leftover_workdirs()
    local = local_profile(request)
    remote = remote_profile(sshd.host(), request, [onnx_path], inputs, timeout=120)
    assert remote["remote"]["cleaned_up"] is True and not Path(remote["remote"]["workdir"]).exists()
    assert _leftover_workdirs() == before
    assert remote["runtime"]["runtime"] == "onnxruntime"
    lat_l, lat_r = local["latency_ms"], remote["latency_ms"]
    for lat in (lat_l, lat_r):
        assert lat["iterations"] >= 300 and lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"]
    # Same machine, same runner: the medians agree (tails on a shared CI box do not have to;
    # docs/remote.md has a longer comparison).
    assert 0.33 < lat_r["p50"] / lat_l["p50"] < 3.0, (lat_l["p50"], lat_r["p50"])


def test_unreachable_host(sshd: Sshd):
    host = sshd.host()
    closed = RemoteHost(parse_address(f"{sshd.user}@127.0.0.1:{_free_port()}"),
                        ssh_key=host.ssh_key, known_hosts=host.known_hosts, ssh_config="none",
                        connect_timeout_s=3)
    with pytest.raises(DeviceUnreachable, match="cannot reach") as err:
        closed.run(["true"], timeout=20)
    assert err.value.exit_code == EXIT_NEEDS_DEVICE
    assert "Connection refused" in err.value.problem


def test_bad_key_is_refused(sshd: Sshd, tmp_path: Path):
    _keygen(tmp_path / "other")
    with pytest.raises(AuthError, match="refused the SSH key") as err:
        sshd.host(ssh_key=str(tmp_path / "other")).run(["true"], timeout=20)
    assert "ssh-copy-id" in err.value.fix and err.value.exit_code == 2


def test_unknown_host_key_is_never_trusted(sshd: Sshd, tmp_path: Path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError, match="never accepts an unknown host key") as err:
        sshd.host(known_hosts=str(empty)).run(["true"], timeout=20)
    assert "ssh-keyscan" in err.value.fix
    assert empty.read_text() == ""  # nothing was added behind the user's back


def test_changed_host_key_is_refused(sshd: Sshd, tmp_path: Path):
    _keygen(tmp_path / "impostor")
    pub = (tmp_path / "impostor.pub").read_text().split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    with pytest.raises(HostKeyError, match="does not match") as err:
        sshd.host(known_hosts=str(kh)).run(["true"], timeout=20)
    assert "ssh-keygen -R" in err.value.fix


def test_missing_tool_and_python_on_the_device(sshd: Sshd):
    host = sshd.host(python="/nonexistent/python3")
    with pytest.raises(ToolMissing, match="is not installed"):
        host.run(["edgeprune-no-such-tool"], timeout=20)
    with pytest.raises(ToolMissing, match="does not exist") as err:
        host.check_python()
    assert "--remote-python" in err.value.fix


def test_command_timeout_kills_the_remote_side(sshd: Sshd):
    with pytest.raises(StageFailure, match="timed out"):
        sshd.host().run(["sleep", "30"], timeout=1)


def test_jetson_bundle_without_trtexec_on_the_device(sshd: Sshd, tmp_path: Path):
    """The real run.sh goes to the device, finds no trtexec there, and says so."""
    from edgeprune.backends.jetson import JetsonBackend
    from tests.test_tensorrt import make_bundle

    bundle = make_bundle(tmp_path, "fp16")
    before = _leftover_workdirs()
    with pytest.raises(ToolMissing, match="trtexec is not installed") as err:
        JetsonBackend().profile_on_device(sshd.host(), bundle / "manifest.json", LOOP,
                                          tmp_path / "logs", 60, lambda _: None)
    assert "nvidia-tensorrt" in err.value.fix
    assert _leftover_workdirs() == before
    facts = (tmp_path / "logs" / "facts.txt")
    assert not facts.exists()  # run.sh stops before touching the device's state


def test_cli_openvino_profiles_and_evaluates_on_the_device(sshd: Sshd, fashion_ckpt: Path,
                                                          fashion_small: Path, tmp_path: Path):
    """`edgeprune compile ... --target openvino-cpu --device user@127.0.0.1` end to end."""
    before = _leftover_workdirs()
    out = tmp_path / "out"
    result = run_cli(
        "compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS, "--target",
        "openvino-cpu", "--iterations", "150", "--calib-size", "100", "--threads", "1",
        "--eval-limit", "300", "--exporter", "torchscript",
        "--device", f"{sshd.user}@127.0.0.1:{sshd.port}", "--ssh-key", sshd.key,
        "--known-hosts", sshd.known_hosts, "--remote-python", sys.executable,
        "--out", out, "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    for side in ("baseline", "final"):
        lat = report[side]["latency_ms"]
        assert lat["iterations"] >= 150 and lat["p99"] is not None
    remote = report["final"]["runtime"]["remote"]  # accuracy measured on the device too
    assert remote["host"] == f"{sshd.user}@127.0.0.1:{sshd.port}" and remote["cleaned_up"]
    assert report["final"]["accuracy_runtime"] == "openvino"
    assert report["final"]["accuracy"] == pytest.approx(report["baseline"]["accuracy"], abs=0.5)
    profile = json.loads((out / "08-profile" / "metrics.json").read_text())
    assert profile["final"]["remote"]["cleaned_up"] and profile["baseline"]["remote"]["cleaned_up"]
    assert report["target"]["remote"]["host"].endswith(f":{sshd.port}")
    assert _leftover_workdirs() == before
