"""Peak memory of a compile with recovery on a 224² ImageFolder of 20,000 training images.

    python bench/streaming_memory.py [--train 20000] [--steps 300]

``edgeprune compile`` (prune 30% L1, recovery ``--recover-steps`` steps of batch 32 with
the default ``--decoded-cache-mb`` and ``--workers``, OpenVINO FP32) on the CIFAR-10
images upscaled to 224x224 JPEG (bench/streaming_data.py; made once, ~1 min), with a
2,000-image evaluation split. The whole process tree (the CLI, the training process, its
decode workers, the profiler) is sampled every 0.2 s: the peak of the summed RSS, of the
summed PSS (shared pages counted once: what the tree really holds), and the largest single
process. Keeping the training split decoded, as every split was before data/stream.py,
needs N x 3 x 224 x 224 x 4 bytes for its images alone (12.0 GB at 20,000).
Writes bench/results/streaming_memory.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.streaming_data import REPO, cifar224_folder, small224


class TreeSampler:
    """Peak summed RSS / PSS of a process and all its descendants."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.root = psutil.Process(pid)
        self.every = every
        self.peak_rss = self.peak_pss = self.peak_single = 0
        self.peak_processes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = pss = 0
            for proc in procs:
                try:
                    info = proc.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss += info.rss
                pss += info.pss
                self.peak_single = max(self.peak_single, info.rss)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_processes = max(self.peak_processes, len(procs))
            self.samples += 1
            self._stop.wait(self.every)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--test", type=int, default=2_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--output", type=Path,
                        default=REPO / "bench" / "results" / "streaming_memory.json")
    args = parser.parse_args()
    started = time.perf_counter()
    data = cifar224_folder(args.train, args.test)
    made = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="streaming-memory-") as tmp:
        model = Path(tmp) / "small224.pt"
        torch.manual_seed(0)
        torch.save(small224().state_dict(), model)
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "edgeprune", "compile", str(model),
               "--arch", "bench.streaming_data:small224", "--data", str(data),
               "--mean", "0.49,0.48,0.45", "--std", "0.25,0.24,0.26",
               "--prune", "l1", "--prune-ratio", "0.3", "--recover", "kd",
               "--recover-steps", str(args.steps), "--recover-batch", "32",
               "--max-drop", "100", "--iterations", "100", "--target", "openvino-cpu",
               "--out", str(out), "--quiet"]
        run_started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        with TreeSampler(proc.pid) as sampler:
            _, stderr = proc.communicate()
        seconds = time.perf_counter() - run_started
        if proc.returncode not in (0, 3):
            print(stderr[-3000:], file=sys.stderr)
            return 1
        recover = json.loads((out / "04-recover" / "metrics.json").read_text())
        load = json.loads((out / "01-load" / "metrics.json").read_text())
    training = recover["training"]
    images_bytes = args.train * 3 * 224 * 224 * 4
    result = {
        "command": " ".join(cmd[1:]),
        "machine": {"cpus": psutil.cpu_count(), "ram_gb": round(
            psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "torch": torch.__version__},
        "data": {"train_images": args.train, "eval_images": args.test, "size": "224x224 JPEG",
                 "what": "CIFAR-10 JPEG images upscaled 32->224 bicubic, JPEG q90",
                 "seconds_to_make_once": round(made, 1)},
        "model": "bench.streaming_data:small224 (random init: memory, not accuracy)",
        "exit_code": proc.returncode,
        "wall_seconds": round(seconds, 1),
        "recovery": {"steps": training["steps"], "seconds": round(training["seconds"], 1),
                     "augment": training["augment"], "data": training["data"]},
        "load_stage_summary": load.get("summary"),
        "peak_memory_gb": {
            "tree_rss_summed": round(sampler.peak_rss / 2**30, 2),
            "tree_pss_summed": round(sampler.peak_pss / 2**30, 2),
            "largest_process_rss": round(sampler.peak_single / 2**30, 2),
            "processes_at_most": sampler.peak_processes, "samples": sampler.samples},
        "in_memory_training_images_gb": round(images_bytes / 2**30, 2),
        "goal": "below 3 GB",
        "met": sampler.peak_rss < 3 * 2**30,  # the summed RSS: stricter than PSS
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
