"""The one training loop: recovery after pruning and ternary QAT both use it.

Fine-tuning with labels, or label-free distillation from the original model. Runs in one
process, or several under ``torchrun`` (DDP: gloo on CPU, NCCL on GPU): each rank trains
on its own shard of every epoch's permutation and gradients are averaged by DDP.

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


@dataclass
class TrainConfig:
    """Defaults are the shared CIFAR-10 recovery recipe: SGD momentum 0.9 Nesterov, lr 0.01
    cosine to 0 per iteration, weight decay 5e-4, batch 128, crop + flip, seed 0."""

    epochs: float = 3.0
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: bool = True  # random crop with 4-pixel zero padding + horizontal flip
    distill: bool = False  # label-free: match the teacher's softened outputs
    temperature: float = 4.0
    seed: int = 0
    max_steps: int | None = None  # cap (tests, smoke runs)

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
                  pad: int = 4) -> torch.Tensor:
    """Random crop with ``pad`` pixels of black padding, and random horizontal flip."""
    n, c, h, w = x.shape
    padded = pad_value.view(1, c, 1, 1).expand(n, c, h + 2 * pad, w + 2 * pad).clone()
    padded[:, :, pad : pad + h, pad : pad + w] = x
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened outputs, scaled by T² (Hinton)."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1),
                    reduction="batchmean", log_target=True) * t * t


def train(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    pad_value: list[float] | None = None,
    teacher: nn.Module | None = None,
    hooks: TrainHooks | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place on preprocessed images; returns what happened.

    ``pad_value`` is the normalized value of a black pixel per channel, so the crop's
    padding is black in pixel space, as in the usual recipe.
    """
    info = dist_info()
    device = init_distributed(info)
    if config.distill and teacher is None:
        raise ValueError("distillation needs the teacher model")
    torch.manual_seed(config.seed)
    model = model.to(device).to(memory_format=torch.channels_last).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    ddp = nn.parallel.DistributedDataParallel(model) if info.world > 1 else model
    if teacher is not None:
        teacher = teacher.to(device).to(memory_format=torch.channels_last).eval()
    optimizer = torch.optim.SGD(trainable, lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov, weight_decay=config.weight_decay)
    if hooks is not None and hasattr(hooks, "optimizer"):
        hooks.optimizer = optimizer  # e.g. ternary re-initialization clears momentum
    n = len(images)
    per_rank = n // info.world
    steps_per_epoch = max(per_rank // config.batch_size, 1)
    total = math.ceil(config.epochs * steps_per_epoch)
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    generator = torch.Generator().manual_seed(config.seed)
    pad = torch.tensor(pad_value or [0.0] * images.shape[1], dtype=torch.float32)
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels.astype(np.int64))
    step, losses, started = 0, [], time.perf_counter()
    while step < total:
        perm = torch.randperm(n, generator=generator)[info.rank :: info.world][:per_rank]
        for start in range(0, steps_per_epoch * config.batch_size, config.batch_size):
            if step >= total:
                break
            idx = perm[start : start + config.batch_size]
            x = x_all[idx]
            if config.augment:
                x = augment_batch(x, generator, pad)
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            y = y_all[idx].to(device)
            lr = 0.5 * config.lr * (1 + math.cos(math.pi * step / total))
            for group in optimizer.param_groups:
                group["lr"] = lr
            out = ddp(x)
            if config.distill:
                with torch.no_grad():
                    target = teacher(x)  # type: ignore[misc]
                loss = distill_loss(out, target, config.temperature)
            else:
                loss = F.cross_entropy(out, y)
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
        "config": config.to_dict(),
    }
