"""Every clip's model input held in memory, compressed for the current phase.

When a whole set's features fit in memory (ESC-50 at 512 x 128 in float32 is 0.42 GB), computing
them once per phase and serving them from memory removes from every training step what does not
shrink with R: decoding or cache reads, the full-resolution filter bank that Pool and Patch
phases would otherwise compute at every step, and the pooling itself. At each phase change
(:meth:`FeatureStore.set_phase`) the features are computed in batches by the function the
training step uses (:func:`coarse2fine.compression.phase_input`: features, then compression), on the
training device, and kept (float32, or float16 to halve the
memory). Mixup then mixes features rather than waveforms, as with the on-disk cache.

Runs that train in turns in one process (:mod:`coarse2fine.training.interleave`) each serve their
own phase from a :meth:`FeatureStore.separate` view of one store. The views share what they
compute: a phase whose model input another view holds (the same features and the same
compression of them: every fine phase, and Patch's coarse ones, serve the full-resolution
features) takes that tensor instead of computing and keeping a copy, and a phase's tensor is
freed when no view serves it any more.
"""

from __future__ import annotations

import logging
import time
import weakref
from pathlib import Path
from typing import Any

import torch

from coarse2fine.compression import phase_input
from coarse2fine.data.datasets import ClipDataset
from coarse2fine.features import FeatureSpec

log = logging.getLogger(__name__)


def feature_bytes(num_clips: int, frames: int, mel_bins: int, dtype: torch.dtype = torch.float32) -> int:
    """Memory the full-resolution features of ``num_clips`` clips take."""
    return num_clips * frames * mel_bins * torch.empty((), dtype=dtype).element_size()


def store_device(device: torch.device, size: int, setting: str = "auto") -> torch.device:
    """Where an in-memory store of ``size`` bytes lives: on the training GPU when ``setting`` is
    ``auto`` and it takes at most 40 % of the GPU's free memory, else in CPU memory."""
    if setting == "auto" and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if size <= 0.4 * free:
            return device
    return torch.device("cpu")


class FeatureStore(ClipDataset):
    """Serves ``(model input [frames, mel bins], target)`` of ``source``'s clips for the phase set
    with :meth:`set_phase`, computed once per phase in batches of ``batch_size`` on ``device`` and
    kept on ``store_device`` (the training device when it fits there, so that a batch is one
    indexed read with no copy; CPU memory otherwise)."""

    serves = "model_input"
    in_memory = True

    def __init__(self, source: ClipDataset, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 batch_size: int = 64, store_device: torch.device | str = "cpu"):
        if source.serves != "waveforms":
            raise ValueError("an in-memory feature store is built from waveforms, not from served features")
        self.source = source
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = batch_size
        self.store_device = torch.device(store_device)
        self.targets = source.targets
        self.class_names = source.class_names
        self.multilabel = source.multilabel
        self.lengths = source.lengths
        self.inputs: torch.Tensor | None = None
        self._targets = self.targets.to(self.store_device)
        self._phase: tuple[Any, Any] | None = None
        # every view's phase inputs, by (features, transform): shared by the views (a shallow copy keeps it)
        self._held: weakref.WeakValueDictionary[tuple[Any, Any], torch.Tensor] = weakref.WeakValueDictionary()

    @property
    def failures(self) -> list[Path]:
        return self.source.failures

    def __len__(self) -> int:
        return len(self.source)

    @torch.no_grad()
    def set_phase(self, spec: FeatureSpec, compression: Any) -> None:
        """Compute every clip's model input for this phase: a no-op if it is the current one, and
        taken from another view (:meth:`separate`) that holds the same model input."""
        phase = (spec, compression.transform_id)
        if self._phase == phase:
            return
        self.inputs, self._phase = None, None  # free the previous phase's features first, unless another view serves them
        if (held := self._held.get(phase)) is not None:
            self.inputs, self._phase = held, phase
            log.info("features of %d clips in memory for R=%d (%s): those another run holds", len(self), compression.R,
                     compression.method)
            return
        start = time.perf_counter()
        parts = []
        for i in range(0, len(self.source), self.batch_size):
            waves = torch.stack([self.source[j][0] for j in range(i, min(i + self.batch_size, len(self.source)))])
            parts.append(phase_input(waves.to(self.device), "waveforms", spec, compression).to(self.store_device, self.dtype))
        self.inputs, self._phase = torch.cat(parts), phase
        self._held[phase] = self.inputs
        log.info("features of %d clips in memory for R=%d (%s, %.0f MB) in %.1f s", len(self), compression.R,
                 compression.method, self.inputs.numel() * self.inputs.element_size() / 2**20, time.perf_counter() - start)

    def _check(self) -> torch.Tensor:
        if self.inputs is None:
            raise RuntimeError("FeatureStore.set_phase has not been called: no phase's features to serve")
        return self.inputs

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._check()[i].float().cpu(), self.targets[i]

    def take(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = indices.to(self.store_device)
        return self._check()[idx].float(), self._targets[idx]
