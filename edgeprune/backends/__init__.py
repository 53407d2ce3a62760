"""Registry of hardware-target backends, looked up by name.

Factories import their runtime lazily, so ``import edgeprune.backends`` stays cheap and a
machine without OpenVINO can still use ONNX Runtime (and vice versa). Later targets
(TensorRT, Jetson) plug in with ``register_backend``.
"""

from __future__ import annotations

from collections.abc import Callable

from edgeprune.backends.base import Backend
from edgeprune.errors import InputError


def _openvino() -> Backend:
    """Build the OpenVINO CPU backend (module imported only when asked for)."""
    from edgeprune.backends.openvino import OpenVINOBackend

    return OpenVINOBackend()


def _onnxruntime() -> Backend:
    """Build the ONNX Runtime CPU backend (module imported only when asked for)."""
    from edgeprune.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend()


BACKENDS: dict[str, Callable[[], Backend]] = {
    "openvino": _openvino,
    "onnxruntime": _onnxruntime,
}


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Add (or replace) a backend factory so a new target needs no edit here."""
    BACKENDS[name] = factory


def _tensorrt() -> Backend:
    """TensorRT on this machine's NVIDIA GPU (tensorrt imported only when used)."""
    from edgeprune.backends.tensorrt import TensorRTBackend

    return TensorRTBackend()


def _jetson() -> Backend:
    """A Jetson over SSH: compile makes a deploy bundle, the device builds the engine."""
    from edgeprune.backends.jetson import JetsonBackend

    return JetsonBackend()


register_backend("tensorrt", _tensorrt)
register_backend("jetson", _jetson)


def get_backend(name: str) -> Backend:
    """Return a fresh backend by name; an unknown name is a user error (exit 2)."""
    factory = BACKENDS.get(name)
    if factory is None:
        known = ", ".join(sorted(BACKENDS))
        raise InputError(
            f"unknown backend {name!r}; known backends: {known}",
            fix=f"set the target's backend to one of: {known}",
        )
    return factory()


__all__ = ["BACKENDS", "Backend", "get_backend", "register_backend"]
