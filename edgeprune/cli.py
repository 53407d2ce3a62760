"""The ``edgeprune`` command line: thin; options → PipelineConfig → pipeline.

Exit codes: 0 budget met, 3 budget missed, 2 usage or input error, 1 internal failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeprune import __version__
from edgeprune.errors import EXIT_INPUT, EXIT_INTERNAL, EdgepruneError, InputError

app = typer.Typer(
    name="edgeprune",
    help="Prune, quantize, compile and prove a trained PyTorch vision model on an edge "
    "target.\n\nExit codes: 0 budget met, 3 budget missed, 2 usage or input error, "
    "1 internal failure.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)

COMPILE_EPILOG = """\
**Examples**

Built-in architecture, CIFAR-style ImageFolder data (train/ and test/ sub-folders):

    edgeprune compile resnet20.th --arch resnet20 --data cifar10/ \\
        --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --target openvino-cpu

Your own architecture, INT8, with a latency goal checked at p99, JSON on stdout for CI:

    edgeprune compile model.pt --arch mypkg.nets:build --arch-kwargs '{"num_classes": 5}' \\
        --eval-data val/ --train-data train/ --input-size 224 --resize 256 \\
        --target openvino-cpu --precision int8 --max-drop 1.0 --latency-ms 5 \\
        --percentile p99 --json > report.json

Every option can also come from a TOML job file (`--job job.toml`, keys named like the
options with underscores: `max_drop = 1.0`); options on the command line win.
"""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeprune {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """edgeprune: compile a trained vision model for an edge target, within a budget."""


def _guarded(debug: bool, body: Callable[[], int]) -> None:
    """Run a command; turn errors into one readable paragraph and the right exit code."""
    debug = debug or os.environ.get("EDGEPRUNE_DEBUG") == "1"
    try:
        code = body()
    except EdgepruneError as exc:
        if debug:
            traceback.print_exc()
        typer.echo(exc.paragraph(), err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: finished stages are kept under the output directory; run the "
                   "same command again to resume", err=True)
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:
        if debug:
            traceback.print_exc()
        typer.echo(f"internal error: {type(exc).__name__}: {exc}\n  fix: re-run with --debug "
                   "for the traceback and report it", err=True)
        raise typer.Exit(EXIT_INTERNAL) from None
    raise typer.Exit(code)


def _floats(text: str | list | None, name: str) -> list[float] | None:
    if text is None:
        return None
    if isinstance(text, list):
        return [float(v) for v in text]
    try:
        return [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError as exc:
        raise InputError(f"--{name} {text!r} is not a comma-separated list of numbers",
                         fix=f"pass e.g. --{name} 0.485,0.456,0.406") from exc


def _size(text: str | int | list | None) -> tuple[int, int] | None:
    if text is None:
        return None
    if isinstance(text, int):
        return (text, text)
    if isinstance(text, list):
        values = [int(v) for v in text]
    else:
        try:
            values = [int(v) for v in str(text).replace("x", ",").split(",") if v.strip()]
        except ValueError as exc:
            raise InputError(f"--input-size {text!r} is not a size",
                             fix="pass 224 or 224x224 (height x width)") from exc
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise InputError(f"--input-size {text!r} is not a size", fix="pass 224 or 224x224")
    return (values[0], values[1])


def _pick(cli: Any, job: dict[str, Any], key: str, default: Any = None) -> Any:
    return cli if cli is not None else job.get(key, default)


@contextlib.contextmanager
def _stdout_to_stderr(active: bool) -> Iterator[None]:
    """Under --json, stdout carries only the report: whatever libraries print (NNCF's
    progress, runtime logs written to fd 1) goes to stderr while the pipeline runs."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _run_and_emit(config: Any, as_json: bool, quiet: bool) -> int:
    from rich.console import Console

    from edgeprune.job import run_compile
    from edgeprune.report.console import print_summary
    from edgeprune.ui import UI

    with _stdout_to_stderr(as_json):
        report, code = run_compile(config, UI(quiet or as_json))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif not quiet:
        print_summary(report, Console(stderr=False))
    return code


