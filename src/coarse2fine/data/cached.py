"""A dataset that serves fbank features from the on-disk cache instead of waveforms.

Features depend on the phase (Fshift changes the frame shift), so the training loop calls
:meth:`CachedFeatureDataset.set_spec` at every phase change; each (clip, fbank settings, clip
length) is computed once and then read back in later epochs, phases and runs.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from coarse2fine.cache import FeatureCache
from coarse2fine.data.files import FileDataset
from coarse2fine.features import FeatureSpec, fbank, normalize, pad_or_crop


class CachedFeatureDataset(Dataset):
    """Yields ``(features [target_length, mel bins], target [C])`` for the current feature spec."""

    def __init__(self, files: FileDataset, cache: FeatureCache, spec: FeatureSpec):
        self.files = files
        self.cache = cache
        self.spec = spec
        self.targets = files.targets
        self.class_names = files.class_names
        self.multilabel = files.multilabel

    @property
    def num_classes(self) -> int:
        return self.files.num_classes

    def set_spec(self, spec: FeatureSpec) -> None:
        """Serve features for ``spec`` from now on (called at each phase change)."""
        self.spec = spec

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.spec
        raw = self.cache.get(
            self.files.entries[i].path,
            spec.fbank,
            lambda: fbank(self.files[i][0], spec.fbank),
            extra={"num_samples": self.files.num_samples},
        )
        return normalize(pad_or_crop(raw, spec.target_length), spec.mean, spec.std), self.targets[i]
