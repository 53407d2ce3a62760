"""The fast sensitivity analysis (prune/suffix.py) gives the plain analysis's curves: the
same accuracies at every step, on every structural family of the zoo, also when the prefix
is not cached or the model cannot be traced, and it really skips the prefix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeprune import zoo
from edgeprune.prune.compensate import reestimate_batchnorm
from edgeprune.prune.importance import dscore
from edgeprune.prune.sensitivity import analyze, maskable, torch_accuracy
from edgeprune.prune.structural import PruneOptions, find_groups, make_shortcuts_explicit
from edgeprune.prune.suffix import SuffixCurves
from edgeprune.prune.verify import with_followable

FAMILIES = ["resnet20", "mobilenetv2_cifar", "densenet_tiny", "vgg16_cifar", "resnext_tiny",
            "convnext_tiny", "shufflenet_tiny", "vit_tiny", "fashion_cnn"]


def _setup(name: str) -> tuple[nn.Module, torch.Tensor, object, PruneOptions]:
    torch.manual_seed(0)
    model = zoo.ZOO[name]()
    channels = 1 if name == "fashion_cnn" else 3
    size = 28 if name == "fashion_cnn" else 32
    example = torch.zeros(2, channels, size, size)
    make_shortcuts_explicit(model, example)
    images = torch.randn(96, channels, size, size).numpy()
    reestimate_batchnorm(model, images)  # BatchNorms whose folding changes the weights
    model.eval()
    labels = model(torch.from_numpy(images)).argmax(1).numpy()  # agreement with itself
    options, _ = with_followable(model, example, PruneOptions())
    return model, example, torch_accuracy(images, labels, batch=32), options


@pytest.mark.parametrize("name", FAMILIES)
def test_suffix_curves_equal_the_whole_network_curves(name: str) -> None:
    model, example, evaluate, options = _setup(name)
    steps = (0.25, 0.5, 0.75)
    fast = analyze(model, example, dscore, evaluate, options, steps=steps)
    plain = analyze(model, example, dscore, evaluate, options, steps=steps, suffix_only=False)
    assert fast["curves"].keys() == plain["curves"].keys()
    for group, curve in plain["curves"].items():
        assert [r for r, _ in fast["curves"][group]] == [r for r, _ in curve], group
        assert [a for _, a in fast["curves"][group]] == pytest.approx(
            [a for _, a in curve], abs=1e-9), group


def test_every_group_of_a_residual_net_runs_on_its_suffix() -> None:
    """Including the residual streams, whose option-A shortcut is a Conv2d subclass that a
    default fx trace would inline (and never mask)."""
    model, example, evaluate, options = _setup("resnet20")
    suffixes = SuffixCurves(model, evaluate)
    assert suffixes.usable
    graph, groups = find_groups(model, example, options)
    assert any(g.residual for g in groups)
    for group in groups:
        assert maskable(model, group)
        assert suffixes.for_group(graph, group) is not None, group.name


def test_the_prefix_runs_once_per_group() -> None:
    model, example, evaluate, options = _setup("resnet20")
    suffixes = SuffixCurves(model, evaluate)
    graph, groups = find_groups(model, example, options)
    deep = next(g for g in groups if g.name.startswith("layer3"))
    runner = suffixes.for_group(graph, deep)
    assert runner is not None and runner.cache is not None
    calls = []
    stem = suffixes.fused.get_submodule("conv1")
    handle = stem.register_forward_hook(lambda *_: calls.append(1))
    try:
        for kept in (60, 40, 20):
            runner.accuracy(list(range(kept)))
    finally:
        handle.remove()
    assert calls == []  # the stem never ran again: its outputs came from the cache


def test_without_the_cache_the_curves_are_the_same() -> None:
    model, example, evaluate, options = _setup("resnet20")
    graph, groups = find_groups(model, example, options)
    cached, uncached = SuffixCurves(model, evaluate), SuffixCurves(model, evaluate, cache_mb=0)
    for group in groups[:4]:
        a, b = cached.for_group(graph, group), uncached.for_group(graph, group)
        assert a is not None and b is not None and b.cache is None
        channels = list(range(0, group.channels, 2))
        assert a.accuracy(channels) == pytest.approx(b.accuracy(channels), abs=1e-9)


class DataDependent(nn.Module):
    """Control flow on a tensor's value: fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c2, self.fc = nn.Conv2d(16, 16, 3, padding=1), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        if float(x.mean()) > -1:
            x = torch.relu(self.c2(x))
        return self.fc(x.mean((2, 3)))


def _self_labelled(model: nn.Module) -> object:
    """An evaluation of a small 16x16 model on random images against its own predictions."""
    images = torch.randn(64, 3, 16, 16).numpy()
    reestimate_batchnorm(model, images)
    model.eval()
    labels = model(torch.from_numpy(images)).argmax(1).numpy()
    return torch_accuracy(images, labels, batch=32)


def test_an_untraceable_model_is_analysed_the_plain_way() -> None:
    torch.manual_seed(0)
    model = DataDependent()
    evaluate = _self_labelled(model)
    example = torch.zeros(2, 3, 16, 16)
    assert not SuffixCurves(model, evaluate).usable
    fast = analyze(model, example, dscore, evaluate, PruneOptions(), steps=(0.5,))
    plain = analyze(model, example, dscore, evaluate, PruneOptions(), steps=(0.5,),
                    suffix_only=False)
    assert fast["curves"] == plain["curves"] and fast["curves"]


class SharedLayer(nn.Module):
    """One conv + BatchNorm applied twice: folding the BatchNorm into the shared conv at one
    call would change the other."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.shared = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.shared(x))
        x = torch.relu(self.b1(self.shared(self.c1(x[:, :3])) + x))
        return self.fc(x.mean((2, 3)))


def test_a_layer_called_twice_is_not_folded() -> None:
    torch.manual_seed(0)
    model = SharedLayer()
    suffixes = SuffixCurves(model, _self_labelled(model))
    assert suffixes.usable and suffixes.folded == {}
