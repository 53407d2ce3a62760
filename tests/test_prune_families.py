"""The structural families Torch-Pruning needs help with: a vision transformer (whole
attention heads, the MLP, the embedding through LayerNorm, class token and position
embedding), ShuffleNet's channel shuffle (groups it cannot follow found and left whole),
and operations it cannot trace at all (exit 2 naming the layers, through the real CLI)."""

from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.backends import get_backend
from edgeprune.backends.base import CompileRequest
from edgeprune.errors import InputError
from edgeprune.export import export_onnx
from edgeprune.model import ArchSpec, count_flops, count_params
from edgeprune.prune.compensate import (
    CompensationConfig,
    Tracer,
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
    plan_from_ratios,
    prune_copy,
)
from edgeprune.prune.verify import unfollowable_groups, with_followable
from edgeprune.stages.load import read_model_artifact, save_model_artifact
from edgeprune.zoo import ZOO
from tests.conftest import FASHION_ARGS, run_cli

FAMILIES = ["vit_tiny", "shufflenet_tiny"]


@functools.cache
def _followable(name: str) -> tuple[PruneOptions, dict[str, str]]:
    """The check's verdict per model (the same seeded weights every time): run once."""
    model, example = _model(name)
    return with_followable(model, example, PruneOptions())


def _model(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = ZOO[name]()
    reestimate_batchnorm(model, torch.randn(64, 3, 32, 32).numpy())  # non-trivial BN stats
    return model.eval(), torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", FAMILIES)
def test_family_prunes_exports_matches_openvino_and_reloads(name: str, tmp_path: Path) -> None:
    model, example = _model(name)
    options, unpruned = _followable(name)
    _, groups = find_groups(model, example, options)
    pruned, plan = prune_copy(model, example, {g.name: 0.4 for g in groups}, dscore, options)
    shape = tuple(example.shape)
    assert count_params(pruned) < count_params(model)
    assert count_flops(pruned, shape) < count_flops(model, shape)
    if name == "vit_tiny":
        assert not unpruned
        heads = {g: e["heads"] for g, e in plan.groups.items() if "heads" in e}
        assert heads and all(kept < total for total, kept in heads.values()), plan.groups
        assert {f"blocks.{i}.attn.qkv": b.attn.num_heads for i, b in enumerate(
            pruned.blocks)} == {g: kept for g, (_, kept) in heads.items()}
    else:  # the shuffled streams are left whole, the branches' insides are pruned
        assert unpruned and not {g.name for g in groups} & set(unpruned)
        assert any(e["pruned"] for e in plan.groups.values())
    with torch.no_grad():
        expected = pruned(example).numpy()
    onnx_path = tmp_path / "pruned.onnx"
    export_onnx(pruned, example, onnx_path)
    backend = get_backend("openvino")
    result = backend.compile(CompileRequest(onnx_path, tmp_path, "fp32"))
    got = backend.load(tmp_path / result.artifact, "fp32", 0, shape[0], {}).run(example.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
    path = tmp_path / "model.pt"
    save_model_artifact(pruned, ArchSpec(f"edgeprune.zoo:{name}"), path,
                        {"pruned": True, "input_shape": list(shape), "conversions": []})
    torch.load(path, weights_only=True)  # no pickled code
    reloaded = read_model_artifact(path, trust_pickle=False)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(example), pruned(example))


@pytest.mark.parametrize("name", FAMILIES)
def test_zeroing_equals_the_surgery(name: str) -> None:
    """Every group that is pruned computes exactly what zeroing its channels computes
    (groups through a LayerNorm excepted: measured on a copy by the analysis)."""
    model, example = _model(name)
    options, _ = _followable(name)
    graph, groups = find_groups(model, example, options)
    x = torch.randn(8, 3, 32, 32)
    checked = 0
    for group in groups:
        if not maskable(model, group):
            continue
        pruned, plan = prune_copy(model, example, {group.name: 0.5}, dscore, options)
        with torch.no_grad():
            cut = pruned.eval()(x)
            with zeroed_channels(graph, group, plan.groups[group.name]["pruned"]):
                masked = model(x)
        torch.testing.assert_close(cut, masked, atol=1e-4, rtol=1e-4)
        checked += 1
    assert checked >= 4


def test_the_shuffle_groups_torch_pruning_gets_wrong_are_found() -> None:
    """Without the check, the shuffled streams' surgery breaks the model (or is refused
    by the graph's own widths); with it, every group left is cut correctly."""
    model, example = _model("shufflenet_tiny")
    found = _followable("shufflenet_tiny")[1]
    assert any("different widths" in why for why in found.values()), found
    assert any("forward pass fails" in why or "zeroing" in why for why in found.values())
    _, all_groups = find_groups(model, example, PruneOptions())
    broken = [g for g in all_groups if g.name in found]
    with pytest.raises(RuntimeError):  # what the check protects against
        prune_copy(model, example, {g.name: 0.4 for g in broken}, dscore, PruneOptions())


def test_a_channel_permutation_is_caught_by_the_numbers() -> None:
    """Torch-Pruning prunes through torch.roll silently, with the wrong indices: only
    comparing the surgery with zeroing shows it."""

    class Rolled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.roll(torch.relu(self.c1(x)), 1, 1)
            return self.fc(torch.relu(self.c2(x)).mean((2, 3)))

    found = unfollowable_groups(Rolled().eval(), torch.randn(2, 3, 8, 8), PruneOptions())
    assert set(found) == {"c1"} and "zeroing" in found["c1"]


def test_vit_sensitivity_analysis() -> None:
    model, example = _model("vit_tiny")
    images = torch.randn(64, 3, 32, 32).numpy()
    labels = model(torch.from_numpy(images)).argmax(1).numpy()
    analysis = analyze(model, example, dscore, torch_accuracy(images, labels), PruneOptions(),
                       steps=(0.3, 0.6))
    _, groups = find_groups(model, example, PruneOptions())
    assert set(analysis["curves"]) == {g.name for g in groups}
    heads = [g.name for g in groups if g.heads]
    assert heads
    for name in heads:  # masked heads: the accuracy of the pruned copy
        ratio, accuracy = analysis["curves"][name][0]
        pruned, _ = prune_copy(model, example, {name: ratio}, dscore, PruneOptions())
        assert torch_accuracy(images, labels)(pruned) == pytest.approx(accuracy, abs=1e-9)


@pytest.mark.parametrize("name", FAMILIES)
def test_refit_compensation_runs(name: str) -> None:
    model, example = _model(name)
    images = torch.randn(64, 3, 32, 32).numpy()
    options, _ = _followable(name)
    pruned = copy.deepcopy(model)
    graph, groups = find_groups(pruned, example, options)
    plan = plan_from_ratios(groups, {g.name: 0.4 for g in groups}, dscore, options)
    tracer = Tracer(pruned, input_channel_means(pruned, images))
    apply_plan(graph, groups, plan, tracer)
    report = compensate(pruned, model, tracer.trace, CompensationConfig(method="refit",
                        samples=64), images, example)
    assert report["method"] == "refit"
    with torch.no_grad():
        assert torch.isfinite(pruned.eval()(torch.from_numpy(images))).all()


GATED = '''
import torch
from torch import nn


class Gated(nn.Module):
    """A GLU-style gate written with chunk + cat: Torch-Pruning cannot trace it."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        a, b = torch.relu(self.c1(x)).chunk(2, 1)
        x = torch.cat([a * b, a], 1)
        return self.fc(torch.relu(self.c2(x)).mean((2, 3)))
'''


def test_an_operation_torch_pruning_cannot_trace_is_exit_2(fashion_dir: Path,
                                                           tmp_path: Path) -> None:
    (tmp_path / "gated_model.py").write_text(GATED)
    sys.path.insert(0, str(tmp_path))
    try:
        from gated_model import Gated  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    ckpt = tmp_path / "gated.pt"
    torch.save(Gated().state_dict(), ckpt)
    out = tmp_path / "out"
    env = {"PYTHONPATH": f"{tmp_path}:{Path(__file__).resolve().parents[1]}"}
    result = run_cli("prune", ckpt, "--arch", "gated_model:Gated", "--data", fashion_dir,
                     *FASHION_ARGS, "--prune-ratio", "0.3", "--recover", "none",
                     "--eval-limit", "100", "--out", out, env=env)
    assert result.code == 2, (result.code, result.stderr)
    assert "error: Torch-Pruning cannot follow an operation" in result.stderr
    assert "between c1 and c2" in result.stderr and "fix:" in result.stderr
    assert "--exclude c2" in result.stderr and "Traceback" not in result.stderr
    assert not (out / "pruned.pt").exists()
    # the suggested --exclude works: the graph is cut there, nothing before it is pruned
    with pytest.raises(InputError):
        find_groups(Gated().eval(), torch.zeros(2, 1, 28, 28), PruneOptions())
    _, groups = find_groups(Gated().eval(), torch.zeros(2, 1, 28, 28),
                            PruneOptions(exclude=["c2"]))
    assert not any("c1" in g.members for g in groups)


def test_prune_command_leaves_the_shuffled_streams_whole_with_a_note(
        fashion_dir: Path, tmp_path: Path) -> None:
    """Through the real CLI: exit 0, the groups left whole named in the summary and the
    console, and the artifact reloads with weights_only on the original architecture."""
    import json

    torch.manual_seed(0)
    ckpt = tmp_path / "shuffle.pt"
    torch.save(ZOO["shufflenet_tiny"](in_channels=1).state_dict(), ckpt)
    out = tmp_path / "out"
    result = run_cli("prune", ckpt, "--arch", "shufflenet_tiny", "--arch-kwargs",
                     '{"in_channels": 1}', "--data", fashion_dir, *FASHION_ARGS,
                     "--prune-ratio", "0.3", "--recover", "none", "--eval-limit", "100",
                     "--compensate-samples", "64", "--calib-size", "50", "--out", out)
    assert result.code == 0, result.stderr
    assert "left unpruned" in result.stderr + result.stdout
    summary = json.loads((out / "prune.json").read_text())
    assert set(summary["unpruned_groups"]) == set(_followable("shufflenet_tiny")[1])
    assert any("left unpruned" in w for w in summary["warnings"])
    assert summary["params_after"] < summary["params_before"]
    reloaded = read_model_artifact(out / "pruned.pt", trust_pickle=False)
    assert reloaded(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


class _TorchAttention(nn.Module):
    """torch's own nn.MultiheadAttention: Torch-Pruning cuts its embedding width (the
    head count stays, head_dim shrinks); the rebuilt module must take those widths."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 32, 4, stride=4)
        self.norm = nn.LayerNorm(32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 32)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        y = self.norm(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        x = x + self.fc2(torch.relu(self.fc1(x)))
        return self.head(x.mean(1))


def test_torch_multihead_attention_prunes_and_reloads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, example = _TorchAttention().eval(), torch.randn(2, 3, 16, 16)
    options, unpruned = with_followable(model, example, PruneOptions())
    assert not unpruned
    _, groups = find_groups(model, example, options)
    pruned, _ = prune_copy(model, example, {g.name: 0.25 for g in groups}, dscore, options)
    assert pruned.attn.embed_dim < 32
    spec = ArchSpec("tests:_TorchAttention", factory=_TorchAttention, user_named=True)
    path = tmp_path / "model.pt"
    save_model_artifact(pruned, spec, path, {"pruned": True, "conversions": [],
                                             "input_shape": list(example.shape)})
    reloaded = read_model_artifact(path, trust_pickle=False, arch=spec)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(example), pruned(example))
