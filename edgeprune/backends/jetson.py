"""NVIDIA Jetson targets (Orin Nano, Orin NX, AGX Orin, Xavier NX).

TensorRT engines are tied to the TensorRT version and GPU they were built on, so compile
produces a deploy bundle instead of an engine: the ONNX (precision carried by Q/DQ or
float16 tensors), a manifest, and ``run.sh``, which builds the engine ON the device with
its own ``trtexec`` and profiles it there. With a device (``--device``/``[remote] host``)
edgeprune copies the bundle over SSH, runs it, and brings back trtexec's logs, per-iteration
times, tegrastats and the board's JetPack/L4T/power-mode facts; accuracy is measured there
too, through the engine the device built. Profiling needs only ``trtexec`` on the device;
accuracy needs Python with TensorRT's bindings (part of JetPack), numpy and edgeprune.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import __version__
from edgeprune.backends.base import CompileRequest, CompileResult
from edgeprune.backends.tensorrt import MANIFEST_SUFFIX, count_layer_precisions, effective
from edgeprune.backends.trt_prep import prepare_onnx, shape_spec
from edgeprune.errors import InputError, StageFailure
from edgeprune.measure import histogram, summarize
from edgeprune.parsers import jetson as jetson_facts
from edgeprune.parsers import tegrastats, trtexec
from edgeprune.remote import RemoteHost, ToolMissing, run_runner

PRECISIONS = ("fp32", "fp16", "int8")
BUNDLE = "bundle"
BUNDLE_FILES = ("model.onnx", "manifest.json", "run.sh", "README.txt")
OUTPUTS = ("facts.txt", "build.log", "profile.log", "times.json", "tegrastats.log",
           "layers.json")
DEFAULT_WARMUP_MS = 500
# run.sh exit codes (documented in the script header).
EXIT_NO_TRTEXEC, EXIT_UNSUPPORTED, EXIT_BUILD, EXIT_PROFILE = 127, 3, 10, 11


class DlaFallbackError(InputError):
    """``--dla-strict``: layers fell back from the DLA to the GPU (exit 2)."""


def _dla_core(options: dict[str, Any]) -> int | None:
    value = options.get("dla_core")
    return None if value is None or int(value) < 0 else int(value)


def build_args(major: int, precision: str, spec: str | None, workspace_mib: int,
               dla_core: int | None) -> list[str]:
    """trtexec arguments that build ``model.engine`` from the bundle for one TensorRT major.

    TensorRT 11 has no precision flags (the graph is strongly typed); 10 is asked for
    ``--stronglyTyped`` when the ONNX carries the precision; 8.5/8.6 (JetPack 5, Xavier)
    have no strong typing, so ``--int8`` lets the Q/DQ layers run in INT8 and ``--fp16`` the
    float16 graph in FP16. DLA needs the weakly typed path with ``--fp16``/``--int8`` (not
    available with TensorRT 11 on JetPack).
    """
    # --memPoolSize without a unit suffix: MiB in every trtexec from 8.4 to 11.
    args = ["--onnx=model.onnx", "--saveEngine=model.engine",
            "--skipInference" if major >= 10 else "--buildOnly",
            f"--memPoolSize=workspace:{int(workspace_mib)}", "--timingCacheFile=timing.cache",
            "--profilingVerbosity=detailed", "--exportLayerInfo=layers.json"]
    if spec:
        args += [f"--minShapes={spec}", f"--optShapes={spec}", f"--maxShapes={spec}"]
    if dla_core is not None:
        args += [f"--useDLACore={dla_core}", "--allowGPUFallback", "--fp16"]
        if precision == "int8":
            args.append("--int8")
    elif major >= 11:
        pass
    elif major >= 10:
        args.append("--noTF32" if precision == "fp32" else "--stronglyTyped")
    else:
        args.append({"fp32": "--noTF32", "fp16": "--fp16", "int8": "--int8"}[precision])
    return args


def run_args(spec: str | None, dla_core: int | None, cuda_graph: bool) -> list[str]:
    """trtexec arguments that profile the built engine (loop sizes come from run.sh)."""
    args = ["--loadEngine=model.engine", "--useSpinWait", "--exportTimes=times.json"]
    if spec:
        args.append(f"--shapes={spec}")
    if dla_core is not None:
        args.append(f"--useDLACore={dla_core}")
    if cuda_graph:
        args.append("--useCudaGraph")
    return args


_RUN_SH = r"""#!/bin/sh
# edgeprune Jetson bundle: builds the TensorRT engine ON this device with its own trtexec
# (engines are not portable across TensorRT versions or GPUs), then profiles it.
#
#   sh run.sh [build|profile|all] [ITERATIONS] [SECONDS] [WARMUP_MS]
#
# Writes next to itself: model.engine, timing.cache, layers.json, build.log, profile.log,
# times.json (one record per inference), tegrastats.log, facts.txt.
# Exit codes: 0 ok, 2 bad arguments, 3 TensorRT/DLA combination not supported,
# 10 engine build failed, 11 profiling failed, 127 trtexec not found (set TRTEXEC=path).
set -u
cd "$(dirname "$0")" || exit 2
MODE=${1:-all}; ITER=${2:-@ITER@}; SECS=${3:-@SECS@}; WARM=${4:-@WARM@}
for n in "$ITER" "$SECS" "$WARM"; do
  case $n in
    ''|*[!0-9]*) echo "edgeprune: ITERATIONS SECONDS WARMUP_MS must be integers" >&2; exit 2 ;;
  esac
