"""Packed artifact: ternary weights at 2 bits (or sparsity-coded), everything else plain.

The artifact holds exactly the tensors of the deployed Q/DQ model (``deploy_state``) plus
JSON metadata (architecture spec, ternary config, layer plan -- whatever the caller
passes), so ``unpack`` gives back bit-identical tensors and the Q/DQ ONNX can be rebuilt
from it (``rebuild_deployed`` + ``export_qdq_onnx``). Its size is the compression figure.

Format (little-endian)::

    b"EPTQ" | u8 version | u8 codec (0 none, 1 zlib, 2 lzma) | codec(body)
    body = u32 header_len | zlib(header JSON, utf-8) | tensor blobs, in header order

Ternary tensors (int8 in {-1, 0, 1}) are stored with one of two encodings:

- ``2bit``: 4 weights per byte, code 0 -> 0, +1 -> 1, -1 -> 2 (low bits first). This is
  the plain 16x-vs-fp32 representation.
- ``bitmap``: a nonzero bitmap (1 bit per weight) followed by one sign bit per nonzero.
  Raw it costs 1 + (1 - zero_fraction) bits per weight; it pays once pruning makes most
  weights zero, and the bitmap is what a general-purpose entropy coder (LZMA's adaptive
  binary range coder) squeezes towards the entropy of the zero pattern.

Other tensors (int8 first/last layers, float scales, int32 biases, activation qparams,
unfolded float parameters) are stored raw, integers in the narrowest signed type that
holds their values (lossless; restored to the original dtype); the header (JSON with the
tensor table and the metadata) is always zlib-compressed, and the codec compresses the
whole body. The
``auto`` variant tries every (encoding, codec) pair and keeps the smallest.
"""

from __future__ import annotations

import io
import json
import lzma
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

MAGIC = b"EPTQ"
VERSION = 1
CODECS = {"none": 0, "zlib": 1, "lzma": 2}
ENCODINGS = ("2bit", "bitmap")
VARIANTS = tuple(f"{e}-{c}" for e in ENCODINGS for c in CODECS)
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


