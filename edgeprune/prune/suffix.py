"""A faster sensitivity analysis: only the part of the network a group's channels change.

Masking a group's channels (sensitivity.zeroed_channels) leaves every layer before the
group's first producing layer untouched, so the analysis computes that prefix once per
group and evaluates each step of the curve on the rest of the network. The network is
traced with ``torch.fx`` and its eval-mode BatchNorms folded into the convolutions before
them (``torch.nn.utils.fusion``; a masked BatchNorm's zeros are then the fused
convolution's). Outputs agree with the unfused model to float rounding, checked on the
first batch; a model fx cannot trace, or one whose fused outputs differ, is analysed the
plain way (the whole network per step).

The prefix's outputs are kept for every batch only while they fit ``cache_mb``;
otherwise the prefix runs again for each step (still one fused forward).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import fx, nn

from edgeprune.prune.structural import PruneGroup, prune_function

MASKED_TYPES = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)


class _LayerTracer(fx.Tracer):
    """Keeps every layer whose output can be masked a call (a Conv2d subclass such as the
    explicit option-A shortcut would otherwise be traced through, and never masked)."""

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return isinstance(m, MASKED_TYPES) or super().is_leaf_module(m, qualified_name)


def _fused(model: nn.Module) -> tuple[fx.GraphModule, dict[str, str]] | None:
    """The traced copy with each eval-mode BatchNorm2d that alone reads a plain Conv2d
    folded into it, and for each folded BatchNorm the convolution that now produces its
    output. None where fx cannot trace the model."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    copied = copy.deepcopy(model).eval()
    try:
        graph = _LayerTracer().trace(copied)
    except Exception:  # any tracing failure: control flow, unsupported calls, ...
        return None
    calls = Counter(str(n.target) for n in graph.nodes if n.op == "call_module")
    folded = {}
    for node in list(graph.nodes):
        if node.op != "call_module" or len(node.args) != 1:
            continue
        source = node.args[0]
        bn = copied.get_submodule(node.target)
        if not (isinstance(bn, nn.BatchNorm2d) and isinstance(source, fx.Node)
                and source.op == "call_module" and len(source.users) == 1
                and not bn.training and bn.track_running_stats):
            continue
        conv = copied.get_submodule(source.target)
        if type(conv) is not nn.Conv2d or calls[str(source.target)] != 1 or calls[
                str(node.target)] != 1:  # a layer called twice: folding would change both
            continue
        parent, _, leaf = str(source.target).rpartition(".")
        setattr(copied.get_submodule(parent) if parent else copied, leaf,
                fuse_conv_bn_eval(conv, bn))
        node.replace_all_uses_with(source)
        graph.erase_node(node)
        folded[str(node.target)] = str(source.target)
    fused = fx.GraphModule(copied, graph)
    return fused.eval().to(memory_format=torch.channels_last), folded


def _close(reference: Any, got: Any) -> bool:
    """The folded network's outputs are the model's, to float rounding (one tensor: the
    outputs the evaluation scores; anything else is analysed the plain way)."""
    if not (isinstance(reference, torch.Tensor) and isinstance(got, torch.Tensor)
            and got.shape == reference.shape):
        return False
    scale = float(reference.abs().max()) or 1.0
    return float((got - reference).abs().max()) <= 1e-4 * scale


