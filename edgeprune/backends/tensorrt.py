"""TensorRT on an NVIDIA GPU (TensorRT 10.x and 11.x Python API).

The engine is built from the ONNX prepared by ``trt_prep`` (precision carried by Q/DQ or
float16 tensors, strongly typed), with a persistent timing cache, a workspace limit and the
profile's input shape. Engines are tied to the TensorRT version and the GPU, so every
engine has a manifest (TensorRT version, GPU name, compute capability, ONNX hash) and
loading one anywhere else is refused with a message instead of failing obscurely.
Latency is timed with CUDA events around H2D copy, execution and D2H copy.

CUDA is reached through the driver API (``libcuda.so.1``) with ctypes, so no extra CUDA
Python package is needed; it is present wherever an NVIDIA driver is (desktop or Jetson).
"""

from __future__ import annotations

import ctypes
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.backends.base import CompileRequest, CompileResult
from edgeprune.backends.trt_prep import input_shape, onnx_facts, prepare_onnx
from edgeprune.errors import InputError, StageFailure

PRECISIONS = ("fp32", "fp16", "int8")
MANIFEST_SUFFIX = ".manifest.json"
DEFAULT_WORKSPACE_MIB = 1024
DEFAULT_TIMING_CACHE = "~/.cache/edgeprune/tensorrt-timing.cache"
_CC_MAJOR, _CC_MINOR = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR/MINOR


class EngineMismatch(InputError):
    """An engine built for another TensorRT version or GPU (exit 2)."""


def same_version(a: str, b: str) -> bool:
    """TensorRT versions equal up to the patch level (``10.3.0`` == ``10.3.0.30``)."""
    return a.split(".")[:3] == b.split(".")[:3]


def check_manifest(manifest: dict[str, Any], runtime: dict[str, Any]) -> None:
    """Refuse an engine whose manifest does not match this TensorRT and GPU."""
    problems = []
    built, here = manifest.get("tensorrt", "?"), runtime.get("tensorrt", "?")
    if not same_version(str(built), str(here)):
        problems.append(f"TensorRT {built} (this machine has {here})")
    dev, here_dev = manifest.get("device", {}), runtime.get("device", {})
    if dev.get("name") != here_dev.get("name"):
        problems.append(f"GPU {dev.get('name')!r} (this one is {here_dev.get('name')!r})")
    if str(dev.get("compute_capability")) != str(here_dev.get("compute_capability")):
        problems.append(f"compute capability {dev.get('compute_capability')} (this GPU: "
                        f"{here_dev.get('compute_capability')})")
    if problems:
        raise EngineMismatch(
            "this TensorRT engine was built for " + "; ".join(problems) + ". TensorRT "
            "engines only run on the TensorRT version and GPU model they were built with",
            fix="rebuild it here: re-run edgeprune compile on this machine (the ONNX is kept "
            "next to the engine), or for a Jetson let the device build it (--device)",
        )


