"""Structural surgery: whole filters/channels removed, every coupled layer following.

Torch-Pruning's DepGraph finds what is coupled (BatchNorm, residual additions,
concatenations, depthwise/grouped convolutions, Linear heads) and performs the removal.
Where it cannot follow a layer, we fix the model at the right depth before calling it:

- The CIFAR ResNets' "option A" shortcut (subsample + zero-pad channels, no parameters)
  hides a fixed channel mapping DepGraph cannot see: pruning a residual stream would
  break the forward pass. We make that mapping explicit as a frozen 1x1 stride-2
  "selection" convolution (weights 0/1, never trained, never ranked). DepGraph then prunes
  it like any conv, and after pruning it still selects exactly the surviving channels.

A pruned model is saved as weights + the recipe (architecture, conversions); it is
rebuilt on the original architecture by resizing layers to the saved shapes, so loading
never executes pickled code.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from edgeprune.options import default
from edgeprune.prune.importance import Criterion

FIXED = "_edgeprune_fixed"  # attribute on modules that must never be ranked or trained
OPTION_A = "option-a-shortcut"


class SelectionConv(nn.Conv2d):
    """A frozen 1x1 conv that copies input channel j to output channel j + pad with a
    spatial stride: exactly the option-A shortcut, in a form a pruner can follow."""

    def __init__(self, in_channels: int, out_channels: int, pad: int, stride: int) -> None:
        super().__init__(in_channels, out_channels, 1, stride=stride, bias=False)
        with torch.no_grad():
            self.weight.zero_()
            for j in range(in_channels):
                self.weight[j + pad, j, 0, 0] = 1.0
        self.weight.requires_grad_(False)
        setattr(self, FIXED, True)


def _hooked_forward(model: nn.Module, example: torch.Tensor,
                    hooks: dict[nn.Module, Any]) -> Any:
    """One no-grad eval forward pass with forward hooks on some modules (removed after,
    whatever happens): how the plan learns shapes, outputs and execution order."""
    handles = [m.register_forward_hook(hook) for m, hook in hooks.items()]
    try:
        with torch.no_grad():
            return model.eval()(example)
    finally:
        for handle in handles:
            handle.remove()


def _is_option_a(module: nn.Module) -> bool:
    return type(module).__name__ == "DownsampleA" and hasattr(module, "pad")


def make_shortcuts_explicit(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Replace every option-A shortcut by an equivalent SelectionConv; returns their names."""
    in_channels: dict[str, int] = {}

    def record(name: str):
        return lambda mod, inp, out: in_channels.__setitem__(name, inp[0].shape[1])

    _hooked_forward(model, example, {m: record(n) for n, m in model.named_modules()
                                     if _is_option_a(m)})
    for name, channels in in_channels.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, attr)
        setattr(parent, attr, SelectionConv(channels, channels + 2 * old.pad, old.pad,
                                            getattr(old, "stride", 2)))
    return sorted(in_channels)


@dataclass
class PruneOptions:
    """What may be pruned and how channel counts are shaped."""

    min_channels: int = default("min_channels")  # never keep fewer (no layer collapse)
    # keep a multiple of this many channels (e.g. 8 for SIMD kernels)
    round_to: int = default("round_to")
    exclude: list[str] = field(default_factory=list)  # module names (or prefixes) to keep
    prune_residual: bool = True  # False = the paper's choice: leave residual streams whole
    # groups left whole because Torch-Pruning cannot cut them correctly on this model
    # (found by prune.verify: the surgery fails, or differs from zeroing the channels)
    skip_groups: list[str] = field(default_factory=list)

    def keep_count(self, channels: int, ratio: float, channel_groups: int = 1) -> int:
        """Channels kept at ``ratio``: at least min_channels, a multiple of round_to and
        of ``channel_groups`` (a grouped convolution loses the same count per group)."""
        step = math.lcm(self.round_to, channel_groups)
        keep = channels - math.floor(channels * ratio + 1e-9)
        keep = max(keep, min(self.min_channels, channels))
        keep = math.ceil(keep / step) * step
        return min(keep, channels)


