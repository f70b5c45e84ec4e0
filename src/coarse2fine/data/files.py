"""Clips read from audio files, in the same shape :class:`WaveformDataset` has.

:class:`FileDataset` decodes on access (for sets too large for memory); :meth:`FileDataset.load_all`
decodes everything once into a :class:`WaveformDataset` (small sets: FSDD's 3,000 clips of 1 s at
16 kHz take 192 MB).

Failures at training time: clips should be checked with :func:`coarse2fine.data.validate.validate`
first. A file that still fails to load later (changed or removed after validation, a network
file system hiccup), or that now decodes to fewer than ``min_seconds`` (the check's own limit,
kept by :meth:`ValidationReport.filtered <coarse2fine.data.validate.ValidationReport.filtered>`:
a file truncated mid-run), does not stop the epoch: the clip becomes a zero waveform, a warning
is logged and its path is recorded in :attr:`FileDataset.failures` (each path once, however
often it failed; :attr:`FileDataset.failure_counts` has the counts). Loader worker processes (a
``DataLoader`` with ``num_workers > 0``) and the other processes of a torchrun run each hold
their own copy of the dataset: given a folder (:meth:`FileDataset.record_failures_in`, the run
folder's ``.load_failures``), every process appends the files it failed to read there, one file
per process, and ``failures`` in any process lists them all.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch

from coarse2fine.audio import fix_length, load_audio
from coarse2fine.data.datasets import ClipDataset, WaveformDataset
from coarse2fine.data.manifest import Entry, Manifest, multi_hot
from coarse2fine.data.validate import wave_problem

logger = logging.getLogger(__name__)


class FileDataset(ClipDataset):
    """Yields ``(waveform [num_samples] float32, target [C] float32)`` decoded from files.

    Waveforms are mono at ``sample_rate``, zero-padded or cut at the end to ``num_samples``. A
    clip that decodes to fewer than ``min_seconds`` (or to NaN/inf samples) counts as a failure.
    """

    def __init__(
        self,
        entries: Sequence[Entry],
        classes: Sequence[str],
        num_samples: int,
        sample_rate: int = 16000,
        multilabel: bool = False,
        pad: str = "zeros",
        min_seconds: float = 0.0,
    ):
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.entries = list(entries)
        self.class_names = list(classes)
        self.num_samples = int(num_samples)
        self.sample_rate = int(sample_rate)
        self.multilabel = multilabel
        self.pad = pad
        self.min_seconds = float(min_seconds)
        self.targets = multi_hot(self.entries, self.class_names)
        self._failures: dict[Path, int] = {}  # path -> failed reads, in order of first failure
        self.failure_folder: Path | None = None  # where every process records them (record_failures_in)
        self.lengths: list[int] | None = None  # decoded lengths (samples, before fix_length), set by load_all

    @classmethod
    def from_manifest(cls, manifest: Manifest, num_samples: int, sample_rate: int = 16000, pad: str = "zeros",
                      min_seconds: float | None = None) -> FileDataset:
        """All clips of ``manifest`` with its classes and multi-label flag; ``min_seconds``
        defaults to the one its clips were validated with (:attr:`Manifest.min_seconds`)."""
        return cls(manifest.entries, manifest.classes, num_samples, sample_rate, manifest.multilabel, pad,
                   manifest.min_seconds if min_seconds is None else min_seconds)

    def __len__(self) -> int:
        return len(self.entries)

    def record_failures_in(self, folder: str | os.PathLike | None) -> None:
        """Record the files that fail to load in ``folder`` from now on, from every process that
        reads this dataset (loader workers, torchrun processes), so that :attr:`failures` lists
        those of all of them; None: in this process's memory again, keeping those recorded so far."""
        self._failures = self.failure_counts
        self.failure_folder = None if folder is None else Path(folder)

    @property
    def failures(self) -> list[Path]:
        """The files that failed to load (replaced by silence), each once, in order of first failure
        (with a folder, process by process)."""
        return list(self.failure_counts)

    @property
    def failure_counts(self) -> dict[Path, int]:
        """How many reads of each file in :attr:`failures` failed."""
        counts = dict(self._failures)
        folder = self.failure_folder
        for record in sorted(folder.glob("*.txt")) if folder is not None and folder.is_dir() else []:
            for line in record.read_text(errors="replace").splitlines():
                if line:
                    counts[Path(line)] = counts.get(Path(line), 0) + 1
        return counts

    def _note_failure(self, path: Path) -> None:
        if self.failure_folder is None:
            self._failures[path] = self._failures.get(path, 0) + 1
            return
        self.failure_folder.mkdir(parents=True, exist_ok=True)
        with open(self.failure_folder / f"{os.getpid()}.txt", "a", encoding="utf-8") as fh:
            fh.write(f"{path}\n")

    def _load(self, i: int) -> tuple[torch.Tensor, int]:
        """Clip ``i`` fixed to ``num_samples`` and its decoded length; zeros (length 0) on failure."""
        path, start = self.entries[i].path, self.entries[i].start
        try:
            wave = load_audio(path, self.sample_rate)
            if start:
                wave = wave[int(round(start * self.sample_rate)):]
            problem = wave_problem(wave, self.sample_rate, 0.0, check_silence=False)  # empty, NaN/inf
            # as validation's data.min_seconds (a file truncated since), with a sample of slack: the
            # rest of a resampled file after a window's start may round one sample short
            if problem is None and wave.numel() + 1 < self.min_seconds * self.sample_rate:
                problem = f"too short: {wave.numel() / self.sample_rate:.3f} s < {self.min_seconds:g} s"
            if problem is not None:
                raise ValueError(problem)
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the epoch
            logger.warning("could not load %s (%s); using silence instead", path, e)
            self._note_failure(Path(path))
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
