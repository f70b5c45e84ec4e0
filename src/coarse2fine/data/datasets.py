"""Clip sources: what the training loop reads clips from.

A :class:`ClipDataset` yields ``(input, target)`` pairs. What the input is, ``serves``, says how
much of the way to the model it has come: ``"waveforms"`` (fixed-length audio; features are made
later, batched, on the training device, so every phase computes its own: Fshift changes the frame
shift), ``"features"`` (the features of the current phase's
:class:`~coarse2fine.features.FeatureSpec`, from the on-disk cache) or ``"model_input"``
(features already compressed for the phase, held in memory). The loop tells every source the
phase it is in with :meth:`ClipDataset.set_phase`; a source whose input depends on the phase
(packed shards: the phase's feature shards when they were packed, waveforms otherwise) changes
``serves`` there. Targets are multi-hot (or soft) float vectors.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from coarse2fine.data.labels import balanced_weights
from coarse2fine.data.synthetic import CLASSES, SyntheticConfig, make_split


class ClipDataset(Dataset):
    """The interface every clip source implements (see the module docstring).

    Subclasses set ``targets`` [N, C], ``class_names`` and ``multilabel``; ``failures`` lists clips
    that could not be read during training (they were served as silence); ``lengths``, when
    known, the decoded length of each clip in samples before padding.
    """

    targets: torch.Tensor
    class_names: list[str]
    multilabel: bool = False
    serves: str = "waveforms"
    lengths: list[int] | None = None
    in_memory: bool = False
    """Whether :meth:`take` serves a whole batch as one indexed read (no loader needed)."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def failures(self) -> list[Path]:
        return []

    def record_failures_in(self, folder: str | os.PathLike | None) -> None:
        """Record the clips that fail to load in ``folder``, from every process that reads this
        source, so that :attr:`failures` lists them all; None: in this process's memory again,
        keeping those recorded so far (sources that read no files ignore it)."""

    def set_phase(self, spec: Any, compression: Any) -> None:
        """Serve the inputs of a phase with features ``spec`` and ``compression`` from now on (a
        no-op for waveform sources)."""

    def check_phases(self, specs: Sequence[Any]) -> None:
        """Before training, what can be checked cheaply of the data that phases with features
        ``specs`` will read (packed shards: their files' sizes); nothing for other sources."""

    def separate(self) -> ClipDataset:
        """This source with its own phase: :meth:`set_phase` on the copy leaves this one serving
        its phase (the clips, files, caches and failures stay shared). A shallow copy is enough for
        sources whose :meth:`set_phase` only rebinds attributes, as every source here does; one
        that changes a shared object in place overrides this."""
        return copy.copy(self)

    def serves_for(self, spec: Any, compression: Any) -> str:
        """What :attr:`serves` will be in a phase with features ``spec`` and ``compression``,
        without switching to it (sources whose input depends on the phase override it)."""
        return self.serves

    def sampling_weights(self) -> torch.Tensor:
        """AST's balanced-sampling weight of each clip [N] (float64, see
        :func:`coarse2fine.data.labels.balanced_weights`); sources that keep no dense targets
        override it."""
        return balanced_weights(self.targets)

    def class_counts(self) -> list[int]:
        """Clips per class (a clip counts for each label it carries); sources that keep no dense
        targets override it."""
        return self.targets.gt(0).sum(0).tolist() if len(self) else [0] * len(self.class_names)

    def take(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The clips ``indices`` as one batch ``(inputs [B, ...], targets [B, C])``, equal to
        collating ``self[i]`` for each index; sources held in memory do it in one indexed read."""
        items = [self[int(i)] for i in indices]
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


class WaveformDataset(ClipDataset):
    """Waveforms held in memory: ``waves`` [N, samples], ``targets`` [N, C] (multi-hot, float)."""

    def __init__(self, waves: torch.Tensor, targets: torch.Tensor, class_names: list[str], multilabel: bool = False,
                 lengths: list[int] | None = None):
        if waves.ndim != 2 or targets.ndim != 2 or len(waves) != len(targets):
            raise ValueError(f"expected waves [N, samples] and targets [N, C], got {tuple(waves.shape)} and {tuple(targets.shape)}")
        if targets.shape[1] != len(class_names):
            raise ValueError(f"targets have {targets.shape[1]} classes but {len(class_names)} class names were given")
        self.waves = waves
        self.targets = targets.float()
        self.class_names = list(class_names)
        self.multilabel = multilabel
        self.lengths = lengths

    def __len__(self) -> int:
        return len(self.waves)

    in_memory = True

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.waves[i], self.targets[i]

    def take(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.waves[indices], self.targets[indices]


@dataclass(frozen=True)
class DataSplits:
    """The train and validation sets of a run, the clips skipped as bad, the classes' display names,
    and what the clip lists hold that is probably not meant (``listing``: a clip listed twice,
    classes that differ only in case; :func:`~coarse2fine.data.manifest.listing_warnings`)."""

    train: ClipDataset
    val: ClipDataset
    skipped: list = field(default_factory=list)
    display_names: list[str] | None = None
    clip_lists: dict[str, str] = field(default_factory=dict)  # split -> clip_list_digest of the clips it names
    train_order: str | None = None  # clip_list_digest(..., ordered=True) of the training clips: what batches draw
    used_lists: dict[str, str] = field(default_factory=dict)  # split -> clip_list_digest of the clips it serves (bad ones left out)
    listing: list[str] = field(default_factory=list)

    def separate(self) -> DataSplits:
        """These splits with their own phase state (:meth:`ClipDataset.separate`), for a run that
        trains in turns with others on the same clips (:mod:`coarse2fine.training.interleave`)."""
        return dataclasses.replace(self, train=self.train.separate(), val=self.val.separate())

    def signature(self) -> dict[str, Any]:
        """What a checkpoint must find again to resume on the same data, and what a report compares
        runs' data by: the clip counts, the classes (a digest of their ids, in target order) and,
        where the source names its clips, each split's clip list
        (:func:`~coarse2fine.data.manifest.clip_list_digest`: the same wherever the files lie), the
        list of the clips it serves (``used``: the same but for bad clips ``data.on_error: skip``
        left out, which reports compare) and the order of the training clips (which a resumed run's
        batches depend on)."""
        classes = "\n".join(self.train.class_names).encode()
        return {"train_clips": len(self.train), "val_clips": len(self.val),
                "classes": len(self.train.class_names), "classes_sha256": hashlib.sha256(classes).hexdigest(),
                **{f"{split}_list_sha256": value for split, value in self.clip_lists.items()},
                **{f"{split}_used_sha256": value for split, value in self.used_lists.items()},
                **({"train_order_sha256": self.train_order} if self.train_order else {})}


def synthetic_splits(train_clips: int, val_clips: int, clip_seconds: float, sample_rate: int, seed: int = 0) -> DataSplits:
    """The embedded synthetic audio-event set (see :mod:`coarse2fine.data.synthetic`)."""

    def split(name: str, n: int) -> WaveformDataset:
        cfg = SyntheticConfig(num_clips=n, clip_seconds=clip_seconds, sample_rate=sample_rate, seed=seed)
        waves, labels = make_split(name, cfg)
        targets = torch.nn.functional.one_hot(labels, len(CLASSES)).float()
        return WaveformDataset(waves, targets, list(CLASSES))

    return DataSplits(train=split("train", train_clips), val=split("val", val_clips))
