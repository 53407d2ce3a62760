"""Which channel groups Torch-Pruning really cuts correctly on THIS model.

A dependency graph follows the operations it knows; past one it does not (a channel
shuffle's view/transpose/view, an index with a fixed permutation, a reshape to a fixed
width) it may merge unrelated layers, map channel indices wrongly, or leave a layer the
wrong width, and nothing says so until the pruned model runs -- or, worse, runs and
computes something else. So before any analysis every group is proved once, on a copy:

- the surgery (a quarter of each group's channels, or whole heads) must run and the
  pruned model's forward pass must run with unchanged output shapes;
- where zeroing equals removing (no GroupNorm/LayerNorm across the channels: the
  sensitivity analysis's own criterion), the pruned copy's outputs must equal the
  original's with the same channels zeroed.

All groups are cut together first (one copy, one graph: the usual case costs one
surgery); on a failure the groups are halved until each failing group is found alone.
Failing groups are left whole (``PruneOptions.skip_groups``) with a note saying why.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from edgeprune.errors import InputError
from edgeprune.prune.importance import l1
from edgeprune.prune.sensitivity import maskable, zeroed_channels
from edgeprune.prune.structural import (
    PruneGroup,
    PruneOptions,
    PrunePlan,
    apply_plan,
    find_groups,
    group_scores,
    inspect_groups,
    output_shapes,
)

PROBE_RATIO = 0.25
# outputs must agree to this fraction of their largest magnitude (float32 reorderings)
RELATIVE_TOLERANCE = 1e-4


def _probe(group: PruneGroup) -> list[int]:
    """The channels the check removes: the lowest-L1 quarter (at least one channel, one
    channel group or one head), an irregular set so a wrong index mapping shows."""
    keep = group.keep(PruneOptions(min_channels=1, round_to=1), PROBE_RATIO)
    if keep == group.channels:
        unit = group.channels // group.heads if group.heads else group.channel_groups
        keep = group.channels - unit
    if keep <= 0:
        return []
    return group.channels_to_prune(group_scores(group, l1), keep)


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}"


def _check(model: nn.Module, example: torch.Tensor, options: PruneOptions,
           names: list[str], probes: dict[str, list[int]], numeric: bool) -> str | None:
    """Why cutting ``names`` together goes wrong, or None when it is right."""
    pruned = copy.deepcopy(model)
    try:
        graph, groups = find_groups(pruned, example, options)
        plan = PrunePlan({n: {"pruned": probes[n]} for n in names})
        apply_plan(graph, [g for g in groups if g.name in names], plan)
    except InputError as exc:
        return f"the surgery fails inside Torch-Pruning ({exc.problem.split('(', 1)[-1]}"
    try:
        shapes = output_shapes(pruned, example)
        with torch.no_grad():
            got = pruned.eval()(example)
    except Exception as exc:
        return f"the pruned model's forward pass fails ({_first_line(exc)})"
    if shapes != output_shapes(model, example):
        return "the surgery changes the model's output shape"
    if not numeric or not isinstance(got, torch.Tensor):
        return None
    graph, groups = find_groups(model, example, options)
    with contextlib.ExitStack() as stack, torch.no_grad():
        for g in groups:
            if g.name in names:
                stack.enter_context(zeroed_channels(graph, g, probes[g.name]))
        expected = model.eval()(example)
    diff = float((got - expected).abs().max())
    scale = max(1.0, float(expected.abs().max()))
    if diff > RELATIVE_TOLERANCE * scale:
        return ("removing its channels does not compute what zeroing them does (max "
                f"output difference {diff:.3g}): Torch-Pruning maps the channel indices "
                "wrongly past an operation it does not follow (a channel shuffle, a "
                "permutation, a reshape)")
    return None


def _bisect(names: list[str], check: Callable[[list[str]], str | None],
            found: dict[str, str]) -> None:
    reason = check(names)
    if reason is None:
        return
    if len(names) == 1:
        found[names[0]] = reason
        return
    half = len(names) // 2
    _bisect(names[:half], check, found)
    _bisect(names[half:], check, found)


def unfollowable_groups(model: nn.Module, example: torch.Tensor,
                        options: PruneOptions) -> dict[str, str]:
    """Groups that must stay whole on this model, each with the reason (group name →
    why); ``model`` is not changed."""
    _, groups, skipped = inspect_groups(model, example, options)
    found = dict(skipped)
    probes = {g.name: _probe(g) for g in groups}
    by_mask = [g.name for g in groups if probes[g.name] and maskable(model, g)]
    by_shape = [g.name for g in groups if probes[g.name] and g.name not in by_mask]
    for names, numeric in ((by_mask, True), (by_shape, False)):
        if names:
            _bisect(names, lambda subset, numeric=numeric: _check(
                model, example, options, subset, probes, numeric), found)
    return found


def with_followable(model: nn.Module, example: torch.Tensor, options: PruneOptions
                    ) -> tuple[PruneOptions, dict[str, str]]:
    """``options`` with the groups Torch-Pruning cannot cut correctly skipped, and the
    notes; an input error when nothing is left to prune because of them."""
    found = unfollowable_groups(model, example, options)
    if not found:
        return options, {}
    checked = replace(options, skip_groups=sorted(set(options.skip_groups) | set(found)))
    _, left = find_groups(model, example, checked)
    if not left:
        listed = "; ".join(f"{n}: {why}" for n, why in sorted(found.items()))
        raise InputError(
            f"no channel group of this model can be pruned: Torch-Pruning cannot cut "
            f"{', '.join(sorted(found))} correctly ({listed})",
            fix=f"leave these layers out with --exclude {sorted(found)[0]} (repeatable) "
            "and prune the rest of the model, or rewrite the operation between them with "
            "standard layers")
    return checked, found


def notes(found: dict[str, str]) -> list[str]:
    """One console/report line per group left whole."""
    return [f"group {name} left unpruned: {why}" for name, why in sorted(found.items())]
