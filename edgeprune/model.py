"""Safe model loading and model statistics (params, FLOPs, serialized size).

Checkpoints are untrusted input: they load with ``weights_only=True``. A full pickled
module executes code on load, so it is accepted only with an explicit trust flag.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.data.sources import import_callable
from edgeprune.errors import InputError
from edgeprune.zoo import builtin_builder

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "weights")
PREFIXES = ("module.", "_orig_mod.", "model.")


@dataclass
class ArchSpec:
    """How to build the architecture: a built-in name or ``module:callable``, plus keyword
    arguments.

    ``user_named`` is True only when the user named the architecture (command line, Python
    API). A name read from a file (a checkpoint's hint, an artifact's recipe) may only
    select one of edgeprune's built-in builders by exact lookup: a file never chooses
    which code runs.
    """

    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    user_named: bool = False
    # The Python API's in-memory architecture (edgeprune.api.LiveArchitecture): builds a
    # copy of the user's live module, so any module works without naming importable code.
    # Never set from a file or the command line.
    factory: Callable[..., nn.Module] | None = None

    def build(self) -> nn.Module:
        factory = self.factory or builtin_builder(self.target)
        if factory is None:
            if not self.user_named:
                raise InputError(
                    f"architecture {self.target!r} named by a file is not one of edgeprune's "
                    "built-in architectures, and a file never chooses which code runs",
                    fix=f"pass --arch {self.target} yourself (and its --arch-kwargs) if you "
                    "trust that code",
                )
            factory = import_callable(self.target, what="arch")
        try:
            model = factory(**self.kwargs)
        except InputError:
            raise
        except TypeError as exc:
            raise InputError(
                f"--arch {self.target} rejected its arguments {self.kwargs}: {exc}",
                fix="check --arch-kwargs against the callable's signature",
            ) from exc
        except SystemExit as exc:
            raise InputError(
                f"--arch {self.target} called sys.exit({exc.code}) while building the model",
                fix="point --arch at a function or class that returns the model",
            ) from exc
        except Exception as exc:
            raise InputError(
                f"--arch {self.target} failed while building the model: "
                f"{type(exc).__name__}: {exc}",
                fix="run it in Python to debug it (python -c 'from MODULE import NAME; "
                "NAME()'), and check --arch-kwargs",
            ) from exc
        if not isinstance(model, nn.Module):
            raise InputError(
                f"--arch {self.target} returned {type(model).__name__}, not a torch.nn.Module",
                fix="point --arch at a function or class that builds the model",
            )
        return model


@dataclass
class TeacherSpec:
    """``--teacher``: a separate model to distill from (default: the input model)."""

    path: Path
    arch: ArchSpec | None = None


def hinted_arch(obj: Mapping[str, Any], path: Path) -> ArchSpec:
    """The architecture a file names (``arch`` + ``arch_kwargs``), accepted only when it is
    one of edgeprune's built-ins and its keyword arguments are plain values."""
    target = str(obj["arch"])
    kwargs = obj.get("arch_kwargs") or {}
    plain = (int, float, bool, str, type(None))
    if not isinstance(kwargs, Mapping) or not all(
            isinstance(k, str) and isinstance(v, plain) for k, v in kwargs.items()):
        raise InputError(f"{path} has arch_kwargs that are not a table of plain values",
                         fix="pass --arch and --arch-kwargs on the command line")
    if builtin_builder(target) is None:
        raise InputError(
            f"{path} names architecture {target!r}, which is not one of edgeprune's built-in "
            "architectures; a file never chooses which code runs",
            fix=f"pass --arch {target} (and its --arch-kwargs) yourself if you trust that code",
        )
    return ArchSpec(target, dict(kwargs), user_named=False)