@dataclass
class PackedModel:
    """What ``unpack`` returns: tensors by deploy-state name, metadata, format facts."""

    tensors: dict[str, np.ndarray]
    meta: dict[str, Any]
    info: dict[str, Any]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors as torch tensors, ready for ``load_state_dict`` on a deployed model."""
        return {k: torch.from_numpy(v.copy()) for k, v in self.tensors.items()}


# --------------------------------------------------------------------------- encodings


def encode_2bit(codes: np.ndarray) -> bytes:
    """int8 {-1, 0, 1} -> 2-bit codes, 4 per byte (0 -> 0, +1 -> 1, -1 -> 2)."""
    flat = codes.reshape(-1).astype(np.int8)
    sym = np.where(flat < 0, 2, flat).astype(np.uint8)
    sym = np.concatenate([sym, np.zeros((-len(sym)) % 4, dtype=np.uint8)]).reshape(-1, 4)
    return (sym[:, 0] | sym[:, 1] << 2 | sym[:, 2] << 4 | sym[:, 3] << 6).astype(
        np.uint8).tobytes()


def decode_2bit(data: bytes, n: int) -> np.ndarray:
    """Inverse of :func:`encode_2bit` for ``n`` weights."""
    b = np.frombuffer(data, dtype=np.uint8)
    sym = np.stack([b & 3, (b >> 2) & 3, (b >> 4) & 3, (b >> 6) & 3], axis=1).reshape(-1)[:n]
    if np.any(sym == 3):
        raise ValueError("corrupt 2-bit ternary stream (code 3)")
    return np.where(sym == 2, -1, sym).astype(np.int8)


def encode_bitmap(codes: np.ndarray) -> bytes:
    """Nonzero bitmap (n bits) then one sign bit per nonzero (1 = negative)."""
    flat = codes.reshape(-1)
    nz = flat != 0
    return (np.packbits(nz, bitorder="little").tobytes()
            + np.packbits(flat[nz] < 0, bitorder="little").tobytes())


def decode_bitmap(data: bytes, n: int) -> np.ndarray:
    """Inverse of :func:`encode_bitmap` for ``n`` weights."""
    nbm = (n + 7) // 8
    raw = np.frombuffer(data, dtype=np.uint8)
    nz = np.unpackbits(raw[:nbm], bitorder="little")[:n].astype(bool)
    k = int(nz.sum())
    neg = np.unpackbits(raw[nbm:], bitorder="little")[:k].astype(bool)
    out = np.zeros(n, dtype=np.int8)
    out[nz] = np.where(neg, -1, 1)
    return out


def _narrow_int(arr: np.ndarray) -> np.dtype:
    """Smallest signed integer dtype holding every value (lossless: int32 biases are
    mostly small, activation zero points fit a byte)."""
    lo, hi = int(arr.min()), int(arr.max())
    for dt in (np.int8, np.int16, np.int32, np.int64):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt).newbyteorder("<")
    return arr.dtype


# --------------------------------------------------------------------------- pack


def _as_numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    return np.require(arr, requirements="C")  # (ascontiguousarray would make 0-d arrays 1-d)


def pack(state: Mapping[str, torch.Tensor | np.ndarray], ternary: Iterable[str],
         meta: Mapping[str, Any] | None = None, variant: str = "auto") -> bytes:
    """Serialize a deployed state; ``ternary`` names the tensors holding {-1, 0, 1} codes.

    ``variant`` is "auto" (smallest of all) or "<encoding>-<codec>", e.g. "2bit-none"
    (the plain 2-bit artifact) or "bitmap-lzma"."""
    if variant == "auto":
        return min((pack(state, ternary, meta, v) for v in VARIANTS), key=len)
    encoding, _, codec = variant.partition("-")
    if encoding not in ENCODINGS or codec not in CODECS:
        raise ValueError(f"unknown pack variant {variant!r}; use auto or one of {VARIANTS}")
    tern = set(ternary)
    arrays = {k: _as_numpy(v) for k, v in state.items()}
    missing = tern - set(arrays)
    if missing:
        raise KeyError(f"ternary tensors not in the state: {sorted(missing)}")
    # ternary blobs first (similar statistics next to each other helps the codec)
    order = [k for k in arrays if k in tern] + [k for k in arrays if k not in tern]
    entries: list[list[Any]] = []
    blobs: list[bytes] = []
    for name in order:
        arr = arrays[name]
        if name in tern:
            if arr.dtype != np.int8 or not np.isin(arr, (-1, 0, 1)).all():
                raise ValueError(f"{name} is not int8 in {{-1, 0, 1}}")
            blob = encode_2bit(arr) if encoding == "2bit" else encode_bitmap(arr)
            enc = encoding
        elif arr.dtype.kind == "i" and arr.size:
            narrow = _narrow_int(arr)
            blob, enc = arr.astype(narrow).tobytes(), f"int:{narrow.str}"
        else:
            blob, enc = arr.tobytes(), "raw"
        entries.append([name, arr.dtype.str, list(arr.shape), enc, len(blob)])
        blobs.append(blob)
    header = zlib.compress(json.dumps({"meta": dict(meta or {}), "tensors": entries},
                                      separators=(",", ":")).encode(), 9)
    body = struct.pack("<I", len(header)) + header + b"".join(blobs)
    if codec == "zlib":
        body = zlib.compress(body, 9)
    elif codec == "lzma":
        body = lzma.compress(body, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    return MAGIC + struct.pack("<BB", VERSION, CODECS[codec]) + body


def unpack(data: bytes) -> PackedModel:
    """Parse a packed artifact back into bit-identical numpy tensors and metadata."""
    if data[:4] != MAGIC:
        raise ValueError("not an edgeprune packed ternary artifact (bad magic)")
    version, codec_id = struct.unpack("<BB", data[4:6])
    if version != VERSION:
        raise ValueError(f"unsupported packed artifact version {version}")
    codec = {v: k for k, v in CODECS.items()}.get(codec_id)
    body = data[6:]
    if codec == "zlib":
        body = zlib.decompress(body)
    elif codec == "lzma":
        body = lzma.decompress(body, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    elif codec != "none":
        raise ValueError(f"unknown codec id {codec_id}")
    (hlen,) = struct.unpack("<I", body[:4])
    header = json.loads(zlib.decompress(body[4 : 4 + hlen]))
    stream = io.BytesIO(body[4 + hlen :])
    tensors: dict[str, np.ndarray] = {}
    encodings: set[str] = set()
    for name, dtype, shape, enc, nbytes in header["tensors"]:
        blob = stream.read(nbytes)
        n = int(np.prod(shape)) if shape else 1
        if enc == "raw":
            arr = np.frombuffer(blob, dtype=np.dtype(dtype)).copy()
        elif enc.startswith("int:"):
            arr = np.frombuffer(blob, dtype=np.dtype(enc[4:])).astype(np.dtype(dtype))
        elif enc == "2bit":
            arr = decode_2bit(blob, n)
        elif enc == "bitmap":
            arr = decode_bitmap(blob, n)
        else:
            raise ValueError(f"unknown tensor encoding {enc!r}")
        encodings.add(enc)
        tensors[name] = arr.reshape(shape)
    return PackedModel(tensors, header["meta"], {"version": version, "codec": codec,
                                                 "encodings": sorted(encodings),
                                                 "bytes": len(data)})


# --------------------------------------------------------------------------- helpers


def pack_deployed(deployed: nn.Module, meta: Mapping[str, Any] | None = None,
                  variant: str = "auto") -> bytes:
    """Pack a ``to_deploy`` model (every tensor of its Q/DQ graph)."""
    from edgeprune.quant.deploy import deploy_state, ternary_tensor_names

    return pack(deploy_state(deployed), ternary_tensor_names(deployed), meta, variant)


def size_report(deployed: nn.Module, meta: Mapping[str, Any] | None = None,
                fp32_onnx_bytes: int | None = None) -> dict[str, Any]:
    """Bytes of every variant (and the best), the entropy bound of the ternary codes, and
    ratios against the FP32 ONNX when its size is given."""
    from edgeprune.quant.deploy import deploy_state, ternary_tensor_names

    state = deploy_state(deployed)
    names = ternary_tensor_names(deployed)
    sizes = {v: len(pack(state, names, meta, v)) for v in VARIANTS}
    best = min(sizes, key=lambda v: sizes[v])
    codes = np.concatenate([state[n].numpy().reshape(-1) for n in names]) if names else \
        np.zeros(0, np.int8)
    p = np.array([np.mean(codes == v) for v in (-1, 0, 1)]) if codes.size else np.zeros(3)
    entropy = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    other = sum(t.numel() * t.element_size() for k, t in state.items() if k not in set(names))
    report: dict[str, Any] = {
        "variants": sizes, "best": best, "best_bytes": sizes[best],
        "ternary_weights": int(codes.size),
        "ternary_zero_fraction": float(p[1]) if codes.size else 0.0,
        "ternary_entropy_bits": entropy,
        "ternary_entropy_bound_bytes": int(np.ceil(entropy * codes.size / 8)),
        "ternary_2bit_bytes": (int(codes.size) + 3) // 4,
        "other_tensor_bytes_raw": int(other),
        "meta_json_bytes": len(json.dumps(dict(meta or {}), separators=(",", ":"))),
    }
    if fp32_onnx_bytes:
        report["fp32_onnx_bytes"] = int(fp32_onnx_bytes)
        report["ratios"] = {v: fp32_onnx_bytes / s for v, s in sizes.items()}
        report["best_ratio"] = fp32_onnx_bytes / sizes[best]
    return report


def rebuild_deployed(packed: PackedModel, build: Callable[[], nn.Module]) -> nn.Module:
    """Rebuild the deployed (Q/DQ) model: ``build()`` makes the float architecture (from
    the spec in ``packed.meta``), the ternary config in ``packed.meta["ternary_config"]``
    gives the same layer plan, and the packed tensors are loaded strictly."""
    from edgeprune.quant.deploy import to_deploy
    from edgeprune.quant.ternary import TernaryConfig, prepare_ternary

    model = build()
    prepare_ternary(model, TernaryConfig.from_dict(packed.meta.get("ternary_config", {})))
    deployed = to_deploy(model, require_calibrated=False)
    deployed.load_state_dict(packed.state_dict(), strict=True)
    return deployed
