"""The one training loop: recovery after pruning and ternary QAT both use it.

Three losses: ``kd`` (labels and distillation together: ``(1 - w)·CE(labels) +
w·T²·KL(teacher ‖ student)``, the default), ``labels`` (cross-entropy only) and
``distill`` (label-free: the KL term only). Runs in one process, or several under
``torchrun`` (DDP: gloo on CPU, NCCL on GPU): each rank trains on its own shard of every
epoch's permutation and gradients are averaged by DDP.

The memory format is measured, not assumed: channels_last makes dense convolutions
faster on this CPU, but a pruned network's odd channel counts send its backward pass to
slow kernels (measured: ResNet-20 at 50% FLOPs, 238 ms per step channels_last vs 156 ms
NCHW, dense 160 ms channels_last), so the loop times a few steps in both and keeps the
faster.

Hooks let a method add to the loss and act after each optimizer step (the ternary
quantizer's cosine regularizer and its prune/re-initialize schedule) without a second loop.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from edgeprune.data.stream import DecodedSplit, Images, train_loader
from edgeprune.options import default

LOSSES = ("kd", "labels", "distill")
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


@dataclass
class TrainConfig:
    """Defaults are the shared CIFAR-10 recovery recipe (SGD momentum 0.9 Nesterov, cosine
    to 0 per iteration, weight decay 5e-4, batch 128, crop + flip, seed 0) with the
    learning rate and distillation settings chosen by measurement:
    ``bench/recovery_quality.py --phase sweep`` (ResNet-20, 50% FLOPs, E=1, trained on
    45k train JPEGs, validated on 5k held out; bench/results/recovery_quality_resnet20.json)."""

    epochs: float = default("recover_epochs")
    lr: float = default("recover_lr")
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    batch_size: int = default("recover_batch")
    augment: str = default("augment")  # auto | pad-crop | rrc | none (see augment())
    rrc_min_scale: float = default("rrc_min_scale")
    loss: str = "kd"  # "kd" (labels + distillation) | "labels" | "distill" (label-free)
    kd_weight: float = default("kd_weight")  # weight of the distillation term in "kd"
    temperature: float = default("kd_temperature")
    seed: int = default("seed")
    max_steps: int | None = None  # cap (tests, smoke runs)
    memory_format: str = "auto"  # "auto" (measured) | "channels_last" | "contiguous"

    @property
    def needs_teacher(self) -> bool:
        return self.loss in ("kd", "distill")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainHooks(Protocol):
    """What a compression method may add to training."""

    def extra_loss(self, model: nn.Module) -> torch.Tensor: ...

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None: ...


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Rank and world size from torchrun's environment (1 process without it)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(info: DistInfo) -> torch.device:
    """Join the process group torchrun set up: NCCL on GPUs, gloo on CPU."""
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda", info.local_rank) if use_cuda else torch.device("cpu")
    if info.world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(device)
    return device


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad_value: torch.Tensor,
                  pad: int | None = None) -> torch.Tensor:
    """Random crop with ``pad`` pixels of black padding (default 1/8 of the image side:
    CIFAR's 4 pixels at 32²) and random horizontal flip, as one gather for the batch."""
    n, c, h, w = x.shape
    pad = max(1, round(min(h, w) / 8)) if pad is None else pad
    padded = pad_value.view(1, c, 1, 1).expand(n, c, h + 2 * pad, w + 2 * pad).clone()
    padded[:, :, pad : pad + h, pad : pad + w] = x
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
    flip = torch.rand(n, 1, generator=generator) < 0.5
    rows = dy + torch.arange(h)
    cols = torch.where(flip, dx + torch.arange(w - 1, -1, -1), dx + torch.arange(w))
    batch = torch.arange(n)[:, None, None, None]
    chan = torch.arange(c)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def rrc_batch(x: torch.Tensor, generator: torch.Generator, min_scale: float = 0.25,
              ratios: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Random-resized crop + horizontal flip for the whole batch in one ``grid_sample``:
    per sample an area fraction in [min_scale, 1] and an aspect ratio (log-uniform in
    ``ratios``), a crop inside the image, resized back to the input size (bilinear), as
    torchvision's RandomResizedCrop draws them (a crop that does not fit is clamped to
    the image instead of redrawn)."""
    n = x.shape[0]
    area = torch.empty(n).uniform_(min_scale, 1.0, generator=generator)
    log_ratio = torch.empty(n).uniform_(*np.log(ratios).tolist(), generator=generator)
    ratio = torch.exp(log_ratio)
    width = torch.sqrt(area * ratio).clamp(max=1.0)  # fractions of the side
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - width)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - height)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = width * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = height, cy
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="border",
                         align_corners=False)


def augment_policy(config: TrainConfig, image_hw: tuple[int, int]) -> str:
    """``auto``: CIFAR's pad-crop below 64x64 (a random-resized crop of 32x32 pixels
    destroys too much), random-resized crop from 64x64."""
    if config.augment != "auto":
        return config.augment
    return "pad-crop" if min(image_hw) < 64 else "rrc"


def augment(x: torch.Tensor, policy: str, generator: torch.Generator,
            pad_value: torch.Tensor, min_scale: float) -> torch.Tensor:
    """One training batch through the chosen policy (in the training process, seeded:
    the same images whatever the number of decode workers)."""
    if policy == "pad-crop":
        return augment_batch(x, generator, pad_value)
    if policy == "rrc":
        return rrc_batch(x, generator, min_scale)
    return x


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened outputs, scaled by T² (Hinton).
    Outputs with more axes than (N, C) -- a segmentation model's N×C×H×W -- are one
    distribution over C per position, averaged over the positions."""
    t = temperature
    if student.dim() > 2:
        student = student.movedim(1, -1).reshape(-1, student.shape[1])
        teacher = teacher.movedim(1, -1).reshape(-1, teacher.shape[1])
    return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1),
                    reduction="batchmean", log_target=True) * t * t


