"""The output folder: one run at a time (OUT/.lock), never inside the data, and problems of
the machine (full disk, read-only file system, permissions, open-file limit) reported as
exit 2 with the path and the fix -- with nothing half-written."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.test_bad_input import assert_bad_input, assert_input_error, assert_no_leftovers


def _start(args: list, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeprune", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)


def _wait_for(condition, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _complete_stages(out: Path) -> None:
    """Every committed stage folder is whole (its metrics.json written last)."""
    for stage in out.glob("[0-9][0-9]-*"):
        assert (stage / "metrics.json").is_file(), stage


@contextlib.contextmanager
def tmpfs(path: Path, *options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# --- where the output goes -------------------------------------------------------------------

def test_output_is_an_existing_file(compile_args, tiny_state_dict: Path, tmp_path: Path) -> None:
    target = tmp_path / "report.txt"
    target.write_text("mine")
    result = run_cli(*compile_args(tiny_state_dict, out=target))
    assert_input_error(result, "not writable", "not a directory")
    assert target.read_text() == "mine"


def test_output_inside_the_data_folder(compile_args, tiny_state_dict: Path, fashion_small: Path,
                                       tmp_path: Path) -> None:
    from PIL import Image

    data = tmp_path / "images"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        for i in range(20):
            Image.new("L", (28, 28), i).save(data / cls / f"{i}.png")
    args = compile_args(tiny_state_dict, out=data / "out")
    args[args.index("--data") + 1] = data
    assert_bad_input(run_cli(*args), data / "out", "inside the --data folder", "extra class")
    assert sorted(p.name for p in data.iterdir()) == ["a", "b"]


def test_output_on_a_read_only_file_system(compile_args, tiny_state_dict: Path,
                                           tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "size=1m", "ro") as mount:
        result = run_cli(*compile_args(tiny_state_dict, out=mount / "out"))
        assert_input_error(result, "read-only file system", "--out")


# --- the machine ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size", ["300k", "1000k"], ids=["fails-at-load", "fails-later"])
def test_disk_full(compile_args, fashion_ckpt: Path, tmp_path: Path, size: str) -> None:
    """ENOSPC on a tiny tmpfs, wherever it strikes (torch.save, the ONNX or OpenVINO
    writers say it in their own words): exit 2, the path and the fix; finished stages
    whole, no .partial folder, temporary file or lock left; then the same command with
    room finishes from there."""
    with tmpfs(tmp_path / "disk", f"size={size}") as mount:
        out = mount / "out"
        result = run_cli(*compile_args(fashion_ckpt, out=out))
        assert_input_error(result, "no space left on the device", str(out), "df -h")
        assert_no_leftovers(out)
        _complete_stages(out)
        kept = sorted(p.name for p in out.glob("[0-9][0-9]-*")) if out.exists() else []
        moved = tmp_path / "out"
        if kept:
            shutil.copytree(out, moved)
    if kept:  # the stages it finished are whole: a run with room reuses them
        result = run_cli(*compile_args(fashion_ckpt, "--quiet", out=moved))
        assert result.code == 0, result.stderr
        report = json.loads((moved / "report.json").read_text())
        assert {s["status"] for s in report["stages"][:len(kept)]} <= {"cached", "skipped"}


def test_permission_denied_in_the_output(compile_args, fashion_ckpt: Path,
                                         tmp_path: Path) -> None:
    """A stage folder that cannot be replaced (immutable here; the same path as one owned by
    another user): exit 2 naming it, the new stage's .partial folder removed."""
    out = tmp_path / "out"
    stage = out / "01-load"  # as a finished earlier run left it
    stage.mkdir(parents=True)
    (stage / "metrics.json").write_text("{}")
    if subprocess.run(["chattr", "+i", str(stage)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        result = run_cli(*compile_args(fashion_ckpt, "--fresh", out=out))
    finally:
        subprocess.run(["chattr", "-i", str(stage)], capture_output=True)
    assert_input_error(result, "not permitted", "01-load", "lsattr")
    assert_no_leftovers(out)
    _complete_stages(out)


def test_too_many_open_files(compile_args, fashion_ckpt: Path, tmp_path: Path) -> None:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (8, 8))

    out = tmp_path / "out"
    proc = _start(compile_args(fashion_ckpt, out=out), preexec_fn=limit)
    _, stderr = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("8 open files were enough for this run here")
    assert proc.returncode == 2, stderr
    assert "too many open files" in stderr and "ulimit -n" in stderr, stderr
    assert "Traceback" not in stderr
    _complete_stages(out)


# --- one run per output folder -------------------------------------------------------------------

def test_second_run_on_the_same_output_exits_2_or_waits(compile_args, fashion_ckpt: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    # a long latency loop keeps the first run busy while the second starts, however slow
    # the machine (the later --iterations wins over compile_args' 20)
    args = compile_args(fashion_ckpt, "--quiet", "--target", "onnxruntime-cpu",
                        "--iterations", "200000", out=out)
    first = _start(args)
    try:
        _wait_for(lambda: (out / "01-load").is_dir() or first.poll() is not None)
        assert first.poll() is None, first.communicate()
        second = run_cli(*args)
        assert_input_error(second, "in use by", f"PID {first.pid}", "--wait-lock")
        waiter = _start([*args, "--wait-lock"])
        assert first.wait(timeout=300) == 0, first.communicate()
        _, stderr = waiter.communicate(timeout=300)
        assert waiter.returncode == 0, stderr
        assert f"PID {first.pid}" in stderr and "waiting" in stderr
    finally:
        for proc in (first,):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    report = json.loads((out / "report.json").read_text())
    assert {s["status"] for s in report["stages"]} <= {"cached", "skipped"}
    assert_no_leftovers(out)


def test_lock_of_a_killed_run_does_not_block(compile_args, fashion_ckpt: Path,
                                             tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = compile_args(fashion_ckpt, "--quiet", "--target", "onnxruntime-cpu", out=out)
    first = _start(args)
    _wait_for(lambda: (out / "02-baseline").is_dir() or first.poll() is not None)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    holder = json.loads((out / ".lock").read_text())
    assert holder["pid"] == first.pid  # the stale lock file is still there
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    status = {s["name"]: s["status"] for s in
              json.loads((out / "report.json").read_text())["stages"]}
    assert status["load"] == "cached"
    assert_no_leftovers(out)


def test_prune_takes_the_lock_too(compile_args, fashion_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _start(compile_args(fashion_ckpt, "--quiet", "--target", "onnxruntime-cpu", out=out))
    try:
        _wait_for(lambda: ((out / ".lock").is_file() and (out / ".lock").read_text())
                  or first.poll() is not None)
        assert first.poll() is None
        args = compile_args(fashion_ckpt, "--prune-ratio", "0.3", out=out)
        args[0] = "prune"
        del args[args.index("--iterations"):args.index("--iterations") + 2]
        assert_input_error(run_cli(*args), "in use by", f"PID {first.pid}")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