def parse_arch(value: str | None, kwargs_json: str | Mapping[str, Any] | None
               ) -> ArchSpec | None:
    """``resnet20`` (a zoo name), or ``pkg.module:callable``; kwargs as a JSON object."""
    if value is None:
        return None
    kwargs: dict[str, Any] = {}
    if isinstance(kwargs_json, Mapping):  # a job file's TOML table
        kwargs_json = json.dumps(dict(kwargs_json))
    if kwargs_json:
        try:
            kwargs = json.loads(kwargs_json)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"--arch-kwargs is not valid JSON: {exc}",
                fix='pass a JSON object, e.g. --arch-kwargs \'{"num_classes": 10}\'',
            ) from exc
        if not isinstance(kwargs, dict):
            raise InputError("--arch-kwargs must be a JSON object", fix='e.g. {"num_classes": 10}')
    target = value if ":" in value else f"edgeprune.zoo:{value}"
    return ArchSpec(target, kwargs, user_named=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: Path, trust_pickle: bool) -> Any:
    """torch.load with ``weights_only=True`` unless the user trusts the file."""
    if not path.exists():
        raise InputError(f"model file {path} does not exist", fix="check the path to MODEL")
    if not path.is_file():
        raise InputError(f"model path {path} is not a file", fix="pass a .pt/.pth checkpoint")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about old pickle protocols
            return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if not _pickles_intact(path):  # a cut file can look like any opcode or global
            raise _unreadable(path, exc) from exc
        found = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the doc|$)", str(exc),
                          re.DOTALL)
        what = " ".join(found.group(1).split()).split(". Please")[0] if found else "objects"
        raise InputError(
            f"{path} contains pickled Python objects that would execute code on load "
            f"({what}); edgeprune loads checkpoints with weights_only=True and refuses it",
            fix="save a state_dict instead (torch.save(model.state_dict(), path)) and pass "
            "--arch; or, ONLY if you trust whoever made the file, pass --trust-pickle",
        ) from exc
    except MemoryError as exc:
        raise InputError(f"checkpoint {path} asks for more memory than this machine has "
                         "(a corrupt size field, or a model too large to load here)",
                         fix="re-save or re-copy the checkpoint") from exc
    except Exception as exc:  # EOFError, struct.error, IndexError, RuntimeError, BadZipFile...
        from edgeprune.oserrors import is_environment

        if is_environment(exc):
            raise
        if isinstance(exc, InputError):
            raise
        raise _unreadable(path, exc) from exc


def _unreadable(path: Path, exc: BaseException) -> InputError:
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, pickle.UnpicklingError):
        text = "the pickle stream ends early or is corrupt"
    return InputError(
        f"cannot read checkpoint {path}: it is truncated or not a PyTorch file "
        f"({type(exc).__name__}: {text[:200]})",
        fix="re-save or re-copy the checkpoint (torch.save(model.state_dict(), path))",
    )


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _pickles_intact(path: Path) -> bool:
    """Whether the pickles torch.load reads from ``path`` are complete (each reaches its
    STOP opcode): read with ``pickletools`` only, which decodes opcodes and runs nothing.
    A truncated legacy checkpoint fails weights-only loading with an "unsupported global"
    made of the bytes where it was cut; that is damage, not pickled code."""
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if not names:
                    return False
                with archive.open(names[0]) as fh:
                    for _ in pickletools.genops(fh):
                        pass
                return True
        with path.open("rb") as fh:
            first = list(pickletools.genops(fh))
            values = [arg for op, arg, _ in first if op.name in ("LONG1", "LONG", "INT")]
            if values[:1] != [LEGACY_MAGIC]:
                return True  # a plain pickle, whole: what it names is what it holds
            for _ in range(3):  # protocol version, system info, the object itself
                for _ in pickletools.genops(fh):
                    pass
        return True
    except Exception:
        return False


def extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Unwrap the usual containers and strip DataParallel / compile prefixes."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_tensor_map(obj):
            inner = next((obj[k] for k in WRAPPER_KEYS if k in obj), None)
            if isinstance(inner, nn.Module):
                inner = inner.state_dict()
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_tensor_map(obj):
        keys = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise InputError(
            f"{path} holds no state_dict (found {keys})",
            fix="save torch.save(model.state_dict(), path), or a dict with a 'state_dict' "
            "or 'model' entry",
        )
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def align_prefixes(state: dict[str, torch.Tensor], own: Mapping[str, Any]) -> dict:
    """Strip a wrapper prefix (DataParallel's ``module.``, torch.compile's ``_orig_mod.``)
    when that makes the checkpoint's keys match the model's better."""
    best, best_overlap = state, len(own.keys() & state.keys())
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix) :]: v for k, v in state.items()}
            overlap = len(own.keys() & stripped.keys())
            if overlap > best_overlap:
                best, best_overlap = stripped, overlap
    return best


