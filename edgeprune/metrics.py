"""Scoring: what "accuracy" means for a run. One job: model outputs + the dataset's targets
→ a score in points, higher is better, the unit of ``--max-drop``.

The default is top-1 (percent of samples whose arg-max output is the label: the numbers
edgeprune always reported, bit for bit). ``--metric module:callable`` (command line or
Python API only: a job file or a target profile never chooses code) names the user's
metric in one of two forms:

- **streaming**: a callable taking no arguments (a class, or a factory) that returns an
  object with ``update(outputs, targets)`` (called once per batch) and ``compute() ->
  float``; the evaluation set's outputs are never held in memory at once;
- **plain**: a function ``(outputs, targets) -> float`` (two positional parameters),
  called once on the outputs and targets of the whole set, concatenated.

``outputs`` is the model's raw output as a float32 NumPy array (batch first: N×C for a
classifier, N×C×H×W for a segmentation model), the same from PyTorch and from the target
runtime; ``targets`` the dataset's labels for those samples as a NumPy array of any
shape N×... (an object array when the samples' targets differ in shape, e.g. boxes).
The score must be a finite real number; the report names the metric by the callable's
``metric_name`` attribute when it has one, else by its spec.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeprune.errors import InputError

TOP1 = "top1"


class Scorer(Protocol):
    """An accumulator over batches: what a streaming metric returns."""

    def update(self, outputs: np.ndarray, targets: np.ndarray) -> None: ...

    def compute(self) -> float: ...


class Top1Scorer:
    """Top-1 in percent. Accepts logits (N×C) or already arg-maxed class ids (N,), as a
    device returns them; the arithmetic is the old ``np.mean(preds == labels) * 100``."""

    def __init__(self) -> None:
        self.correct = 0
        self.count = 0

    def update(self, outputs: np.ndarray, targets: np.ndarray) -> None:
        preds = outputs if outputs.ndim == 1 else outputs.argmax(1)
        self.correct += int(np.sum(preds == targets))
        self.count += len(targets)

    def compute(self) -> float:
        return float(np.float64(self.correct) / self.count * 100.0)


class _Concatenating:
    """The plain form: keep every batch, call the function once on the whole set."""

    def __init__(self, func: Callable[[np.ndarray, np.ndarray], Any]) -> None:
        self.func = func
        self.outputs: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []

    def update(self, outputs: np.ndarray, targets: np.ndarray) -> None:
        self.outputs.append(outputs)
        self.targets.append(targets)

    def compute(self) -> Any:
        return self.func(np.concatenate(self.outputs), np.concatenate(self.targets))


@dataclass
class Metric:
    """The run's metric. ``spec`` is None for top-1; ``factory`` makes a fresh scorer."""

    name: str = TOP1
    spec: str | None = None
    factory: Callable[[], Any] | None = None
    signature: str = ""  # the module file's size + mtime: a changed metric re-runs

    @property
    def is_top1(self) -> bool:
        return self.spec is None

    @property
    def label(self) -> str:
        """How people read it: "top-1" or the user's name."""
        return "top-1" if self.is_top1 else self.name

    def to_report(self) -> dict[str, Any]:
        return {"name": self.name, "spec": self.spec, "higher_is_better": True}

    def key(self) -> dict[str, Any] | None:
        """Its identity in a stage fingerprint (None: top-1, so old caches stay valid)."""
        return None if self.is_top1 else {"spec": self.spec, "file": self.signature}

    def scorer(self) -> Scorer:
        if self.factory is None:
            return Top1Scorer()
        return _Checked(self, self.factory)

    def score(self, pairs: Any) -> float:
        """Score an iterable of (outputs, targets) batches."""
        scorer = self.scorer()
        for outputs, targets in pairs:
            scorer.update(outputs, targets)
        return scorer.compute()


