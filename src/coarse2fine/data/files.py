"""Clips read from audio files, in the same shape :class:`WaveformDataset` has.

:class:`FileDataset` decodes on access (for sets too large for memory); :meth:`FileDataset.load_all`
decodes everything once into a :class:`WaveformDataset` (small sets: FSDD's 3,000 clips of 1 s at
16 kHz take 192 MB).

Failures at training time: clips should be checked with :func:`coarse2fine.data.validate.validate`
first. A file that still fails to load later (changed or removed after validation, a network
file system hiccup) does not stop the epoch: the clip becomes a zero waveform, a warning is
logged and its path is appended to :attr:`FileDataset.failures`. With a ``DataLoader`` using
``num_workers > 0`` each worker process holds its own copy of ``failures``; only the logged
warnings reach the main process then.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch

from coarse2fine.audio import fix_length, load_audio
from coarse2fine.data.datasets import ClipDataset, WaveformDataset
from coarse2fine.data.manifest import Entry, Manifest, multi_hot

logger = logging.getLogger(__name__)


class FileDataset(ClipDataset):
    """Yields ``(waveform [num_samples] float32, target [C] float32)`` decoded from files.

    Waveforms are mono at ``sample_rate``, zero-padded or cut at the end to ``num_samples``.
    """

    def __init__(
        self,
        entries: Sequence[Entry],
        classes: Sequence[str],
        num_samples: int,
        sample_rate: int = 16000,
        multilabel: bool = False,
        pad: str = "zeros",
    ):
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.entries = list(entries)
        self.class_names = list(classes)
        self.num_samples = int(num_samples)
        self.sample_rate = int(sample_rate)
        self.multilabel = multilabel
        self.pad = pad
        self.targets = multi_hot(self.entries, self.class_names)
        self._failures: list[Path] = []
        self.lengths: list[int] | None = None  # decoded lengths (samples, before fix_length), set by load_all

    @classmethod
    def from_manifest(cls, manifest: Manifest, num_samples: int, sample_rate: int = 16000, pad: str = "zeros") -> FileDataset:
        """All clips of ``manifest`` with its classes and multi-label flag."""
        return cls(manifest.entries, manifest.classes, num_samples, sample_rate, manifest.multilabel, pad)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def failures(self) -> list[Path]:
        return self._failures

    def _load(self, i: int) -> tuple[torch.Tensor, int]:
        """Clip ``i`` fixed to ``num_samples`` and its decoded length; zeros (length 0) on failure."""
        path, start = self.entries[i].path, self.entries[i].start
        try:
            wave = load_audio(path, self.sample_rate)
            if start:
                wave = wave[int(round(start * self.sample_rate)):]
            if not bool(torch.isfinite(wave).all()):
                raise ValueError("NaN or infinite samples")
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the epoch
            logger.warning("could not load %s (%s); using silence instead", path, e)
            self._failures.append(path)
            return torch.zeros(self.num_samples, dtype=torch.float32), 0
        return fix_length(wave, self.num_samples, self.pad).to(torch.float32).contiguous(), int(wave.numel())

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._load(i)[0], self.targets[i]

    def load_all(self, workers: int = 2) -> WaveformDataset:
        """Decode every clip into memory -> :class:`WaveformDataset` (failures as in ``__getitem__``).

        Also sets :attr:`lengths`, the decoded length of each clip in samples (0 for a failure),
        which :func:`coarse2fine.data.stats.dataset_stats` can use to skip padding.
        """
        waves = torch.empty(len(self), self.num_samples, dtype=torch.float32)
        lengths = [0] * len(self)

        def fill(i: int) -> None:
            waves[i], lengths[i] = self._load(i)

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(fill, range(len(self))))
        self.lengths = lengths
        if self.failures:
            logger.warning("%d of %d clips failed to load and are silent", len(self.failures), len(self))
        return WaveformDataset(waves, self.targets.clone(), self.class_names, self.multilabel, lengths)
