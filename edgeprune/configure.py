"""Options → a validated PipelineConfig (and SearchConfig), shared by the CLI, job files
and the Python API.

The values come as a dict of option name → value (None: not given; the CLI's flags are
False when not given); a job file fills in what the command line left out; every default
comes from edgeprune.options.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from edgeprune.errors import InputError
from edgeprune.options import (
    BY_NAME,
    DEFAULT_CRITERION,
    Resolved,
    check_values,
    default,
    job_keys,
    refuse_unknown,
)


def load_job_file(path: Path, command: str = "compile") -> dict[str, Any]:
    """A job file: the command's options as TOML keys, each value checked against its
    option's type and range; unknown keys refused with a did-you-mean."""
    from edgeprune.config import refuse_named_code

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
        from edgeprune.oserrors import is_environment

        if is_environment(exc):
            raise
        raise InputError(f"cannot read job file {path}: {exc.strerror or exc}",
                         fix="check the path and its permissions") from exc
    refuse_named_code(job, f"job file {path}")
    refuse_unknown(set(job), command, f"job file {path}", "key", known=job_keys(command))
    check_values(job, f"job file {path}")
    return job


def resolve(options: dict[str, Any], command: str = "compile",
            typed: bool = True) -> Resolved:
    """The run's options: the given values (command line / API) over the job file's.
    ``typed``: the values were typed by a parser (the CLI); the API's are checked."""
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    refuse_unknown(set(given) - {"model"}, command, "the command", "flag")
    check_values({k: v for k, v in given.items() if k in BY_NAME}, "" if typed else
                 f"edgeprune.{command}()", typed=typed)
    job_path = given.get("job")
    job = load_job_file(Path(job_path), command) if job_path else {}
    return Resolved(given={**job, **given}, job_path=str(job_path) if job_path else None)


def floats(value: str | list | float | int | None, name: str) -> list[float] | None:
    """A comma-separated list (or an array from a file / the API) as floats."""
    if value is None:
        return None
    try:
        if isinstance(value, (list, tuple)):
            return [float(v) for v in value]
        if isinstance(value, (int, float)):
            return [float(value)]
        return [float(v) for v in str(value).split(",") if v.strip()]
    except (TypeError, ValueError) as exc:
        raise InputError(f"--{name} {value!r} is not a comma-separated list of numbers",
                         fix=f"pass e.g. --{name} 0.485,0.456,0.406") from exc


