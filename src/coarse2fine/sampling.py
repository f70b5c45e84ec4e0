"""AST's balanced sampling for multi-label data (AudioSet "full" recipe, reference.md section 2).

Each label gets the weight ``1000 / (count + 0.01)`` where ``count`` is the number of
training clips carrying it; a clip's weight is the sum of its labels' weights, and clips
are drawn with replacement in proportion to it. Rare labels are thus drawn about as often
as common ones.
"""

from __future__ import annotations

import torch
from torch.utils.data import WeightedRandomSampler

__all__ = ["balanced_sampler", "balanced_weights"]


def balanced_weights(targets: torch.Tensor) -> torch.Tensor:
    """Per-clip sampling weights [N] (float64) from targets [N, C].

    A clip carries label ``c`` when ``targets[i, c] > 0`` (multi-hot or soft targets both
    work; only presence counts, as in AST's label strings). Label weight:
    ``1000 / (count_c + 0.01)``; clip weight: the sum over its labels. A clip with no
    label gets weight 0 and is never drawn.
    """
    if targets.dim() != 2:
        raise ValueError(f"expected targets [N, C], got shape {tuple(targets.shape)}")
    present = (targets > 0).to(torch.float64)
    label_weight = 1000.0 / (present.sum(dim=0) + 0.01)
    return present @ label_weight


def balanced_sampler(
    targets: torch.Tensor, num_samples: int | None = None, generator: torch.Generator | None = None
) -> WeightedRandomSampler:
    """A ``WeightedRandomSampler`` (with replacement) over :func:`balanced_weights`.

    ``num_samples`` (draws per epoch) defaults to the number of clips ``N``; ``generator``
    makes the draws reproducible.
    """
    weights = balanced_weights(targets)
    if weights.numel() == 0 or not bool((weights > 0).any()):
        raise ValueError("balanced sampling needs at least one clip with a positive label")
    n = weights.numel() if num_samples is None else int(num_samples)
    if n <= 0:
        raise ValueError(f"num_samples must be positive, got {n}")
    return WeightedRandomSampler(weights, num_samples=n, replacement=True, generator=generator)