done
TRTEXEC=${TRTEXEC:-}
if [ -z "$TRTEXEC" ]; then
  for c in trtexec /usr/src/tensorrt/bin/trtexec /usr/local/tensorrt/bin/trtexec \
           /opt/tensorrt/bin/trtexec; do
    if command -v "$c" >/dev/null 2>&1; then TRTEXEC=$(command -v "$c"); break; fi
  done
fi
if [ -z "$TRTEXEC" ] || ! command -v "$TRTEXEC" >/dev/null 2>&1; then
  echo "edgeprune: trtexec not found (looked in PATH, /usr/src/tensorrt/bin," \
       "/usr/local/tensorrt/bin, /opt/tensorrt/bin); install TensorRT" \
       "(JetPack: sudo apt install nvidia-tensorrt) or set TRTEXEC=/path/to/trtexec" >&2
  exit 127
fi
BANNER=$("$TRTEXEC" --help 2>&1 | head -n 1)
PACKED=$(echo "$BANNER" | sed -n 's/.*\[TensorRT v\([0-9][0-9]*\)\].*/\1/p')
if [ -z "$PACKED" ]; then
  echo "edgeprune: cannot read the TensorRT version from: $BANNER" >&2; exit 3
fi
if [ "$PACKED" -ge 100000 ]; then MAJOR=$((PACKED / 10000)); else MAJOR=$((PACKED / 1000)); fi
{
  echo "== trtexec"; echo "$TRTEXEC"; echo "$BANNER"
  echo "== nv_tegra_release"; cat /etc/nv_tegra_release 2>/dev/null
  echo "== jetpack"; dpkg-query -W -f='${Version}\n' nvidia-jetpack 2>/dev/null
  echo "== model"; tr -d '\000' < /proc/device-tree/model 2>/dev/null; echo
  echo "== nvpmodel"; nvpmodel -q 2>/dev/null
  echo "== jetson_clocks"
  jetson_clocks --show 2>/dev/null || sudo -n jetson_clocks --show 2>/dev/null
  echo "== end"
} > facts.txt 2>/dev/null
build() {
  if [ "$MAJOR" -lt 8 ]; then
    echo "edgeprune: TensorRT $MAJOR is too old; need TensorRT 8.5+ (JetPack 5.1+)" >&2
    return 3
  fi
  if [ "$MAJOR" -ge 11 ]; then
    @DLA11@
    "$TRTEXEC" @BUILD11@ > build.log 2>&1 || return 10
  elif [ "$MAJOR" -ge 10 ]; then
    "$TRTEXEC" @BUILD10@ > build.log 2>&1 || return 10
  else
    "$TRTEXEC" @BUILD8@ > build.log 2>&1 || return 10
  fi
}
profile() {
  if [ ! -f model.engine ]; then
    echo "edgeprune: no model.engine; run: sh run.sh build" >&2; return 11
  fi
  TEG=""
  if command -v tegrastats >/dev/null 2>&1; then
    tegrastats --interval 100 > tegrastats.log 2>&1 &
    TEG=$!
  fi
  "$TRTEXEC" @RUN@ --warmUp="$WARM" --iterations="$ITER" --duration="$SECS" \
    > profile.log 2>&1
  RC=$?
  if [ -n "$TEG" ]; then kill "$TEG" 2>/dev/null; wait "$TEG" 2>/dev/null; fi
  [ "$RC" -eq 0 ] || return 11
}
case "$MODE" in
  build) build ;;
  profile) profile ;;
  all) build && profile ;;
  *) echo "edgeprune: mode must be build, profile or all" >&2; exit 2 ;;