class CudaDriver:
    """The few CUDA driver calls a TensorRT session needs (device 0, primary context)."""

    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL("libcuda.so.1")
        except OSError as exc:
            raise RuntimeError(f"no NVIDIA driver (libcuda.so.1): {exc}") from None
        self._ok(self.lib.cuInit(0), "cuInit")
        self.dev = ctypes.c_int()
        self._ok(self.lib.cuDeviceGet(ctypes.byref(self.dev), 0), "cuDeviceGet")
        self.ctx = ctypes.c_void_p()
        self._ok(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(self.ctx), self.dev),
                 "cuDevicePrimaryCtxRetain")
        self._ok(self.lib.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")

    @staticmethod
    def _ok(status: int, call: str) -> None:
        if status != 0:
            raise RuntimeError(f"CUDA driver call {call} failed with error {status}")

    def facts(self) -> dict[str, str]:
        """GPU name and compute capability, as trtexec reports them."""
        name = ctypes.create_string_buffer(256)
        self._ok(self.lib.cuDeviceGetName(name, 256, self.dev), "cuDeviceGetName")
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._ok(self.lib.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, self.dev), "cc")
        self._ok(self.lib.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, self.dev), "cc")
        return {"name": name.value.decode(), "compute_capability": f"{major.value}.{minor.value}"}

    def alloc(self, nbytes: int) -> int:
        ptr = ctypes.c_uint64()
        self._ok(self.lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(nbytes)), "cuMemAlloc")
        return ptr.value

    def host_alloc(self, nbytes: int) -> ctypes.c_void_p:
        ptr = ctypes.c_void_p()
        self._ok(self.lib.cuMemAllocHost_v2(ctypes.byref(ptr), ctypes.c_size_t(nbytes)),
                 "cuMemAllocHost")
        return ptr

    def stream(self) -> ctypes.c_void_p:
        s = ctypes.c_void_p()
        self._ok(self.lib.cuStreamCreate(ctypes.byref(s), 0), "cuStreamCreate")
        return s

    def event(self) -> ctypes.c_void_p:
        e = ctypes.c_void_p()
        self._ok(self.lib.cuEventCreate(ctypes.byref(e), 0), "cuEventCreate")
        return e

    def htod(self, dst: int, src: ctypes.c_void_p, nbytes: int, stream: ctypes.c_void_p) -> None:
        self._ok(self.lib.cuMemcpyHtoDAsync_v2(ctypes.c_uint64(dst), src,
                                               ctypes.c_size_t(nbytes), stream), "HtoD")

    def dtoh(self, dst: ctypes.c_void_p, src: int, nbytes: int, stream: ctypes.c_void_p) -> None:
        self._ok(self.lib.cuMemcpyDtoHAsync_v2(dst, ctypes.c_uint64(src),
                                               ctypes.c_size_t(nbytes), stream), "DtoH")

    def record(self, event: ctypes.c_void_p, stream: ctypes.c_void_p) -> None:
        self._ok(self.lib.cuEventRecord(event, stream), "cuEventRecord")

    def elapsed_ms(self, start: ctypes.c_void_p, end: ctypes.c_void_p) -> float:
        self._ok(self.lib.cuEventSynchronize(end), "cuEventSynchronize")
        ms = ctypes.c_float()
        self._ok(self.lib.cuEventElapsedTime(ctypes.byref(ms), start, end), "cuEventElapsed")
        return float(ms.value)

    def sync(self, stream: ctypes.c_void_p) -> None:
        self._ok(self.lib.cuStreamSynchronize(stream), "cuStreamSynchronize")


def runtime_facts() -> dict[str, Any]:
    """This machine's TensorRT version and GPU (what an engine manifest is checked against)."""
    import tensorrt as trt

    return {"tensorrt": trt.__version__, "device": CudaDriver().facts()}


def _major(trt: Any) -> int:
    return int(trt.__version__.split(".")[0])


def _network_flags(trt: Any, precision: str) -> tuple[int, bool]:
    """Strong typing: always on in TensorRT 11; asked for in 10 when the ONNX carries the
    precision (Q/DQ or float16), so TensorRT keeps exactly the types of the graph."""
    if _major(trt) >= 11:
        return 0, True
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if precision in ("int8", "fp16") and flag is not None:
        return 1 << int(flag), True
    return 0, False


