"""Typed configuration: target profiles (TOML in ``targets/``), the budget, and job files.

Profiles are data, not code, so a new device is a new TOML file. Every value is
validated here, once, so later stages can trust their config.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgeprune.errors import InputError
from edgeprune.options import default

PERCENTILES = ("p50", "p90", "p99")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


@dataclass
class ProfileSettings:
    """How latency is measured on the target."""

    warmup_iterations: int = 50
    min_iterations: int = 1000
    min_seconds: float = 2.0
    max_seconds: float = 30.0


@dataclass
class RemoteSettings:
    """Measure on a device over SSH (``[remote]`` in a profile, or ``--device`` & co).

    An empty host means this machine. The device runs ``python -m edgeprune.runner`` with
    ``python`` (edgeprune + the target's runtime installed there); Jetson targets need only
    TensorRT's ``trtexec`` on the device for profiling.
    """

    host: str = ""  # [user@]host[:port]
    python: str = "python3"
    ssh_key: str = ""  # private key file; "" = ssh's defaults (agent, ~/.ssh/id_*)
    known_hosts: str = ""  # "" = ~/.ssh/known_hosts (host keys are always checked)
    connect_timeout_s: int = 10
    command_timeout_s: int = 1800


@dataclass
class TargetProfile:
    """A hardware target: which backend runs the model, how, and what it should achieve."""

    name: str
    backend: str
    description: str = ""
    device: str = "CPU"
    precision: str = "fp32"
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    batch: int = 1
    threads: int = 0
    latency_goal_ms: float | None = None
    latency_percentile: str = "p50"
    profile: ProfileSettings = field(default_factory=ProfileSettings)
    options: dict[str, Any] = field(default_factory=dict)
    remote: RemoteSettings = field(default_factory=RemoteSettings)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Budget:
    """What the user accepts: a top-1 drop in points and an optional latency goal."""

    max_drop: float = default("max_drop")
    latency_ms: float | None = None
    percentile: str = "p50"

    def validate(self) -> Budget:
        if not math.isfinite(self.max_drop) or self.max_drop < 0 or self.max_drop > 100:
            raise InputError(
                f"invalid budget: --max-drop {self.max_drop} is not a number of top-1 points "
                "between 0 and 100",
                fix="pass e.g. --max-drop 1.0 (accept at most 1 point of top-1 loss)",
            )
        if self.latency_ms is not None and (
            not math.isfinite(self.latency_ms) or self.latency_ms <= 0
        ):
            raise InputError(
                f"invalid budget: --latency-ms {self.latency_ms} must be a positive number "
                "of milliseconds",
                fix="pass e.g. --latency-ms 5 --percentile p99, or leave --latency-ms out",
            )
        if self.percentile not in PERCENTILES:
            raise InputError(
                f"invalid budget: --percentile {self.percentile!r} is not one of "
                f"{', '.join(PERCENTILES)}",
                fix="pass --percentile p50 (median) or --percentile p99 (tail latency)",
            )
        return self


def targets_dir() -> Path:
    """The shipped profiles: ``targets/`` at the repo root, or the copy inside the wheel."""
    repo = Path(__file__).resolve().parent.parent / "targets"
    if repo.is_dir():
        return repo
    return Path(str(resources.files("edgeprune") / "_targets"))


def list_targets() -> list[TargetProfile]:
    """Every profile shipped in ``targets/``, sorted by name."""
    return [load_target(p) for p in sorted(targets_dir().glob("*.toml"))
            if p.name != "aliases.toml"]


def target_aliases() -> dict[str, str]:
    """Short names that resolve to a default profile (e.g. ``jetson``)."""
    path = targets_dir() / "aliases.toml"
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        return {str(k): str(v) for k, v in tomllib.load(fh).items()}


def resolve_target(name_or_path: str) -> TargetProfile:
    """A profile by shipped name, alias, or path to a TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        if not candidate.is_file():
            raise InputError(
                f"target profile file {candidate} does not exist",
                fix="pass a shipped target name (see `edgeprune targets`) or a path to a TOML "
                "profile",
            )
        return load_target(candidate)
    name = target_aliases().get(name_or_path, name_or_path)
    path = targets_dir() / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(t.name for t in list_targets())
        raise InputError(
            f"unknown target {name_or_path!r}",
            fix=f"use one of: {known} (list them with `edgeprune targets`), or pass a path to "
            "your own TOML profile",
        )
    return load_target(path)


def load_target(path: Path) -> TargetProfile:
    """Parse and validate one TOML profile: every key known, every value of its type."""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(
            f"cannot read target profile {path}: {exc}",
            fix="fix the TOML syntax (see targets/openvino-cpu.toml for a complete example)",
        ) from exc
    except OSError as exc:
        from edgeprune.oserrors import is_environment

        if is_environment(exc):
            raise
        raise InputError(f"cannot read target profile {path}: {exc.strerror or exc}",
                         fix="check the path of the TOML profile") from exc
    where = f"target profile {path}"
    tables = {"latency": LatencySettings, "profile": ProfileSettings, "remote": RemoteSettings}
    for table, cls in tables.items():
        values = raw.get(table, {})
        if not isinstance(values, dict):
            raise InputError(f"{where}: {table} must be a [{table}] table, not {_kind(values)}",
                             fix=f"write it as a [{table}] section (see "
                             "targets/openvino-cpu.toml)")
        _check_fields(values, cls, where, f"{table}.")
    flat = {k: v for k, v in raw.items() if k not in tables}
    _check_fields(flat, TargetProfile, where, "",
                  exclude=(*tables, "source", "latency_goal_ms", "latency_percentile"))
    missing = [k for k in ("name", "backend") if k not in raw]
    if missing:
        raise InputError(f"{where} has no {' or '.join(missing)}",
                         fix="compare it with targets/openvino-cpu.toml; required keys: "
                         "name, backend")
    latency = LatencySettings(**raw.get("latency", {}))
    profile = TargetProfile(
        **flat,
        latency_goal_ms=latency.goal_ms,
        latency_percentile=latency.percentile,
        profile=ProfileSettings(**raw.get("profile", {})),
        remote=RemoteSettings(**raw.get("remote", {})),
        source=str(path),
    )
    return _validate_target(profile, path)


@dataclass
class LatencySettings:
    """The ``[latency]`` table of a profile (kept flat on TargetProfile)."""

    goal_ms: float | None = None
    percentile: str = "p50"


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _type_ok(value: Any, annotation: str) -> bool:
    """``value`` fits a dataclass field annotation (the few shapes profiles use)."""
    annotation = annotation.replace(" ", "")
    if annotation.endswith("|None"):
        return value is None or _type_ok(value, annotation[: -len("|None")])
    if annotation == "bool":
        return isinstance(value, bool)
    if annotation == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation == "float":
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if annotation == "str":
        return isinstance(value, str)
    if annotation == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if annotation.startswith("dict"):
        return isinstance(value, dict)
    return True


def _expected(annotation: str) -> str:
    annotation = annotation.replace(" ", "").replace("|None", "")
    return {"int": "an integer", "float": "a finite number", "str": "a string",
            "bool": "true or false", "list[str]": "an array of strings"}.get(
                annotation, "a table" if annotation.startswith("dict") else annotation)


def _check_fields(values: dict[str, Any], cls: type, where: str, prefix: str,
                  exclude: tuple[str, ...] = ()) -> None:
    from dataclasses import fields

    known = {f.name: str(f.type) for f in fields(cls) if f.name not in exclude}
    for key, value in values.items():
        if key not in known:
            section = f" in [{prefix[:-1]}]" if prefix else ""
            raise InputError(
                f"{where} has an unknown key {prefix}{key}",
                fix=f"known keys{section}: {', '.join(known)} (see targets/openvino-cpu.toml)")
        if not _type_ok(value, known[key]):
            raise InputError(
                f"{where}: {prefix}{key} = {value!r} is {_kind(value)}, not "
                f"{_expected(known[key])}",
                fix=f"write {prefix}{key} as {_expected(known[key])} (see "
                "targets/openvino-cpu.toml)")


def _validate_target(profile: TargetProfile, path: Path) -> TargetProfile:
    from edgeprune.backends import BACKENDS

    where = f"target profile {path}"
    if profile.backend not in BACKENDS:
        raise InputError(f"{where}: unknown backend {profile.backend!r}",
                         fix=f"use one of {', '.join(sorted(BACKENDS))}")
    for p in [profile.precision, *profile.precisions]:
        if p not in PRECISIONS:
            raise InputError(
                f"{where}: unknown precision {p!r}",
                fix=f"use one of {', '.join(PRECISIONS)}",
            )
    if profile.precision not in profile.precisions:
        raise InputError(
            f"{where}: default precision {profile.precision!r} is not in its "
            f"supported list {profile.precisions}",
            fix="add it to `precisions` or change `precision`",
        )
    if profile.batch < 1 or profile.threads < 0:
        raise InputError(
            f"{where}: batch must be >= 1 and threads >= 0 (got batch = {profile.batch}, "
            f"threads = {profile.threads})",
            fix="set e.g. batch = 1, threads = 0 (runtime default)",
        )
    if profile.latency_percentile not in PERCENTILES:
        raise InputError(
            f"{where}: latency percentile {profile.latency_percentile!r} unknown",
            fix=f"use one of {', '.join(PERCENTILES)}",
        )
    if profile.latency_goal_ms is not None and profile.latency_goal_ms <= 0:
        raise InputError(f"{where}: latency.goal_ms = {profile.latency_goal_ms} must be a "
                         "positive number of milliseconds",
                         fix="set e.g. goal_ms = 5.0, or leave it out")
    p = profile.profile
    for key, low in (("warmup_iterations", 0), ("min_iterations", 1), ("min_seconds", 0)):
        if getattr(p, key) < low:
            raise InputError(
                f"{where}: profile.{key} = {getattr(p, key)} must be "
                + ("at least 1" if low else ">= 0"),
                fix="see targets/openvino-cpu.toml: warmup_iterations = 50, "
                "min_iterations = 1000, min_seconds = 2.0, max_seconds = 30.0")
    if p.max_seconds <= 0 or p.max_seconds < p.min_seconds:
        raise InputError(f"{where}: profile.max_seconds = {p.max_seconds} must be positive "
                         f"and at least min_seconds ({p.min_seconds})",
                         fix="raise max_seconds (it bounds the whole measurement)")
    for key in ("connect_timeout_s", "command_timeout_s"):
        if getattr(profile.remote, key) < 1:
            raise InputError(f"{where}: remote.{key} must be at least 1 second",
                             fix=f"set e.g. {key} = 60")
    return profile


def check_overrides(target: TargetProfile) -> None:
    """A profile after --threads / --batch (or the Python API) changed it."""
    if isinstance(target.threads, bool) or not isinstance(target.threads, int) or \
            target.threads < 0:
        raise InputError(f"--threads {target.threads} must be 0 (the runtime's default) or a "
                         "positive number of threads", fix="pass e.g. --threads 4, or 0")
    if isinstance(target.batch, bool) or not isinstance(target.batch, int) or target.batch < 1:
        raise InputError(f"--batch {target.batch} must be at least 1",
                         fix="pass e.g. --batch 1 (per-image latency) or --batch 8")


# every option whose value may name code; any other key ending in "arch" counts too
CODE_KEYS = ("arch", "teacher_arch", "data", "eval_data", "train_data", "prune", "metric")


def refuse_named_code(values: dict[str, Any], where: str) -> None:
    """A file may name edgeprune's built-ins (``arch = "resnet20"``, ``prune = "dscore"``)
    but never ``module:callable`` code: only the command line or the Python API choose
    code to run."""
    from edgeprune.zoo import builtin_builder

    for key in dict.fromkeys([*CODE_KEYS, *(k for k in values if k.endswith("arch"))]):
        value = values.get(key)
        if key.endswith("arch") and isinstance(value, str) and \
                builtin_builder(value) is not None:
            continue
        if isinstance(value, str) and ":" in value and not Path(value).exists():
            raise InputError(
                f"{where} names code to run ({key} = {value!r}); a file never chooses which "
                "code runs",
                fix=f"pass --{key.replace('_', '-')} {value} on the command line instead",
            )
