"""Heartbeat lines for CI logs: when stderr is not a terminal, long work prints a plain
line at least every EDGEPRUNE_HEARTBEAT_S seconds, also while one slow step runs."""

from __future__ import annotations

import io
import itertools
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from edgeprune.ui import UI, heartbeat_interval, heartbeat_line
from tests.conftest import FASHION_ARGS, REPO

ANSI = re.compile(r"\x1b\[")
BEAT = "[heartbeat]"


class SlowStream(io.StringIO):
    """A non-tty stream that records when each line arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            for line in text.splitlines():
                self.lines.append((time.monotonic(), line))
            return super().write(text)


def test_a_single_slow_step_still_beats(monkeypatch) -> None:
    n = 0.4
    monkeypatch.setenv("EDGEPRUNE_HEARTBEAT_S", str(n))
    stream = SlowStream()
    ui = UI(file=stream)
    assert not ui.console.is_terminal
    with ui.task("sensitivity analysis (dscore)", 4) as advance:
        advance(1)
        started = time.monotonic()
        time.sleep(3 * n)  # one advance() that takes 3 N: no call meanwhile
        ended = time.monotonic()
        advance(1)
    during = [line for t, line in stream.lines if started < t <= ended and BEAT in line]
    assert len(during) >= 2, stream.getvalue()
    assert "sensitivity analysis (dscore): 1/4 (25%)" in during[0]
    assert "elapsed" in during[0] and "ETA" in during[0]
    assert not ANSI.search(stream.getvalue())
    # the thread stops with the task: nothing more once the context exited
    count = len(stream.lines)
    time.sleep(2 * n)
    assert len(stream.lines) == count
    assert stream.lines[-1][1].endswith("s") and "2/4 in" in stream.lines[-1][1]


def test_short_work_and_quiet_print_nothing(monkeypatch) -> None:
    monkeypatch.setenv("EDGEPRUNE_HEARTBEAT_S", "0.5")
    stream = SlowStream()
    with UI(file=stream).task("quick", 10) as advance:
        advance(10)
    quiet = SlowStream()
    with UI(quiet=True, file=quiet).task("slow but quiet", None):
        time.sleep(0.8)
    assert stream.getvalue() == "" and quiet.getvalue() == ""


def test_interval_and_line_format(monkeypatch) -> None:
    monkeypatch.delenv("EDGEPRUNE_HEARTBEAT_S", raising=False)
    assert heartbeat_interval() == 30.0
    for raw, expected in (("2.5", 2.5), ("0", None), ("-1", None), ("soon", 30.0),
                          ("nan", 30.0)):
        monkeypatch.setenv("EDGEPRUNE_HEARTBEAT_S", raw)
        assert heartbeat_interval() == expected
    assert (heartbeat_line("sensitivity analysis", 120, 400, 31.0)
            == "   [heartbeat] sensitivity analysis: 120/400 (30%), 31 s elapsed, ETA 72 s")
    assert heartbeat_line("recovery", 0, None, 5) == "   [heartbeat] recovery: working, 5 s elapsed"
    assert "7 done" in heartbeat_line("recovery", 7, None, 5)
    # a total learnt late (training knows its step count once it starts)
    stream = SlowStream()
    monkeypatch.setenv("EDGEPRUNE_HEARTBEAT_S", "0.3")
    with UI(file=stream).task("recovery (kd)", None) as advance:
        advance(5, total=20)
        time.sleep(0.5)
    assert "recovery (kd): 5/20 (25%)" in stream.getvalue()


def test_compile_run_beats_in_a_ci_log(fashion_ckpt: Path, fashion_small: Path,
                                       tmp_path: Path) -> None:
    """The real CLI with stderr on a pipe and a baseline profile that runs 4 s (a target
    profile with min_seconds = 4): heartbeats appear, and no two stderr lines of the
    baseline stage are more than 2 N apart."""
    n = 1.0
    profile = (REPO / "targets" / "openvino-cpu.toml").read_text()
    profile = (profile.replace('name = "openvino-cpu"', 'name = "openvino-cpu-slow"')
               .replace("min_iterations = 1000", "min_iterations = 20")
               .replace("min_seconds = 2.0", "min_seconds = 4.0")
               .replace("max_seconds = 30.0", "max_seconds = 5.0"))
    target = tmp_path / "slow.toml"
    target.write_text(profile)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeprune", "compile", str(fashion_ckpt), "--arch",
         "fashion_cnn", "--data", str(fashion_small), *FASHION_ARGS, "--calib-size", "50",
         "--target", str(target), "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "EDGEPRUNE_HEARTBEAT_S": str(n)})
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append((time.monotonic(), line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    watchdog = threading.Timer(180, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        stdout = proc.stdout.read()
        proc.wait()
    finally:
        watchdog.cancel()
    reader.join(timeout=10)
    log = "\n".join(line for _, line in lines)
    assert proc.returncode == 0, log
    assert not ANSI.search(log)
    assert BEAT not in stdout
    assert any(BEAT in line and "profiling dense FP32 baseline" in line for _, line in lines), log
    assert any(BEAT in line and "profiling final vs baseline" in line for _, line in lines), log
    # the baseline stage: from its first heartbeat to its header line
    load = next(i for i, (_, line) in enumerate(lines) if line.startswith("01 load"))
    first = next(i for i, (_, line) in enumerate(lines) if i > load and BEAT in line)
    header = next(i for i, (_, line) in enumerate(lines) if line.startswith("02 baseline"))
    window = lines[first:header + 1]
    assert sum(BEAT in line for _, line in window) >= 3, log
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(window)]
    assert max(gaps) <= 2 * n, (gaps, log)


def test_a_task_that_fails_says_it_stopped(monkeypatch) -> None:
    monkeypatch.setenv("EDGEPRUNE_HEARTBEAT_S", "0.2")
    stream = SlowStream()
    try:
        with UI(file=stream).task("recovery (kd)", 10) as advance:
            advance(3)
            time.sleep(0.5)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert "recovery (kd): stopped after" in stream.lines[-1][1]
    assert stream.lines[-1][1].endswith("at 3/10")


def test_back_to_back_short_tasks_leave_no_long_silence(monkeypatch) -> None:
    """Each task is shorter than N, yet the log still gets a line about every N: the
    heartbeat counts from the log's last line, not from the task's start."""
    n = 0.5
    monkeypatch.setenv("EDGEPRUNE_HEARTBEAT_S", str(n))
    stream = SlowStream()
    ui = UI(file=stream)
    started = time.monotonic()
    for i in range(5):
        with ui.task(f"step {i}", None):
            time.sleep(0.7 * n)
    ended = time.monotonic()
    times = [started, *(t for t, _ in stream.lines), ended]
    assert len(stream.lines) >= 2, stream.getvalue()
    assert max(b - a for a, b in itertools.pairwise(times)) < 1.6 * n, stream.getvalue()