def _timing_cache_path(options: dict[str, Any]) -> Path:
    path = Path(str(options.get("timing_cache", DEFAULT_TIMING_CACHE))).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def build_engine(onnx_path: Path, engine_path: Path, precision: str, batch: int,
                 options: dict[str, Any]) -> dict[str, Any]:
    """Build and save a serialized engine; returns its manifest."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags, strongly_typed = _network_flags(trt, precision)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise StageFailure(f"TensorRT cannot parse {onnx_path.name}: {errors}",
                           fix="check the ONNX opset and operators against TensorRT's ONNX "
                           "support matrix")
    facts = onnx_facts(onnx_path)
    shape = input_shape(facts, batch)
    config = builder.create_builder_config()
    workspace = int(options.get("workspace_mib", DEFAULT_WORKSPACE_MIB))
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace << 20)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32, not TF32 tensor cores
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    profile = builder.create_optimization_profile()
    profile.set_shape(facts["input"]["name"], shape, shape, shape)
    config.add_optimization_profile(profile)
    cache_path = _timing_cache_path(options)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise StageFailure(f"TensorRT could not build an engine from {onnx_path.name}",
                           fix="re-run with --debug; try a larger workspace_mib in the profile")
    build_s = time.perf_counter() - started
    engine_path.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    manifest = {
        "format": "edgeprune-tensorrt-engine/1",
        **runtime_facts(),
        "onnx": {"file": onnx_path.name, "sha256": facts["sha256"]},
        "precision": precision,
        "strongly_typed": strongly_typed,
        "input": {"name": facts["input"]["name"], "shape": shape},
        "workspace_mib": workspace,
        "timing_cache": str(cache_path),
        "build_seconds": round(build_s, 3),
        "built_by": "tensorrt python api",
    }
    engine_path.with_name(engine_path.name + MANIFEST_SUFFIX).write_text(
        json.dumps(manifest, indent=2) + "\n")
    return manifest


def count_layer_precisions(info: dict[str, Any]) -> dict[str, int]:
    """Count engine layers by the datatype of their first output, from TensorRT's detailed
    layer JSON (engine inspector, or trtexec --exportLayerInfo): what really runs."""
    counts: Counter[str] = Counter()
    for layer in info.get("Layers", []):
        outputs = layer.get("Outputs", []) if isinstance(layer, dict) else []
        fmt = str(outputs[0].get("Format/Datatype", "")) if outputs else ""
        kind = ("int8" if "Int8" in fmt else "fp16" if "Half" in fmt
                else "fp32" if "Float" in fmt else "other")
        counts[kind] += 1
    return dict(counts)


def layer_precisions(engine: Any) -> dict[str, int]:
    """Per-layer precisions of a deserialized engine (empty when it has no detail)."""
    import tensorrt as trt

    try:
        info = json.loads(engine.create_engine_inspector().get_engine_information(
            trt.LayerInformationFormat.JSON))
    except Exception:  # older engines or reduced verbosity: no per-layer information
        return {}
    return count_layer_precisions(info)


def effective(counts: dict[str, int]) -> str:
    """'int8', 'fp16', 'fp32' or 'mixed: int8 n, fp32 m' over the counted layers."""
    compute = {k: v for k, v in counts.items() if k != "other"}
    if not compute:
        return "unknown"
    if len(compute) == 1:
        return next(iter(compute))
    return "mixed: " + ", ".join(f"{k} {v}" for k, v in Counter(compute).most_common())


class TensorRTSession:
    """One engine with device buffers at a fixed batch, timed with CUDA events."""

    def __init__(self, engine: Any, manifest: dict[str, Any], batch: int) -> None:
        import tensorrt as trt

        self._trt = trt
        self._engine = engine
        self._manifest = manifest
        self._batch = batch
        self._cuda = CudaDriver()
        self._context = engine.create_execution_context()
        self._stream = self._cuda.stream()
        self._start, self._end = self._cuda.event(), self._cuda.event()
        self._io: list[tuple[str, bool, np.ndarray, ctypes.c_void_p, int]] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            if is_input:
                self._context.set_input_shape(name, tuple(manifest["input"]["shape"]))
            shape = tuple(self._context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            host_ptr = self._cuda.host_alloc(nbytes)
            host = np.ctypeslib.as_array(ctypes.cast(host_ptr, ctypes.POINTER(ctypes.c_uint8)),
                                         shape=(nbytes,)).view(dtype).reshape(shape)
            dev = self._cuda.alloc(nbytes)
            self._context.set_tensor_address(name, dev)
            self._io.append((name, is_input, host, host_ptr, dev))

    def _infer(self, chunk: np.ndarray) -> tuple[np.ndarray, float]:
        """One batch through H2D, the engine and D2H; returns the first output and the
        CUDA-event time of the whole sequence in ms."""
        cuda, stream = self._cuda, self._stream
        for _, is_input, host, _, _ in self._io:
            if is_input:
                np.copyto(host, chunk.astype(host.dtype, copy=False))
        cuda.record(self._start, stream)
        for _, is_input, host, host_ptr, dev in self._io:
            if is_input:
                cuda.htod(dev, host_ptr, host.nbytes, stream)
        if not self._context.execute_async_v3(stream.value or 0):
            raise StageFailure("TensorRT execution failed", fix="re-run with --debug")
        for _, is_input, host, host_ptr, dev in self._io:
            if not is_input:
                cuda.dtoh(host_ptr, dev, host.nbytes, stream)
        cuda.record(self._end, stream)
        ms = cuda.elapsed_ms(self._start, self._end)
        out = next(host for _, is_input, host, _, _ in self._io if not is_input)
        return np.array(out, dtype=np.float32, copy=True), ms

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Any number of samples: chunks are padded to the engine's batch and sliced."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        outs = []
        for i in range(0, len(x), self._batch):
            chunk = x[i:i + self._batch]
            n = len(chunk)
            if n < self._batch:
                chunk = np.concatenate([chunk, np.zeros((self._batch - n, *chunk.shape[1:]),
                                                        dtype=np.float32)])
            outs.append(self._infer(chunk)[0][:n])
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def time_loop(self, x: np.ndarray, settings: Any) -> np.ndarray:
        """The runner's measurement loop with CUDA-event times instead of wall clock."""
        chunk = np.ascontiguousarray(x[:self._batch], dtype=np.float32)
        for _ in range(settings.warmup_iterations):
            self._infer(chunk)
        samples: list[float] = []
        start = time.perf_counter()
        while True:
            samples.append(self._infer(chunk)[1])
            elapsed = time.perf_counter() - start
            if (len(samples) >= settings.min_iterations and elapsed >= settings.min_seconds) \
                    or elapsed >= settings.max_seconds:
                return np.asarray(samples)

    def runtime_info(self) -> dict[str, Any]:
        layers = layer_precisions(self._engine)
        return {
            "runtime": "tensorrt",
            "version": self._trt.__version__,
            "device": self._manifest["device"]["name"],
            "compute_capability": self._manifest["device"]["compute_capability"],
            "batch": self._batch,
            "strongly_typed": self._manifest.get("strongly_typed"),
            "layer_precisions": layers,
            "effective_precision": effective(layers),
            "timing": "CUDA events around H2D copy, execution and D2H copy",
            "engine_manifest": self._manifest,
        }


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"TensorRT targets support {', '.join(PRECISIONS)}, not {precision!r}",
                         fix="use --precision fp32, fp16 or int8")


