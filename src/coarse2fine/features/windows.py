"""Analysis windows of both front ends: raised-cosine windows built in float64, cached per device."""

from __future__ import annotations

import functools
import math

import torch

KINDS: tuple[str, ...] = ("hann", "hanning", "povey", "hamming")


@functools.lru_cache(maxsize=64)
def cosine_window(kind: str, size: int, periodic: bool, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A window of ``size`` samples: ``hann`` (Kaldi's name: ``hanning``), ``hamming``, or Kaldi's
    ``povey`` (hann ** 0.85). Symmetric (``cos(2 pi n / (size - 1))``, Kaldi) or periodic
    (``cos(2 pi n / size)``, librosa / torch.stft). Cached: do not modify the result in place."""
    n = torch.arange(size, dtype=torch.float64)
    cos = torch.cos(2.0 * math.pi * n / (size if periodic else size - 1))
    if kind in ("hann", "hanning"):
        w = 0.5 - 0.5 * cos
    elif kind == "povey":
        w = (0.5 - 0.5 * cos).pow(0.85)
    elif kind == "hamming":
        w = 0.54 - 0.46 * cos
    else:
        raise ValueError(f"unknown window {kind!r}; choose one of {', '.join(KINDS)}")
    return w.to(device=device, dtype=dtype)
