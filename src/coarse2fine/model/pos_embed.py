"""Positional-embedding resampling between token grids (explicit, possibly non-square grids)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resample_pos_embed(
    pos_embed: torch.Tensor,
    old_grid: tuple[int, int],
    new_grid: tuple[int, int],
    num_prefix_tokens: int = 2,
    mode: str = "bilinear",
    antialias: bool = False,
) -> torch.Tensor:
    """Interpolate ``pos_embed`` [1, P + F*T, D] from ``old_grid`` (F, T) to ``new_grid``.

    The ``num_prefix_tokens`` leading tokens (cls, distillation) are kept as they are; the rest
    are laid out as the old (F, T) grid (frequency-major, as the patch conv flattens them),
    interpolated with ``mode`` (align_corners=False) and flattened back. Computed in float32 and
    returned in the input dtype. Returns ``pos_embed`` itself when the grids are equal.
    """
    old_grid = (int(old_grid[0]), int(old_grid[1]))
    new_grid = (int(new_grid[0]), int(new_grid[1]))
    if pos_embed.ndim != 3:
        raise ValueError(f"pos_embed must be [1, tokens, dim], got shape {list(pos_embed.shape)}")
    if min(new_grid) < 1:
        raise ValueError(f"new grid must be positive, got {new_grid}")
    n_old = old_grid[0] * old_grid[1]
    if pos_embed.shape[1] != num_prefix_tokens + n_old:
        raise ValueError(
            f"pos_embed has {pos_embed.shape[1]} tokens, expected {num_prefix_tokens} prefix + "
            f"{old_grid[0]}x{old_grid[1]} grid = {num_prefix_tokens + n_old}"
        )
    if old_grid == new_grid:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    b, dim = grid.shape[0], grid.shape[-1]
    grid = grid.reshape(b, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2).float()
    align = False if mode in ("bilinear", "bicubic") else None  # nearest/area take no align_corners
    grid = F.interpolate(grid, size=new_grid, mode=mode, align_corners=align, antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(b, new_grid[0] * new_grid[1], dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)