esac
"""

_README = """edgeprune deploy bundle for {target} ({precision}, batch {batch})

The engine is built ON the device: TensorRT engines only run on the TensorRT version and
GPU they were built with. Copy this folder to the device and run it there (from the
folder that holds it):

  scp -r {bundle} USER@DEVICE:edgeprune-bundle
  ssh USER@DEVICE sh edgeprune-bundle/run.sh all {iterations} {seconds} {warmup}

or let edgeprune do it, collect the numbers and evaluate accuracy on the device:

  edgeprune compile ... --target {target} --device USER@DEVICE

model.onnx    sha256 {sha256}; precision carried by: {carrier}
manifest.json what this bundle is and the exact trtexec arguments per TensorRT version
run.sh        build + profile (needs only trtexec; tegrastats/nvpmodel facts if present)
"""


def write_bundle(request: CompileRequest, bundle: Path) -> dict[str, Any]:
    """ONNX + manifest + run.sh + README for the device; returns the manifest."""
    options = request.options
    bundle.mkdir(parents=True, exist_ok=True)
    prep = prepare_onnx(request.onnx_path, bundle / "model.onnx", request.precision,
                        request.calibration, options)
    facts = prep.pop("onnx")
    batch = int(options.get("batch", 1))
    dynamic = not isinstance(facts["input"]["dims"][0], int)
    if not dynamic and facts["input"]["dims"][0] != batch:
        raise InputError(f"the ONNX has a fixed batch of {facts['input']['dims'][0]}, the "
                         f"target profile asks for {batch}",
                         fix="export with a dynamic batch or set --batch to match")
    spec = shape_spec(facts, batch) if dynamic else None
    if not dynamic:
        shape_spec(facts, batch)  # validates the name and C, H, W all the same
    dla = _dla_core(options)
    if dla is not None and request.precision == "fp32":
        raise InputError("the DLA runs fp16 or int8 only, not fp32",
                         fix="use --precision int8 (or fp16) with --dla-core")
    workspace = int(options.get("workspace_mib", 1024))
    loop = options.get("profile", {})
    iterations = int(loop.get("min_iterations", 1000))
    seconds = max(round(float(loop.get("min_seconds", 2.0))), 1)
    args = {str(major): build_args(major, request.precision, spec, workspace, dla)
            for major in (8, 10, 11)}
    run = run_args(spec, dla, bool(options.get("use_cuda_graph", False)))
    manifest = {
        "format": "edgeprune-jetson-bundle/1",
        "edgeprune": __version__,
        "target": options.get("target_name", "jetson"),
        "device": {k: options.get(k) for k in ("module", "compute_capability", "dla_cores",
                                               "jetpack")},
        "precision": request.precision,
        "batch": batch,
        "onnx": {"file": "model.onnx", **facts},
        "precision_details": prep,
        "dla_core": dla,
        "dla_strict": bool(options.get("dla_strict", False)),
        "workspace_mib": workspace,
        "trtexec_path": options.get("trtexec") or None,
        "trtexec": {"build": args, "profile": run,
                    "profile_loop": {"iterations": iterations, "duration_s": seconds,
                                     "warmup_ms": DEFAULT_WARMUP_MS}},
        "engine": "built on the device by run.sh (model.engine)",
    }
    dla11 = ('echo "edgeprune: TensorRT $MAJOR has no DLA support on JetPack; drop '
             '--dla-core" >&2; return 3' if dla is not None else ":")
    script = (_RUN_SH.replace("@BUILD8@", shlex.join(args["8"]))
              .replace("@BUILD10@", shlex.join(args["10"]))
              .replace("@BUILD11@", shlex.join(args["11"])).replace("@RUN@", shlex.join(run))
              .replace("@DLA11@", dla11).replace("@ITER@", str(iterations))
              .replace("@SECS@", str(seconds)).replace("@WARM@", str(DEFAULT_WARMUP_MS)))
    (bundle / "run.sh").write_text(script)
    (bundle / "run.sh").chmod(0o755)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (bundle / "README.txt").write_text(_README.format(
        target=manifest["target"], precision=request.precision, batch=batch, bundle=bundle.name,
        iterations=iterations, seconds=seconds, warmup=DEFAULT_WARMUP_MS,
        sha256=facts["sha256"], carrier=prep["precision_carrier"]))
    return manifest


def device_commands(bundle: Path, host: str = "USER@DEVICE") -> list[str]:
    """The exact commands that build and profile the bundle on the device by hand."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    loop = manifest["trtexec"]["profile_loop"]
    dest = "edgeprune-bundle"
    return [
        f"scp -r {shlex.quote(str(bundle))} {host}:{dest}",
        f"ssh {host} sh {dest}/run.sh all {loop['iterations']} {loop['duration_s']} "
        f"{loop['warmup_ms']}",
    ]


