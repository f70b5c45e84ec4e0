"""Which clips each training step sees: per-epoch batch order, sharding across processes, and
AST's balanced sampling for multi-label data (AudioSet "full" recipe, reference.md section 2).

Batch order is a pure function of (seed, epoch) (:func:`epoch_batches`), which is what makes a
run resumed from a checkpoint replay exactly the batches an uninterrupted run would; under
torchrun each process takes a contiguous share of every global batch (:func:`shard`).

Each label gets the weight ``1000 / (count + 0.01)`` where ``count`` is the number of
training clips carrying it; a clip's weight is the sum of its labels' weights, and clips
are drawn with replacement in proportion to it. Rare labels are thus drawn about as often
as common ones (:func:`coarse2fine.data.labels.balanced_weights`; a clip source gives them with
:meth:`~coarse2fine.data.datasets.ClipDataset.sampling_weights`, packed shards from their index).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler, WeightedRandomSampler

from coarse2fine.data.labels import balanced_weights

__all__ = ["EpochSampler", "balanced_sampler", "balanced_weights", "epoch_batches", "shard", "stream_batches"]


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, weights: torch.Tensor | None = None,
                  draws: int | None = None) -> list[list[int]]:
    """The global batches of ``epoch``: a shuffled order of ``n`` clips (or, with ``weights``, a
    weighted draw with replacement of ``draws`` clips, default ``n``, for balanced sampling) that
    depends only on (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.multinomial(weights, draws or n, replacement=True, generator=g) if weights is not None \
        else torch.randperm(n, generator=g)
    order = order.tolist()
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class EpochSampler(Sampler[int]):
    """The clip order of coarse2fine's training loop (:func:`epoch_batches`) as a ``Sampler`` for a
    ``DataLoader(sampler=..., batch_size=...)``: a shuffle of ``n`` clips that depends only on
    (``seed``, epoch), so another training loop sees the batches the CLI's run sees.

    ``set_epoch`` takes the 0-based epoch (as Lightning and ``DistributedSampler`` count; the
    loop's epoch is one more). ``skip`` (one-shot, reset after each pass) leaves out the first
    clips of the next pass: a run resumed in the middle of an epoch continues where it stopped.
    """

    def __init__(self, n: int, seed: int = 0):
        if n < 1:
            raise ValueError(f"EpochSampler needs at least one clip, got {n}")
        self.n, self.seed, self.epoch, self.skip = int(n), int(seed), 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        (order,) = epoch_batches(self.n, self.n, self.seed, self.epoch + 1)
        skip, self.skip = self.skip, 0
        return iter(order[skip:])

    def __len__(self) -> int:
        return self.n


def stream_batches(n: int, batch_size: int, seed: int, epoch: int, steps: int) -> list[list[int]]:
    """The ``steps`` global batches of ``epoch`` when an epoch is a fixed number of steps rather
    than one pass (``train.epoch_steps``, as SSAST evaluates every 4000 iterations): epoch ``e``
    takes clips ``[(e - 1) * steps * batch_size, e * steps * batch_size)`` of an endless stream of
    shuffled passes over the data, pass ``p`` shuffled by a generator seeded with (seed, p). A pure
    function of (seed, epoch), like :func:`epoch_batches`."""
    start, end = (epoch - 1) * steps * batch_size, epoch * steps * batch_size
    order: list[int] = []
    for p in range(start // n, (end - 1) // n + 1):
        g = torch.Generator().manual_seed(seed * 1_000_003 + 7_919 * p + 1)
        perm = torch.randperm(n, generator=g).tolist()
        lo, hi = max(start - p * n, 0), min(end - p * n, n)
        order += perm[lo:hi]
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def batch_count(clips: int, batch_size: int, parts: int = 1) -> int:
    """Batches of ``batch_size`` in a pass over ``clips`` clips, less a last batch of fewer clips
    than ``parts`` (the processes sharing each batch: one of them would get no clip of it)."""
    full, rest = divmod(clips, batch_size)
    return full + (1 if rest >= parts or (rest and not full) else 0)


def steps_per_epoch(clips: int, batch_size: int, world: int = 1, epoch_steps: int = 0, base_batch: int = 0) -> int:
    """Optimizer steps of an epoch at ``batch_size``: one pass over ``clips`` clips
    (:func:`batch_count`), or, with ``train.epoch_steps`` (``epoch_steps`` steps at ``base_batch``,
    ``train.batch_size``), as many clips as those steps take (fewer steps at a larger batch)."""
    if epoch_steps:
        return max(1, epoch_steps * base_batch // batch_size)
    return batch_count(clips, batch_size, world)


def _share_bounds(n: int, parts: int) -> np.ndarray:
    """Where each of ``parts`` contiguous shares of ``n`` clips starts, and the end (sizes differ by at most one)."""
    return np.linspace(0, n, parts + 1).round().astype(int)


def shard(batch: list[int], parts: int, index: int) -> list[int]:
    """Contiguous share ``index`` of ``parts`` of a batch (sizes differ by at most one)."""
    bounds = _share_bounds(len(batch), parts)
    return batch[bounds[index] : bounds[index + 1]]


def micro_batch_sizes(batch_lengths: Iterable[int], world: int, micro_batch: int) -> list[int]:
    """The sizes of the micro-batches that steps over global batches of ``batch_lengths`` clips
    feed the model, in any of ``world`` processes (each takes its :func:`shard` and splits it into
    micro-batches of ``micro_batch`` clips), largest first: the input shapes a compiled model meets."""
    sizes = set()
    for n in set(batch_lengths):
        for share in np.diff(_share_bounds(n, world)):
            full, rest = divmod(int(share), micro_batch)
            sizes.update([micro_batch] * bool(full) + [rest] * bool(rest))
    return sorted(sizes, reverse=True)


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