class TensorRTBackend:
    """TensorRT on this machine's NVIDIA GPU."""

    name = "tensorrt"

    def available(self) -> tuple[bool, str]:
        """TensorRT must import and the NVIDIA driver must see a GPU."""
        try:
            import tensorrt  # noqa: F401
        except ImportError as exc:
            return False, (f"TensorRT is not installed ({exc}); install it with "
                           "pip install 'edgeprune[tensorrt]' on a machine with an NVIDIA GPU")
        try:
            CudaDriver().facts()
        except RuntimeError as exc:
            return False, f"no usable NVIDIA GPU: {exc}"
        return True, ""

    def compile(self, request: CompileRequest) -> CompileResult:
        """ONNX (precision carried by the graph) -> model.engine + its manifest."""
        _check_precision(request.precision)
        ok, why = self.available()
        if not ok:
            raise InputError(f"cannot build a TensorRT engine here: {why}",
                             fix="run on a machine with an NVIDIA GPU and TensorRT, or pick "
                             "a Jetson target (the device builds its own engine)")
        request.out_dir.mkdir(parents=True, exist_ok=True)
        onnx_path = request.out_dir / "model.onnx"
        details = prepare_onnx(request.onnx_path, onnx_path, request.precision,
                               request.calibration, request.options)
        engine = request.out_dir / "model.engine"
        manifest = build_engine(onnx_path, engine, request.precision,
                                int(request.options.get("batch", 1)), request.options)
        details["engine_manifest"] = manifest
        return CompileResult(artifact="model.engine",
                             files=["model.engine", "model.engine" + MANIFEST_SUFFIX,
                                    "model.onnx"],
                             precision_requested=request.precision, details=details)

    def load(self, artifact: Path, precision: str, threads: int, batch: int,
             options: dict[str, Any]) -> TensorRTSession:
        """Check the engine's manifest against this machine, then deserialize it. The batch
        is the engine's own (it was built for one input shape)."""
        import tensorrt as trt

        _check_precision(precision)
        sidecar = artifact.with_name(artifact.name + MANIFEST_SUFFIX)
        manifest = options.get("engine_manifest") or (
            json.loads(sidecar.read_text()) if sidecar.is_file() else None)
        if manifest is None:
            raise InputError(f"{artifact} has no manifest ({sidecar.name})",
                             fix="rebuild the engine with edgeprune so its TensorRT version "
                             "and GPU are recorded")
        check_manifest(manifest, runtime_facts())
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if manifest.get("dla_core") is not None:  # a DLA engine loads onto its DLA core
            runtime.DLA_core = int(manifest["dla_core"])
        engine = runtime.deserialize_cuda_engine(artifact.read_bytes())
        if engine is None:
            raise StageFailure(f"TensorRT could not deserialize {artifact}",
                               fix="rebuild the engine (re-run compile with --fresh)")
        return TensorRTSession(engine, manifest, int(manifest["input"]["shape"][0]))
