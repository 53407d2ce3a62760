"""Every option of edgeprune, declared once: name, type, default, range, help, group and
the first stage whose cache it changes.

The CLI's ``--help`` (edgeprune.cli), the job-file keys and their reference
(docs/options.md, ``python -m edgeprune.options``), the Python API's keyword arguments
(edgeprune.api) and the value checks all read this table, so a default or an allowed
range lives in one place. Dataclasses that carry an option (TrainConfig, PruneOptions,
...) take their defaults from here too. Import-light on purpose: no torch, no typer.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any

from edgeprune.errors import InputError

# the option groups, in the order --help and the reference show them
GROUPS = ("model", "data", "target", "budget", "pruning", "recovery", "quantization",
          "search", "device", "output")
# the pipeline's stages, in order: an option invalidates its stage and every later one
STAGES = ("load", "baseline", "prune", "recover", "quantize", "export", "compile",
          "profile", "evaluate", "verdict")
NO_STAGE = "none"  # changes no stage's result (where output goes, how it is shown)

# kinds: how a value is written on the command line / in a job file
#   str, int, float, bool (a flag), path,
#   csv   comma-separated text on the command line; text, a number or an array in a file
#   multi a repeatable option (an array of strings in a file)
#   json  JSON text on the command line; a TOML table in a file
KINDS = ("str", "int", "float", "bool", "path", "csv", "multi", "json")


@dataclass(frozen=True)
class Option:
    """One option. ``default`` is what a run uses when the option is not given; None with
    ``default_text`` means the value is decided at run time (e.g. the target profile's)."""

    name: str
    kind: str
    group: str
    help: str
    default: Any = None
    default_text: str | None = None
    choices: tuple[str, ...] | None = None
    minimum: float | None = None  # inclusive
    maximum: float | None = None  # inclusive unless below_maximum
    below_maximum: bool = False  # the maximum itself is not allowed
    above_minimum: bool = False  # the minimum itself is not allowed
    invalidates: str = NO_STAGE
    commands: frozenset[str] = frozenset({"compile", "prune"})
    metavar: str | None = None
    flag: str | None = None  # the command-line name when not --name-with-dashes
    short: str | None = None
    in_job_file: bool = True

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def shown_default(self) -> str | None:
        """The default as help and the reference show it (None: nothing to show)."""
        if self.default_text:
            return self.default_text
        if self.kind == "bool" or self.default is None or self.default == []:
            return None
        if isinstance(self.default, list):
            return ",".join(str(v) for v in self.default)
        return str(self.default)


COMPILE_PRUNE = frozenset({"compile", "prune"})
COMPILE = frozenset({"compile"})
ALL_RUNS = frozenset({"compile", "prune", "demo"})

# Criterion the `prune` command and --search use when --prune is not given (a plain
# compile without --prune does not prune).
DEFAULT_CRITERION = "dscore"
# Ternary QAT starts from a trained model: its learning rate is the one its benchmark
# (bench/ternary_resnet20.py) used; the recovery sweep chose 0.02 for pruned models only.

_O = Option
OPTIONS: tuple[Option, ...] = (
    # --- model
    _O("arch", "str", "model", "Architecture as module:callable, or a built-in name "
       "(resnet20, fashion_cnn, ...).", invalidates="load", metavar="NAME|MODULE:CALLABLE"),
    _O("arch_kwargs", "json", "model", "JSON keyword arguments for --arch, e.g. "
       "'{\"num_classes\": 10}'.", invalidates="load", metavar="JSON"),
    _O("trust_pickle", "bool", "model", "Allow a checkpoint that holds pickled Python "
       "objects (runs code from the file!). Only for files you trust.", default=False,
       invalidates="load"),
    # --- data
    _O("data", "str", "data", "Data: ImageFolder dir (with train/ and test|val/ sub-dirs, "
       "or class dirs), a folder of IDX files, an .npz (images, labels), or "
       "module:callable.", invalidates="load", metavar="PATH", commands=ALL_RUNS),
    _O("eval_data", "str", "data", "Evaluation split (overrides --data's).",
       invalidates="baseline", metavar="PATH"),
    _O("train_data", "str", "data", "Training split: calibration, sensitivity, "
       "compensation and fine-tuning data.", invalidates="baseline", metavar="PATH"),
    _O("input_size", "csv", "data", "Model input HxW, e.g. 224 or 32x32.",
       default_text="the images' size", invalidates="load", metavar="HxW"),
    _O("resize", "int", "data", "Resize the shorter side to this, then center-crop "
       "--input-size.", minimum=1, invalidates="load", metavar="PIXELS"),
    _O("channels", "int", "data", "1 (grey) or 3 (RGB).", default=3, minimum=1, maximum=3,
       invalidates="load", metavar="1|3"),
    _O("mean", "csv", "data", "Per-channel mean on [0,1] pixels, e.g. 0.485,0.456,0.406.",
       default=[0.0], invalidates="load", metavar="M[,M,M]"),
    _O("std", "csv", "data", "Per-channel std, e.g. 0.229,0.224,0.225.", default=[1.0],
       invalidates="load", metavar="S[,S,S]"),
    _O("calib_size", "int", "data", "Calibration images (INT8, activation ranges).",
       default=300, minimum=1, invalidates="quantize", metavar="N"),
    _O("eval_limit", "int", "data", "Evaluate on a seeded random subset of this many "
       "images.", minimum=1, invalidates="baseline", metavar="N"),
    _O("train_limit", "int", "data", "Train (recovery, QAT) on a seeded random subset of "
       "this many images.", minimum=1, invalidates="recover", metavar="N"),
    _O("decoded_cache_mb", "float", "data", "Keep decoded splits in memory up to this many "
       "MB in all (decoded once per run); a larger split is decoded on the fly each pass, "
       "so memory stays bounded whatever the data's size. Changes no result.",
       default=1024.0, minimum=0, metavar="MB"),
    _O("workers", "int", "data", "Decode workers for data decoded on the fly (processes "
       "when training, threads when evaluating). Changes no result.",
       default_text="one per core, at most 8", minimum=1, metavar="N"),
    _O("seed", "int", "data", "Seed for data subsets and training.", default=0, minimum=0,
       invalidates="baseline", metavar="N"),
    # --- target
    _O("target", "str", "target", "Target profile name (see `edgeprune targets`) or a "
       "TOML path.", default="openvino-cpu", invalidates="export", metavar="NAME|PATH",
       commands=ALL_RUNS),
    _O("precision", "str", "target", "Precision on the target.",
       default_text="the profile's", choices=("fp32", "bf16", "fp16", "int8"),
       invalidates="quantize", metavar="P", commands=frozenset({"compile", "demo"})),
    _O("threads", "int", "target", "Runtime threads (0 = the runtime's default).",
       default_text="the profile's", minimum=0, invalidates="compile", metavar="N",
       commands=COMPILE),
    _O("batch", "int", "target", "Batch size for latency.", default_text="the profile's",
       minimum=1, invalidates="export", metavar="N", commands=COMPILE),
    _O("iterations", "int", "target", "Minimum timed iterations per latency measurement.",
       default_text="the profile's (1000)", minimum=1, invalidates="baseline",
       metavar="N", commands=COMPILE),
    _O("exporter", "str", "target", "ONNX exporter.", default="dynamo",
       choices=("dynamo", "torchscript"), invalidates="export", metavar="NAME",
       commands=COMPILE),
    _O("int8_accuracy_control", "bool", "target", "OpenVINO INT8: NNCF accuracy control "
       "returns the layers that cost the most top-1 agreement with the float model to "
       "FP32 until it is within --max-drop on the calibration images (at most 12 layer "
       "groups; minutes to build for a 224² model).", default=False,
       invalidates="compile", commands=COMPILE),
    # --- budget
    _O("max_drop", "float", "budget", "Accuracy budget: max drop in points of the metric "
       "(top-1 %; with --metric, in that metric's points).",
       default=1.0, minimum=0, maximum=100, invalidates="verdict", metavar="POINTS",
       commands=COMPILE),
    _O("metric", "str", "budget", "What accuracy means: top1 (default), or module:callable "
       "(command line / Python API only, never a job file): either a function (outputs, "
       "targets) -> float called on the whole evaluation set, or a callable with no "
       "arguments returning an object with update(outputs, targets) per batch and compute() "
       "-> float. outputs: the model's raw outputs (float32, N×...), the same from PyTorch "
       "and the target runtime; targets: the data's labels of any shape N×... (masks, "
       "multi-hot, boxes; not checked as class ids). Higher is better; --max-drop, the "
       "sensitivity analysis and the search read its points. Recovery is then label-free "
       "(--recover distill).", default_text="top1", invalidates="load",
       metavar="top1|MODULE:CALLABLE"),
    _O("latency_ms", "float", "budget", "Latency goal in ms (per batch).",
       default_text="the profile's, if any", minimum=0, above_minimum=True,
       invalidates="verdict", metavar="MS", commands=COMPILE),
    _O("percentile", "str", "budget", "Latency percentile: compile checks the goal at it; "
       "report compares the runs at it.",
       default_text="the profile's (p50)", choices=("p50", "p90", "p99"),
       invalidates="verdict", metavar="P", commands=frozenset({"compile", "report"})),
    # --- pruning
    _O("prune", "str", "pruning", "Structural pruning criterion: dscore, dstep, dstep-gm, "
       "l1, global-magnitude, random, or module:callable. Needs one amount: "
       "--flops-reduction, --params-reduction, --latency-reduction, "
       "--sensitivity-threshold or --prune-ratio.",
       default_text="none for compile; dscore for prune and --search", invalidates="prune",
       metavar="CRITERION"),
    _O("flops_reduction", "float", "pruning", "Prune until FLOPs drop by this fraction "
       "(e.g. 0.5).", minimum=0, maximum=1, above_minimum=True, below_maximum=True,
       invalidates="prune", metavar="FRACTION"),
    _O("params_reduction", "float", "pruning", "Prune until parameters drop by this "
       "fraction.", minimum=0, maximum=1, above_minimum=True, below_maximum=True,
       invalidates="prune", metavar="FRACTION"),
    _O("latency_reduction", "float", "pruning", "Prune until the latency MEASURED on the "
       "target drops by this fraction (e.g. 0.3): per-group latency tables measured by the "
       "target's runtime (cached), channel counts where its latency steps down, the least "
       "sensitive groups first; the result is measured beside the dense model.",
       minimum=0, maximum=1, above_minimum=True, below_maximum=True, invalidates="prune",
       metavar="FRACTION"),
    _O("sensitivity_threshold", "float", "pruning", "Per-layer ratio = largest whose "
       "pruned-alone top-1 (%; with --metric, its points) stays above this.", minimum=0,
       maximum=100, invalidates="prune", metavar="TOP1"),
    _O("prune_ratio", "float", "pruning", "The same pruning ratio for every layer group.",
       minimum=0, maximum=1, above_minimum=True, below_maximum=True, invalidates="prune",
       metavar="FRACTION"),
    _O("min_channels", "int", "pruning", "Never keep fewer channels in a layer.", default=4,
       minimum=1, invalidates="prune", metavar="N"),
    _O("round_to", "int", "pruning", "Keep channel counts a multiple of this (e.g. 8).",
       default=1, minimum=1, invalidates="prune", metavar="N"),
    _O("exclude", "multi", "pruning", "Layer (module name) to leave unpruned; repeatable.",
       default=[], invalidates="prune", metavar="MODULE"),
    _O("keep_residual", "bool", "pruning", "Do not prune residual streams (the D-Score "
       "paper's choice); by default coupled residual channels are pruned together.",
       default=False, invalidates="prune"),
    _O("sensitivity_samples", "int", "pruning", "Training images for the sensitivity "
       "analysis.", default=1000, minimum=1, invalidates="prune", metavar="N"),
    _O("compensate", "str", "pruning", "Right after pruning, without training: refit (the "
       "mean of each removed channel folded into the layers that read it, then their kept "
       "weights refit by least squares to the unpruned outputs), mean (the mean fold, then "
       "BatchNorm statistics re-estimated), bn (BatchNorm re-estimation only) or none.",
       default="refit", choices=("refit", "mean", "bn", "none"), invalidates="prune",
       metavar="METHOD"),
    _O("compensate_samples", "int", "pruning", "Training images for the compensation.",
       default=1000, minimum=1, invalidates="prune", metavar="N"),
    # --- recovery
    _O("recover", "str", "recovery", "After pruning: kd (labels and distillation from the "
       "input model together), labels, distill (label-free), or none. Ternary QAT uses the "
       "same loss (teacher: the model before quantization).", default="kd",
       choices=("kd", "labels", "distill", "none"), invalidates="recover",
       metavar="MODE"),
    _O("kd_weight", "float", "recovery", "kd: weight of the distillation term (the rest is "
       "cross-entropy on the labels).", default=0.25, minimum=0, maximum=1,
       invalidates="recover", metavar="W"),
    _O("kd_temperature", "float", "recovery", "Distillation temperature.", default=8.0,
       minimum=0, above_minimum=True, invalidates="recover", metavar="T"),
    _O("teacher", "path", "recovery", "Distill from this model instead of the input model "
       "(same classes); its architecture: --teacher-arch / --teacher-arch-kwargs.",
       invalidates="recover", metavar="PATH"),
    _O("teacher_arch", "str", "recovery", "Architecture of --teacher (module:callable or a "
       "built-in name).", invalidates="recover", metavar="NAME|MODULE:CALLABLE"),
    _O("teacher_arch_kwargs", "json", "recovery", "JSON keyword arguments for "
       "--teacher-arch.", invalidates="recover", metavar="JSON"),
    _O("recover_epochs", "float", "recovery", "Recovery epochs on the training split.",
       default=3.0, minimum=0, invalidates="recover", metavar="E"),
    _O("recover_lr", "float", "recovery", "Recovery learning rate (SGD, cosine to 0).",
       default=0.02, minimum=0, above_minimum=True, invalidates="recover", metavar="LR"),
    _O("recover_batch", "int", "recovery", "Batch size of recovery and ternary QAT.",
       default=128, minimum=1, invalidates="recover", metavar="N"),
    _O("augment", "str", "recovery", "Training augmentation of recovery and ternary QAT: "
       "pad-crop (random crop with 1/8 of the side padded, + horizontal flip), rrc "
       "(random-resized crop + flip), none, or auto (pad-crop below 64x64 inputs, rrc from "
       "64x64).", default="auto", choices=("auto", "pad-crop", "rrc", "none"),
       invalidates="recover", metavar="POLICY"),
    _O("rrc_min_scale", "float", "recovery", "rrc: smallest crop, as a fraction of the "
       "image's area (torchvision trains from scratch with 0.08; recovery fine-tunes a "
       "trained model, so milder).", default=0.25, minimum=0, maximum=1,
       above_minimum=True, invalidates="recover", metavar="S"),
    _O("recover_steps", "int", "recovery", "Cap on recovery steps (smoke runs).", minimum=1,
       invalidates="recover", metavar="N"),
    _O("nproc", "int", "recovery", "Fine-tune in N processes with torchrun (DDP: gloo on "
       "CPU, NCCL on GPU).", default=1, minimum=1, invalidates="recover", metavar="N"),
    # --- quantization
    _O("quant", "str", "quantization", "Weight quantization: fp32 (none), int8 "
       "(post-training, by the target's tool: NNCF / ONNX Runtime / TensorRT), or ternary "
       "(quantization-aware training: weights α·{-1,0,+1}, 8-bit activations, exported as "
       "Q/DQ that targets run as INT8). int8 and ternary imply --precision int8.",
       default_text="fp32 (none)", choices=("fp32", "int8", "ternary"),
       invalidates="quantize", metavar="MODE", commands=COMPILE),
    _O("quant_method", "str", "quantization", "Ternary method: hq (hyperspherical) or twn "
       "(Δ = 0.7·mean|w|).", default="hq", choices=("hq", "twn"), invalidates="quantize",
       metavar="METHOD", commands=COMPILE),
    _O("quant_epochs", "float", "quantization", "Ternary QAT epochs on the training split.",
       default=3.0, minimum=0, invalidates="quantize", metavar="E", commands=COMPILE),
    _O("quant_lr", "float", "quantization", "Ternary QAT learning rate (SGD, cosine to 0); "
       "lower than recovery's because QAT starts from a trained model "
       "(bench/ternary_resnet20.py).", default=0.01, minimum=0, above_minimum=True,
       invalidates="quantize", metavar="LR", commands=COMPILE),
    _O("quant_steps", "int", "quantization", "Cap on ternary QAT steps (smoke runs).",
       minimum=1, invalidates="quantize", metavar="N", commands=COMPILE),
    _O("ternary_sparsity", "float", "quantization", "Extra fraction of ternary weights "
       "pruned to 0 during QAT (0 = only the zeros the ternarizer picks; ~0.8 makes a much "
       "smaller packed artifact).", default=0.0, minimum=0, maximum=1, below_maximum=True,
       invalidates="quantize", metavar="FRACTION", commands=COMPILE),
    _O("ternary_first_last", "bool", "quantization", "Make the first conv and the "
       "classifier ternary too (by default they stay int8).", default=False,
       invalidates="quantize", commands=COMPILE),
    # --- search
    _O("search", "bool", "search", "Search for the FASTEST model on the target within the "
       "budget: dense at each precision, then D-Score pruning levels (compensated first, "
       "recovered only when they can still win), with a per-layer exception when a layer "
       "breaks the budget (its group unpruned; INT8 layers back in FP32; a ternary layer at "
       "int8); every candidate is compiled, profiled and evaluated on the target. "
       "Candidates: OUT/search/; resumable.", default=False, invalidates="prune",
       commands=COMPILE),
    _O("search_levels", "csv", "search", "FLOPs reductions the search tries (latency "
       "reductions with --search-levels-in latency); none = precisions of the dense model "
       "only (no training).", default=[0.3, 0.5, 0.7],
       invalidates="prune", metavar="F[,F...]|none", commands=COMPILE),
    _O("search_levels_in", "str", "search", "What the search's levels reduce: flops (the "
       "sensitivity threshold that removes that share of FLOPs) or latency (the "
       "--latency-reduction allocation, measured per candidate's precision on the target).",
       default="flops", choices=("flops", "latency"), invalidates="prune", metavar="METRIC",
       commands=COMPILE),
    _O("search_precisions", "csv", "search", "Precisions the search tries, e.g. fp32,int8.",
       default_text="all the target offers", invalidates="quantize", metavar="P[,P...]",
       commands=COMPILE),
    _O("search_ternary", "bool", "search", "Also try ternary QAT of the chosen structure "
       "(smaller; it runs INT8 kernels, so not faster than INT8).", default=False,
       invalidates="quantize", commands=COMPILE),
    _O("max_trials", "int", "search", "Stop the search after this many candidates.",
       default=16, minimum=1, invalidates=NO_STAGE, metavar="N", commands=COMPILE),
    _O("time_budget", "float", "search", "Stop starting new candidates after this many "
       "seconds.", minimum=0, above_minimum=True, invalidates=NO_STAGE, metavar="SECONDS",
       commands=COMPILE),
    # --- device
    _O("device", "str", "device", "Profile and evaluate on this device over SSH: "
       "user@host[:port] (key-based, host key checked). Jetson targets build their engine "
       "there.", default_text="the profile's [remote] host, else this machine",
       invalidates="compile", metavar="USER@HOST[:PORT]", commands=COMPILE),
    _O("ssh_key", "path", "device", "SSH private key for --device.",
       default_text="ssh's own: agent, ~/.ssh/id_*", invalidates=NO_STAGE, metavar="PATH",
       commands=COMPILE),
    _O("known_hosts", "path", "device", "known_hosts file that must hold the device's host "
       "key. Unknown or changed keys are refused.", default_text="~/.ssh/known_hosts",
       invalidates=NO_STAGE, metavar="PATH", commands=COMPILE),
    _O("remote_python", "str", "device", "Python on the device with edgeprune and the "
       "target's runtime.", default_text="the profile's (python3)", invalidates="compile",
       metavar="PATH", commands=COMPILE),
    _O("dla_core", "int", "device", "Jetson: build for this DLA core (layers the DLA cannot "
       "run fall back to the GPU and are listed in the report).", minimum=0,
       invalidates="compile", metavar="N", commands=COMPILE),
    _O("dla_strict", "bool", "device", "Jetson DLA: fail (exit 2) when any layer falls "
       "back to the GPU.", default=False, invalidates="compile", commands=COMPILE),
    # --- output
    _O("out", "path", "output", "Output directory.", default="out", metavar="DIR",
       commands=ALL_RUNS),
    _O("wait_lock", "bool", "output", "When another run holds the output directory, wait "
       "for it instead of exiting 2.", default=False, commands=ALL_RUNS),
    _O("job", "path", "output", "TOML job file with these options (keys as in "
       "docs/options.md); options on the command line win.", metavar="FILE",
       in_job_file=False),
    _O("fresh", "bool", "output", "Ignore cached stages.", default=False),
    _O("quiet", "bool", "output", "No progress or summary.", default=False, short="-q",
       commands=ALL_RUNS, in_job_file=False),
    _O("as_json", "bool", "output", "Print the report as JSON on stdout (implies --quiet).",
       default=False, flag="--json", commands=frozenset({*ALL_RUNS, "report", "targets"}),
       in_job_file=False),
    _O("debug", "bool", "output", "Show tracebacks.", default=False,
       commands=frozenset({*ALL_RUNS, "report"}), in_job_file=False),
    # --- `edgeprune report` (the regression gate)
    _O("max_accuracy_drop", "float", "budget", "report: top-1 points the candidate may lose "
       "against the reference.", default=0.5, minimum=0, maximum=100,
       metavar="POINTS", commands=frozenset({"report"}), in_job_file=False),
    _O("max_latency_increase", "float", "budget", "report: fraction the candidate's latency "
       "may rise (0.10 = 10%).", default=0.10, minimum=0, metavar="FRACTION",
       commands=frozenset({"report"}), in_job_file=False),
    _O("markdown", "path", "output", "report: also append the comparison as markdown here "
       "(e.g. $GITHUB_STEP_SUMMARY).", metavar="FILE", commands=frozenset({"report"}),
       in_job_file=False),
)

BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


def option(name: str) -> Option:
    return BY_NAME[name]


def default(name: str) -> Any:
    """An option's default (a fresh copy for lists): dataclasses use it so the value is
    declared here only."""
    value = BY_NAME[name].default
    return list(value) if isinstance(value, list) else value


def for_command(command: str) -> list[Option]:
    return [o for o in OPTIONS if command in o.commands]


def job_keys(command: str = "compile") -> list[str]:
    return [o.name for o in for_command(command) if o.in_job_file]


def did_you_mean(key: str, known: list[str] | tuple[str, ...]) -> str:
    """" (did you mean max_drop?)" for a near miss, else ""."""
    close = difflib.get_close_matches(key.replace("-", "_"), list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def refuse_unknown(keys: list[str] | set[str], command: str, where: str, spell: str,
                   known: list[str] | None = None) -> None:
    """Unknown keys, with a did-you-mean. ``spell``: "flag" (--max-drop), "key" (max_drop)
    or "keyword" (max_drop=); ``known``: the allowed names (default: the command's)."""
    known = known if known is not None else [o.name for o in for_command(command)]
    unknown = sorted(set(keys) - set(known))
    if not unknown:
        return
    def name(k: str) -> str:
        return {"flag": "--" + k.replace("_", "-"), "keyword": k + "="}.get(spell, k)
    listed = ", ".join(name(k) + did_you_mean(k, known) for k in unknown)
    raise InputError(f"{where} has unknown {'keys' if spell == 'key' else 'options'}: "
                     f"{listed}", fix="use the option names of docs/options.md (`edgeprune "
                     f"{command} --help`)" + (", with underscores" if spell != "flag" else ""))


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _expected(opt: Option, value: Any) -> str | None:
    """What a job file's (or the API's) value should have been, or None when it fits."""
    kind = opt.kind
    if kind == "bool":
        return None if isinstance(value, bool) else "true or false"
    if kind == "int":
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if kind == "float":
        return None if _number(value) else "a number"
    if kind == "multi":
        ok = isinstance(value, str) or (isinstance(value, list)
                                        and all(isinstance(v, str) for v in value))
        return None if ok else "a string or an array of strings"
    if kind == "csv":
        ok = isinstance(value, str) or _number(value) or (
            isinstance(value, list) and all(isinstance(v, str) or _number(v) for v in value))
        return None if ok else "a string, a number or an array of them"
    if kind == "json":
        return None if isinstance(value, (str, dict)) else "a table, e.g. {num_classes = 10}"
    if kind == "path":
        import os

        return None if isinstance(value, (str, os.PathLike)) else "a string (a path)"
    return None if isinstance(value, str) else "a string"


def _range_text(opt: Option) -> str:
    low = "" if opt.minimum is None else (f"> {opt.minimum:g}" if opt.above_minimum
                                          else f">= {opt.minimum:g}")
    high = "" if opt.maximum is None else (f"< {opt.maximum:g}" if opt.below_maximum
                                           else f"<= {opt.maximum:g}")
    return " and ".join(t for t in (low, high) if t)


def check_values(values: dict[str, Any], where: str = "", typed: bool = False) -> None:
    """Every given value of its option's type and within its range. ``where`` is "" for the
    command line, else e.g. "job file job.toml" or "edgeprune.compile()"; ``typed``: the
    parser already typed the values (typer did), so only ranges are checked."""
    for key, value in values.items():
        opt = BY_NAME.get(key)
        if value is None or opt is None:
            continue
        flag = opt.cli_flag
        name = f"{where}: {key} = {value!r}" if where else f"{flag} {value}"
        context = "invalid budget: " if opt.group == "budget" else ""
        expected = None if typed else _expected(opt, value)
        if expected:
            raise InputError(f"{name} is {_kind(value)}, not {expected}",
                             fix=f"write {key} as {expected} (the value {flag} takes)")
        if opt.kind in ("int", "float"):
            if opt.kind == "float" and not math.isfinite(value):
                raise InputError(f"{context}{name} is not a finite number",
                                 fix=f"pass a number to {flag}")
            low, high = opt.minimum, opt.maximum
            bad = ((low is not None and (value < low or (opt.above_minimum and value == low)))
                   or (high is not None and (value > high
                                             or (opt.below_maximum and value == high))))
            if bad:
                hint = " (0 = the runtime's default)" if key == "threads" else ""
                raise InputError(f"{context}{name} must be {_range_text(opt)}",
                                 fix=f"pass {flag} a value {_range_text(opt)}{hint}")
        if opt.choices and opt.kind == "str" and value not in opt.choices:
            what = f"{where}: unknown {key} {value!r}" if where else f"unknown {flag} {value!r}"
            raise InputError(f"{context}{what}{did_you_mean(value, opt.choices)}",
                             fix=f"use one of {', '.join(opt.choices)}")


@dataclass
class Resolved:
    """The options of one run: ``given`` holds what the command line, the job file or the
    API set (command line first); ``value(name)`` falls back to the declared default."""

    given: dict[str, Any] = field(default_factory=dict)
    job_path: str | None = None

    def value(self, name: str) -> Any:
        got = self.given.get(name)
        return default(name) if got is None else got

    def has(self, name: str) -> bool:
        value = self.given.get(name)
        return value is not None and value is not False

    def __getitem__(self, name: str) -> Any:
        return self.value(name)


def reference_markdown() -> str:
    """docs/options.md: every option by group, with its default, range and the stage it
    invalidates (generated; tests/test_options.py keeps the file in step)."""
    lines = ["# edgeprune options", "",
             "Generated from `edgeprune/options.py` by `python -m edgeprune.options > "
             "docs/options.md`; do not edit by hand.", "",
             "Every option is a command-line flag (`--max-drop 1.0`), a job-file key "
             "(`max_drop = 1.0` in the TOML file given to `--job`; the command line wins) "
             "and a keyword argument of the Python API (`edgeprune.compile(..., "
             "max_drop=1.0)`). Invalidates: the first stage whose cached result the option "
             "changes (later stages re-run too).", ""]
    for group in GROUPS:
        rows = [o for o in OPTIONS if o.group == group]
        if not rows:
            continue
        lines += [f"## {group}", "",
                  "| option | job-file key | default | allowed | invalidates | commands | "
                  "meaning |", "|---|---|---|---|---|---|---|"]
        for o in rows:
            allowed = ", ".join(o.choices) if o.choices else _range_text(o) or o.kind
            if o.kind == "bool":
                allowed = "flag"
            key = o.name if o.in_job_file else "—"
            text = o.help.replace("|", "\\|")
            lines.append(f"| `{o.cli_flag}` | {key} | {o.shown_default() or '—'} | "
                         f"{allowed.replace('|', '/')} | {o.invalidates} | "
                         f"{', '.join(sorted(o.commands))} | {text} |")
        lines.append("")
    return "\n".join(lines)


def _check_table() -> None:
    """The table's own rules (run by the tests): one entry per name, known groups, stages
    and kinds, defaults of their kind and inside their range."""
    names = [o.name for o in OPTIONS]
    assert len(names) == len(set(names)), "an option is declared twice"
    for o in OPTIONS:
        assert o.group in GROUPS and o.kind in KINDS, o.name
        assert o.invalidates in (*STAGES, NO_STAGE), o.name
        if o.default is not None and o.kind not in ("csv", "multi"):
            check_values({o.name: o.default}, "the option table")


if __name__ == "__main__":
    print(reference_markdown())
