"""The on-target profiler, run as its own process: ``python -m edgeprune.runner REQUEST``.

A separate process gives a clean peak-memory reading (its own max RSS) and keeps the
measured runtime free of the pipeline's PyTorch state. The same entry point runs on a
remote device, so local and remote numbers come from identical code.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.backends import get_backend
from edgeprune.measure import LoopSettings, histogram, summarize, time_loop


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc), 0 where unavailable."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize()
    except (OSError, IndexError, ValueError):
        return 0


def _peak_rss_bytes() -> int:
    """This process's RSS high-water mark (VmHWM). Not ru_maxrss: that one carries the
    parent's peak across fork+exec, so it would report the pipeline's PyTorch memory."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def profile(request: dict[str, Any]) -> dict[str, Any]:
    """Load the artifact, time it on the request's inputs, and report what ran."""
    backend = get_backend(request["backend"])
    inputs = np.load(request["inputs"])
    batch = int(request["batch"])
    x = np.ascontiguousarray(np.resize(inputs, (batch, *inputs.shape[1:])).astype(np.float32))
    rss_before = _rss_bytes()
    session = backend.load(
        Path(request["artifact"]), request["precision"], int(request["threads"]), batch,
        request.get("options", {}),
    )
    rss_loaded = _rss_bytes()
    settings = LoopSettings(**request["loop"])
    own_clock = getattr(session, "time_loop", None)  # e.g. TensorRT: CUDA events
    samples = own_clock(x, settings) if own_clock else time_loop(lambda: session.run(x),
                                                                 settings)
    peak = _peak_rss_bytes()
    return {
        "latency_ms": summarize(samples, batch),
        "histogram": histogram(samples),
        "samples_ms": [round(float(s), 5) for s in samples],
        "threads_requested": int(request["threads"]),
        "runtime": session.runtime_info(),
        "memory": {
            "rss_before_load_bytes": rss_before,
            "rss_after_load_bytes": rss_loaded,
            "peak_rss_bytes": peak,
            "model_load_delta_bytes": max(rss_loaded - rss_before, 0),
        },
    }


def predict(request: dict[str, Any]) -> dict[str, Any]:
    """Top-1 predictions of the artifact on the request's images, saved to its ``output``
    (accuracy measured in the device's own runtime when this runs on a device)."""
    backend = get_backend(request["backend"])
    images = np.load(request["inputs"])
    batch = int(request["batch"])
    session = backend.load(
        Path(request["artifact"]), request["precision"], int(request["threads"]), batch,
        request.get("options", {}),
    )
    preds = [session.run(np.ascontiguousarray(images[i:i + batch], dtype=np.float32)).argmax(1)
             for i in range(0, len(images), batch)]
    np.save(request["output"], np.concatenate(preds))
    return {"samples": len(images), "runtime": session.runtime_info()}


def table(request: dict[str, Any]) -> dict[str, Any]:
    """p50 of several artifacts in alternating rounds (the latency tables of
    edgeprune.prune.latency): ``p50_ms[round][artifact]``, so drift hits all alike."""
    backend = get_backend(request["backend"])
    inputs = np.load(request["inputs"])
    batch = int(request["batch"])
    x = np.ascontiguousarray(np.resize(inputs, (batch, *inputs.shape[1:])).astype(np.float32))
    sessions = [backend.load(Path(a), request["precision"], int(request["threads"]), batch,
                             request.get("options", {})) for a in request["artifacts"]]
    settings = LoopSettings(**request["loop"])
    # Full warm-up once per session; later rounds only re-warm the caches after the
    # other sessions ran, so many short rounds cost little and pair closely in time.
    burst = replace(settings, warmup_iterations=min(settings.warmup_iterations,
                                                    int(request.get("round_warmup", 3))))
    rounds = []
    for n in range(int(request.get("rounds", 3))):
        loop = settings if n == 0 else burst
        rounds.append([float(np.median(time_loop(lambda s=s: s.run(x), loop)))
                       for s in sessions])
    return {"p50_ms": rounds, "runtime": sessions[0].runtime_info() if sessions else {}}


COMMANDS = {"profile": profile, "predict": predict, "table": table}


def main(argv: list[str]) -> int:
    # Ctrl-C reaches the whole process group: the profiler just stops (no traceback); the
    # pipeline that started it reports the interrupt
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if len(argv) != 2 or argv[0] not in COMMANDS:
        print("usage: python -m edgeprune.runner profile|predict|table REQUEST.json",
              file=sys.stderr)
        return 2
    request = json.loads(Path(argv[1]).read_text())
    json.dump(COMMANDS[argv[0]](request), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