def _is_tensor_map(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    """Strict loading with a readable diff; a missing ``num_batches_tracked`` is harmless."""
    own = model.state_dict()
    state = align_prefixes(state, own)
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (e.g. {'; '.join(shapes[:2])})")
        raise InputError(
            f"checkpoint {path} does not match --arch {arch}: " + ", ".join(parts),
            fix="pass the --arch (and --arch-kwargs, e.g. num_classes) the checkpoint was "
            "trained with",
        )
    model.load_state_dict(state, strict=False)


@dataclass
class LoadedModel:
    model: nn.Module
    arch: ArchSpec | None
    sha256: str
    recipe: dict[str, Any] = field(default_factory=dict)  # how a pruned artifact rebuilds


ARTIFACT_FORMAT = "edgeprune-model/1"


RECIPE_KEYS = ("pruned", "conversions", "input_shape", "ternary", "heads")


def rebuild_from_artifact(payload: Mapping[str, Any], arch: ArchSpec | None = None,
                          path: Path | None = None) -> nn.Module:
    """An edgeprune model artifact → module: the original architecture, its recorded
    conversions, layers resized to the saved (pruned) shapes, then the weights."""
    from edgeprune.prune.structural import (
        OPTION_A,
        make_shortcuts_explicit,
        resize_to_state,
        set_head_counts,
    )

    arch = arch or hinted_arch(payload, path or Path("model artifact"))
    model = arch.build()
    state = payload["state_dict"]
    if OPTION_A in payload.get("conversions", []):
        make_shortcuts_explicit(model, torch.zeros(payload["input_shape"]))
    if payload.get("pruned"):
        resize_to_state(model, state)
    if "heads" in payload:  # attention modules whose heads were pruned
        set_head_counts(model, payload["heads"])
    if payload.get("ternary"):  # quantized: same layer plan, then its trained state
        from edgeprune.quant.activations import set_calibrated_modes
        from edgeprune.quant.ternary import TernaryConfig, prepare_ternary

        prepare_ternary(model, TernaryConfig.from_dict(dict(payload["ternary"])))
        model.load_state_dict(state, strict=True)
        set_calibrated_modes(model)
        return model.eval()
    model.load_state_dict(state, strict=False)
    return model.eval()


def load_model(path: Path, arch: ArchSpec | None, trust_pickle: bool) -> LoadedModel:
    """Build the architecture and load the checkpoint into it (or use a trusted module).

    A file may name its architecture, but only one of edgeprune's built-ins (exact lookup);
    anything else needs ``--arch`` from the user."""
    obj = read_checkpoint(path, trust_pickle)
    if isinstance(obj, Mapping) and obj.get("format") == ARTIFACT_FORMAT and "arch" in obj:
        # an edgeprune artifact (e.g. `edgeprune prune` output): rebuilt from its recipe
        arch = arch or hinted_arch(obj, path)
        recipe = {k: obj[k] for k in RECIPE_KEYS if k in obj}
        try:
            model = rebuild_from_artifact(obj, arch, path)
        except InputError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise InputError(
                f"{path} is an edgeprune model artifact that does not rebuild "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                fix="use the pruned.pt / model.pt an edgeprune run wrote, unmodified (or "
                "re-run that command)") from exc
        check_finite(model, path)
        return LoadedModel(model, arch, file_sha256(path), recipe)
    if arch is None and isinstance(obj, Mapping) and isinstance(obj.get("arch"), str):
        arch = hinted_arch(obj, path)
    if arch is None:
        module = obj if isinstance(obj, nn.Module) else None
        if module is None and isinstance(obj, Mapping):
            module = next((v for v in obj.values() if isinstance(v, nn.Module)), None)
        if module is None:
            raise InputError(
                f"{path} holds weights only, so edgeprune needs the architecture",
                fix="pass --arch module:callable (e.g. --arch mypkg.nets:resnet20, or a zoo "
                "name such as --arch resnet20) and --arch-kwargs if it takes arguments",
            )
        check_finite(module, path)
        return LoadedModel(module.eval(), None, file_sha256(path))
    model = arch.build()
    load_weights(model, extract_state_dict(obj, path), path, arch.target)
    check_finite(model, path)
    return LoadedModel(model.eval(), arch, file_sha256(path))


# observers' running min/max start at +-inf until calibrated: not weights
UNCALIBRATED_RANGES = ("min_val", "max_val")


def check_finite(model: nn.Module, path: Path) -> None:
    """Refuse weights with NaN or infinite values, at load (an exporter or a runtime would
    otherwise fail much later, or give garbage, for a reason nobody would guess)."""
    bad = []
    for name, tensor in model.state_dict().items():
        if not torch.is_floating_point(tensor):
            continue
        finite = torch.isfinite(tensor)
        if name.rsplit(".", 1)[-1] in UNCALIBRATED_RANGES:
            finite = ~torch.isnan(tensor)
        count = int((~finite).sum())
        if count:
            kinds = [k for k, m in (("NaN", torch.isnan(tensor)),
                                    ("inf", torch.isinf(tensor))) if bool(m.any())]
            bad.append((name, count, "/".join(kinds)))
    if bad:
        total = sum(n for _, n, _ in bad)
        where = "; ".join(f"{n} in {name} ({kinds})" for name, n, kinds in bad[:3])
        more = f"; and {len(bad) - 3} more tensors" if len(bad) > 3 else ""
        raise InputError(
            f"the weights in {path} are not finite: {total} values are NaN or infinite "
            f"({where}{more})",
            fix="the checkpoint is corrupt or its training diverged: save it again from a "
            "good epoch (check torch.isfinite on its tensors)")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass at batch 1, counted by ``torch.utils.flop_counter``
    (a multiply-add counts as 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    shape = (1, *input_shape[1:])
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(shape))
    return int(counter.get_total_flops())


def state_dict_bytes(model: nn.Module) -> int:
    """Size of the serialized FP32 state_dict: the uncompressed model's storage cost."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()
