"""The ``edgeprune`` command line: thin; options → PipelineConfig → pipeline.

Exit codes: 0 budget met, 3 budget missed, 2 usage or input error, 1 internal failure,
4 built but not measured (the target's device was not given or not reachable).
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
    "1 internal failure, 4 built but not measured (the target's device was not given or not "
    "reachable).",
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

Prune 50% of the FLOPs with D-Score, recover, then hyperspherical ternary QAT (first conv
and classifier stay int8, 8-bit activations), all in one run:

    edgeprune compile resnet20.th --arch resnet20 --data cifar10/ \\
        --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 \\
        --prune dscore --flops-reduction 0.5 --quant ternary --quant-epochs 3

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
    """Run a command; turn errors into one readable paragraph and the right exit code.
    Whatever an interrupt turned into on its way up (see edgeprune.interrupt), the exit is
    130."""
    from edgeprune import interrupt
    from edgeprune.oserrors import is_environment
    from edgeprune.oserrors import paragraph as os_paragraph

    debug = debug or os.environ.get("EDGEPRUNE_DEBUG") == "1"
    try:
        code = body()
    except typer.Exit:
        raise
    except BaseException as exc:
        if interrupt.interrupted() or isinstance(exc, KeyboardInterrupt):
            if debug and not isinstance(exc, KeyboardInterrupt):
                traceback.print_exc()
            interrupt.stopping()
            interrupt.report_once()
            raise typer.Exit(130) from None
        if not isinstance(exc, Exception):
            raise  # SystemExit, GeneratorExit
        if debug:
            traceback.print_exc()
        if isinstance(exc, EdgepruneError):
            typer.echo(exc.paragraph(), err=True)
            raise typer.Exit(exc.exit_code) from None
        if is_environment(exc):
            typer.echo(os_paragraph(exc), err=True)  # type: ignore[arg-type]
            raise typer.Exit(EXIT_INPUT) from None
        typer.echo(f"internal error: {type(exc).__name__}: {exc}\n  fix: re-run with --debug "
                   "for the traceback and report it", err=True)
        raise typer.Exit(EXIT_INTERNAL) from None
    raise typer.Exit(interrupt.exit_code(code))


def _floats(text: str | list | None, name: str) -> list[float] | None:
    if text is None:
        return None
    try:
        if isinstance(text, list):
            return [float(v) for v in text]
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
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in text):
            raise InputError(f"--input-size {text!r} is not a size", fix="pass [224, 224]")
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


def _job(o: dict[str, Any]) -> dict[str, Any]:
    """The job file's values, after checking the command line's: every value of its
    option's type, numbers finite, no negative counts."""
    from edgeprune.config import check_option_values, load_job_file, option_types

    kinds = option_types(compile)
    check_option_values({k: v for k, v in o.items() if k in kinds}, kinds, "")
    return load_job_file(Path(o["job"]), kinds) if o.get("job") else {}


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


def _run_and_emit(config: Any, as_json: bool, quiet: bool, search: Any = None) -> int:
    from rich.console import Console

    from edgeprune.job import run_compile
    from edgeprune.outlock import output_lock
    from edgeprune.report.console import print_summary
    from edgeprune.ui import UI

    with _stdout_to_stderr(as_json), output_lock(config.out_dir, wait=config.wait_lock):
        if search is not None:
            from edgeprune.search import Search

            report, code = Search(config, search, UI(quiet or as_json)).run()
        else:
            report, code = run_compile(config, UI(quiet or as_json))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif not quiet:
        print_summary(report, Console(stderr=False))
    return code


# Options shared by `compile`, `prune` and `demo` (declared once).
ModelOpt = Annotated[Path, typer.Argument(help="Checkpoint: a state_dict, {'state_dict': ...} "
                                          "or {'model': ...}; `module.` prefixes are stripped.")]
ArchOpt = Annotated[str | None, typer.Option(help="Architecture as module:callable, or a "
                                             "built-in name (resnet20, fashion_cnn, ...).")]
ArchKwargsOpt = Annotated[str | None, typer.Option(help="JSON keyword arguments for --arch, "
                                                    "e.g. '{\"num_classes\": 10}'.")]
TrustPickleOpt = Annotated[bool, typer.Option(
        "--trust-pickle", help="Allow a checkpoint that holds pickled Python objects (runs "
        "code from the file!). Only for files you trust.")]
DataOpt = Annotated[str | None, typer.Option(
        help="Data: ImageFolder dir (with train/ and test|val/ sub-dirs, or class dirs), a "
        "folder of IDX files, an .npz (images, labels), or module:callable.")]
EvalDataOpt = Annotated[str | None, typer.Option(
        help="Evaluation split (overrides --data's).")]
TrainDataOpt = Annotated[str | None, typer.Option(
        help="Training split: calibration (and later fine-tuning) data.")]
InputSizeOpt = Annotated[str | None, typer.Option(help="Model input HxW, e.g. 224 or 32x32 "
                                                   "(default: the images' size).")]