def size(value: str | int | list | tuple | None) -> tuple[int, int] | None:
    """--input-size: 224, 224x224, [224, 224]."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        values = [value]
    elif isinstance(value, (list, tuple)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise InputError(f"--input-size {value!r} is not a size", fix="pass [224, 224]")
        values = [int(v) for v in value]
    else:
        try:
            values = [int(v) for v in str(value).replace("x", ",").split(",") if v.strip()]
        except ValueError as exc:
            raise InputError(f"--input-size {value!r} is not a size",
                             fix="pass 224 or 224x224 (height x width)") from exc
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise InputError(f"--input-size {value!r} is not a size", fix="pass 224 or 224x224")
    return (values[0], values[1])


def _flag(key: str) -> str:
    return BY_NAME[key].cli_flag if key in BY_NAME else "--" + key.replace("_", "-")


def search_options(r: Resolved):
    """SearchConfig for --search (the options it decides itself are refused), else None."""
    from edgeprune.search import RUNTIME_PRECISIONS, SearchConfig

    if not r.has("search"):
        for key in ("search_levels", "search_levels_in", "search_precisions", "max_trials",
                    "time_budget", "search_ternary"):
            if r.has(key):
                raise InputError(f"{_flag(key)} only applies to --search",
                                 fix="add --search, or drop the option")
        return None
    for key in ("precision", "quant", "flops_reduction", "params_reduction",
                "latency_reduction", "sensitivity_threshold", "prune_ratio"):
        if r.has(key):
            raise InputError(f"--search chooses the pruning level and the precision itself, "
                             f"so {_flag(key)} cannot be given with it",
                             fix="drop it, or use --search-levels / --search-precisions / "
                             "--search-ternary to bound the search")
    if r.has("int8_accuracy_control"):
        raise InputError("--search uses INT8 accuracy control by itself (when plain INT8 "
                         "misses the budget), so --int8-accuracy-control cannot be given "
                         "with it", fix="drop --int8-accuracy-control")
    raw_levels = r["search_levels"]
    dense_only = isinstance(raw_levels, str) and raw_levels.strip().lower() == "none"
    levels = [] if dense_only else floats(raw_levels, "search-levels") or []
    if not all(0 < v < 1 for v in levels):
        raise InputError("--search-levels must be fractions between 0 and 1",
                         fix="e.g. --search-levels 0.3,0.5,0.7")
    precisions = r.given.get("search_precisions")
    if isinstance(precisions, str):
        precisions = [p.strip() for p in precisions.split(",") if p.strip()]
    if precisions is not None and not set(precisions) <= set(RUNTIME_PRECISIONS):
        raise InputError(f"--search-precisions {','.join(map(str, precisions))}: use "
                         f"{', '.join(RUNTIME_PRECISIONS)}", fix="e.g. --search-precisions "
                         "fp32,int8")
    budget = r.given.get("time_budget")
    return SearchConfig(
        flops_levels=list(levels), level_metric=str(r["search_levels_in"]),
        precisions=precisions, ternary=r.has("search_ternary"),
        criterion=str(r.given.get("prune") or DEFAULT_CRITERION),
        max_trials=int(r["max_trials"]),
        time_budget_s=float(budget) if budget is not None else None)


def config_from_options(options: dict[str, Any], argv: list[str],
                        command: str = "compile", typed: bool = True):
    """The options of one run (None: not given) → a validated PipelineConfig."""
    return build_config(resolve(options, command, typed), argv)


def build_config(r: Resolved, argv: list[str]):
    """Resolved options → a validated PipelineConfig."""
    from edgeprune.backends.openvino import ACCURACY_CONTROL
    from edgeprune.config import Budget, ProfileSettings, resolve_target
    from edgeprune.data.preprocess import Preprocess
    from edgeprune.data.splits import DataOptions
    from edgeprune.model import parse_arch
    from edgeprune.pipeline import PipelineConfig, check_output_dir

    target = resolve_target(str(r["target"]))
    precision = _precision_for_quant(r.given.get("quant"), r.given.get("precision"),
                                     target.precision)
    if precision not in target.precisions:
        raise InputError(f"target {target.name} does not support precision {precision!r}",
                         fix=f"use one of {', '.join(target.precisions)}")
    target.precision = precision
    for key in ("threads", "batch"):
        if r.given.get(key) is not None:
            setattr(target, key, int(r.given[key]))
    if r.given.get("iterations") is not None:
        iterations = int(r.given["iterations"])
        target.profile = ProfileSettings(
            warmup_iterations=min(target.profile.warmup_iterations, iterations),
            min_iterations=iterations, min_seconds=0.0,
            max_seconds=target.profile.max_seconds)
    _device_options(r, target)
    budget = Budget(
        max_drop=float(r["max_drop"]),
        latency_ms=r.given.get("latency_ms", target.latency_goal_ms),
        percentile=r.given.get("percentile", target.latency_percentile),
    ).validate()
    if r.has("int8_accuracy_control"):
        if target.backend != "openvino" or precision != "int8":
            raise InputError("--int8-accuracy-control needs --precision int8 on an OpenVINO "
                             f"target (got {precision} on {target.name})",
                             fix="add --precision int8 --target openvino-cpu, or drop it")
        target.options[ACCURACY_CONTROL] = budget.max_drop
    metric = _metric_option(r, target)
    preprocess = Preprocess(
        input_size=size(r.given.get("input_size")),
        resize=r.given.get("resize"),
        channels=int(r["channels"]),
        mean=floats(r["mean"], "mean") or default("mean"),
        std=floats(r["std"], "std") or default("std"),
    ).validate()
    data = DataOptions(
        data=r.given.get("data"), eval_data=r.given.get("eval_data"),
        train_data=r.given.get("train_data"), calib_size=int(r["calib_size"]),
        eval_limit=r.given.get("eval_limit"), train_limit=r.given.get("train_limit"),
        seed=int(r["seed"]), class_labels=metric.is_top1,
        decoded_cache_mb=float(r["decoded_cache_mb"]), workers=r.given.get("workers"),
    )
    if not (data.data or data.eval_data):
        raise InputError("no data given", fix="pass --data DIR (or --eval-data and --train-data)")
    exporter = str(r["exporter"])
    out_dir = Path(r["out"])
    check_output_dir(out_dir)
    model = r.given.get("model")
    if model is None:
        raise InputError("no model given", fix="pass the checkpoint as MODEL")
    model = Path(model)
    if not model.is_file():
        raise InputError(f"model file {model} does not exist" if not model.exists() else
                         f"model path {model} is not a file", fix="check the path to MODEL")
    prune_config, recover_config = _prune_options(r, metric.is_top1)
    return PipelineConfig(
        prune=prune_config, recover=recover_config,
        quantize=_quant_options(r, metric.is_top1), metric=metric,
        teacher=_teacher_options(r), model_path=model,
        arch=parse_arch(r.given.get("arch"), r.given.get("arch_kwargs")),
        data=data, preprocess=preprocess, target=target, precision=precision, budget=budget,
        out_dir=out_dir, trust_pickle=r.has("trust_pickle"), exporter=exporter,
        fresh=r.has("fresh"), command=list(argv), wait_lock=r.has("wait_lock"),
    )


def _metric_option(r: Resolved, target: Any):
    """--metric → the run's Metric (top-1 by default), and what a user metric rules out:
    it scores raw outputs, which only a runtime on this machine hands back."""
    from edgeprune.backends import get_backend
    from edgeprune.metrics import resolve_metric

    metric = resolve_metric(r.given.get("metric"))
    if metric.is_top1:
        return metric
    if target.remote.host or getattr(get_backend(target.backend), "needs_device", False):
        raise InputError(
            f"--metric {metric.spec} scores the runtime's raw outputs, but {target.name} "
            + (f"evaluates on the device {target.remote.host}" if target.remote.host else
               "evaluates on its device") + ", which returns top-1 predictions only",
            fix="evaluate on this machine (drop --device; use openvino-cpu or "
            "onnxruntime-cpu), or drop --metric")
    if r.has("int8_accuracy_control"):
        raise InputError(
            f"--int8-accuracy-control restores layers by top-1 agreement, which --metric "
            f"{metric.spec} does not measure", fix="drop --int8-accuracy-control (plain "
            "INT8 is still judged by the metric), or drop --metric")
    return metric


def _recover_mode(r: Resolved, class_labels: bool) -> str:
    """--recover, whose default with a user metric is label-free distillation: its targets
    are not class ids a cross-entropy could train on (an explicit kd/labels is checked
    against the training targets by the load stage)."""
    if not class_labels and not r.given.get("recover"):
        return "distill"
    return str(r["recover"])


def _device_options(r: Resolved, target: Any) -> None:
    """--device & co into the target's [remote] settings, --dla-core into its options; and
    refuse a target whose runtime is missing here before any work starts."""
    from edgeprune.backends import get_backend
    from edgeprune.remote import parse_address

    host = r.given.get("device") or target.remote.host or None
    if host:
        parse_address(str(host))  # an odd address is refused before any work
        target.remote.host = str(host)
    for key in ("ssh_key", "known_hosts"):
        value = r.given.get(key)
        if value is not None:
            path = Path(str(value)).expanduser()
            if not path.is_file():
                raise InputError(f"{_flag(key)} {value} is not a file",
                                 fix=f"pass the path of an existing {key.replace('_', ' ')} "
                                 "file")
            setattr(target.remote, key, str(path.resolve()))
    if r.given.get("remote_python") is not None:
        target.remote.python = str(r.given["remote_python"])
    dla = r.given.get("dla_core")
    if dla is not None:
        cores = int(target.options.get("dla_cores", 0))
        module = target.options.get("module", target.name)
        if target.backend != "jetson" or not 0 <= int(dla) < cores:
            raise InputError(
                f"--dla-core {dla}: {module} has "
                + ("no DLA" if cores == 0 else f"DLA cores 0-{cores - 1} only"),
                fix="drop --dla-core, or pick a Jetson with DLA (jetson-orin-nx, "
                "jetson-agx-orin, jetson-xavier-nx)")
        target.options["dla_core"] = int(dla)
    if r.has("dla_strict"):
        if "dla_core" not in target.options:
            raise InputError("--dla-strict needs --dla-core", fix="add --dla-core 0")
        target.options["dla_strict"] = True
    ok, why = get_backend(target.backend).available()
    if not ok:
        raise InputError(f"target {target.name} cannot compile on this machine: {why}",
                         fix="install its runtime here, or pick another target (edgeprune "
                         "targets)")


def _teacher_options(r: Resolved):
    """TeacherSpec for --teacher, else None (distill from the input model)."""
    from edgeprune.model import TeacherSpec, parse_arch

    path = r.given.get("teacher")
    if path is None:
        for key in ("teacher_arch", "teacher_arch_kwargs"):
            if r.has(key):
                raise InputError(f"{_flag(key)} only applies to --teacher",
                                 fix="add --teacher MODEL, or drop the option")
        return None
    path = Path(str(path))
    if not path.is_file():
        raise InputError(f"--teacher {path} is not a file", fix="pass the teacher checkpoint")
    return TeacherSpec(path, parse_arch(r.given.get("teacher_arch"),
                                        r.given.get("teacher_arch_kwargs")))


def _train_config(r: Resolved, prefix: str):
    """The TrainConfig of recovery (prefix "recover") or ternary QAT ("quant")."""
    from edgeprune.train import TrainConfig

    return TrainConfig(
        epochs=float(r[f"{prefix}_epochs"]), lr=float(r[f"{prefix}_lr"]),
        batch_size=int(r["recover_batch"]), max_steps=r.given.get(f"{prefix}_steps"),
        kd_weight=float(r["kd_weight"]), temperature=float(r["kd_temperature"]),
        seed=int(r["seed"]), augment=str(r["augment"]),
        rrc_min_scale=float(r["rrc_min_scale"]),
    )


def _prune_options(r: Resolved, class_labels: bool = True):
    """PruneConfig and RecoverConfig from the options, or (None, None) without --prune."""
    from edgeprune.prune.compensate import CompensationConfig
    from edgeprune.prune.policy import PruneConfig
    from edgeprune.prune.structural import PruneOptions
    from edgeprune.stages.recover import RecoverConfig

    criterion = r.given.get("prune")
    if criterion in (None, "none"):
        for key in ("compensate", "compensate_samples"):
            if r.has(key):
                raise InputError(f"{_flag(key)} only applies to --prune",
                                 fix="add --prune dscore --flops-reduction 0.5, or drop it")
        return None, None
    compensation = CompensationConfig(method=str(r["compensate"]),
                                      samples=int(r["compensate_samples"]))
    exclude = r["exclude"]
    options = PruneOptions(
        min_channels=int(r["min_channels"]), round_to=int(r["round_to"]),
        exclude=[exclude] if isinstance(exclude, str) else list(exclude or []),
        prune_residual=not r.has("keep_residual"),
    )
    prune = PruneConfig(
        criterion=str(criterion),
        flops_reduction=r.given.get("flops_reduction"),
        params_reduction=r.given.get("params_reduction"),
        latency_reduction=r.given.get("latency_reduction"),
        threshold=r.given.get("sensitivity_threshold"),
        ratio=r.given.get("prune_ratio"),
        sensitivity_samples=int(r["sensitivity_samples"]),
        options=options, compensation=compensation,
    ).validate()
    mode = _recover_mode(r, class_labels)
    if mode == "none":
        return prune, None
    recover = RecoverConfig(mode=mode, train=_train_config(r, "recover"),
                            nproc=int(r["nproc"])).validate()
    return prune, recover


def _precision_for_quant(quant: str | None, precision: str | None, default: str) -> str:
    """The target precision a --quant choice implies; a contradicting --precision is an
    error rather than a silent override."""
    if quant is None:
        return precision or default
    from edgeprune.stages.quantize import QUANT_MODES

    if quant not in QUANT_MODES:
        raise InputError(f"unknown --quant {quant!r}", fix="use fp32, int8 or ternary")
    implied = {"fp32": precision or "fp32", "int8": "int8", "ternary": "int8"}[quant]
    if (precision and precision != implied) or (quant == "fp32" and precision == "int8"):
        raise InputError(
            f"--quant {quant} and --precision {precision} contradict each other",
            fix="drop --precision: --quant int8 and --quant ternary run INT8 on the target; "
            "--quant fp32 runs fp32 (or --precision fp16/bf16)")
    return implied


def _quant_options(r: Resolved, class_labels: bool = True):
    """QuantizeConfig for --quant ternary, else None (fp32/int8 need no training stage)."""
    from edgeprune.quant.ternary import TernaryConfig
    from edgeprune.stages.quantize import QuantizeConfig

    if r.given.get("quant") != "ternary":
        for key in ("quant_method", "quant_epochs", "quant_lr", "quant_steps",
                    "ternary_sparsity", "ternary_first_last"):
            if r.has(key):
                raise InputError(f"{_flag(key)} only applies to --quant ternary",
                                 fix="add --quant ternary, or drop the option")
        return None
    ternary = TernaryConfig(method=str(r["quant_method"]),
                            prune_target=float(r["ternary_sparsity"]),
                            keep_first_last_8bit=not r.has("ternary_first_last"))
    mode = _recover_mode(r, class_labels)
    if mode == "none":
        mode = default("recover") if class_labels else "distill"
    return QuantizeConfig(ternary=ternary, mode=mode,
                          train=_train_config(r, "quant"), nproc=int(r["nproc"])).validate()
