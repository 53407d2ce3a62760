"""Retraining-free compensation after pruning, and the masked sensitivity analysis: exact
where the method is exact, measured where it is not."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune import zoo
from edgeprune.model import ArchSpec
from edgeprune.prune.compensate import (
    CompensationConfig,
    Tracer,
    _set_bias,
    batchnorm_after,
    compensate,
    input_channel_means,
    reestimate_batchnorm,
)
from edgeprune.prune.importance import dscore
from edgeprune.prune.sensitivity import analyze, maskable, torch_accuracy, zeroed_channels
from edgeprune.prune.structural import (
    PruneOptions,
    apply_plan,
    find_groups,
    make_shortcuts_explicit,
    plan_from_ratios,
    prune_copy,
)
from edgeprune.stages.load import read_model_artifact, save_derived_artifact, save_model_artifact

ARCHS = ["resnet20", "mobilenetv2_cifar", "densenet_tiny", "vgg16_cifar", "resnext_tiny",
         "convnext_tiny"]


def _model(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = zoo.ZOO[name]()
    example = torch.zeros(2, 3, 32, 32)
    make_shortcuts_explicit(model, example)
    reestimate_batchnorm(model, torch.randn(64, 3, 32, 32).numpy())  # non-trivial statistics
    return model.eval(), example


def _prune(model: nn.Module, example: torch.Tensor, images: np.ndarray, ratio: float,
           means: bool = True) -> tuple[nn.Module, Tracer]:
    pruned = copy.deepcopy(model)
    graph, groups = find_groups(pruned, example, PruneOptions())
    plan = plan_from_ratios(groups, {g.name: ratio for g in groups}, dscore, PruneOptions())
    tracer = Tracer(pruned, input_channel_means(pruned, images) if means else None)
    apply_plan(graph, groups, plan, tracer)
    return pruned, tracer


@pytest.mark.parametrize("arch", ARCHS)
def test_zeroed_channels_equal_the_surgery(arch: str) -> None:
    """The sensitivity analysis masks channels instead of cutting a copy: same outputs."""
    model, example = _model(arch)
    x = torch.randn(16, 3, 32, 32)
    graph, groups = find_groups(model, example, PruneOptions())
    for group in groups:
        if not maskable(model, group):  # measured on a pruned copy instead
            continue
        pruned, plan = prune_copy(model, example, {group.name: 0.5}, dscore, PruneOptions())
        with torch.no_grad():
            cut = pruned.eval()(x)
            with zeroed_channels(graph, group, plan.groups[group.name]["pruned"]):
                masked = model(x)
            assert torch.allclose(cut, masked, atol=1e-4), (arch, group.name)


@pytest.mark.parametrize("arch", ["resnet20", "resnext_tiny", "convnext_tiny"])
def test_masked_analysis_gives_the_surgerys_curves(arch: str) -> None:
    """Same curves (so the same ratios) as pruning a copy at every step; also with grouped
    convolutions (channels cut per group) and a GroupNorm (that group: measured on a copy)."""
    model, example = _model(arch)
    images = torch.randn(128, 3, 32, 32).numpy()
    labels = model(torch.from_numpy(images)).argmax(1).numpy()  # agreement with itself
    evaluate = torch_accuracy(images, labels)
    options = PruneOptions()
    fast = analyze(model, example, dscore, evaluate, options, steps=(0.3, 0.6))
    _, groups = find_groups(model, example, options)
    for group in groups:
        for ratio, accuracy in fast["curves"][group.name]:
            pruned, _ = prune_copy(model, example, {group.name: ratio}, dscore, options)
            assert evaluate(pruned) == pytest.approx(accuracy, abs=1e-9)


@pytest.mark.parametrize("arch", ARCHS)
def test_mean_fold_keeps_every_consumers_expected_output(arch: str) -> None:
    """Folding a removed channel's mean into its consumers is exact in expectation for a
    linear consumer: the classifier's mean logits are unchanged when only the channels
    it reads directly are pruned (no layer in between changes)."""
    model, example = _model(arch)
    images = torch.randn(64, 3, 32, 32).numpy()
    graph, groups = find_groups(model, example, PruneOptions())
    head = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    group = next((g for g in groups if head in g.members), None)
    if group is None:
        pytest.skip(f"{arch}: the classifier's input is not prunable")
    plan = plan_from_ratios([group], {group.name: 0.5}, dscore, PruneOptions())
    pruned = copy.deepcopy(model)
    graph, groups = find_groups(pruned, example, PruneOptions())
    tracer = Tracer(pruned, input_channel_means(pruned, images))
    apply_plan(graph, [g for g in groups if g.name == group.name], plan, tracer)
    bn_of = batchnorm_after(model, example)
    for name, delta in tracer.trace.mean_delta.items():
        _set_bias(pruned, name, bn_of, delta, replace_bias=False)
    x = torch.from_numpy(images)
    with torch.no_grad():
        before, after = model(x).mean(0), pruned.eval()(x).mean(0)
    if set(tracer.trace.consumers()) == {head}:
        assert torch.allclose(before, after, atol=1e-4), (before - after).abs().max()
    else:  # other consumers in the group change what the head reads: not exact
        assert (before - after).abs().max() < (before.abs().max() + 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_compensation_brings_the_pruned_outputs_closer(arch: str) -> None:
    """On every structural family: refit < mean < none in output error (random weights
    and inputs with BatchNorm statistics, 40% of every group)."""
    model, example = _model(arch)
    images = torch.randn(256, 3, 32, 32).numpy()
    x = torch.from_numpy(images)
    with torch.no_grad():
        reference = model(x)
    errors = {}
    for method in ("none", "mean", "refit"):
        pruned, tracer = _prune(model, example, images, 0.4)
        compensate(pruned, model, tracer.trace, CompensationConfig(method=method), images,
                   example)
        with torch.no_grad():
            out = pruned.eval()(x)
        errors[method] = float(((out - reference) ** 2).mean() / (reference ** 2).mean())
    assert errors["refit"] < errors["mean"] < errors["none"], errors


def test_refit_restores_a_trained_cnn(fashion_small: Path) -> None:
    """The shipped Fashion-MNIST CNN at 50% of every group: surgery alone collapses top-1,
    each compensation method gives accuracy back, refit the most."""
    from edgeprune.examples.paths import checkpoint_path
    from edgeprune.model import load_model

    model = load_model(checkpoint_path(), ArchSpec("fashion_cnn", user_named=True),
                       False).model
    with np.load(fashion_small) as npz:
        images = ((npz["images"].astype(np.float32) / 255 - 0.2860) / 0.3530)[:, None]
        labels = npz["labels"].astype(np.int64)
    train_x, eval_x, eval_y = images[:300], images[300:], labels[300:]
    example = torch.zeros(2, 1, 28, 28)
    evaluate = torch_accuracy(eval_x, eval_y)
    top1 = {"dense": evaluate(model)}
    for method in ("none", "bn", "mean", "refit"):
        pruned, tracer = _prune(model, example, train_x, 0.5)
        compensate(pruned, model, tracer.trace, CompensationConfig(method=method), train_x,
                   example)
        top1[method] = evaluate(pruned)
    assert top1["none"] < top1["bn"] <= top1["mean"] + 5 and top1["mean"] < top1["refit"], top1
    assert top1["refit"] > top1["dense"] - 10, top1


def test_compensated_artifact_reloads_identically(tmp_path: Path) -> None:
    """Compensation adds biases to bias-free layers (the option-A selection convs); the
    artifact rebuilds them from weights + recipe (no pickled code), outputs identical."""
    torch.manual_seed(0)
    model = zoo.resnet20()
    source = tmp_path / "source.pt"
    save_model_artifact(model, ArchSpec("edgeprune.zoo:resnet20"), source)
    example = torch.zeros(2, 3, 32, 32)
    make_shortcuts_explicit(model, example)
    images = torch.randn(64, 3, 32, 32).numpy()
    pruned, tracer = _prune(model, example, images, 0.5)
    compensate(pruned, model, tracer.trace, CompensationConfig(method="mean"), images, example)
    assert pruned.layer2[0].shortcut.bias is not None  # added by the mean fold
    dest = tmp_path / "pruned.pt"
    save_derived_artifact(pruned, source, dest, pruned=True, input_shape=[2, 3, 32, 32],
                          conversions=["option-a-shortcut"])
    reloaded = read_model_artifact(dest, trust_pickle=False)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(pruned.eval()(x), reloaded(x))