class _Checked:
    """A user scorer whose failures become input errors naming the metric and the fix."""

    def __init__(self, metric: Metric, factory: Callable[[], Any]) -> None:
        self.metric = metric
        self.inner = self._call("creating it", factory)
        if not (callable(getattr(self.inner, "update", None))
                and callable(getattr(self.inner, "compute", None))):
            raise InputError(
                f"--metric {metric.spec}: calling it with no arguments returned "
                f"{type(self.inner).__name__}, which has no update(outputs, targets) and "
                "compute() methods",
                fix="return an object with update() and compute() -> float, or make the "
                "metric a function (outputs, targets) -> float")

    def _call(self, what: str, func: Callable[..., Any], *args: Any) -> Any:
        try:
            return func(*args)
        except InputError:
            raise
        except (Exception, SystemExit) as exc:
            shapes = ", ".join(f"{getattr(a, 'dtype', type(a).__name__)} "
                               f"{getattr(a, 'shape', '')}".strip() for a in args)
            raise InputError(
                f"--metric {self.metric.spec} failed {what}"
                + (f" (arguments: {shapes})" if args else "")
                + f": {type(exc).__name__}: {exc}",
                fix="run the metric in Python on the model's outputs and the dataset's "
                "targets to debug it (see `edgeprune compile --help`, --metric)") from exc

    def update(self, outputs: np.ndarray, targets: np.ndarray) -> None:
        self._call("in update(outputs, targets)", self.inner.update,
                   np.ascontiguousarray(outputs, dtype=np.float32), targets)

    def compute(self) -> float:
        return check_score(self._call("in compute()", self.inner.compute), self.metric)


def check_score(value: Any, metric: Metric) -> float:
    """A metric's result as a float, or an input error saying what it returned."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    elif hasattr(value, "numel") and hasattr(value, "item") and value.numel() == 1:
        value = value.item()  # a one-element torch tensor
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(
            f"--metric {metric.spec} returned {type(value).__name__} {value!r:.80}, not a "
            "number", fix="return the score as a float (higher is better, in the points "
            "--max-drop is given in)")
    score = float(value)
    if not math.isfinite(score):
        raise InputError(
            f"--metric {metric.spec} returned {score}, not a finite number",
            fix="make the metric return a finite score for every evaluation set (e.g. skip "
            "classes absent from both outputs and targets instead of dividing by zero)")
    return score


def resolve_metric(spec: Any) -> Metric:
    """``--metric`` → a Metric: None or "top1" is top-1; ``module:callable`` (a string from
    the command line, or a callable from the Python API) is the user's."""
    if spec is None or spec == TOP1:
        return Metric()
    if isinstance(spec, str):
        from edgeprune.data.sources import import_callable

        func = import_callable(spec, what="metric")
        name, signature = spec, _module_signature(func)
    elif callable(spec):
        func = spec
        name = f"{getattr(spec, '__module__', '?')}:{getattr(spec, '__qualname__', '?')}"
        signature = _module_signature(func)
    else:
        raise InputError(f"--metric {spec!r} is {type(spec).__name__}, not module:callable",
                         fix="pass --metric mypkg.metrics:miou (or top1, the default)")
    return Metric(name=str(getattr(func, "metric_name", None) or name), spec=name,
                  factory=_factory(func, name), signature=signature)


def _factory(func: Callable[..., Any], spec: str) -> Callable[[], Any]:
    """The streaming form (no required parameters) or the plain one (two positional)."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: treat as plain
        return lambda: _Concatenating(func)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if not required and not any(p.kind == p.KEYWORD_ONLY and p.default is p.empty
                                for p in params):
        return func  # streaming: calling it makes the accumulator
    if len(required) == 2 or (len(required) < 2 and (
            len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params))):
        return lambda: _Concatenating(func)
    raise InputError(
        f"--metric {spec} takes {len(required)} required arguments "
        f"({', '.join(p.name for p in required)}); a metric is either a function "
        "(outputs, targets) -> float or a callable with no arguments returning an object "
        "with update(outputs, targets) and compute()",
        fix="give the metric one of those two signatures")


def _module_signature(func: Any) -> str:
    try:
        path = Path(inspect.getfile(func))
        st = path.stat()
        return f"{path}|{st.st_size}|{st.st_mtime_ns}"
    except (TypeError, OSError):
        return ""


def metric_name(report: dict[str, Any]) -> str:
    """What a report's (or prune summary's) accuracy fields measure: "top-1", or the
    --metric's name (reports from before --metric have no ``metric``: top-1)."""
    name = (report.get("metric") or {}).get("name")
    return "top-1" if name in (None, TOP1) else str(name)


def metric_heading(report: dict[str, Any]) -> str:
    """A column heading: "top-1 (%)", or "NAME (points)" for a --metric."""
    name = metric_name(report)
    return "top-1 (%)" if name == "top-1" else f"{name} (points)"
