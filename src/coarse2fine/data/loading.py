"""Batches from a clip source, in a given order, without making the training step wait.

A source held in memory (``ClipDataset.in_memory``: the in-memory feature store, preloaded
waveforms) serves each batch as one indexed read (:meth:`~coarse2fine.data.datasets.ClipDataset.take`),
on the training device when the store lives there. A source read clip by clip (audio files,
the feature cache) goes through a ``DataLoader`` with worker processes, pinned memory and
prefetching, so that decoding overlaps the step (``data.num_workers``, :func:`resolve_workers`).
"""

from __future__ import annotations

import os
import signal
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader

from coarse2fine.data.datasets import ClipDataset

Batch = tuple[torch.Tensor, torch.Tensor]


def resolve_workers(setting: int | str, dataset: ClipDataset, device: torch.device) -> int:
    """Loader processes for ``dataset``: none for sources held in memory; ``auto`` is one per spare
    core (at most 8) when training on a GPU, and a quarter of the cores (at most 4) on a CPU,
    whose cores the step itself uses; an integer is taken as given."""
    if dataset.in_memory:
        return 0
    if setting != "auto":
        return int(setting)
    cores = os.cpu_count() or 1
    return min(8, cores - 1) if device.type == "cuda" else min(4, cores // 4)


def workers_reason(setting: int | str, dataset: ClipDataset, device: torch.device) -> str:
    """Why :func:`resolve_workers` gives ``dataset`` the loader processes it gives, for the run's log."""
    if dataset.in_memory:
        unused = "" if setting in ("auto", 0) else f"; data.num_workers {setting} is not used"
        return ("its clips are held in memory (data.preload, on by default, or data.in_memory) and read in the "
                f"training process{unused}")
    if setting != "auto":
        return "data.num_workers"
    return ("data.num_workers auto: " + ("one per spare core, at most 8" if device.type == "cuda" else
                                         f"a quarter of the {os.cpu_count() or 1} cores, at most 4, on a CPU"))


def iterate_batches(dataset: ClipDataset, batches: Sequence[Sequence[int]], device: torch.device,
                    workers: int = 0, prefetch: int = 4) -> Iterator[Batch]:
    """``(inputs, targets)`` of each batch of clip indices, in order."""
    if dataset.in_memory:
        for batch in batches:
            yield dataset.take(torch.as_tensor(batch, dtype=torch.long))
        return
    # An explicit generator keeps the loader off torch's global RNG, which only the model's own
    # randomness (dropout, stochastic depth) may draw from.
    loader = DataLoader(dataset, batch_sampler=[list(b) for b in batches], num_workers=workers,
                        pin_memory=device.type == "cuda", generator=torch.Generator(),
                        prefetch_factor=prefetch if workers else None,
                        worker_init_fn=ignore_interrupt if workers else None)
    yield from loader


def ignore_interrupt(worker_id: int) -> None:
    """In a loader process: leave Ctrl-C to the training process, which stops after its step
    (:mod:`coarse2fine.training.interrupt`) and ends the workers itself; a worker that died on
    the terminal's SIGINT would fail the batches that step still needs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
