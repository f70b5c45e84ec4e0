"""Datasets yield fixed-length waveforms and multi-hot targets; features are made later, batched.

Keeping the dataset at the waveform level lets every phase compute its own features (Fshift
changes the frame shift) on the training device, from the same clips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from coarse2fine.data.synthetic import CLASSES, SyntheticConfig, make_split


class WaveformDataset(Dataset):
    """Waveforms held in memory: ``waves`` [N, samples], ``targets`` [N, C] (multi-hot, float)."""

    def __init__(self, waves: torch.Tensor, targets: torch.Tensor, class_names: list[str], multilabel: bool = False):
        if waves.ndim != 2 or targets.ndim != 2 or len(waves) != len(targets):
            raise ValueError(f"expected waves [N, samples] and targets [N, C], got {tuple(waves.shape)} and {tuple(targets.shape)}")
        if targets.shape[1] != len(class_names):
            raise ValueError(f"targets have {targets.shape[1]} classes but {len(class_names)} class names were given")
        self.waves = waves
        self.targets = targets.float()
        self.class_names = list(class_names)
        self.multilabel = multilabel

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.waves[i], self.targets[i]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class DataSplits:
    """The train and validation sets of a run, the clips skipped as bad, and the classes' display names."""

    train: Any  # WaveformDataset, FileDataset or CachedFeatureDataset
    val: Any
    skipped: list = field(default_factory=list)
    display_names: list[str] | None = None


def synthetic_splits(train_clips: int, val_clips: int, clip_seconds: float, sample_rate: int, seed: int = 0) -> DataSplits:
    """The embedded synthetic audio-event set (see :mod:`coarse2fine.data.synthetic`)."""

    def split(name: str, n: int) -> WaveformDataset:
        cfg = SyntheticConfig(num_clips=n, clip_seconds=clip_seconds, sample_rate=sample_rate, seed=seed)
        waves, labels = make_split(name, cfg)
        targets = torch.nn.functional.one_hot(labels, len(CLASSES)).float()
        return WaveformDataset(waves, targets, list(CLASSES))

    return DataSplits(train=split("train", train_clips), val=split("val", val_clips))
