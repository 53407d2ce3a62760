"""The Python API: ``edgeprune.compile(...)`` and ``edgeprune.prune(...)``.

The same pipeline as the command line, called from Python::

    import edgeprune

    report = edgeprune.compile(model, dataset, target="openvino-cpu", max_drop=1.0,
                               mean=[0.286], std=[0.353], channels=1, out="out/api")
    report.passed, report.final.accuracy, report.final.p50, report.artifacts.compiled_model

Keyword options are the command line's option names with underscores (``max_drop``,
``flops_reduction``, ``calib_size``, ...); values keep their natural Python types (lists
for ``mean``/``std``, an int or ``(H, W)`` for ``input_size``, a dict for ``arch_kwargs``).
An unknown keyword raises :class:`~edgeprune.errors.UnknownOptionError` naming the closest
option. Every user error raises an :class:`~edgeprune.errors.EdgepruneError` (an
:class:`~edgeprune.errors.InputError` for bad input) carrying ``problem``, ``fix``,
``paragraph()`` and the CLI's ``exit_code``; nothing calls ``sys.exit``. A missed budget is
not an error: the returned :class:`Report` has ``passed=False`` (``exit_code`` 3).

**Models.** ``model`` is a checkpoint path (with ``arch=`` as on the command line) or a
live ``torch.nn.Module``. A live module is saved into ``OUT/input/`` in edgeprune's model
artifact format (weights + how to rebuild, no pickled code), named by a hash of its
weights and architecture, so a second call with the same module finds the same file and
resumes from the stage cache. Its architecture is rebuilt

- with ``arch=`` given (a built-in name or ``module:callable``): by that builder, exactly
  as the command line (its artifacts then also reload with ``edgeprune compile
  OUT/pruned.pt``); the module's weights must match it;
- without ``arch=``: from the live module itself (:class:`LiveArchitecture`): every
  rebuild is a deep copy of the module given to this call, into which the stage's
  weights (pruned shapes, conversions) are loaded. This works for any module -- a class
  defined in a notebook, one whose constructor takes arguments, a wrapped model --
  where naming an importable ``module:Class`` would work only for importable classes
  constructible without arguments, and pickling it would make the artifacts run code on
  load. The artifacts record the class as ``module:Class``; rebuilding them later needs
  the module again (pass it to the API) or an ``--arch`` that builds it. Its fingerprint
  is a hash of its structure (class, ``repr``, tensor names and shapes, its classes'
  source), so a changed architecture re-runs the stages.

**Data.** ``data``, ``eval_data`` and ``train_data`` each take what the command line
takes (a path, ``module:callable``) or an in-memory ``torch.utils.data.Dataset`` (any
object with ``__len__`` and ``__getitem__``; a ``DataLoader`` gives its ``.dataset``) of
``(image, label)`` items. The image is a PIL image or an HxW / HxWxC uint8 array (then
``mean``/``std``/``input_size``/``resize``/``channels`` preprocess it, as on the command
line), or a float CHW tensor that is already model-ready (then preprocessing is skipped
and those options are refused). As on the command line, a single ``data`` set gives the
evaluation images and calibration images held out of it. A dataset's cache identity is a
hash of its content, computed once per call by reading every item (which is also where a
bad item is reported). ``nproc`` > 1 (training in other processes) needs data and an
architecture those processes can open: paths and ``arch=``.

**Metric.** ``metric=`` is ``"top1"`` (the default), a ``"module:callable"`` string as on
the command line, or the callable itself (see :mod:`edgeprune.metrics` for its two forms);
with a metric, the labels of the data may be targets of any structure (masks, boxes).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.errors import (
    DeviceRequired,
    EdgepruneError,
    InputError,
    StageFailure,
    UnknownOptionError,
)

if TYPE_CHECKING:
    from torch import nn

    from edgeprune.model import ArchSpec

__all__ = [
    "Artifacts",
    "DeviceRequired",
    "EdgepruneError",
    "InputError",
    "LiveArchitecture",
    "Metrics",
    "PruneResult",
    "Report",
    "StageFailure",
    "StageInfo",
    "UnknownOptionError",
    "compile",
    "prune",
]

INPUT_DIR = "input"  # OUT/input/: the live module handed to the API, as a model artifact
_EXPLICIT = ("model", "data", "arch", "arch_kwargs", "eval_data", "train_data", "target",
             "out", "quiet")
_DATA_KEYS = ("data", "eval_data", "train_data")
_PREPROCESS_KEYS = ("mean", "std", "input_size", "resize", "channels")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Metrics:
    """One side of the comparison (``report.json``'s ``baseline`` or ``final``)."""

    accuracy: float  # top-1, percent
    accuracy_samples: int
    accuracy_runtime: str  # "pytorch" for the baseline, the target's runtime for final
    latency_ms: dict[str, Any]  # p50, p90, p99 (None when too few iterations), mean, ...
    flops: int
    params: int
    size_bytes: int
    precision: str

    @property
    def p50(self) -> float | None:
        return self.latency_ms.get("p50")

    @property
    def p90(self) -> float | None:
        return self.latency_ms.get("p90")

    @property
    def p99(self) -> float | None:
        return self.latency_ms.get("p99")

    @classmethod
    def from_report(cls, side: Mapping[str, Any]) -> Metrics:
        return cls(accuracy=side["accuracy"], accuracy_samples=side["accuracy_samples"],
                   accuracy_runtime=side["accuracy_runtime"],
                   latency_ms=dict(side["latency_ms"]), flops=side["flops"],
                   params=side["params"], size_bytes=side["size_bytes"],
                   precision=side["precision"])


@dataclass(frozen=True)
class StageInfo:
    """One pipeline stage of the run: ``status`` is "ran", "cached" or "skipped"."""

    name: str
    status: str
    seconds: float
    dir: Path | None = None
    summary: str = ""


@dataclass(frozen=True)
class Artifacts:
    """Files the run wrote."""

    report_json: Path
    report_html: Path
    summary_md: Path
    compiled_model: Path | None  # the target's artifact (model.xml, model.onnx, .engine)
    compiled_files: list[Path] = field(default_factory=list)  # everything a device needs
    onnx: Path | None = None


@dataclass(frozen=True)
class Report:
    """What ``edgeprune.compile`` returns: ``report.json`` as typed fields, plus ``raw``."""

    passed: bool
    exit_code: int  # the CLI's: 0 budget met, 3 missed
    verdict: dict[str, Any]  # accuracy_drop, accuracy_ok, latency_ok, ..., reasons
    baseline: Metrics
    final: Metrics
    speedup: dict[str, Any]
    stages: list[StageInfo]
    artifacts: Artifacts
    out_dir: Path
    raw: dict[str, Any] = field(repr=False)  # the full report.json

    @property
    def accuracy_drop(self) -> float:
        return self.verdict["accuracy_drop"]

    @classmethod
    def from_dict(cls, raw: dict[str, Any], exit_code: int, out_dir: Path) -> Report:
        stages = _stages(raw["stages"])
        compiled: Path | None = None
        files: list[Path] = []
        onnx = None
        for stage in stages:
            metrics = _read_metrics(stage.dir)
            if stage.name == "compile" and stage.dir is not None:
                compiled = stage.dir / metrics["artifact"] if metrics.get("artifact") else None
                files = [stage.dir / f for f in metrics.get("files", [])]
            if stage.name == "export" and stage.dir is not None and (
                    stage.dir / "model.onnx").is_file():
                onnx = stage.dir / "model.onnx"
        return cls(
            passed=bool(raw["passed"]), exit_code=exit_code, verdict=dict(raw["verdict"]),
            baseline=Metrics.from_report(raw["baseline"]),
            final=Metrics.from_report(raw["final"]), speedup=dict(raw.get("speedup") or {}),
            stages=stages,
            artifacts=Artifacts(out_dir / "report.json", out_dir / "report.html",
                                out_dir / "summary.md", compiled, files, onnx),
            out_dir=out_dir, raw=raw)


@dataclass(frozen=True)
class PruneResult:
    """What ``edgeprune.prune`` returns (``OUT/prune.json`` as typed fields, plus ``raw``)."""

    model: Path  # OUT/pruned.pt: weights + recipe (no pickled code)
    criterion: str
    flops_before: int
    flops_after: int
    params_before: int
    params_after: int
    flops_reduction: float
    params_reduction: float
    accuracy_pruned: float  # top-1 right after pruning (and compensation)
    accuracy_recovered: float | None  # after recovery; None with recover="none"
    accuracy_samples: int
    stages: list[StageInfo]
    out_dir: Path
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], out_dir: Path) -> PruneResult:
        return cls(model=Path(raw["model"]), criterion=raw["criterion"],
                   flops_before=raw["flops_before"], flops_after=raw["flops_after"],
                   params_before=raw["params_before"], params_after=raw["params_after"],
                   flops_reduction=raw["flops_reduction"],
                   params_reduction=raw["params_reduction"],
                   accuracy_pruned=raw["accuracy_pruned"],
                   accuracy_recovered=raw["accuracy_recovered"],
                   accuracy_samples=raw["accuracy_samples"],
                   stages=_stages(raw["stages"], out_dir), out_dir=out_dir, raw=raw)