@dataclass
class PruneGroup:
    """Channels that must be removed together, named after their first producing layer."""

    name: str
    root: nn.Module
    channels: int
    producers: list[tuple[str, nn.Module]]  # layers whose output channels these are
    members: list[str]  # every layer the removal touches
    residual: bool
    # >1 when a grouped convolution (or GroupNorm) reads or writes these channels: each of
    # its groups must lose the same in-group positions (Torch-Pruning's MetaPruner rule)
    channel_groups: int = 1
    # attention heads: these channels are ``sections`` (3 for a fused qkv Linear) x
    # ``heads`` x head_dim; only whole heads are removed, and the module that reshapes to
    # heads (``head_owner``) gets its ``head_attribute`` (``num_heads``) lowered to match
    heads: int = 0
    sections: int = 1
    head_owner: nn.Module | None = None
    head_attribute: str = ""

    def keep(self, options: PruneOptions, ratio: float) -> int:
        if self.heads:  # whole heads, at least one
            kept = max(1, self.heads - math.floor(self.heads * ratio + 1e-9))
            return kept * (self.channels // self.heads)
        return options.keep_count(self.channels, ratio, self.channel_groups)

    def channels_to_prune(self, scores: torch.Tensor, keep: int) -> list[int]:
        """The ``channels - keep`` lowest-scoring channels; with channel groups, the
        lowest-scoring in-group positions (scores averaged over the groups), in every
        group; with attention heads, the lowest-scoring whole heads (scores averaged over
        the head's q, k and v channels)."""
        if self.heads:
            head_dim = self.channels // (self.sections * self.heads)
            per_head = scores.reshape(self.sections, self.heads, head_dim).mean((0, 2))
            drop = (self.channels - keep) // (self.channels // self.heads)
            chosen = torch.argsort(per_head, stable=True)[:drop].tolist()
            return sorted(s * self.heads * head_dim + h * head_dim + d
                          for s in range(self.sections) for h in chosen
                          for d in range(head_dim))
        if self.channel_groups == 1:
            return sorted(torch.argsort(scores, stable=True)[: self.channels - keep].tolist())
        size = self.channels // self.channel_groups
        per_position = scores.reshape(self.channel_groups, size).mean(0)
        positions = torch.argsort(per_position, stable=True)[
            : (self.channels - keep) // self.channel_groups].tolist()
        return sorted(p + g * size for g in range(self.channel_groups) for p in positions)


def _channel_preserving(module: nn.Module) -> bool:
    """A depthwise conv maps channel i to channel i: pruning through it still changes what
    follows it, so the walk to the outputs passes through it."""
    return isinstance(module, nn.Conv2d) and module.groups > 1 and (
        module.groups == module.in_channels == module.out_channels)


def _output_layers(graph: tp.DependencyGraph, model: nn.Module,
                   example: torch.Tensor) -> list[nn.Module]:
    """Layers whose output channels ARE the model's outputs (the classifier, a conv head,
    every head of a multi-output model): never pruned. Found by walking the dependency
    graph back from its outputs through whatever follows the last layers (activations,
    pooling, flatten, log-softmax, a temperature divide, residual adds, concatenations)
    to the first conv/linear on each path; plus, as before, any layer whose output tensor
    is the model's output."""
    found: dict[int, nn.Module] = {}
    nodes = list(graph.module2node.values())
    stack = [n for n in nodes if not n.outputs]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        module = node.module
        if isinstance(module, nn.Conv2d | nn.Linear) and not _channel_preserving(module):
            found[id(module)] = module
            continue
        stack.extend(node.inputs)
    seen_out: list[tuple[nn.Module, torch.Tensor]] = []
    out = _hooked_forward(model, example, {
        m: lambda mod, i, o: seen_out.append((mod, o))
        for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)})
    for module, tensor in seen_out:
        if isinstance(out, torch.Tensor) and (tensor is out
                                              or tensor.data_ptr() == out.data_ptr()):
            found[id(module)] = module
    return list(found.values())


def output_shapes(model: nn.Module, example: torch.Tensor) -> list[tuple[int, ...]]:
    """The shapes of the model's outputs (a tensor, or a tuple/list/dict of them)."""
    with torch.no_grad():
        out = model.eval()(example)
    flat = out.values() if isinstance(out, dict) else (
        out if isinstance(out, tuple | list) else [out])
    return [tuple(t.shape) for t in flat if isinstance(t, torch.Tensor)]


def _channel_groups(group: Any, channels: int) -> int:
    """How many equal parts these channels form for the layers that touch them: a
    grouped (not depthwise) convolution's groups, a GroupNorm's groups; else 1."""
    parts = 1
    for item in group.items:
        module = item.dep.target.module
        if isinstance(module, nn.Conv2d) and module.groups > 1 and not _channel_preserving(
                module):
            parts = math.lcm(parts, module.groups)
        elif isinstance(module, nn.GroupNorm) and module.num_groups > 1:
            parts = math.lcm(parts, module.num_groups)
    return parts if channels % parts == 0 else 1


def _excluded(name: str, exclude: Iterable[str]) -> bool:
    return any(name == e or name.startswith(e + ".") for e in exclude)


HEAD_ATTRIBUTES = ("num_heads", "num_attention_heads", "n_heads")


def _head_attribute(module: nn.Module) -> str:
    """The attribute holding a module's attention head count (timm, Hugging Face and
    nanoGPT spell it differently), or "" when it has none."""
    return next((a for a in HEAD_ATTRIBUTES if type(getattr(module, a, None)) is int), "")


def head_counts(model: nn.Module) -> dict[str, int]:
    """Every attention module's head count: saved with a pruned model, whose removed heads
    a rebuilt architecture cannot know from the weights' shapes alone."""
    return {name: getattr(m, attr) for name, m in model.named_modules()
            if (attr := _head_attribute(m))}


def set_head_counts(model: nn.Module, counts: Any) -> None:
    """Restore saved head counts (``head_counts``) on a rebuilt architecture."""
    from edgeprune.errors import InputError

    modules = dict(model.named_modules())
    if not isinstance(counts, dict):
        counts = {None: counts}
    for name, value in counts.items():
        module = modules.get(name) if isinstance(name, str) else None
        attr = _head_attribute(module) if module is not None else ""
        if not attr or type(value) is not int or value < 1:
            raise InputError(f"the artifact's attention head count {name!r}: {value!r} does "
                             "not match an attention module of the architecture",
                             fix="rebuild the artifact with `edgeprune prune` from the model")
        setattr(module, attr, value)


def _execution_order(model: nn.Module, example: torch.Tensor) -> dict[int, int]:
    """When each conv/linear first runs in a forward pass (id(module) -> position)."""
    order: dict[int, int] = {}

    def record(module: nn.Module, inputs: tuple, output: Any) -> None:
        order.setdefault(id(module), len(order))

    _hooked_forward(model, example, {m: record for m in model.modules()
                                     if isinstance(m, nn.Conv2d | nn.Linear)})
    return order


def _attention(group: Any, names: dict[nn.Module, str], model: nn.Module,
               channels: int, order: dict[int, int]) -> tuple[nn.Module, str, int, int] | None:
    """(owner, attribute, heads, sections) when these channels are attention heads: a
    module with a head count whose child Linear produces them and whose later child
    Linear (the output projection) reads them. (The embedding stream through the same
    module is the other way round: read first, by qkv, produced last, by the projection.)"""
    produced: dict[int, list[nn.Module]] = {}
    read: dict[int, list[nn.Module]] = {}
    for item in group.items:
        module = item.dep.target.module
        name = names.get(module)
        if not isinstance(module, nn.Linear) or not name or "." not in name:
            continue
        owner = model.get_submodule(name.rpartition(".")[0])
        if not _head_attribute(owner):
            continue
        out = item.dep.handler.__name__ == "prune_out_channels"
        (produced if out else read).setdefault(id(owner), []).append(module)
    for key, producers in produced.items():
        readers = read.get(key, [])
        first_out = min(order.get(id(m), 0) for m in producers)
        later = [m for m in readers if order.get(id(m), -1) > first_out]
        if not later:
            continue
        owner = next(m for m in model.modules() if id(m) == key)
        attr = _head_attribute(owner)
        heads = getattr(owner, attr)
        width = min(m.in_features for m in later)
        sections = channels // width if width and channels % width == 0 else 1
        if heads > 0 and channels % (sections * heads) == 0:
            return owner, attr, heads, sections
    return None


def _traced_layers(exc: BaseException, names: dict[nn.Module, str]
                   ) -> tuple[list[str], list[str]]:
    """The model's layers nearest to where Torch-Pruning raised -- before and after the
    graph node it was working on (a local variable of its innermost frame)."""
    node = None
    tb = exc.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if hasattr(value, "inputs") and hasattr(value, "module") and hasattr(
                    value, "outputs"):
                node = value
        tb = tb.tb_next

    def walk(direction: str) -> list[str]:
        found: list[str] = []
        stack, seen = ([node] if node is not None else []), set()
        while stack and len(found) < 4:
            current = stack.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            module = current.module
            name = names.get(module) if isinstance(module, nn.Module) else None
            if name and current is not node:
                found.append(name)
                continue
            stack.extend(getattr(current, direction))
        return sorted(found)

    return walk("inputs"), walk("outputs")


def _internal(exc: Exception, what: str, before: list[str],
              after: list[str] | None = None) -> Exception:
    """Torch-Pruning raised: a clear input error naming the layers and the way out. The
    module to exclude is the one holding the operation (the layers before it share it as
    parent), else the first layer after it: the graph is then cut there."""
    from edgeprune.errors import InputError

    after = after or []
    parents = {n.rpartition(".")[0] for n in before}
    holder = parents.pop() if len(parents) == 1 and "" not in parents else ""
    suggest = holder or (after[0] if after else (before[0] if before else "LAYER"))
    where = ""
    if before or after:
        where = f" between {', '.join(before) or 'the inputs'} and " \
                f"{', '.join(after) or 'the outputs'}" if after else \
                f" at {', '.join(before)}"
    detail = str(exc).splitlines()[0][:200] if str(exc) else ""
    return InputError(
        f"Torch-Pruning cannot follow an operation of this model{where} while {what} "
        f"({type(exc).__name__}: {detail})",
        fix=f"leave that part unpruned with --exclude {suggest} (repeatable; a module "
        "name excludes everything inside it, and layers feeding only excluded modules "
        "stay whole too), or rewrite that operation with standard layers")


def build_graph(model: nn.Module, example: torch.Tensor,
                exclude: Iterable[str] = ()) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph; its failures become an input error. When the
    library cannot trace an operation inside a module the user excluded, the graph is
    built again with those modules opaque (their outputs cut from the autograd graph the
    library walks): nothing inside them, nor anything only feeding them, is pruned."""
    import warnings

    names = {m: n for n, m in model.named_modules()}
    try:
        with warnings.catch_warnings():  # unwrapped parameters (class token, layer scale)
            warnings.simplefilter("ignore", UserWarning)
            return tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except Exception as exc:
        error = _internal(exc, "building the dependency graph", *_traced_layers(exc, names))
        error.__cause__ = exc
    opaque = [m for n, m in model.named_modules() if n and n in set(exclude)]
    if not opaque:
        raise error

    def cut(module: nn.Module, inputs: tuple, output: Any) -> Any:
        return output.detach().requires_grad_() if isinstance(output, torch.Tensor) else (
            output)

    hooks = [m.register_forward_hook(cut) for m in opaque]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except Exception:
        raise error from None
    finally:
        for h in hooks:
            h.remove()


def find_groups(model: nn.Module, example: torch.Tensor,
                options: PruneOptions) -> tuple[tp.DependencyGraph, list[PruneGroup]]:
    """Build the dependency graph and list the prunable channel groups."""
    graph, groups, _ = inspect_groups(model, example, options)
    return graph, groups


def inspect_groups(model: nn.Module, example: torch.Tensor, options: PruneOptions
                   ) -> tuple[tp.DependencyGraph, list[PruneGroup], dict[str, str]]:
    """The graph, the prunable groups, and the groups left out because the graph cannot
    describe them (name -> why): a group whose producing layers have different widths is
    one Torch-Pruning merged across an operation it does not follow (a channel shuffle)."""
    names = {m: n for n, m in model.named_modules()}
    graph = build_graph(model, example, options.exclude)
    order = _execution_order(model, example)
    groups, skipped = [], {}
    try:
        all_groups = list(graph.get_all_groups(
            ignored_layers=_output_layers(graph, model, example),
            root_module_types=(nn.Conv2d, nn.Linear)))
    except Exception as exc:
        raise _internal(exc, "grouping coupled channels", *_traced_layers(exc, names)) from exc
    for group in all_groups:
        members, producers = [], []
        for item in group.items:
            module = item.dep.target.module
            name = names.get(module)
            if name is None:
                continue
            members.append(name)
            out_pruning = item.dep.handler.__name__ == "prune_out_channels"
            if out_pruning and isinstance(module, nn.Conv2d | nn.Linear) and not getattr(
                    module, FIXED, False):
                producers.append((name, module))
        if not producers or any(_excluded(m, options.exclude) for m in members):
            continue
        if producers[0][0] in options.skip_groups:
            continue
        residual = sum(1 for _, m in producers
                       if not (isinstance(m, nn.Conv2d) and m.groups > 1)) > 1
        if residual and not options.prune_residual:
            continue
        root = group.items[0].dep.target.module
        channels = producers[0][1].weight.shape[0]
        widths = {n: m.weight.shape[0] for n, m in producers}
        if len(set(widths.values())) > 1:
            skipped[producers[0][0]] = (
                "Torch-Pruning couples layers of different widths here "
                f"({', '.join(f'{n}: {w}' for n, w in sorted(widths.items()))}), so it "
                "does not follow an operation between them (a channel shuffle, a "
                "reshape of the channels)")
            continue
        entry = PruneGroup(producers[0][0], root, channels, producers,
                           sorted(set(members)), residual, _channel_groups(group, channels))
        attention = _attention(group, names, model, channels, order)
        if attention:
            entry.head_owner, entry.head_attribute, entry.heads, entry.sections = attention
        groups.append(entry)
    return graph, groups, skipped


def group_scores(group: PruneGroup, criterion: Criterion) -> torch.Tensor:
    """Per-channel scores of a group: the criterion summed over its producing layers."""
    return sum(criterion(module.weight) for _, module in group.producers)  # type: ignore[return-value]


def prune_function(module: nn.Module):
    """Torch-Pruning's out-channel pruning function for a group's root layer."""
    return tp.prune_linear_out_channels if isinstance(module, nn.Linear) else (
        tp.prune_conv_out_channels)


@dataclass
class PrunePlan:
    """Which channels each group loses; JSON-friendly."""

    groups: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.groups


def plan_from_ratios(groups: list[PruneGroup], ratios: dict[str, float], criterion: Criterion,
                     options: PruneOptions) -> PrunePlan:
    """Lowest-scoring channels of each group, as many as its ratio (after rounding)."""
    plan = PrunePlan()
    for g in groups:
        ratio = ratios.get(g.name, 0.0)
        keep = g.keep(options, ratio)
        pruned = g.channels_to_prune(group_scores(g, criterion), keep)
        plan.groups[g.name] = {"channels": g.channels, "kept": keep, "ratio": ratio,
                               "pruned": pruned, "residual": g.residual}
        if g.heads:
            plan.groups[g.name]["heads"] = [g.heads, g.heads * keep // g.channels]
    return plan


def apply_plan(graph: tp.DependencyGraph, groups: list[PruneGroup], plan: PrunePlan,
               tracer: Any = None) -> None:
    """Remove the planned channels (groups are disjoint, so indices stay valid).
    ``tracer.before_prune(group)`` sees every coupled group before it is cut (the
    compensation records what each layer loses)."""
    for g in groups:
        idxs = plan.groups.get(g.name, {}).get("pruned", [])
        if idxs:
            try:
                group = graph.get_pruning_group(g.root, prune_function(g.root), idxs)
            except Exception as exc:
                raise _internal(exc, f"cutting group {g.name}", g.members) from exc
            if tracer is not None:
                tracer.before_prune(group)
            try:
                group.prune()
            except Exception as exc:
                raise _internal(exc, f"cutting group {g.name}", g.members) from exc
            if g.heads and g.head_owner is not None:
                removed = len(idxs) // (g.channels // g.heads)
                setattr(g.head_owner, g.head_attribute,
                        getattr(g.head_owner, g.head_attribute) - removed)


def prune_copy(model: nn.Module, example: torch.Tensor, ratios: dict[str, float],
               criterion: Criterion, options: PruneOptions) -> tuple[nn.Module, PrunePlan]:
    """A pruned deep copy; the original is untouched."""
    pruned = copy.deepcopy(model)
    graph, groups = find_groups(pruned, example, options)
    plan = plan_from_ratios(groups, ratios, criterion, options)
    apply_plan(graph, groups, plan)
    before, after = output_shapes(model, example), output_shapes(pruned, example)
    if before != after:  # never write a model whose outputs changed
        from edgeprune.errors import InputError

        raise InputError(f"pruning changed the model's output shape {before} → {after}: "
                           "a layer that produces the outputs was pruned",
                           fix="exclude the layers that produce the outputs with --exclude "
                           "NAME (and report this model: edgeprune should have found them)")
    return pruned, plan


def layer_channels(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv/linear layer (the per-layer table in the report)."""
    return {n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def resize_to_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every conv/BN/linear the shapes saved in ``state`` (a pruned model's weights),
    in place, so the original architecture can load them."""
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        weight = state.get(f"{prefix}weight")
        if weight is None:
            continue
        if isinstance(module, nn.Conv2d):
            out, per_group = weight.shape[:2]
            depthwise = module.groups > 1 and module.groups == module.in_channels == (
                module.out_channels)
            module.groups = out if depthwise else module.groups
            module.in_channels, module.out_channels = per_group * module.groups, out
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = weight.shape
        elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            module.num_features = weight.shape[0]
            for buf in ("running_mean", "running_var"):
                if getattr(module, buf, None) is not None:
                    setattr(module, buf, torch.zeros(weight.shape[0]))
        else:
            continue
        requires_grad = module.weight.requires_grad
        module.weight = nn.Parameter(torch.empty_like(weight), requires_grad=requires_grad)
        bias = state.get(f"{prefix}bias")
        if bias is not None:  # also a bias the compensation added to a bias-free layer
            module.bias = nn.Parameter(torch.empty_like(bias))
    _resize_other_tensors(model, state)
    for name, module in model.named_modules():  # torch's attention keeps its widths too
        packed = state.get(f"{name}.in_proj_weight" if name else "in_proj_weight")
        if isinstance(module, nn.MultiheadAttention) and packed is not None:
            module.embed_dim = module.kdim = module.vdim = int(packed.shape[1])
            module.head_dim = module.embed_dim // module.num_heads


# the attribute that holds a layer's channel count, for the layers that have one
_SIZE_ATTRIBUTES = ("num_features", "num_channels", "num_parameters")


def _resize_other_tensors(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Every other parameter or buffer whose saved shape differs (GroupNorm, LayerNorm,
    PReLU, a layer scale, a bare nn.Parameter): the same generic rule for all -- take the
    saved shape, and update the layer's channel-count attribute when it has one."""
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        resized = False
        for kind, tensors in (("parameter", module._parameters), ("buffer", module._buffers)):
            for key, tensor in list(tensors.items()):
                saved = state.get(prefix + key)
                if tensor is None or saved is None or saved.shape == tensor.shape:
                    continue
                fresh = torch.empty(saved.shape, dtype=tensor.dtype)
                if kind == "parameter":
                    tensors[key] = nn.Parameter(fresh, requires_grad=tensor.requires_grad)
                else:
                    tensors[key] = fresh
                resized = True
        if not resized:
            continue
        channels = next((state[prefix + k].shape[0] for k in ("weight", "bias")
                         if prefix + k in state and state[prefix + k].dim() >= 1), None)
        for attribute in _SIZE_ATTRIBUTES:
            if channels is not None and isinstance(getattr(module, attribute, None), int):
                setattr(module, attribute, int(channels))
        if isinstance(module, nn.LayerNorm) and prefix + "weight" in state:
            module.normalized_shape = tuple(state[prefix + "weight"].shape)