def training_loss(config: TrainConfig, out: torch.Tensor, labels: torch.Tensor | None,
                  teacher_out: torch.Tensor | None) -> torch.Tensor:
    """The configured loss: labels, distillation, or both (weighted)."""
    if config.loss == "labels":
        return F.cross_entropy(out, labels)
    assert teacher_out is not None
    kd = distill_loss(out, teacher_out, config.temperature)
    if config.loss == "distill":
        return kd
    return (1 - config.kd_weight) * F.cross_entropy(out, labels) + config.kd_weight * kd


def fastest_memory_format(model: nn.Module, x: torch.Tensor, device: torch.device,
                          repeats: int = 3) -> tuple[str, dict[str, float]]:
    """Time forward + backward in both memory formats on a sample batch; the faster wins
    (gradients are cleared afterwards; the weights are not touched). The formats take turns,
    best of ``repeats`` each, so a slow spell of a shared machine does not decide for one of
    them."""
    if device.type != "cpu":
        return "channels_last", {}
    best = dict.fromkeys(MEMORY_FORMATS, float("inf"))
    model.train()
    for i in range(repeats + 1):
        for name, fmt in MEMORY_FORMATS.items():
            model.to(memory_format=fmt)
            sample = x.to(device).contiguous(memory_format=fmt)
            started = time.perf_counter()
            model(sample).float().sum().backward()
            if i:  # the first pass warms up the kernels
                best[name] = min(best[name], time.perf_counter() - started)
    model.zero_grad(set_to_none=True)
    timings = {name: seconds * 1000 for name, seconds in best.items()}
    return min(timings, key=timings.__getitem__), timings