def split_facts(text: str) -> dict[str, str]:
    """facts.txt sections (``== name`` headers) as a dict."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("== "):
            current = line[3:].strip()
            sections[current] = []
        elif current:
            sections[current].append(line)
    return {k: "\n".join(v).strip() for k, v in sections.items()}


def board_facts(text: str) -> dict[str, Any]:
    """JetPack/L4T/TensorRT versions, module, power mode and clock state from facts.txt."""
    s = split_facts(text)
    trt_lines = s.get("trtexec", "").splitlines()
    return {
        "module": s.get("model") or None,
        "l4t": jetson_facts.parse_l4t(s.get("nv_tegra_release", "")),
        "jetpack": jetson_facts.parse_jetpack(s.get("jetpack", "")),
        "tensorrt": trtexec.parse_version(s.get("trtexec", "")),
        "trtexec": trt_lines[0] if trt_lines else None,
        "nvpmodel": jetson_facts.parse_nvpmodel(s.get("nvpmodel", "")),
        "jetson_clocks": jetson_facts.parse_jetson_clocks(s.get("jetson_clocks", "")),
    }


def engine_manifest(bundle_manifest: dict[str, Any], build_log: str,
                    facts: dict[str, Any]) -> dict[str, Any]:
    """The manifest of an engine trtexec built on the device (what it is pinned to)."""
    device = trtexec.parse_device(build_log)
    version = trtexec.parse_version(build_log) or facts.get("tensorrt")
    if not version or not device.get("name"):
        raise StageFailure("cannot read the TensorRT version and GPU from trtexec's build log",
                           fix="look at build.log in the profile stage's device-logs folder")
    return {
        "format": "edgeprune-tensorrt-engine/1",
        "tensorrt": version,
        "device": device,
        "onnx": {"file": "model.onnx", "sha256": bundle_manifest["onnx"]["sha256"]},
        "precision": bundle_manifest["precision"],
        "input": {"name": bundle_manifest["onnx"]["input"]["name"],
                  "shape": [bundle_manifest["batch"],
                            *bundle_manifest["onnx"]["input"]["dims"][1:]]},
        "dla_core": bundle_manifest.get("dla_core"),
        "built_by": "trtexec on the device",
        "jetson": {k: facts.get(k) for k in ("module", "l4t", "jetpack")},
    }


def dla_report(bundle_manifest: dict[str, Any], build_log: str,
               warn: Callable[[str], None]) -> dict[str, Any] | None:
    """Audit a DLA build: which layers fell back to the GPU; warn, or fail when strict."""
    if bundle_manifest.get("dla_core") is None:
        return None
    audit = trtexec.dla_audit(trtexec.parse_layer_placement(build_log))
    audit["dla_core"] = bundle_manifest["dla_core"]
    if audit["gpu_fallback_count"]:
        names = ", ".join(audit["gpu_fallback_layers"][:8])
        more = audit["gpu_fallback_count"] - 8
        text = (f"{audit['gpu_fallback_count']} layer(s) fell back from DLA "
                f"{audit['dla_core']} to the GPU: {names}" + (f" (+{more} more)" if more > 0
                                                               else ""))
        if bundle_manifest.get("dla_strict"):
            raise DlaFallbackError(text, fix="drop --dla-strict to accept GPU fallback, or "
                                   "replace the unsupported layers (see the DLA supported "
                                   "layers list in the TensorRT docs)")
        warn(text)
    return audit


def profile_result(files: dict[str, Path], bundle_manifest: dict[str, Any],
                   warn: Callable[[str], None]) -> dict[str, Any]:
    """Turn the files the device produced into the runner's result shape (same keys as a
    local profile), plus trtexec's own summary, tegrastats and the board facts."""
    text = {name: p.read_text(errors="replace") for name, p in files.items()
            if p.suffix != ".json" or name == "times.json"}
    if "times.json" not in files:
        raise StageFailure("trtexec wrote no per-iteration times (times.json)",
                           fix="look at profile.log in the profile stage's device-logs folder")
    times = trtexec.parse_export_times(text["times.json"])
    batch = int(bundle_manifest["batch"])
    samples = np.asarray(times["latency"], dtype=np.float64)
    facts = board_facts(text.get("facts.txt", ""))
    build_log = text.get("build.log", "")
    layers = (count_layer_precisions(json.loads(files["layers.json"].read_text()))
              if "layers.json" in files else {})
    summary = trtexec.parse_summary(text.get("profile.log", ""))
    teg = tegrastats.summarize(tegrastats.parse_log(text.get("tegrastats.log", ""))) \
        if "tegrastats.log" in files else {"samples": 0, "notes": ["tegrastats not found"]}
    for note in teg.get("notes", []):
        warn(f"tegrastats: {note}")
    return {
        "latency_ms": summarize(samples, batch),
        "histogram": histogram(samples),
        "samples_ms": [round(float(s), 5) for s in samples],
        "threads_requested": 0,
        "runtime": {
            "runtime": "tensorrt (trtexec on the device)",
            "version": facts["tensorrt"] or trtexec.parse_version(build_log),
            "device": trtexec.parse_device(build_log).get("name"),
            "compute_capability": trtexec.parse_device(build_log).get("compute_capability"),
            "batch": batch,
            "layer_precisions": layers,
            "effective_precision": effective(layers),
            "timing": "trtexec --exportTimes: H2D + GPU compute + D2H per inference",
            "jetson": facts,
            "dla": dla_report(bundle_manifest, build_log, warn),
        },
        "memory": {},
        "trtexec": summary.to_dict(),
        "tegrastats": teg,
    }


