"""Ctrl-C at random points of a short compile: every interrupt must exit 130 with nothing
half-written, and the same command again must finish with the report an uninterrupted run
writes (timings aside).

    python bench/ctrl_c_stress.py --interrupts 50

One uninterrupted reference run first (its wall time bounds the random delays), then per
trial a fresh output folder: start ``edgeprune compile``, wait a uniformly random time,
send SIGINT -- alternately to the whole process group (a terminal's Ctrl-C, which also hits
the profiler / worker children) and to the CLI's PID only (``kill -INT``) -- and check the
exit code (130), stderr (no traceback), the folder (no ``.partial`` stage, no temporary
file, no report unless the run had already written it); then re-run and compare the
report with the reference's. A trial whose run had already exited before the signal is not
counted (another delay is drawn). Writes bench/results/ctrl_c_stress.json.
The CI suite runs the same code with a few interrupts (tests/test_interrupt.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")
# what changes between two identical runs: measured times and where the run was written
TIMING_KEYS = {"created_at", "latency_ms", "latency_measured_ms", "speedup", "memory",
               "seconds", "status", "summary", "histogram", "speedup_vs_baseline"}


def fashion_npz(path: Path, count: int = 600) -> Path:
    """A real slice of the Fashion-MNIST test set (Debian's dataset-fashion-mnist)."""
    import numpy as np

    from edgeprune.data.idx import read_idx

    images = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[:count]
    labels = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")[:count]
    np.savez(path, images=images, labels=labels)
    return path


def compile_command(data: Path, out: Path, target: str, precision: str) -> list[str]:
    from edgeprune.examples.paths import checkpoint_path

    return [sys.executable, "-m", "edgeprune", "compile", str(checkpoint_path()),
            "--data", str(data), "--channels", "1", "--mean", "0.2860", "--std", "0.3530",
            "--calib-size", "50", "--iterations", "20", "--target", target,
            "--precision", precision, "--out", str(out), "--quiet"]


def _child_setup() -> None:
    # its own process group (so a "terminal Ctrl-C" can hit the whole group), and the
    # default SIGINT disposition a terminal's job meets (a shell that starts a job in the
    # background makes it ignore SIGINT, and children inherit that)
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def normalized(report: dict[str, Any], out: Path) -> Any:
    """The report without timings, and with the output folder written as OUT."""
    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items() if k not in TIMING_KEYS}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            return value.replace(str(out), "OUT")
        return value
    return walk(report)


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(a.keys() | b.keys()):
            out += diff(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def leftovers(out: Path) -> list[str]:
    """Half-written things: a stage's .partial folder, a temporary file."""
    if not out.exists():
        return []
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")
                  if p.name.endswith((".partial", ".tmp")) or ".trash" in p.name)


PF_EXITING = 0x4  # linux/sched.h: the task is in exit_group()


def _exiting(pid: int) -> bool:
    """Has the process already called exit? Tearing down a process that mapped PyTorch
    and OpenVINO takes milliseconds, during which ``poll()`` still says "running" but a
    signal can no longer reach it (its exit code is already decided)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    fields = stat[stat.rindex(")") + 2:].split()  # fields 3.. of proc(5): state, ppid, ...
    return fields[0] in "ZX" or bool(int(fields[6]) & PF_EXITING)


def _interrupt(cmd: list[str], env: dict, out: Path, delay: float, group: bool
               ) -> tuple[int | None, str, bool]:
    """Start the run, wait ``delay``, send SIGINT; (exit code, stderr, signal sent)."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_child_setup)
    time.sleep(delay)
    if proc.poll() is not None or _exiting(proc.pid):  # finished: not an interrupt
        _, stderr = proc.communicate()
        return proc.returncode, stderr, False
    if group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
    return proc.returncode, stderr, True