def train(
    model: nn.Module,
    images: Images,
    labels: np.ndarray,
    config: TrainConfig,
    pad_value: list[float] | None = None,
    teacher: nn.Module | None = None,
    hooks: TrainHooks | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    workers: int = 0,
) -> dict[str, Any]:
    """Train ``model`` in place on preprocessed images (in memory, or a ``DecodedSplit``
    decoded by ``workers`` processes as it goes); returns what happened.

    ``pad_value`` is the normalized value of a black pixel per channel, so the crop's
    padding is black in pixel space, as in the usual recipe.
    """
    info = dist_info()
    device = init_distributed(info)
    if config.needs_teacher and teacher is None:
        raise ValueError(f"the {config.loss!r} loss needs the teacher model")
    if not config.needs_teacher:
        teacher = None
    torch.manual_seed(config.seed)
    model = model.to(device)
    probe = torch.from_numpy(np.ascontiguousarray(
        images[: min(len(images), config.batch_size, 32)]))
    fmt_name, fmt_timings = (fastest_memory_format(model, probe, device)
                             if config.memory_format == "auto"
                             else (config.memory_format, {}))
    if info.world > 1 and fmt_timings:  # every rank must use the same layout (DDP)
        summed = torch.tensor([fmt_timings[k] for k in MEMORY_FORMATS], dtype=torch.float64)
        dist.all_reduce(summed)
        fmt_timings = {k: float(v) / info.world for k, v in zip(MEMORY_FORMATS, summed,
                                                                strict=True)}
        fmt_name = min(fmt_timings, key=fmt_timings.__getitem__)
    fmt = MEMORY_FORMATS[fmt_name]
    model = model.to(memory_format=fmt).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    ddp = nn.parallel.DistributedDataParallel(model) if info.world > 1 else model
    if teacher is not None:
        teacher = teacher.to(device).to(memory_format=torch.channels_last).eval()
    optimizer = torch.optim.SGD(trainable, lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov, weight_decay=config.weight_decay)
    if hooks is not None and hasattr(hooks, "optimizer"):
        hooks.optimizer = optimizer  # e.g. ternary re-initialization clears momentum
    # label-free distillation never reads the labels (a --metric's targets need not be
    # class ids at all)
    loader = train_loader(images, None if config.loss == "distill" else labels,
                          config.batch_size, config.seed, info.rank, info.world, workers)
    steps_per_epoch = max(len(loader), 1)
    total = math.ceil(config.epochs * steps_per_epoch)
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    generator = torch.Generator().manual_seed(config.seed)
    pad = torch.tensor(pad_value or [0.0] * images.shape[1], dtype=torch.float32)
    policy = augment_policy(config, tuple(images.shape[2:4]))  # type: ignore[arg-type]
    step, epoch, losses, started = 0, 0, [], time.perf_counter()
    waited = 0.0  # seconds the loop waited for decoded batches
    while step < total:
        loader.batch_sampler.sampler.set_epoch(epoch)  # type: ignore[union-attr]
        epoch += 1
        batches_left = iter(loader)
        while step < total:
            asked = time.perf_counter()
            batch = next(batches_left, None)
            waited += time.perf_counter() - asked
            if batch is None:
                break
            x, y = torch.from_numpy(batch[0]), batch[1]
            y = torch.from_numpy(y) if y is not None else None
            x = augment(x, policy, generator, pad, config.rrc_min_scale)
            x = x.to(device).contiguous(memory_format=fmt)
            y = y.to(device) if y is not None else None
            lr = 0.5 * config.lr * (1 + math.cos(math.pi * step / total))
            for group in optimizer.param_groups:
                group["lr"] = lr
            out = ddp(x)
            target = None
            if teacher is not None:
                with torch.no_grad():
                    target = teacher(x.contiguous(memory_format=torch.channels_last))
            loss = training_loss(config, out, y, target)
            if hooks is not None:
                loss = loss + hooks.extra_loss(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if hooks is not None:
                hooks.after_step(model, step, total)  # step = optimizer steps done (1-based)
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(step, total, losses[-1])
    seconds = time.perf_counter() - started
    model.eval().to(memory_format=torch.contiguous_format)
    return {
        "steps": step,
        "epochs": step / steps_per_epoch,
        "seconds": seconds,
        "seconds_per_epoch": seconds / max(step / steps_per_epoch, 1e-9),
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "world_size": info.world,
        "device": str(device),
        "memory_format": fmt_name,
        "memory_format_ms_per_probe_step": fmt_timings,
        "augment": policy,
        "data": {"streamed": isinstance(images, DecodedSplit),
                 "workers": loader.num_workers, "seconds_waiting_for_batches": waited},
        "config": config.to_dict(),
    }
