"""A clip source that serves features from the on-disk cache instead of waveforms.

Features depend on the phase (Fshift changes the frame shift), so the training loop calls
:meth:`CachedFeatureDataset.set_phase` at every phase change; each (clip, front-end
settings, clip length) is computed once and then read back in later epochs, phases and runs. The
cache holds the front end's raw output; :func:`coarse2fine.features.finish` (pad/crop, normalise)
turns it into the model input exactly as :func:`coarse2fine.features.extract` does for waveforms.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from coarse2fine.data.cache import FeatureCache
from coarse2fine.data.datasets import ClipDataset
from coarse2fine.data.files import FileDataset
from coarse2fine.features import FeatureSpec, finish


class CachedFeatureDataset(ClipDataset):
    """Yields ``(features [target_length, mel bins], target [C])`` for the current feature spec."""

    serves = "features"

    def __init__(self, files: FileDataset, cache: FeatureCache, spec: FeatureSpec):
        self.files = files
        self.cache = cache
        self.spec = spec
        self.targets = files.targets
        self.class_names = files.class_names
        self.multilabel = files.multilabel

    @property
    def failures(self) -> list[Path]:
        return self.files.failures

    def record_failures_in(self, folder: str | os.PathLike | None) -> None:
        self.files.record_failures_in(folder)

    def set_phase(self, spec: FeatureSpec, compression: Any = None) -> None:
        """Serve features for ``spec`` from now on (called at each phase change)."""
        self.spec = spec

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.spec
        raw = self.cache.get(
            self.files.entries[i].path,
            spec.frontend,
            lambda: spec.frontend.compute(self.files[i][0].unsqueeze(0))[0],
            extra={"num_samples": self.files.num_samples, "start": self.files.entries[i].start, "pad": self.files.pad},
        )
        return finish(raw, spec), self.targets[i]