ResizeOpt = Annotated[int | None, typer.Option(help="Resize the shorter side to this, then "
                                               "center-crop --input-size.")]
ChannelsOpt = Annotated[int | None, typer.Option(help="1 (grey) or 3 (RGB). Default 3.")]
MeanOpt = Annotated[str | None, typer.Option(help="Per-channel mean on [0,1] pixels, e.g. "
                                             "0.485,0.456,0.406. Default 0.")]
StdOpt = Annotated[str | None, typer.Option(help="Per-channel std, e.g. 0.229,0.224,0.225. "
                                            "Default 1.")]
CalibSizeOpt = Annotated[int | None, typer.Option(help="Calibration images. Default 300.")]
EvalLimitOpt = Annotated[int | None, typer.Option(help="Evaluate on a seeded random subset "
                                                   "of this many images.")]
TrainLimitOpt = Annotated[int | None, typer.Option(help="Train (recovery, QAT) on a seeded "
                                                    "random subset of this many images.")]
TargetOpt = Annotated[str | None, typer.Option(help="Target profile name (see `edgeprune "
                                               "targets`) or a TOML path. Default "
                                               "openvino-cpu.")]
PrecisionOpt = Annotated[str | None, typer.Option(help="Override the profile's precision: "
                                                  "fp32, bf16, fp16, int8.")]
ThreadsOpt = Annotated[int | None, typer.Option(help="Runtime threads (0 = default).")]
BatchOpt = Annotated[int | None, typer.Option(help="Batch size for latency.")]
MaxDropOpt = Annotated[float | None, typer.Option(help="Accuracy budget: max top-1 drop in "
                                                   "points. Default 1.0.")]
LatencyMsOpt = Annotated[float | None, typer.Option(
        help="Latency goal in ms (per batch).")]
PercentileOpt = Annotated[str | None, typer.Option(help="Percentile the latency goal is "
                                                   "checked at: p50, p90, p99.")]
IterationsOpt = Annotated[int | None, typer.Option(help="Minimum timed iterations per latency "
                                                   "measurement (profile default 1000).")]
PruneOpt = Annotated[str | None, typer.Option(
        help="Structural pruning criterion: dscore, dstep, dstep-gm, l1, global-magnitude, "
        "random, or module:callable. Needs one amount: --flops-reduction, "
        "--params-reduction, --sensitivity-threshold or --prune-ratio.")]
FlopsReductionOpt = Annotated[float | None, typer.Option(
        help="Prune until FLOPs drop by this fraction (e.g. 0.5).")]
ParamsReductionOpt = Annotated[float | None, typer.Option(
        help="Prune until parameters drop by this fraction.")]
SensitivityThresholdOpt = Annotated[float | None, typer.Option(
        help="Per-layer ratio = largest whose pruned-alone top-1 (%) stays above this.")]
PruneRatioOpt = Annotated[float | None, typer.Option(
        help="The same pruning ratio for every layer group.")]
MinChannelsOpt = Annotated[int | None, typer.Option(
        help="Never keep fewer channels in a layer. Default 4.")]
RoundToOpt = Annotated[int | None, typer.Option(
        help="Keep channel counts a multiple of this (e.g. 8). Default 1.")]
ExcludeOpt = Annotated[list[str] | None, typer.Option(
        help="Layer (module name) to leave unpruned; repeatable.")]
KeepResidualOpt = Annotated[bool, typer.Option(
        "--keep-residual", help="Do not prune residual streams (the D-Score paper's "
        "choice); by default coupled residual channels are pruned together.")]
SensitivitySamplesOpt = Annotated[int | None, typer.Option(
        help="Training images for the sensitivity analysis. Default 1000.")]
CompensateOpt = Annotated[str | None, typer.Option(
        help="Right after pruning, without training: refit (default: the mean of each "
        "removed channel folded into the layers that read it, then their kept weights "
        "refit by least squares to the unpruned outputs), mean (the mean fold, then "
        "BatchNorm statistics re-estimated), bn (BatchNorm re-estimation only) or none.")]
CompensateSamplesOpt = Annotated[int | None, typer.Option(
        help="Training images for the compensation. Default 1000.")]
RecoverOpt = Annotated[str | None, typer.Option(
        help="After pruning: kd (default: labels and distillation from the input model "
        "together), labels, distill (label-free), or none. Ternary QAT uses the same loss "
        "(teacher: the model before quantization).")]
KdWeightOpt = Annotated[float | None, typer.Option(
        help="kd: weight of the distillation term, 0..1 (the rest is cross-entropy on the "
        "labels). Default 0.25.")]
KdTemperatureOpt = Annotated[float | None, typer.Option(
        help="Distillation temperature. Default 8.")]
TeacherOpt = Annotated[Path | None, typer.Option(
        help="Distill from this model instead of the input model (same classes); its "
        "architecture: --teacher-arch / --teacher-arch-kwargs.")]
