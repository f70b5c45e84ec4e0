"""PaSST-style structured patchout with disentangled positional embeddings, for AST.

Koutini et al. drop whole time columns and frequency rows of the patch grid in training
(``s_patchout_t``, ``s_patchout_f``); positional information must survive the dropping, so the
grid embedding is split into a time embedding [1, D, 1, T] and a frequency embedding
[1, D, F, 1] (plus one for the cls / distillation tokens), added *before* the patches are dropped.

With coarse-to-fine training the time embedding is interpolated between phases (a 10 s clip
compressed by R is still a 10 s clip, not its first 10/R seconds, which PaSST's own cut would
assume), and the number of dropped time columns scales with the phase's time tokens, so the
dropped fraction stays the same. Evaluation uses every patch.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DisentangledPosEmbed(nn.Module):
    """Frequency, time and prefix-token positional embeddings of a (F, T) patch grid."""

    def __init__(self, dim: int, grid: tuple[int, int], num_prefix: int = 2):
        super().__init__()
        self.freq = nn.Parameter(torch.zeros(1, dim, grid[0], 1))
        self.time = nn.Parameter(torch.zeros(1, dim, 1, grid[1]))
        self.prefix = nn.Parameter(torch.zeros(1, num_prefix, dim))

    def reset_parameters(self) -> None:
        for p in (self.freq, self.time, self.prefix):
            nn.init.trunc_normal_(p, std=0.02)

    def add(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Tokens [B, F*T, D] (frequency-major) -> the grid [B, D, F, T] with both embeddings added."""
        b, _, d = tokens.shape
        return tokens.transpose(1, 2).reshape(b, d, *grid) + self.freq + self.time

    @torch.no_grad()
    def resize(self, grid: tuple[int, int]) -> None:
        """Interpolate the time (and, if it changed, frequency) embedding to ``grid`` (linear,
        align_corners=False), as new parameters."""
        if self.time.shape[-1] != grid[1]:
            self.time = nn.Parameter(resample_1d(self.time.detach(), grid[1], dim=-1), requires_grad=self.time.requires_grad)
        if self.freq.shape[-2] != grid[0]:
            self.freq = nn.Parameter(resample_1d(self.freq.detach(), grid[0], dim=-2), requires_grad=self.freq.requires_grad)


def resample_1d(embed: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Linear interpolation (align_corners=False) of ``embed`` [1, D, ...] along ``dim`` to ``size``."""
    x = embed.movedim(dim, -1)
    shape = x.shape
    out = F.interpolate(x.reshape(1, -1, shape[-1]).float(), size=size, mode="linear", align_corners=False)
    return out.reshape(*shape[:-1], size).movedim(-1, dim).to(embed.dtype).clone()


def kept_indices(size: int, dropped: int, generator: torch.Generator | None = None,
                 device: torch.device | None = None) -> torch.Tensor:
    """Sorted indices of the ``size - dropped`` rows or columns kept, drawn uniformly."""
    return torch.randperm(size, generator=generator)[: size - dropped].sort().values.to(device)


def patchout(grid: torch.Tensor, drop_freq: int, drop_time: int) -> torch.Tensor:
    """Drop ``drop_freq`` random frequency rows and ``drop_time`` random time columns of
    ``grid`` [B, D, F, T] (the same for the whole batch, as PaSST) -> tokens [B, F'*T', D]."""
    _, _, f, t = grid.shape
    if drop_freq:
        grid = grid.index_select(2, kept_indices(f, drop_freq, device=grid.device))
    if drop_time:
        grid = grid.index_select(3, kept_indices(t, drop_time, device=grid.device))
    return grid.flatten(2).transpose(1, 2)