def stress(interrupts: int, work: Path, target: str = "openvino-cpu", precision: str = "int8",
           seed: int = 0, chain: bool = False, log=print) -> dict[str, Any]:
    """``interrupts`` SIGINTs at uniformly random times of ``edgeprune compile``.

    Independent trials (the default): every interrupted run is followed by a re-run that
    must complete with the reference report. ``chain=True`` (the quick CI version): the
    re-run of an interrupted run is itself interrupted at a random time, until one
    completes -- that completion must give the reference report -- then a new folder."""
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    data = fashion_npz(work / "fashion600.npz")
    ref_out = work / "reference"
    started = time.perf_counter()
    ref = subprocess.run(compile_command(data, ref_out, target, precision), cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    if ref.returncode != 0:
        raise RuntimeError(f"reference run failed ({ref.returncode}): {ref.stderr[-2000:]}")
    reference = normalized(json.loads((ref_out / "report.json").read_text()), ref_out)
    log(f"reference run: {wall:.1f} s")
    trials: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []  # chain mode: trials whose folder has not completed
    missed = folders = 0
    out = work / "trial-000"

    def completed(run_out: Path, code: int | None, stderr: str, waiting: list) -> None:
        differences = diff(reference, normalized(json.loads(
            (run_out / "report.json").read_text()), run_out)) if code == 0 else ["no report"]
        for trial in waiting:
            trial["rerun_exit_code"] = code
            trial["rerun_identical"] = not differences
            if differences:
                trial["differences"] = differences[:10]
                if code != 0:
                    trial["rerun_stderr_tail"] = stderr[-1500:]
            trial["ok"] = (trial["exit_code"] == 130 and not trial["traceback"]
                           and not trial["leftovers"] and trial["rerun_identical"])

    while len(trials) < interrupts:
        cmd = compile_command(data, out, target, precision)
        delay = rng.uniform(0.2, wall * 0.95)
        group = len(trials) % 2 == 0
        code, stderr, sent = _interrupt(cmd, env, out, delay, group)
        if not sent:
            if pending:  # a resumed run that completed: the chain's end
                completed(out, code, stderr, pending)
                log(f"    folder {folders} completed after {len(pending)} interrupts: exit "
                    f"{code}, {'identical' if pending[0]['rerun_identical'] else 'DIFFERENT'}")
                pending = []
            else:
                missed += 1
            shutil.rmtree(out, ignore_errors=True)
            folders += 1
            out = work / f"trial-{folders:03d}"
            continue
        stages = sorted(p.name for p in out.glob("[0-9][0-9]-*")) if out.exists() else []
        trial: dict[str, Any] = {
            "delay_s": round(delay, 3), "signal_to": "group" if group else "pid",
            "exit_code": code, "traceback": "Traceback" in stderr,
            "stages_done": len(stages), "leftovers": leftovers(out),
            "report_written": (out / "report.json").is_file(), "folder": folders,
        }
        if code != 130 or trial["traceback"]:
            trial["stderr_tail"] = stderr[-3000:]
        trials.append(trial)
        log(f"{len(trials):3d}/{interrupts} after {delay:5.2f} s to {trial['signal_to']:5}: "
            f"exit {code}, {len(stages)} stages kept")
        if chain:
            pending.append(trial)
            continue
        rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                               timeout=600)
        completed(out, rerun.returncode, rerun.stderr, [trial])
        log(f"    re-run exit {rerun.returncode}, "
            f"{'identical' if trial['rerun_identical'] else 'DIFFERENT'}")
        shutil.rmtree(out, ignore_errors=True)
        folders += 1
        out = work / f"trial-{folders:03d}"
    if pending:  # chain mode: finish the last folder
        rerun = subprocess.run(compile_command(data, out, target, precision), cwd=REPO,
                               env=env, capture_output=True, text=True, timeout=600)
        completed(out, rerun.returncode, rerun.stderr, pending)
    return {
        "interrupts": len(trials),
        "exited_130": sum(t["exit_code"] == 130 for t in trials),
        "clean": sum(not t["traceback"] and not t["leftovers"] for t in trials),
        "rerun_identical": sum(t["rerun_identical"] for t in trials),
        "all_ok": all(t["ok"] for t in trials),
        "mode": "chained" if chain else "independent",
        "finished_before_signal": missed,
        "reference_wall_s": round(wall, 2),
        "command": " ".join(compile_command(data, Path("OUT"), target, precision)[1:]),
        "trials": trials,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interrupts", type=int, default=50)
    parser.add_argument("--target", default="openvino-cpu")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chain", action="store_true",
                        help="interrupt the re-runs too (the quick CI version)")
    parser.add_argument("--output", type=Path,
                        default=REPO / "bench" / "results" / "ctrl_c_stress.json")
    args = parser.parse_args()
    from edgeprune.report.environment import environment

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeprune-ctrl-c-") as tmp:
        result = stress(args.interrupts, Path(tmp), args.target, args.precision, args.seed,
                        args.chain)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    result["environment"] = environment()
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['exited_130']}/{result['interrupts']} exited 130, "
          f"{result['rerun_identical']} re-runs identical -> {args.output}")
    return 0 if result["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