TeacherArchOpt = Annotated[str | None, typer.Option(
        help="Architecture of --teacher (module:callable or a built-in name).")]
TeacherArchKwargsOpt = Annotated[str | None, typer.Option(
        help="JSON keyword arguments for --teacher-arch.")]
RecoverEpochsOpt = Annotated[float | None, typer.Option(
        help="Recovery epochs on the training split. Default 3.")]
RecoverLrOpt = Annotated[float | None, typer.Option(
        help="Recovery learning rate (SGD, cosine to 0). Default 0.02.")]
RecoverBatchOpt = Annotated[int | None, typer.Option(help="Recovery batch size. "
                                                      "Default 128.")]
RecoverStepsOpt = Annotated[int | None, typer.Option(
        help="Cap on recovery steps (smoke runs).")]
NprocOpt = Annotated[int | None, typer.Option(
        help="Fine-tune in N processes with torchrun (DDP: gloo on CPU, NCCL on GPU).")]
QuantOpt = Annotated[str | None, typer.Option(
        help="Weight quantization: fp32 (none), int8 (post-training, by the target's tool: "
        "NNCF / ONNX Runtime / TensorRT), or ternary (quantization-aware training: weights "
        "α·{-1,0,+1}, 8-bit activations, exported as Q/DQ that targets run as INT8). "
        "Implies the target precision (int8 for int8 and ternary).")]
QuantMethodOpt = Annotated[str | None, typer.Option(
        help="Ternary method: hq (hyperspherical, default) or twn (Δ = 0.7·mean|w|).")]
QuantEpochsOpt = Annotated[float | None, typer.Option(
        help="Ternary QAT epochs on the training split. Default 3.")]
QuantLrOpt = Annotated[float | None, typer.Option(
        help="Ternary QAT learning rate (SGD, cosine to 0). Default 0.01.")]
QuantStepsOpt = Annotated[int | None, typer.Option(
        help="Cap on ternary QAT steps (smoke runs).")]
TernarySparsityOpt = Annotated[float | None, typer.Option(
        help="Extra fraction of ternary weights pruned to 0 during QAT (0 = only the zeros "
        "the ternarizer picks; ~0.8 makes a much smaller packed artifact). Default 0.")]
TernaryFirstLastOpt = Annotated[bool, typer.Option(
        "--ternary-first-last", help="Make the first conv and the classifier ternary too "
        "(by default they stay int8).")]
Int8AccuracyControlOpt = Annotated[bool, typer.Option(
        "--int8-accuracy-control", help="OpenVINO INT8: NNCF accuracy control returns the "
        "layers that cost the most top-1 agreement with the float model to FP32 until it is "
        "within --max-drop on the calibration images (at most 12 layer groups; minutes to build "
        "for a 224² model).")]
SearchOpt = Annotated[bool, typer.Option(
        "--search", help="Search for the FASTEST model on the target within the budget: "
        "dense at each precision, then D-Score pruning levels (recovered), with a per-layer "
        "exception when a layer breaks the budget (its group unpruned; INT8 layers back in "
        "FP32; a ternary layer at int8); every candidate is compiled, profiled "
        "and evaluated on the target. Candidates: OUT/search/; resumable.")]
SearchLevelsOpt = Annotated[str | None, typer.Option(
        help="FLOPs reductions the search tries, e.g. 0.3,0.5,0.7 (the default); none = "
        "precisions of the dense model only (no training).")]
SearchPrecisionsOpt = Annotated[str | None, typer.Option(
        help="Precisions the search tries, e.g. fp32,int8. Default: all the target offers.")]
SearchTernaryOpt = Annotated[bool, typer.Option(
        "--search-ternary", help="Also try ternary QAT of the chosen structure (smaller; it "
        "runs INT8 kernels, so not faster than INT8).")]
MaxTrialsOpt = Annotated[int | None, typer.Option(
        help="Stop the search after this many candidates. Default 16.")]
TimeBudgetOpt = Annotated[float | None, typer.Option(
        help="Stop starting new candidates after this many seconds.")]
DeviceOpt = Annotated[str | None, typer.Option(
        help="Profile and evaluate on this device over SSH: user@host[:port] (key-based, "
        "host key checked). Jetson targets build their engine there. Default: the "
        "profile's [remote] host, else this machine.")]
SshKeyOpt = Annotated[Path | None, typer.Option(
        help="SSH private key for --device (default: ssh's own: agent, ~/.ssh/id_*).")]
KnownHostsOpt = Annotated[Path | None, typer.Option(
        help="known_hosts file that must hold the device's host key (default "
        "~/.ssh/known_hosts). Unknown or changed keys are refused.")]
RemotePythonOpt = Annotated[str | None, typer.Option(
        help="Python on the device with edgeprune and the target's runtime. Default python3.")]
DlaCoreOpt = Annotated[int | None, typer.Option(
        help="Jetson: build for this DLA core (layers the DLA cannot run fall back to the "
        "GPU and are listed in the report).")]