@app.command(epilog=COMPILE_EPILOG)
def compile(
    model: Annotated[Path, typer.Argument(help="Checkpoint: a state_dict, {'state_dict': ...} "
                                          "or {'model': ...}; `module.` prefixes are stripped.")],
    arch: Annotated[str | None, typer.Option(help="Architecture as module:callable, or a "
                                             "built-in name (resnet20, fashion_cnn, ...).")] = None,
    arch_kwargs: Annotated[str | None, typer.Option(help="JSON keyword arguments for --arch, "
                                                    "e.g. '{\"num_classes\": 10}'.")] = None,
    trust_pickle: Annotated[bool, typer.Option(
        "--trust-pickle", help="Allow a checkpoint that holds pickled Python objects (runs "
        "code from the file!). Only for files you trust.")] = False,
    data: Annotated[str | None, typer.Option(
        help="Data: ImageFolder dir (with train/ and test|val/ sub-dirs, or class dirs), a "
        "folder of IDX files, an .npz (images, labels), or module:callable.")] = None,
    eval_data: Annotated[str | None, typer.Option(
        help="Evaluation split (overrides --data's).")] = None,
    train_data: Annotated[str | None, typer.Option(
        help="Training split: calibration (and later fine-tuning) data.")] = None,
    input_size: Annotated[str | None, typer.Option(help="Model input HxW, e.g. 224 or 32x32 "
                                                   "(default: the images' size).")] = None,
    resize: Annotated[int | None, typer.Option(help="Resize the shorter side to this, then "
                                               "center-crop --input-size.")] = None,
    channels: Annotated[int | None, typer.Option(help="1 (grey) or 3 (RGB). Default 3.")] = None,
    mean: Annotated[str | None, typer.Option(help="Per-channel mean on [0,1] pixels, e.g. "
                                             "0.485,0.456,0.406. Default 0.")] = None,
    std: Annotated[str | None, typer.Option(help="Per-channel std, e.g. 0.229,0.224,0.225. "
                                            "Default 1.")] = None,
    calib_size: Annotated[int | None, typer.Option(help="Calibration images. Default 300.")] = None,
    eval_limit: Annotated[int | None, typer.Option(help="Evaluate on a seeded random subset "
                                                   "of this many images.")] = None,
    target: Annotated[str | None, typer.Option(help="Target profile name (see `edgeprune "
                                               "targets`) or a TOML path. Default "
                                               "openvino-cpu.")] = None,
    precision: Annotated[str | None, typer.Option(help="Override the profile's precision: "
                                                  "fp32, bf16, fp16, int8.")] = None,
    threads: Annotated[int | None, typer.Option(help="Runtime threads (0 = default).")] = None,
    batch: Annotated[int | None, typer.Option(help="Batch size for latency.")] = None,
    max_drop: Annotated[float | None, typer.Option(help="Accuracy budget: max top-1 drop in "
                                                   "points. Default 1.0.")] = None,
    latency_ms: Annotated[float | None, typer.Option(
        help="Latency goal in ms (per batch).")] = None,
    percentile: Annotated[str | None, typer.Option(help="Percentile the latency goal is "
                                                   "checked at: p50, p90, p99.")] = None,
    iterations: Annotated[int | None, typer.Option(help="Minimum timed iterations per latency "
                                                   "measurement (profile default 1000).")] = None,
    prune: Annotated[str | None, typer.Option(
        help="Structural pruning criterion: dscore, dstep, dstep-gm, l1, global-magnitude, "
        "random, or module:callable. Needs one amount: --flops-reduction, "
        "--params-reduction, --sensitivity-threshold or --prune-ratio.")] = None,
    flops_reduction: Annotated[float | None, typer.Option(
        help="Prune until FLOPs drop by this fraction (e.g. 0.5).")] = None,
    params_reduction: Annotated[float | None, typer.Option(
        help="Prune until parameters drop by this fraction.")] = None,
    sensitivity_threshold: Annotated[float | None, typer.Option(
        help="Per-layer ratio = largest whose pruned-alone top-1 (%) stays above this.")] = None,
    prune_ratio: Annotated[float | None, typer.Option(
        help="The same pruning ratio for every layer group.")] = None,
    min_channels: Annotated[int | None, typer.Option(
        help="Never keep fewer channels in a layer. Default 4.")] = None,
    round_to: Annotated[int | None, typer.Option(
        help="Keep channel counts a multiple of this (e.g. 8). Default 1.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        help="Layer (module name) to leave unpruned; repeatable.")] = None,
    keep_residual: Annotated[bool, typer.Option(
        "--keep-residual", help="Do not prune residual streams (the D-Score paper's "
        "choice); by default coupled residual channels are pruned together.")] = False,
    sensitivity_samples: Annotated[int | None, typer.Option(
        help="Training images for the sensitivity analysis. Default 1000.")] = None,
    recover: Annotated[str | None, typer.Option(
        help="After pruning: fine-tune with labels (default), distill (label-free, from the "
        "original model), or none.")] = None,
    recover_epochs: Annotated[float | None, typer.Option(
        help="Recovery epochs on the training split. Default 3.")] = None,
    recover_lr: Annotated[float | None, typer.Option(
        help="Recovery learning rate (SGD, cosine to 0). Default 0.01.")] = None,
    recover_batch: Annotated[int | None, typer.Option(help="Recovery batch size. "
                                                      "Default 128.")] = None,
    recover_steps: Annotated[int | None, typer.Option(
        help="Cap on recovery steps (smoke runs).")] = None,
    nproc: Annotated[int | None, typer.Option(
        help="Fine-tune in N processes with torchrun (DDP: gloo on CPU, NCCL on GPU).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory. Default ./out.")] = None,
    job: Annotated[Path | None, typer.Option(help="TOML job file with these options.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for data subsets. Default 0.")] = None,
    exporter: Annotated[str | None, typer.Option(help="ONNX exporter: dynamo (default) or "
                                                 "torchscript.")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore cached stages.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print report.json to stdout "
                                          "(implies --quiet).")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Run the pipeline on MODEL for a target and check the result against the budget.

    Stages: load → baseline → prune → recover → quantize → export → compile → profile →
    evaluate → verdict, each written to OUT/NN-stage/ (re-runs reuse unchanged stages).
    The report is OUT/report.json.
    """
    options = {k: v for k, v in locals().items()}

    def body() -> int:
        return _run_and_emit(config_from_options(options, sys.argv), as_json, quiet)

    _guarded(debug, body)


def config_from_options(o: dict[str, Any], argv: list[str]):
    """Merge CLI options over a job file into a validated PipelineConfig."""
    from edgeprune.config import Budget, ProfileSettings, load_job_file, resolve_target
    from edgeprune.data.preprocess import Preprocess
    from edgeprune.data.splits import DataOptions
    from edgeprune.model import parse_arch
    from edgeprune.pipeline import PipelineConfig, check_output_dir

    job = load_job_file(o["job"]) if o.get("job") else {}
    unknown = set(job) - set(o)
    if unknown:
        raise InputError(f"job file {o['job']} has unknown keys: {', '.join(sorted(unknown))}",
                         fix="use the option names of `edgeprune compile --help` with "
                         "underscores, e.g. max_drop")
    target = resolve_target(_pick(o["target"], job, "target", "openvino-cpu"))
    precision = _pick(o["precision"], job, "precision", target.precision)
    if precision not in target.precisions:
        raise InputError(f"target {target.name} does not support precision {precision!r}",
                         fix=f"use one of {', '.join(target.precisions)}")
    target.precision = precision
    for key in ("threads", "batch"):
        value = _pick(o[key], job, key)
        if value is not None:
            setattr(target, key, int(value))
    iterations = _pick(o["iterations"], job, "iterations")
    if iterations is not None:
        if int(iterations) < 1:
            raise InputError("--iterations must be at least 1", fix="pass e.g. --iterations 1000")
        target.profile = ProfileSettings(
            warmup_iterations=min(target.profile.warmup_iterations, int(iterations)),
            min_iterations=int(iterations), min_seconds=0.0,
            max_seconds=target.profile.max_seconds)
    budget = Budget(
        max_drop=float(_pick(o["max_drop"], job, "max_drop", 1.0)),
        latency_ms=_pick(o["latency_ms"], job, "latency_ms", target.latency_goal_ms),
        percentile=_pick(o["percentile"], job, "percentile", target.latency_percentile),
    ).validate()
    channels = int(_pick(o["channels"], job, "channels", 3))
    preprocess = Preprocess(
        input_size=_size(_pick(o["input_size"], job, "input_size")),
        resize=_pick(o["resize"], job, "resize"),
        channels=channels,
        mean=_floats(_pick(o["mean"], job, "mean"), "mean") or [0.0],
        std=_floats(_pick(o["std"], job, "std"), "std") or [1.0],
    ).validate()
    data = DataOptions(
        data=_pick(o["data"], job, "data"), eval_data=_pick(o["eval_data"], job, "eval_data"),
        train_data=_pick(o["train_data"], job, "train_data"),
        calib_size=int(_pick(o["calib_size"], job, "calib_size", 300)),
        eval_limit=_pick(o["eval_limit"], job, "eval_limit"),
        seed=int(_pick(o["seed"], job, "seed", 0)),
    )
    if not (data.data or data.eval_data):
        raise InputError("no data given", fix="pass --data DIR (or --eval-data and --train-data)")
    exporter = _pick(o["exporter"], job, "exporter", "dynamo")
    if exporter not in ("dynamo", "torchscript"):
        raise InputError(f"unknown --exporter {exporter!r}", fix="use dynamo or torchscript")
    out_dir = Path(_pick(o["out"], job, "out", "out"))
    check_output_dir(out_dir)
    model = Path(o["model"])
    if not model.is_file():
        raise InputError(f"model file {model} does not exist" if not model.exists() else
                         f"model path {model} is not a file", fix="check the path to MODEL")
    prune_config, recover_config = _prune_options(o, job)
    return PipelineConfig(
        prune=prune_config, recover=recover_config,
        model_path=model,
        arch=parse_arch(_pick(o["arch"], job, "arch"), _pick(o["arch_kwargs"], job,
                                                              "arch_kwargs")),
        data=data, preprocess=preprocess, target=target, precision=precision, budget=budget,
        out_dir=out_dir, trust_pickle=bool(o["trust_pickle"] or job.get("trust_pickle")),
        exporter=exporter, fresh=bool(o["fresh"]), command=list(argv),
    )


def _prune_options(o: dict[str, Any], job: dict[str, Any]):
    """PruneConfig and RecoverConfig from the options, or (None, None) without --prune."""
    from edgeprune.prune.policy import PruneConfig
    from edgeprune.prune.structural import PruneOptions
    from edgeprune.stages.recover import RecoverConfig
    from edgeprune.train import TrainConfig

    criterion = _pick(o.get("prune"), job, "prune")
    if criterion in (None, "none"):
        return None, None
    options = PruneOptions(
        min_channels=int(_pick(o.get("min_channels"), job, "min_channels", 4)),
        round_to=int(_pick(o.get("round_to"), job, "round_to", 1)),
        exclude=list(_pick(o.get("exclude"), job, "exclude", []) or []),
        prune_residual=not bool(o.get("keep_residual") or job.get("keep_residual")),
    )
    prune = PruneConfig(
        criterion=criterion,
        flops_reduction=_pick(o.get("flops_reduction"), job, "flops_reduction"),
        params_reduction=_pick(o.get("params_reduction"), job, "params_reduction"),
        threshold=_pick(o.get("sensitivity_threshold"), job, "sensitivity_threshold"),
        ratio=_pick(o.get("prune_ratio"), job, "prune_ratio"),
        sensitivity_samples=int(_pick(o.get("sensitivity_samples"), job,
                                      "sensitivity_samples", 1000)),
        options=options,
    ).validate()
    mode = _pick(o.get("recover"), job, "recover", "labels")
    if mode == "none":
        return prune, None
    train = TrainConfig(
        epochs=float(_pick(o.get("recover_epochs"), job, "recover_epochs", 3.0)),
        lr=float(_pick(o.get("recover_lr"), job, "recover_lr", 0.01)),
        batch_size=int(_pick(o.get("recover_batch"), job, "recover_batch", 128)),
        max_steps=_pick(o.get("recover_steps"), job, "recover_steps"),
        seed=int(_pick(o.get("seed"), job, "seed", 0)),
    )
    recover = RecoverConfig(mode=mode, train=train,
                            nproc=int(_pick(o.get("nproc"), job, "nproc", 1))).validate()
    return prune, recover


@app.command()
def targets(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable list.")] = False,
) -> None:
    """List the shipped target profiles (targets/*.toml)."""
    from rich.console import Console
    from rich.table import Table

    from edgeprune.config import list_targets

    profiles = list_targets()
    if as_json:
        typer.echo(json.dumps([p.to_dict() for p in profiles], indent=2))
        return
    table = Table("name", "backend", "precisions", "batch", "description")
    for p in profiles:
        table.add_row(p.name, p.backend, ", ".join(p.precisions), str(p.batch), p.description)
    Console().print(table)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("out/demo"),
    data: Annotated[Path, typer.Option(help="Fashion-MNIST IDX folder (Debian package "
                                       "dataset-fashion-mnist).")] = Path(
        "/usr/share/datasets/fashion-mnist"),
    target: Annotated[str, typer.Option(help="Target profile.")] = "openvino-cpu",
    precision: Annotated[str, typer.Option(help="Precision on the target.")] = "int8",
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    debug: Annotated[bool, typer.Option("--debug")] = False,
) -> None:
    """Compile the built-in Fashion-MNIST CNN (shipped with edgeprune) on this machine.

    Example: `edgeprune demo --out out/demo` (needs `apt-get install dataset-fashion-mnist`).
    """
    def body() -> int:
        from edgeprune.examples import FASHION_MNIST
        from edgeprune.examples.paths import checkpoint_path

        if not data.is_dir():
            raise InputError(f"Fashion-MNIST not found at {data}",
                             fix="install it: apt-get install dataset-fashion-mnist (or pass "
                             "--data to the folder holding its IDX files)")
        options = dict.fromkeys(_COMPILE_KEYS)
        options.update(
            model=checkpoint_path(), arch=FASHION_MNIST["arch"], data=str(data),
            channels=FASHION_MNIST["channels"], mean=[FASHION_MNIST["mean"]],
            std=[FASHION_MNIST["std"]], target=target, precision=precision, out=out,
            fresh=False, trust_pickle=False, max_drop=1.0,
        )
        return _run_and_emit(config_from_options(options, sys.argv), as_json, quiet)

    _guarded(debug, body)


_COMPILE_KEYS = [
    "model", "arch", "arch_kwargs", "trust_pickle", "data", "eval_data", "train_data",
    "input_size", "resize", "channels", "mean", "std", "calib_size", "eval_limit", "target",
    "precision", "threads", "batch", "max_drop", "latency_ms", "percentile", "iterations",
    "out", "job", "seed", "exporter", "fresh",
]


def run() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(run())

__all__ = ["EXIT_INPUT", "app", "run"]
