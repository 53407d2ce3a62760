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

    max_drop: float = 1.0
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
    """Parse and validate one TOML profile."""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(
            f"cannot read target profile {path}: {exc}",
            fix="fix the TOML syntax (see targets/openvino-cpu.toml for a complete example)",
        ) from exc
    try:
        latency = raw.pop("latency", {})
        prof = ProfileSettings(**raw.pop("profile", {}))
        remote = RemoteSettings(**raw.pop("remote", {}))
        profile = TargetProfile(
            **raw,
            latency_goal_ms=latency.get("goal_ms"),
            latency_percentile=latency.get("percentile", "p50"),
            profile=prof,
            remote=remote,
            source=str(path),
        )
    except TypeError as exc:
        raise InputError(
            f"target profile {path} has an unknown or missing key: {exc}",
            fix="compare it with targets/openvino-cpu.toml; required keys: name, backend",
        ) from exc
    return _validate_target(profile, path)


def _validate_target(profile: TargetProfile, path: Path) -> TargetProfile:
    for p in [profile.precision, *profile.precisions]:
        if p not in PRECISIONS:
            raise InputError(
                f"target profile {path}: unknown precision {p!r}",
                fix=f"use one of {', '.join(PRECISIONS)}",
            )
    if profile.precision not in profile.precisions:
        raise InputError(
            f"target profile {path}: default precision {profile.precision!r} is not in its "
            f"supported list {profile.precisions}",
            fix="add it to `precisions` or change `precision`",
        )
    if profile.batch < 1 or profile.threads < 0:
        raise InputError(
            f"target profile {path}: batch must be >= 1 and threads >= 0",
            fix="set e.g. batch = 1, threads = 0 (runtime default)",
        )
    if profile.latency_percentile not in PERCENTILES:
        raise InputError(
            f"target profile {path}: latency percentile {profile.latency_percentile!r} unknown",
            fix=f"use one of {', '.join(PERCENTILES)}",
        )
    return profile


def load_job_file(path: Path) -> dict[str, Any]:
    """A job file: the ``compile`` options as TOML keys (CLI flags override them)."""
    if not path.is_file():
        raise InputError(
            f"job file {path} does not exist", fix="pass the path of a TOML job file to --job"
        )
    try:
        with path.open("rb") as fh:
            job = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(
            f"job file {path} is not valid TOML: {exc}", fix="fix the TOML syntax"
        ) from exc
    except OSError as exc:
        raise InputError(f"cannot read job file {path}: {exc.strerror or exc}",
                         fix="check the path and its permissions") from exc
    refuse_named_code(job, f"job file {path}")
    return job


CODE_KEYS = ("arch", "data", "eval_data", "train_data", "prune", "metric")


def refuse_named_code(values: dict[str, Any], where: str) -> None:
    """A file may name edgeprune's built-ins (``arch = "resnet20"``, ``prune = "dscore"``)
    but never ``module:callable`` code: only the command line or the Python API choose
    code to run."""
    from edgeprune.zoo import builtin_builder

    for key in CODE_KEYS:
        value = values.get(key)
        if key == "arch" and isinstance(value, str) and builtin_builder(value) is not None:
            continue
        if isinstance(value, str) and ":" in value and not Path(value).exists():
            raise InputError(
                f"{where} names code to run ({key} = {value!r}); a file never chooses which "
                "code runs",
                fix=f"pass --{key.replace('_', '-')} {value} on the command line instead",
            )