def _raise_run_failure(code: int, files: dict[str, Path], host: RemoteHost, err: str) -> None:
    tail = ""
    for name in ("build.log", "profile.log"):
        if name in files:
            tail = "\n".join(files[name].read_text(errors="replace").splitlines()[-15:])
    if code == EXIT_NO_TRTEXEC:
        raise ToolMissing(f"trtexec is not installed on {host.address}: {err.strip()[-400:]}",
                          fix="install TensorRT on the device (JetPack: sudo apt install "
                          "nvidia-tensorrt), or set options.trtexec / TRTEXEC to its path")
    if code == EXIT_UNSUPPORTED:
        raise InputError(f"the device cannot build this bundle: {err.strip()[-400:]}",
                         fix="use JetPack 5.1 or newer (TensorRT 8.5+); the DLA needs "
                         "TensorRT 8.5-10")
    what = "building the engine" if code == EXIT_BUILD else "profiling"
    raise StageFailure(f"{what} on {host.address} failed (run.sh exit {code}):\n{tail}",
                       fix="see build.log/profile.log in the stage's device-logs folder")


class DeviceRun:
    """One bundle on the device: upload, run.sh, fetch outputs (a fresh work dir each)."""

    def __init__(self, host: RemoteHost, bundle: Path, log_dir: Path, timeout: float) -> None:
        self.host, self.bundle, self.log_dir, self.timeout = host, bundle, log_dir, timeout
        self.manifest = json.loads((bundle / "manifest.json").read_text())

    def _env(self) -> list[str]:
        trt = self.manifest.get("trtexec_path")
        return ["env", f"TRTEXEC={trt}"] if trt else []

    def script(self, wd: str, mode: str, loop: dict[str, Any]) -> dict[str, Path]:
        """Run ``run.sh MODE`` in ``wd`` and fetch what it wrote."""
        iterations = str(max(int(loop.get("min_iterations", 1000)), 1))
        seconds = str(max(round(float(loop.get("min_seconds", 2.0))), 0))
        argv = [*self._env(), "sh", f"{wd}/run.sh", mode, iterations, seconds,
                str(DEFAULT_WARMUP_MS)]
        proc = self.host.run(argv, self.timeout, check=False, what="run.sh")
        listing = self.host.run(["ls", "-1", wd], 60).stdout.split()
        wanted = [f for f in OUTPUTS if f in listing]
        if wanted:
            self.host.get([f"{wd}/{f}" for f in wanted], self.log_dir)
        files = {f: self.log_dir / f for f in wanted}
        if proc.returncode != 0:
            _raise_run_failure(proc.returncode, files, self.host, proc.stderr)
        return files