DlaStrictOpt = Annotated[bool, typer.Option(
        "--dla-strict", help="Jetson DLA: fail (exit 2) when any layer falls back to the GPU.")]
OutOpt = Annotated[Path | None, typer.Option(help="Output directory. Default ./out.")]
WaitLockOpt = Annotated[bool, typer.Option(
        "--wait-lock", help="When another run holds the output directory, wait for it "
        "instead of exiting 2.")]
JobOpt = Annotated[Path | None, typer.Option(help="TOML job file with these options.")]
SeedOpt = Annotated[int | None, typer.Option(help="Seed for data subsets. Default 0.")]
ExporterOpt = Annotated[str | None, typer.Option(help="ONNX exporter: dynamo (default) or "
                                                 "torchscript.")]
FreshOpt = Annotated[bool, typer.Option("--fresh", help="Ignore cached stages.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary.")]
AsJsonOpt = Annotated[bool, typer.Option("--json", help="Print report.json to stdout "
                                          "(implies --quiet).")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]


@app.command(epilog=COMPILE_EPILOG)
def compile(
    model: ModelOpt,
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = None,
    trust_pickle: TrustPickleOpt = False,
    data: DataOpt = None,
    eval_data: EvalDataOpt = None,
    train_data: TrainDataOpt = None,
    input_size: InputSizeOpt = None,
    resize: ResizeOpt = None,
    channels: ChannelsOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    calib_size: CalibSizeOpt = None,
    eval_limit: EvalLimitOpt = None,
    train_limit: TrainLimitOpt = None,
    target: TargetOpt = None,
    precision: PrecisionOpt = None,
    threads: ThreadsOpt = None,
    batch: BatchOpt = None,
    max_drop: MaxDropOpt = None,
    latency_ms: LatencyMsOpt = None,
    percentile: PercentileOpt = None,
    iterations: IterationsOpt = None,
    prune: PruneOpt = None,
    flops_reduction: FlopsReductionOpt = None,
    params_reduction: ParamsReductionOpt = None,
    sensitivity_threshold: SensitivityThresholdOpt = None,
    prune_ratio: PruneRatioOpt = None,
    min_channels: MinChannelsOpt = None,
    round_to: RoundToOpt = None,
    exclude: ExcludeOpt = None,
    keep_residual: KeepResidualOpt = False,
    sensitivity_samples: SensitivitySamplesOpt = None,
    compensate: CompensateOpt = None,
    compensate_samples: CompensateSamplesOpt = None,
    recover: RecoverOpt = None,
    kd_weight: KdWeightOpt = None,
    kd_temperature: KdTemperatureOpt = None,
    teacher: TeacherOpt = None,
    teacher_arch: TeacherArchOpt = None,
    teacher_arch_kwargs: TeacherArchKwargsOpt = None,
    recover_epochs: RecoverEpochsOpt = None,
    recover_lr: RecoverLrOpt = None,
    recover_batch: RecoverBatchOpt = None,
    recover_steps: RecoverStepsOpt = None,
    nproc: NprocOpt = None,
    quant: QuantOpt = None,
    quant_method: QuantMethodOpt = None,
    quant_epochs: QuantEpochsOpt = None,
    quant_lr: QuantLrOpt = None,
    quant_steps: QuantStepsOpt = None,
    ternary_sparsity: TernarySparsityOpt = None,
    ternary_first_last: TernaryFirstLastOpt = False,
    int8_accuracy_control: Int8AccuracyControlOpt = False,
    search: SearchOpt = False,
    search_levels: SearchLevelsOpt = None,
    search_precisions: SearchPrecisionsOpt = None,
    search_ternary: SearchTernaryOpt = False,
    max_trials: MaxTrialsOpt = None,
    time_budget: TimeBudgetOpt = None,
    device: DeviceOpt = None,
    ssh_key: SshKeyOpt = None,
    known_hosts: KnownHostsOpt = None,
    remote_python: RemotePythonOpt = None,
    dla_core: DlaCoreOpt = None,
    dla_strict: DlaStrictOpt = False,
    out: OutOpt = None,
    wait_lock: WaitLockOpt = False,
    job: JobOpt = None,
    seed: SeedOpt = None,
    exporter: ExporterOpt = None,
    fresh: FreshOpt = False,
    quiet: QuietOpt = False,
    as_json: AsJsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run the pipeline on MODEL for a target and check the result against the budget.

    Stages: load → baseline → prune → recover → quantize → export → compile → profile →
    evaluate → verdict, each written to OUT/NN-stage/ (re-runs reuse unchanged stages).
    The report is OUT/report.json.
    """
    options = {k: v for k, v in locals().items()}

    def body() -> int:
        search_config = _search_options(options)
        if search_config is not None:
            # the search varies these per candidate; the base config carries the prune
            # options (criterion, min channels, ...) and recovery/QAT settings as templates
            options.update(quant="ternary" if options["search_ternary"] else None,
                           prune=search_config.criterion, prune_ratio=0.5)
        return _run_and_emit(config_from_options(options, sys.argv), as_json, quiet,
                             search_config)

    _guarded(debug, body)


def _search_options(o: dict[str, Any]):
    """SearchConfig for --search (the options it decides itself are refused), else None."""
    from edgeprune.search import RUNTIME_PRECISIONS, SearchConfig

    job = _job(o)
    if not (o.get("search") or job.get("search")):
        for key in ("search_levels", "search_precisions", "max_trials", "time_budget"):
            if _pick(o.get(key), job, key) is not None:
                raise InputError(f"--{key.replace('_', '-')} only applies to --search",
                                 fix="add --search, or drop the option")
        return None
    for key in ("precision", "quant", "flops_reduction", "params_reduction",
                "sensitivity_threshold", "prune_ratio"):
        if _pick(o.get(key), job, key) is not None:
            raise InputError(f"--search chooses the pruning level and the precision itself, "
                             f"so --{key.replace('_', '-')} cannot be given with it",
                             fix="drop it, or use --search-levels / --search-precisions / "
                             "--search-ternary to bound the search")
    if o.get("int8_accuracy_control") or job.get("int8_accuracy_control"):
        raise InputError("--search uses INT8 accuracy control by itself (when plain INT8 "
                         "misses the budget), so --int8-accuracy-control cannot be given "
                         "with it", fix="drop --int8-accuracy-control")
    raw_levels = _pick(o.get("search_levels"), job, "search_levels")
    dense_only = raw_levels is not None and str(raw_levels).strip().lower() == "none"
    levels = [] if dense_only else _floats(raw_levels, "search-levels")
    if levels is not None and not all(0 < v < 1 for v in levels):
        raise InputError("--search-levels must be fractions between 0 and 1",
                         fix="e.g. --search-levels 0.3,0.5,0.7")
    precisions = _pick(o.get("search_precisions"), job, "search_precisions")
    if isinstance(precisions, str):
        precisions = [p.strip() for p in precisions.split(",") if p.strip()]
    if precisions is not None and not set(precisions) <= set(RUNTIME_PRECISIONS):
        raise InputError(f"--search-precisions {','.join(precisions)}: use "
                         f"{', '.join(RUNTIME_PRECISIONS)}", fix="e.g. --search-precisions "
                         "fp32,int8")
    max_trials = int(_pick(o.get("max_trials"), job, "max_trials", 16))
    budget = _pick(o.get("time_budget"), job, "time_budget")
    if max_trials < 1 or (budget is not None and float(budget) <= 0):
        raise InputError("--max-trials and --time-budget must be positive",
                         fix="e.g. --max-trials 12 --time-budget 3600")
    return SearchConfig(
        flops_levels=list(levels) if levels is not None else [0.3, 0.5, 0.7],
        precisions=precisions, ternary=bool(o.get("search_ternary")
                                            or job.get("search_ternary")),
        criterion=_pick(o.get("prune"), job, "prune", "dscore"), max_trials=max_trials,
        time_budget_s=float(budget) if budget is not None else None)


def config_from_options(o: dict[str, Any], argv: list[str]):
    """Merge CLI options over a job file into a validated PipelineConfig."""
    from edgeprune.backends.openvino import ACCURACY_CONTROL
    from edgeprune.config import Budget, ProfileSettings, resolve_target
    from edgeprune.data.preprocess import Preprocess
    from edgeprune.data.splits import DataOptions
    from edgeprune.model import parse_arch
    from edgeprune.pipeline import PipelineConfig, check_output_dir

    job = _job(o)
    unknown = set(job) - set(o)
    if unknown:
        raise InputError(f"job file {o['job']} has unknown keys: {', '.join(sorted(unknown))}",
                         fix="use the option names of `edgeprune compile --help` with "
                         "underscores, e.g. max_drop")
    target = resolve_target(_pick(o["target"], job, "target", "openvino-cpu"))
    precision = _precision_for_quant(_pick(o.get("quant"), job, "quant"),
                                     _pick(o["precision"], job, "precision"), target.precision)
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
    _device_options(o, job, target)
    budget = Budget(
        max_drop=float(_pick(o["max_drop"], job, "max_drop", 1.0)),
        latency_ms=_pick(o["latency_ms"], job, "latency_ms", target.latency_goal_ms),
        percentile=_pick(o["percentile"], job, "percentile", target.latency_percentile),
    ).validate()
    if o.get("int8_accuracy_control") or job.get("int8_accuracy_control"):
        if target.backend != "openvino" or precision != "int8":
            raise InputError("--int8-accuracy-control needs --precision int8 on an OpenVINO "
                             f"target (got {precision} on {target.name})",
                             fix="add --precision int8 --target openvino-cpu, or drop it")
        target.options[ACCURACY_CONTROL] = budget.max_drop
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
        train_limit=_pick(o.get("train_limit"), job, "train_limit"),
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
        prune=prune_config, recover=recover_config, quantize=_quant_options(o, job),
        teacher=_teacher_options(o, job),
        model_path=model,
        arch=parse_arch(_pick(o["arch"], job, "arch"), _pick(o["arch_kwargs"], job,
                                                              "arch_kwargs")),
        data=data, preprocess=preprocess, target=target, precision=precision, budget=budget,
        out_dir=out_dir, trust_pickle=bool(o["trust_pickle"] or job.get("trust_pickle")),
        exporter=exporter, fresh=bool(o["fresh"]), command=list(argv),
        wait_lock=bool(o.get("wait_lock") or job.get("wait_lock")),
    )


def _device_options(o: dict[str, Any], job: dict[str, Any], target: Any) -> None:
    """--device & co into the target's [remote] settings, --dla-core into its options; and
    refuse a target whose runtime is missing here before any work starts."""
    from edgeprune.backends import get_backend
    from edgeprune.remote import parse_address

    host = _pick(o.get("device"), job, "device", target.remote.host or None)
    if host:
        parse_address(str(host))  # an odd address is refused before any work
        target.remote.host = str(host)
    for key, attr in (("ssh_key", "ssh_key"), ("known_hosts", "known_hosts")):
        value = _pick(o.get(key), job, key)
        if value is not None:
            path = Path(str(value)).expanduser()
            if not path.is_file():
                raise InputError(f"--{key.replace('_', '-')} {value} is not a file",
                                 fix=f"pass the path of an existing {key.replace('_', ' ')} "
                                 "file")
            setattr(target.remote, attr, str(path.resolve()))
    python = _pick(o.get("remote_python"), job, "remote_python")
    if python is not None:
        target.remote.python = str(python)
    dla = _pick(o.get("dla_core"), job, "dla_core")
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
    if o.get("dla_strict") or job.get("dla_strict"):
        if "dla_core" not in target.options:
            raise InputError("--dla-strict needs --dla-core", fix="add --dla-core 0")
        target.options["dla_strict"] = True
    ok, why = get_backend(target.backend).available()
    if not ok:
        raise InputError(f"target {target.name} cannot compile on this machine: {why}",
                         fix="install its runtime here, or pick another target (edgeprune "
                         "targets)")


def _teacher_options(o: dict[str, Any], job: dict[str, Any]):
    """TeacherSpec for --teacher, else None (distill from the input model)."""
    from edgeprune.model import TeacherSpec, parse_arch

    path = _pick(o.get("teacher"), job, "teacher")
    if path is None:
        for key in ("teacher_arch", "teacher_arch_kwargs"):
            if _pick(o.get(key), job, key) is not None:
                raise InputError(f"--{key.replace('_', '-')} only applies to --teacher",
                                 fix="add --teacher MODEL, or drop the option")
        return None
    path = Path(str(path))
    if not path.is_file():
        raise InputError(f"--teacher {path} is not a file", fix="pass the teacher checkpoint")
    arch = parse_arch(_pick(o.get("teacher_arch"), job, "teacher_arch"),
                      _pick(o.get("teacher_arch_kwargs"), job, "teacher_arch_kwargs"))
    return TeacherSpec(path, arch)


# Ternary QAT starts from a trained model: its learning rate is the one its benchmark
# (bench/ternary_resnet20.py) used; the recovery sweep chose 0.02 for pruned models only.
QUANT_LR = 0.01


def _train_config(o: dict[str, Any], job: dict[str, Any], prefix: str):
    """The TrainConfig of recovery (prefix "recover") or ternary QAT ("quant")."""
    from edgeprune.train import TrainConfig

    defaults = TrainConfig()
    return TrainConfig(
        epochs=float(_pick(o.get(f"{prefix}_epochs"), job, f"{prefix}_epochs",
                           defaults.epochs)),
        lr=float(_pick(o.get(f"{prefix}_lr"), job, f"{prefix}_lr",
                       QUANT_LR if prefix == "quant" else defaults.lr)),
        batch_size=int(_pick(o.get("recover_batch"), job, "recover_batch",
                             defaults.batch_size)),
        max_steps=_pick(o.get(f"{prefix}_steps"), job, f"{prefix}_steps"),
        kd_weight=float(_pick(o.get("kd_weight"), job, "kd_weight", defaults.kd_weight)),
        temperature=float(_pick(o.get("kd_temperature"), job, "kd_temperature",
                                defaults.temperature)),
        seed=int(_pick(o.get("seed"), job, "seed", 0)),
    )


def _prune_options(o: dict[str, Any], job: dict[str, Any]):
    """PruneConfig and RecoverConfig from the options, or (None, None) without --prune."""
    from edgeprune.prune.compensate import CompensationConfig
    from edgeprune.prune.policy import PruneConfig
    from edgeprune.prune.structural import PruneOptions
    from edgeprune.stages.recover import RecoverConfig

    criterion = _pick(o.get("prune"), job, "prune")
    if criterion in (None, "none"):
        for key in ("compensate", "compensate_samples"):
            if _pick(o.get(key), job, key) is not None:
                raise InputError(f"--{key.replace('_', '-')} only applies to --prune",
                                 fix="add --prune dscore --flops-reduction 0.5, or drop it")
        return None, None
    compensation = CompensationConfig(
        method=str(_pick(o.get("compensate"), job, "compensate", CompensationConfig.method)),
        samples=int(_pick(o.get("compensate_samples"), job, "compensate_samples",
                          CompensationConfig.samples)))
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
        options=options, compensation=compensation,
    ).validate()
    mode = _pick(o.get("recover"), job, "recover", RecoverConfig.mode)
    if mode == "none":
        return prune, None
    train = _train_config(o, job, "recover")
    recover = RecoverConfig(mode=mode, train=train,
                            nproc=int(_pick(o.get("nproc"), job, "nproc", 1))).validate()
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


def _quant_options(o: dict[str, Any], job: dict[str, Any]):
    """QuantizeConfig for --quant ternary, else None (fp32/int8 need no training stage)."""
    from edgeprune.quant.ternary import TernaryConfig
    from edgeprune.stages.quantize import QuantizeConfig

    if _pick(o.get("quant"), job, "quant") != "ternary":
        for key in ("quant_method", "quant_epochs", "quant_lr", "quant_steps",
                    "ternary_sparsity"):
            if _pick(o.get(key), job, key) is not None:
                raise InputError(f"--{key.replace('_', '-')} only applies to --quant ternary",
                                 fix="add --quant ternary, or drop the option")
        return None
    method = _pick(o.get("quant_method"), job, "quant_method", "hq")
    if method not in ("hq", "twn"):
        raise InputError(f"unknown --quant-method {method!r}", fix="use hq or twn")
    sparsity = float(_pick(o.get("ternary_sparsity"), job, "ternary_sparsity", 0.0))
    if not 0 <= sparsity < 1:
        raise InputError(f"--ternary-sparsity {sparsity} must be in [0, 1)",
                         fix="pass a fraction, e.g. 0.8")
    ternary = TernaryConfig(
        method=method, prune_target=sparsity,
        keep_first_last_8bit=not bool(o.get("ternary_first_last")
                                      or job.get("ternary_first_last")))
    mode = _pick(o.get("recover"), job, "recover", QuantizeConfig.mode)
    train = _train_config(o, job, "quant")
    return QuantizeConfig(ternary=ternary, mode=QuantizeConfig.mode if mode == "none" else mode,
                          train=train,
                          nproc=int(_pick(o.get("nproc"), job, "nproc", 1))).validate()


PRUNE_EPILOG = """\
**Examples**

    edgeprune prune resnet20.th --arch resnet20 --data cifar10/ \\
        --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 \\
        --prune dscore --flops-reduction 0.5 --recover-epochs 3 --out pruned/

    edgeprune prune model.pt --arch mypkg.nets:build --train-data train/ --eval-data val/ \\
        --prune l1 --prune-ratio 0.3 --round-to 8 --recover distill --nproc 2

The pruned model is OUT/pruned.pt (weights + recipe; reload it with `edgeprune compile
OUT/pruned.pt` — no pickled code), the per-group plan OUT/03-prune/plan.json and the
sensitivity curves OUT/03-prune/sensitivity.json.
"""


@app.command(epilog=PRUNE_EPILOG)
def prune(
    model: ModelOpt,
    prune: PruneOpt = "dscore",
    flops_reduction: FlopsReductionOpt = None,
    params_reduction: ParamsReductionOpt = None,
    sensitivity_threshold: SensitivityThresholdOpt = None,
    prune_ratio: PruneRatioOpt = None,
    min_channels: MinChannelsOpt = None,
    round_to: RoundToOpt = None,
    exclude: ExcludeOpt = None,
    keep_residual: KeepResidualOpt = False,
    sensitivity_samples: SensitivitySamplesOpt = None,
    compensate: CompensateOpt = None,
    compensate_samples: CompensateSamplesOpt = None,
    recover: RecoverOpt = None,
    kd_weight: KdWeightOpt = None,
    kd_temperature: KdTemperatureOpt = None,
    teacher: TeacherOpt = None,
    teacher_arch: TeacherArchOpt = None,
    teacher_arch_kwargs: TeacherArchKwargsOpt = None,
    recover_epochs: RecoverEpochsOpt = None,
    recover_lr: RecoverLrOpt = None,
    recover_batch: RecoverBatchOpt = None,
    recover_steps: RecoverStepsOpt = None,
    nproc: NprocOpt = None,
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = None,
    trust_pickle: TrustPickleOpt = False,
    data: DataOpt = None,
    eval_data: EvalDataOpt = None,
    train_data: TrainDataOpt = None,
    input_size: InputSizeOpt = None,
    resize: ResizeOpt = None,
    channels: ChannelsOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    eval_limit: EvalLimitOpt = None,
    train_limit: TrainLimitOpt = None,
    calib_size: CalibSizeOpt = None,
    out: OutOpt = None,
    wait_lock: WaitLockOpt = False,
    job: JobOpt = None,
    seed: SeedOpt = None,
    fresh: FreshOpt = False,
    quiet: QuietOpt = False,
    as_json: AsJsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Structurally prune MODEL (D-Score by default) and recover its accuracy, without
    compiling for a target: load → prune → recover."""
    options = dict.fromkeys(_compile_keys())
    options.update({k: v for k, v in locals().items() if k in options})

    def body() -> int:
        from rich.console import Console

        from edgeprune.job import run_prune
        from edgeprune.outlock import output_lock
        from edgeprune.ui import UI

        config = config_from_options(options, sys.argv)
        with _stdout_to_stderr(as_json), output_lock(config.out_dir, wait=config.wait_lock):
            summary = run_prune(config, UI(quiet or as_json))
        if as_json:
            sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        elif not quiet:
            from edgeprune.report.console import print_prune_summary

            print_prune_summary(summary, Console())
        return 0

    _guarded(debug, body)


REPORT_EPILOG = """\
**Examples**

    edgeprune report reference/ out/ --max-accuracy-drop 0.5 --max-latency-increase 0.10

    edgeprune report out-openvino/report.json out-onnxruntime/report.json --json

Exit codes: 0 no regression, 3 regression (reasons printed), 2 bad input.
"""


@app.command(epilog=REPORT_EPILOG)
def report(
    reference: Annotated[Path, typer.Argument(help="Reference run: its --out folder or "
                                              "report.json.")],
    candidate: Annotated[Path, typer.Argument(help="Run to check against the reference.")],
    max_accuracy_drop: Annotated[float, typer.Option(
        help="Top-1 points the candidate may lose against the reference.")] = 0.5,
    max_latency_increase: Annotated[float, typer.Option(
        help="Fraction the candidate's latency may rise (0.10 = 10%).")] = 0.10,
    percentile: Annotated[str | None, typer.Option(
        help="p50, p90 or p99 (default: the reports' budget percentile).")] = None,
    markdown: Annotated[Path | None, typer.Option(
        help="Also write the comparison as markdown here (e.g. $GITHUB_STEP_SUMMARY).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON on "
                                          "stdout.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Compare two compile runs and exit 3 when the candidate regressed (CI gate)."""

    def body() -> int:
        from rich.console import Console

        from edgeprune.errors import EXIT_BUDGET_MISSED
        from edgeprune.report.compare import (
            compare_reports,
            comparison_markdown,
            load_report,
            print_comparison,
        )

        result = compare_reports(load_report(reference), load_report(candidate),
                                 max_accuracy_drop, max_latency_increase, percentile)
        if markdown is not None:
            try:
                with markdown.open("a") as fh:
                    fh.write(comparison_markdown(result))
            except OSError as exc:
                from edgeprune.oserrors import is_environment

                if is_environment(exc):
                    raise
                raise InputError(f"--markdown {markdown}: cannot append to it "
                                 f"({exc.strerror or exc})",
                                 fix="pass a file path in an existing folder") from exc
        if as_json:
            sys.stdout.write(json.dumps(result, indent=2) + "\n")
        else:
            print_comparison(result, Console())
        return 0 if result["passed"] else EXIT_BUDGET_MISSED

    _guarded(debug, body)


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
    wait_lock: WaitLockOpt = False,
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
        options = dict.fromkeys(_compile_keys())
        options.update(
            model=checkpoint_path(), arch=FASHION_MNIST["arch"], data=str(data),
            channels=FASHION_MNIST["channels"], mean=[FASHION_MNIST["mean"]],
            std=[FASHION_MNIST["std"]], target=target, precision=precision, out=out,
            fresh=False, trust_pickle=False, max_drop=1.0, wait_lock=wait_lock,
        )
        return _run_and_emit(config_from_options(options, sys.argv), as_json, quiet)

    _guarded(debug, body)


def _compile_keys() -> list[str]:
    """Every option `compile` takes (the demo and `prune` fill in the ones they lack)."""
    import inspect

    return [k for k in inspect.signature(compile).parameters
            if k not in ("quiet", "as_json", "debug")]


def run() -> None:
    """Console-script entry point. SIGINT is handled from here on (edgeprune.interrupt): an
    interrupt anywhere -- even one click turned into "Aborted!" (exit 1) or one that came
    after the command's own handler -- ends the process with 130; the process ends without
    the interpreter's slow teardown (interrupt.finish)."""
    from edgeprune import interrupt

    interrupt.install()
    try:
        app()
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:
        code = 130
    interrupt.finish(code)


if __name__ == "__main__":
    sys.exit(run())

__all__ = ["EXIT_INPUT", "app", "run"]