def _stages(rows: list[dict[str, Any]], out_dir: Path | None = None) -> list[StageInfo]:
    out = []
    for i, row in enumerate(rows, start=1):
        where = row.get("dir")
        if where is None and out_dir is not None:
            where = out_dir / f"{row.get('index', i):02d}-{row['name']}"
        out.append(StageInfo(row["name"], row["status"], float(row["seconds"]),
                             Path(where) if where else None, row.get("summary", "")))
    return out


def _read_metrics(stage_dir: Path | None) -> dict[str, Any]:
    import json

    if stage_dir is None:
        return {}
    try:
        return json.loads((stage_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- entry points


def compile(  # mirrors `edgeprune compile` (shadows the builtin here only)
    model: nn.Module | str | Path,
    data: Any = None,
    *,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | str | None = None,
    eval_data: Any = None,
    train_data: Any = None,
    target: str | None = None,  # None: the option table's default (openvino-cpu)
    out: str | Path | None = None,  # None: the option table's default (./out)
    quiet: bool = True,
    **options: Any,
) -> Report:
    """Run ``edgeprune compile`` on ``model`` and return its :class:`Report`.

    ``options`` are ``edgeprune compile``'s options with underscores: ``max_drop=1.0``,
    ``latency_ms=5``, ``precision="int8"``, ``prune="dscore"``, ``flops_reduction=0.5``,
    ``mean=[...]``, ``std=[...]``, ``input_size=224``, ``channels=1``, ``calib_size=300``,
    ``eval_limit=1000``, ``iterations=200``, ``search=True``, ``fresh=True``, ... (see
    ``edgeprune compile --help``). Raises an :class:`EdgepruneError` for bad input or a
    failed stage; a missed budget is ``report.passed == False``.
    """
    layer = _configure()
    o = _options("compile", layer.compile_keys, layer, options,
                 dict(arch=arch, arch_kwargs=arch_kwargs, target=target, out=out))
    search = layer.search_options(o)  # --search's options, checked as the CLI does
    if search is not None:  # as the command line: the search varies these per candidate
        o.update(quant="ternary" if o.get("search_ternary") else None,
                 prune=search.criterion, prune_ratio=0.5)
    o.update(_data_options(data, eval_data, train_data, o))
    argv = _argv("compile", model, o)

    def run(config: Any) -> Report:
        from edgeprune.job import run_compile
        from edgeprune.ui import UI

        if search is not None:
            from edgeprune.search import Search

            raw, code = Search(config, search, UI(quiet)).run()
        else:
            raw, code = run_compile(config, UI(quiet))
        return Report.from_dict(raw, code, Path(config.out_dir))

    return _run(model, o, argv, run)


def prune(
    model: nn.Module | str | Path,
    data: Any = None,
    *,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | str | None = None,
    eval_data: Any = None,
    train_data: Any = None,
    out: str | Path | None = None,  # None: the option table's default (./out)
    quiet: bool = True,
    **options: Any,
) -> PruneResult:
    """Run ``edgeprune prune`` (load → prune → recover, no target) and return a
    :class:`PruneResult`; ``OUT/pruned.pt`` reloads with ``edgeprune.compile(path)``
    (with ``arch=`` when the input was a live module without one).

    ``options`` are ``edgeprune prune``'s options with underscores: ``prune="dscore"``
    (the criterion, the default), ``flops_reduction=0.5``, ``recover_epochs=3``, ...
    """
    layer = _configure()
    o = _options("prune", layer.prune_keys, layer, options,
                 dict(arch=arch, arch_kwargs=arch_kwargs, out=out))
    if o.get("prune") is None:
        o["prune"] = "dscore"  # `edgeprune prune`'s default criterion
    o.update(_data_options(data, eval_data, train_data, o))
    argv = _argv("prune", model, o)

    def run(config: Any) -> PruneResult:
        from edgeprune.job import run_prune
        from edgeprune.ui import UI

        return PruneResult.from_dict(run_prune(config, UI(quiet)), Path(config.out_dir))

    return _run(model, o, argv, run)


# --------------------------------------------------------------------------- the CLI layer


@dataclass(frozen=True)
class _Layer:
    config_from_options: Callable[[dict[str, Any], list[str]], Any]
    search_options: Callable[[dict[str, Any]], Any]
    compile_keys: list[str]
    prune_keys: list[str]
    bool_keys: set[str]
    kinds: dict[str, str]


def _configure() -> _Layer:
    """The options → PipelineConfig layer the command line uses (edgeprune.configure),
    with the option names and kinds of the option table (edgeprune.options)."""
    from edgeprune.configure import config_from_options, resolve, search_options
    from edgeprune.options import for_command

    cli_only = {"quiet", "as_json", "debug"}

    def keys(command: str) -> list[str]:
        return [o.name for o in for_command(command) if o.name not in cli_only]

    return _Layer(
        config_from_options=config_from_options,
        search_options=lambda o: search_options(resolve(o, "compile")),
        compile_keys=keys("compile"),
        prune_keys=keys("prune"),
        bool_keys={o.name for o in for_command("compile") if o.kind == "bool"},
        kinds={o.name: o.kind for o in for_command("compile")})


def _options(command: str, keys: list[str], layer: _Layer, given: dict[str, Any],
             explicit: dict[str, Any]) -> dict[str, Any]:
    """The CLI's options dict: every ``compile`` option None (flags False), then what the
    caller passed; an unknown keyword is refused with the closest names."""
    from edgeprune.options import check_values

    allowed = [k for k in keys if k not in _EXPLICIT]
    for key in given:
        if key not in allowed:
            raise _unknown(command, key, [*allowed, *(k for k in _EXPLICIT if k != "model"
                                                      and (k != "target" or
                                                           command == "compile"))])
    bool_keys = layer.bool_keys
    # every option config_from_options reads (prune's are a subset of compile's)
    o: dict[str, Any] = {k: (False if k in bool_keys else None)
                         for k in dict.fromkeys([*layer.compile_keys, *keys])}
    for key, value in {**explicit, **given}.items():
        if isinstance(value, tuple):
            value = list(value)
        if value is not None or key not in bool_keys:
            o[key] = value
    checked = {k: str(v) if isinstance(v, Path) else v for k, v in o.items()
               if k not in (*_DATA_KEYS, "model") and v is not None
               and not (k == "metric" and callable(v))}  # metric= may be the callable
    check_values(checked, f"edgeprune.{command}()")
    if o.get("arch_kwargs") is not None and o.get("arch") is None:
        raise InputError(f"edgeprune.{command}(arch_kwargs=...) without arch=",
                         fix="pass arch= (a built-in name or module:callable) with its "
                         "arch_kwargs, or drop arch_kwargs")
    return o


def _unknown(command: str, key: str, known: list[str]) -> UnknownOptionError:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    cli_only = {"as_json": "use report.raw (the report.json dict)",
                "debug": "exceptions already carry their traceback"}
    names = f"edgeprune {command}'s option names with underscores (edgeprune {command} --help)"
    fix = cli_only.get(key) or (f"pass {close[0]}=..., or another of {names}" if close else
                                f"use {names}: {', '.join(sorted(known))}")
    return UnknownOptionError(f"edgeprune.{command}() got an unknown option {key!r}{hint}",
                              fix=fix, name=key, suggestions=close)


def _argv(command: str, model: Any, o: dict[str, Any]) -> list[str]:
    """What report.json records as the command: the call, readably."""
    what = (f"<{type(model).__name__} module>" if not isinstance(model, str | Path)
            else str(model))
    given = [f"{k}={v!r}" for k, v in o.items() if v is not None and v is not False]
    return [f"edgeprune.{command}", what, *given]


# --------------------------------------------------------------------------- data


def _data_options(data: Any, eval_data: Any, train_data: Any,
                  o: dict[str, Any]) -> dict[str, Any]:
    """Paths stay paths; a Dataset (or DataLoader) becomes an in-memory source."""
    values = {"data": data, "eval_data": eval_data, "train_data": train_data}
    class_labels = o.get("metric") in (None, "top1")  # a metric's targets: any structure
    specs = {k: _data_spec(v, k, class_labels) for k, v in values.items()}
    preprocessed = [k for k, v in specs.items()
                    if v is not None and getattr(v, "preprocessed", False)]
    given = [k for k in _PREPROCESS_KEYS if o.get(k) is not None]
    if preprocessed and given:
        names = ", ".join(f"{k}=" for k in given)
        raise InputError(
            f"{preprocessed[0]}= holds model-ready float tensors (preprocessed), so "
            f"{names} would not be applied to them",
            fix=f"drop {names} (the tensors are used as they are), or return uint8 pixels "
            "(an HxWxC array or a PIL image) and let edgeprune preprocess them")
    nproc = o.get("nproc")
    in_memory = [k for k, v in specs.items() if v is not None and not isinstance(v, str)]
    if nproc is not None and nproc > 1 and in_memory:
        raise InputError(f"nproc={nproc} trains in other processes, which cannot read the "
                         f"in-memory dataset {in_memory[0]}=",
                         fix="pass nproc=1, or the data as a path or module:callable")
    return specs


def _data_spec(value: Any, role: str, class_labels: bool = True) -> Any:
    from edgeprune.data.sources import DatasetSource

    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "dataset") and hasattr(value, "batch_size"):  # a DataLoader
        value = value.dataset
    if not (hasattr(value, "__len__") and hasattr(value, "__getitem__")):
        kind = type(value).__name__
        raise InputError(
            f"{role}= is {kind}, not a path or a dataset with __len__ and __getitem__"
            + (" (an IterableDataset cannot be indexed)" if hasattr(value, "__iter__")
               else ""),
            fix=f"pass {role}= as a path (ImageFolder, IDX folder, .npz), module:callable, "
            "or a map-style torch Dataset of (image, label) items")
    source = DatasetSource(value, f"Python dataset {type(value).__name__} ({role}=)",
                           class_labels)
    source.fingerprint()  # reads every item: a bad one is refused before anything is written
    return source


# --------------------------------------------------------------------------- models


class LiveArchitecture:
    """The architecture of a live module, for :class:`~edgeprune.model.ArchSpec`'s
    ``factory``: each call returns a deep copy of the module as it was handed over (no
    pickling, no import). ``target`` names its class as ``module:Class``; ``digest``
    hashes its structure, and is what enters the stage fingerprints (via ``repr``)."""

    def __init__(self, module: nn.Module) -> None:
        try:
            self.template = copy.deepcopy(module).cpu().eval()
        except Exception as exc:
            raise InputError(
                f"cannot copy the {type(module).__name__} module to rebuild it "
                f"({type(exc).__name__}: {exc})",
                fix="pass arch= (a built-in name or module:callable that builds it) so "
                "edgeprune rebuilds it from its weights instead") from exc
        cls = type(module)
        self.target = f"{cls.__module__}:{cls.__qualname__}"
        self.digest = structure_sha256(self.template)

    def __call__(self) -> nn.Module:
        return copy.deepcopy(self.template)

    def __deepcopy__(self, memo: dict[int, Any]) -> LiveArchitecture:
        return self  # immutable once made: ArchSpec copies (dataclasses.asdict) share it

    def __repr__(self) -> str:
        return f"live module {self.target} (structure sha256 {self.digest})"

    __str__ = __repr__


def structure_sha256(module: nn.Module) -> str:
    """Hash of what makes an architecture: its class, its printed layer tree, every
    tensor's name, shape and dtype, and the source of its (non-torch) module classes."""
    digest = hashlib.sha256()
    digest.update(f"{type(module).__module__}:{type(module).__qualname__}\n".encode())
    digest.update(repr(module).encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"\n{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
    classes = {type(m) for m in module.modules()}
    for cls in sorted(classes, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        if cls.__module__.startswith("torch."):
            continue
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):  # defined in a REPL: its name and layers must do
            source = ""
        digest.update(f"\n{cls.__module__}.{cls.__qualname__}\n{source}".encode())
    return digest.hexdigest()


def weights_sha256(module: nn.Module) -> str:
    """Hash of every tensor of the state_dict (name, dtype, shape and bytes)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        try:
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        except (RuntimeError, TypeError):  # a dtype without a byte view
            digest.update(t.float().numpy().tobytes())
    return digest.hexdigest()


def _unwrap(model: Any) -> Any:
    """DataParallel / DistributedDataParallel (``.module``), torch.compile (``._orig_mod``)."""
    from torch import nn

    for _ in range(3):
        if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
    return model


def _save_live_model(module: nn.Module, o: dict[str, Any], out_dir: Path
                     ) -> tuple[Path, ArchSpec | None]:
    """Write the module as a model artifact under OUT/input/ (unless the same weights and
    architecture are there already); the ArchSpec that rebuilds it when no arch= names
    one."""
    import torch

    from edgeprune.model import ARTIFACT_FORMAT, ArchSpec, load_weights, parse_arch

    module = _unwrap(module)
    named = parse_arch(o.get("arch"), o.get("arch_kwargs"))
    live: ArchSpec | None = None
    if named is not None:  # the weights must fit the builder the artifacts will use
        load_weights(named.build(), dict(module.state_dict()),
                     Path(f"<{type(module).__name__} module>"), named.target)
        spec, identity = named, f"{named.target}|{sorted(named.kwargs.items())}"
    else:
        factory = LiveArchitecture(module)
        live = spec = ArchSpec(factory.target, {}, user_named=True, factory=factory)
        identity = factory.digest
    weights = weights_sha256(module)
    key = hashlib.sha256(f"{identity}\n{weights}".encode()).hexdigest()[:16]
    folder = out_dir / INPUT_DIR
    path = folder / f"model-{key}.pt"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("model-*.pt"):
            stale.unlink()
        state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        tmp = folder / f".{path.name}.tmp"
        torch.save({"format": ARTIFACT_FORMAT, "arch": spec.target, "arch_kwargs": spec.kwargs,
                    "state_dict": state, "weights_sha256": weights,
                    "source": "edgeprune Python API (a live module)"}, tmp)
        tmp.replace(path)
    return path, live


def _run(model: Any, o: dict[str, Any], argv: list[str], run: Callable[[Any], Any]) -> Any:
    """Lock the output folder, save a live module there, build the config, run."""
    from torch import nn

    from edgeprune.outlock import output_lock
    from edgeprune.pipeline import check_output_dir

    if o.get("out") is None:
        from edgeprune.options import default

        o["out"] = default("out")
    out_dir = Path(o["out"])
    if isinstance(model, str | Path):
        o["model"] = str(model)
    elif not isinstance(_unwrap(model), nn.Module):
        raise InputError(f"model is {type(model).__name__}, not a torch.nn.Module or a "
                         "checkpoint path",
                         fix="pass the module itself, or the path of its checkpoint (and "
                         "arch=)")
    elif o.get("trust_pickle"):
        raise InputError("trust_pickle=True applies to checkpoint files; a live module is "
                         "saved without pickled code", fix="drop trust_pickle")
    elif o.get("nproc") is not None and o["nproc"] > 1 and o.get("arch") is None:
        raise InputError(f"nproc={o['nproc']} trains in other processes, which cannot "
                         "rebuild a live module",
                         fix="pass arch= (module:callable that builds it), or nproc=1")
    check_output_dir(out_dir)
    created = not out_dir.exists()
    with output_lock(out_dir, wait=bool(o.get("wait_lock"))):
        try:
            live = None
            if not isinstance(model, str | Path):
                path, live = _save_live_model(model, o, out_dir)
                o["model"] = str(path)
            config = _configure().config_from_options(o, argv)
            if live is not None:
                config.arch = live
            result = run(config)
        except BaseException:
            if created:  # nothing but the saved input: leave no folder behind
                import shutil

                if not any(p.name not in (INPUT_DIR, ".lock") for p in out_dir.iterdir()):
                    shutil.rmtree(out_dir / INPUT_DIR, ignore_errors=True)
            raise
    return result  # a missed budget is a Report with passed=False, not an error