class JetsonBackend:
    """A Jetson module reached over SSH; compile makes the bundle, the device builds it."""

    name = "jetson"
    needs_device = True

    def available(self) -> tuple[bool, str]:
        """Making the bundle needs onnx (+ onnxruntime to insert Q/DQ); nothing from NVIDIA."""
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return False, f"onnx/onnxruntime not importable: {exc}"
        return True, ""

    def compile(self, request: CompileRequest) -> CompileResult:
        if request.precision not in PRECISIONS:
            raise InputError(f"Jetson targets support {', '.join(PRECISIONS)}, not "
                             f"{request.precision!r}", fix="use --precision fp16 or int8")
        bundle = request.out_dir / BUNDLE
        manifest = write_bundle(request, bundle)
        return CompileResult(
            artifact=f"{BUNDLE}/manifest.json",
            files=[f"{BUNDLE}/{f}" for f in BUNDLE_FILES],
            precision_requested=request.precision,
            details={"bundle": BUNDLE, "onnx_sha256": manifest["onnx"]["sha256"],
                     "precision_details": manifest["precision_details"],
                     "trtexec_build_args": manifest["trtexec"]["build"],
                     "dla_core": manifest["dla_core"]},
        )

    def device_commands(self, bundle: Path, host: str) -> list[str]:
        """How to build and profile the bundle on the device by hand."""
        return device_commands(bundle, host)

    def load(self, artifact: Path, precision: str, threads: int, batch: int,
             options: dict[str, Any]) -> Any:
        raise InputError("a Jetson bundle has no engine on this machine: the device builds "
                         "and runs it", fix="pass --device user@jetson to measure on the device")

    def profile_on_device(self, host: RemoteHost, artifact: Path, loop: dict[str, Any],
                          log_dir: Path, timeout: float,
                          warn: Callable[[str], None]) -> dict[str, Any]:
        """Build on the device, profile with trtexec + tegrastats, parse what came back."""
        run = DeviceRun(host, artifact.parent, log_dir, timeout)
        with host.workdir() as wd:
            host.put([artifact.parent / f for f in BUNDLE_FILES], wd)
            files = run.script(wd, "all", loop)
        result = profile_result(files, run.manifest, warn)
        result["remote"] = {"host": str(host.address), "workdir": wd,
                            "cleaned_up": wd in host.cleaned, "logs": str(log_dir)}
        return result

    def predict_on_device(self, host: RemoteHost, artifact: Path, images: Path,
                          log_dir: Path, timeout: float) -> tuple[np.ndarray, dict[str, Any]]:
        """Build the engine on the device, then top-1 predictions through it (runner
        ``predict`` with the TensorRT backend, engine checked against its manifest)."""
        run = DeviceRun(host, artifact.parent, log_dir, timeout)
        with host.workdir() as wd:
            host.put([artifact.parent / f for f in BUNDLE_FILES], wd)
            files = run.script(wd, "build", {})
            facts = board_facts(files["facts.txt"].read_text()) if "facts.txt" in files else {}
            manifest = engine_manifest(run.manifest, files["build.log"].read_text(), facts)
            sidecar = log_dir / ("model.engine" + MANIFEST_SUFFIX)
            sidecar.write_text(json.dumps(manifest, indent=2) + "\n")
            request = {"backend": "tensorrt", "artifact": f"{wd}/model.engine",
                       "precision": run.manifest["precision"], "threads": 0,
                       "batch": run.manifest["batch"], "options": {}}
            preds, runtime = run_runner(host, wd, "predict", request,
                                        [sidecar], images, timeout, log_dir)
        runtime["jetson"] = facts
        runtime["remote"] = {"host": str(host.address), "workdir": wd,
                             "cleaned_up": wd in host.cleaned}
        return preds, runtime
