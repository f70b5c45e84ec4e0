"""Feature statistics for AST's normalisation ``(fbank - mean) / (2 * std)``.

AST normalises with the mean and standard deviation of the training set's log-mel filter banks
(AudioSet -4.27 / 4.57, ESC-50 -6.63 / 5.36, ...). :func:`dataset_stats` computes them for any
set of waveforms with the same front end training uses.
"""

from __future__ import annotations

import logging
import math
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
import torch

from coarse2fine.data.datasets import WaveformDataset
from coarse2fine.features import FbankConfig, Frontend

logger = logging.getLogger(__name__)

Waves = Union[WaveformDataset, torch.Tensor, Iterable]


def _as_tensor(item) -> torch.Tensor:
    if isinstance(item, (tuple, list)):  # (waveform, target) pairs from a dataset
        item = item[0]
    t = torch.as_tensor(np.asarray(item) if not isinstance(item, torch.Tensor) else item)
    if t.ndim not in (1, 2):
        raise ValueError(f"expected waveforms [n] or [B, n], got shape {tuple(t.shape)}")
    return t.float()


def _batches(data: Waves, batch_size: int) -> Iterator[torch.Tensor]:
    """Waveform batches [B, n]; consecutive 1-D clips of equal length are grouped."""
    if isinstance(data, WaveformDataset):
        data = data.waves
    if isinstance(data, torch.Tensor):
        waves = data.unsqueeze(0) if data.ndim == 1 else data
        for s in range(0, len(waves), batch_size):
            yield waves[s : s + batch_size].float()
        return
    buffer: list[torch.Tensor] = []
    for item in data:
        t = _as_tensor(item)
        if t.ndim == 2 or (buffer and t.shape[-1] != buffer[0].shape[-1]) or len(buffer) >= batch_size:
            if buffer:
                yield torch.stack(buffer)
                buffer = []
        if t.ndim == 2:
            yield t
        else:
            buffer.append(t)
    if buffer:
        yield torch.stack(buffer)


def unpadded_lengths(waves: torch.Tensor) -> torch.Tensor:
    """Samples up to and including the last non-zero one, per row of ``waves`` [B, n]."""
    nonzero = waves != 0
    n = waves.shape[-1]
    last = n - torch.flip(nonzero, dims=[-1]).int().argmax(dim=-1)
    return torch.where(nonzero.any(dim=-1), last, torch.zeros_like(last))


def dataset_stats(
    data: Waves,
    frontend: Frontend = FbankConfig(),
    target_length: int = 1024,
    batch_size: int = 64,
    lengths: Sequence[int] | None = None,
) -> tuple[float, float]:
    """Mean and standard deviation of the ``frontend`` features of ``data``, over unpadded frames only.

    ``data`` is a :class:`WaveformDataset`, a tensor [N, n] or [n], or an iterable of waveforms
    ([n] or [B, n] tensors or arrays, or ``(waveform, target)`` pairs such as a dataset's items).
    Features are computed as training computes them (``frontend.compute``; Kaldi fbank removes
    each clip's mean) on the waveforms as given, frames cut at ``target_length``.

    **Padding frames are excluded**: neither the frames :func:`~coarse2fine.features.pad_or_crop`
    would add after the end (up to ``target_length``) nor the frames that lie in a waveform's
    zero padding count. A clip's real length is ``lengths[i]`` (samples) if given, else the
    position of its last non-zero sample (``fix_length`` pads with exact zeros); only frames that
    end within it count. So the statistics describe the audio itself, not how much padding a
    set happens to need. (AST's own script averages over the padded features.)

    The result is exact (a streaming merge of per-batch moments in float64), the population
    standard deviation over all counted frames and mel bins.
    """
    if target_length <= 0 or batch_size <= 0:
        raise ValueError(f"target_length and batch_size must be positive, got {target_length} and {batch_size}")
    count, mean, m2 = 0, 0.0, 0.0
    clip = 0
    for waves in _batches(data, batch_size):
        b, n = waves.shape
        if lengths is not None:
            if clip + b > len(lengths):
                raise ValueError(f"lengths has {len(lengths)} values but data has more clips")
            real = torch.as_tensor(list(lengths[clip : clip + b]), dtype=torch.long).clamp(max=n)
        else:
            real = unpadded_lengths(waves)
        clip += b
        frames = min(frontend.num_frames(n), target_length)
        valid = torch.tensor([min(frontend.num_frames(int(r)), frames) for r in real])
        if frames == 0 or int(valid.sum()) == 0:
            continue
        feats = frontend.compute(waves)[:, :frames].double()  # [B, T, F]
        mask = torch.arange(frames).unsqueeze(0) < valid.unsqueeze(1)
        x = feats[mask]  # [K, F]
        k = x.numel()
        batch_mean = float(x.mean())
        batch_m2 = float(((x - batch_mean) ** 2).sum())
        delta = batch_mean - mean
        total = count + k
        mean += delta * k / total
        m2 += batch_m2 + delta * delta * count * k / total
        count = total
    if lengths is not None and clip != len(lengths):
        raise ValueError(f"lengths has {len(lengths)} values but data has {clip} clips")
    if count == 0:
        raise ValueError("no unpadded frames to compute statistics from (no clips, or all shorter than one window)")
    std = math.sqrt(m2 / count)
    logger.info("feature statistics over %d clips (%d values): mean %.6f, std %.6f", clip, count, mean, std)
    return mean, std
