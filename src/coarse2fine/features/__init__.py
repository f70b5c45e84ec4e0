"""Features: front ends that turn waveforms into log-mel frames, then pad/crop and normalisation.

A front end is a frozen settings dataclass with a ``kind`` name that computes raw features
(``compute(waveforms [B, samples]) -> [B, frames, bins]``, batched, on the waveforms' device),
says how many frames a clip gives (``num_frames``), its ``sample_rate``, ``num_mel_bins``,
``window_size`` and ``window_shift`` in samples, and its Fshift settings at factor R
(``scaled(R, scale_window)``). Two ship:

* :class:`~coarse2fine.features.kaldi.FbankConfig` (``fbank``): Kaldi fbank as AST and SSAST use it;
* :class:`~coarse2fine.features.logmel.LogMelConfig` (``logmel``): HTS-AT's STFT log-mel.

A :class:`FeatureSpec` adds what every model input needs: the frame count after AST's pad/crop
(:func:`pad_or_crop`) and the normalisation ``(x - mean) / (2 * std)`` (:func:`normalize`, off
for front ends whose model normalises itself). :func:`extract` chains front end and
:func:`finish`; the feature cache stores raw front-end output and applies the same :func:`finish`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from coarse2fine.features.kaldi import (
    EPS,
    WINDOWS,
    FbankConfig,
    fbank,
    mel_filterbank,
    num_frames,
    window_function,
)
from coarse2fine.features.logmel import LogMelConfig, logmel


class Frontend(Protocol):
    """What the pipeline needs of a front end's settings (see the module docstring)."""

    kind: str
    sample_rate: int
    num_mel_bins: int

    @property
    def window_size(self) -> int: ...

    @property
    def window_shift(self) -> int: ...

    def num_frames(self, num_samples: int) -> int: ...

    def scaled(self, R: int, scale_window: bool = False) -> Any: ...

    def compute(self, waveforms: torch.Tensor) -> torch.Tensor: ...


def pad_or_crop(feats: torch.Tensor, target_length: int) -> torch.Tensor:
    """Zero-pad at the end or cut ``feats`` [..., T, F] to ``target_length`` frames (as AST does)."""
    if target_length < 0:
        raise ValueError(f"target_length must be >= 0, got {target_length}")
    t = feats.shape[-2]
    if t < target_length:
        return F.pad(feats, (0, 0, 0, target_length - t))
    return feats[..., :target_length, :]


def normalize(feats: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """AST normalisation ``(x - mean) / (2 * std)``."""
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}")
    return (feats - mean) / (2.0 * std)


@dataclass(frozen=True)
class FeatureSpec:
    """What the model sees: front-end settings, frames after pad/crop, normalisation statistics
    (``normalize=False``: none, for models that normalise their input themselves)."""

    frontend: Any
    target_length: int
    mean: float = 0.0
    std: float = 0.5
    normalize: bool = True


def finish(raw: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    """Raw front-end features [..., T, F] -> model input: pad/crop to ``spec.target_length``, then
    normalise (unless ``spec.normalize`` is off)."""
    feats = pad_or_crop(raw, spec.target_length)
    return normalize(feats, spec.mean, spec.std) if spec.normalize else feats


def extract(waveforms: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    """Waveforms [n] or [B, n] -> model input [target_length, F] or [B, target_length, F]."""
    squeeze = waveforms.ndim == 1
    feats = finish(spec.frontend.compute(waveforms.unsqueeze(0) if squeeze else waveforms), spec)
    return feats[0] if squeeze else feats


def target_frames_for_shift(target_length: int, R: int) -> int:
    """Target length at frame-shift factor ``R``: ``target_length // R``, at least 1."""
    if R < 1:
        raise ValueError(f"R must be >= 1, got {R}")
    return max(1, target_length // R)


__all__ = [
    "EPS", "WINDOWS", "FbankConfig", "FeatureSpec", "Frontend", "LogMelConfig", "extract", "fbank", "finish", "logmel",
    "mel_filterbank", "normalize", "num_frames", "pad_or_crop", "target_frames_for_shift", "window_function",
]