class SuffixCurves:
    """Evaluates a group's masked steps on the network after the group's first producer."""

    def __init__(self, model: nn.Module, evaluate: Any, cache_mb: float = 512.0) -> None:
        built = _fused(model)
        self.usable = built is not None and hasattr(evaluate, "score")
        self.evaluate, self.cache_bytes = evaluate, cache_mb * 2**20
        self.names = {m: n for n, m in model.named_modules()}
        if not self.usable:
            return
        self.fused, self.folded = built  # type: ignore[misc]
        self.modules = dict(self.fused.named_modules())
        self.called = {str(node.target) for node in self.fused.graph.nodes
                       if node.op == "call_module"}
        first = evaluate.batches()[0]
        with torch.no_grad():
            reference = model.eval()(evaluate.inputs(first))
            try:
                got = self.fused(evaluate.inputs(first))
            except Exception:  # a traced graph that does not run as the model did
                got = None
        self.usable = _close(reference, got)

    def masked_modules(self, graph: Any, group: PruneGroup, channels: list[int]
                       ) -> dict[str, torch.Tensor]:
        """Fused module name -> output mask, for the layers whose outputs carry
        ``channels`` (as sensitivity.zeroed_channels masks them in the original model)."""
        masks: dict[str, torch.Tensor] = {}
        coupled = graph.get_pruning_group(group.root, prune_function(group.root), channels)
        for dep, idxs in coupled:
            module = dep.target.module
            if dep.handler.__name__ != "prune_out_channels" or not isinstance(
                    module, MASKED_TYPES):
                continue
            name = self.names[module]
            name = self.folded.get(name, name)
            mask = torch.ones(module.weight.shape[0])
            mask[list(idxs)] = 0.0
            masks[name] = mask if name not in masks else masks[name] * mask
        return masks

    def for_group(self, graph: Any, group: PruneGroup) -> _GroupRunner | None:
        """A runner of this group's steps, or None (the plain analysis then)."""
        if not self.usable:
            return None
        probe = self.masked_modules(graph, group, [0])
        if not probe or any(name not in self.called for name in probe):
            return None
        return _GroupRunner(self, graph, group, set(probe))


class _GroupRunner:
    """The fused network split before the group's first masked layer."""

    def __init__(self, owner: SuffixCurves, graph: Any, group: PruneGroup,
                 masked: set[str]) -> None:
        self.owner, self.graph, self.group = owner, graph, group
        nodes = list(owner.fused.graph.nodes)
        position = {node: i for i, node in enumerate(nodes)}
        cut = min(i for i, node in enumerate(nodes)
                  if node.op == "call_module" and node.target in masked)
        live = [node for node in nodes[:cut]
                if any(position[user] >= cut for user in node.users)]
        self.prefix = _subgraph(owner.fused, nodes[:cut], inputs=None, outputs=live)
        self.suffix = _subgraph(owner.fused, nodes[cut:], inputs=live, outputs=None)
        self.cache: list[tuple] | None = None
        evaluate = owner.evaluate
        with torch.no_grad():
            kept, size = [], 0
            for part in evaluate.batches():
                values = self.prefix(evaluate.inputs(part))
                size += sum(v.nbytes for v in values if isinstance(v, torch.Tensor))
                if size > owner.cache_bytes:
                    break
                kept.append(values)
            else:
                self.cache = kept

    def _prefix(self, index: int, part: slice) -> tuple:
        if self.cache is not None:
            return self.cache[index]
        return self.prefix(self.owner.evaluate.inputs(part))

    def accuracy(self, channels: list[int]) -> float:
        """The score with ``channels`` of the group removed (masked)."""
        evaluate = self.owner.evaluate
        index = {part.start: i for i, part in enumerate(evaluate.batches())}
        with _masked(self.owner, self.owner.masked_modules(self.graph, self.group, channels)):
            return evaluate.score(
                lambda part: self.suffix(*self._prefix(index[part.start], part)))


@contextmanager
def _masked(owner: SuffixCurves, masks: dict[str, torch.Tensor]) -> Iterator[None]:
    handles = []
    for name, mask in masks.items():
        module = owner.modules[name]
        last_dim = isinstance(module, nn.Linear)
        handles.append(module.register_forward_hook(mask_hook(mask, last_dim)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def mask_hook(mask: torch.Tensor, last_dim: bool) -> Any:
    """Channels are dim 1 of a conv's or BatchNorm's output, the last dim of a linear's
    (also when it runs on channels-last feature maps, as in ConvNeXt's MLP)."""
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if last_dim:
            return output * mask.to(output.dtype)
        return output * mask.to(output.dtype).view([1, -1] + [1] * (output.dim() - 2))
    return hook


def _subgraph(root: fx.GraphModule, nodes: list[fx.Node], inputs: list[fx.Node] | None,
              outputs: list[fx.Node] | None) -> fx.GraphModule:
    """A module running ``nodes`` of ``root``'s graph: from ``inputs`` (placeholders in
    that order; None: the graph's own) to ``outputs`` (a tuple; None: the graph's own
    output node, which ``nodes`` then ends with). Submodules are shared, not copied."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for i, node in enumerate(inputs or []):
        env[node] = graph.placeholder(f"live_{i}")
    for node in nodes:
        env[node] = graph.node_copy(node, lambda n: env[n])
    if outputs is not None:
        graph.output(tuple(env[node] for node in outputs))
    return fx.GraphModule(root, graph)
