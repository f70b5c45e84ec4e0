"""Positional-embedding resampling between (non-square) token grids."""

from __future__ import annotations

import pytest
import torch

from coarse2fine.model import resample_pos_embed


def _pos(grid: tuple[int, int], dim: int = 6, prefix: int = 2) -> torch.Tensor:
    return torch.randn(1, prefix + grid[0] * grid[1], dim, generator=torch.Generator().manual_seed(0))


def test_identity_when_grid_unchanged():
    pos = _pos((4, 8))
    out = resample_pos_embed(pos, (4, 8), (4, 8))
    assert torch.equal(out, pos)


@pytest.mark.parametrize("new_grid", [(4, 4), (4, 2), (2, 8), (4, 16)])
def test_shape_and_prefix_tokens_kept(new_grid):
    pos = _pos((4, 8))
    out = resample_pos_embed(pos, (4, 8), new_grid)
    assert out.shape == (1, 2 + new_grid[0] * new_grid[1], 6)
    assert torch.equal(out[:, :2], pos[:, :2])


@pytest.mark.parametrize("r", [2, 4])
def test_time_ramp_stays_a_ramp_when_compressing_time(r):
    f, t = 3, 16
    ramp = torch.arange(t, dtype=torch.float32).repeat(f, 1)  # value = time index, constant along freq
    pos = torch.cat([torch.full((2,), -7.0), ramp.flatten()]).reshape(1, -1, 1)
    out = resample_pos_embed(pos, (f, t), (f, t // r))
    grid = out[0, 2:, 0].reshape(f, t // r)
    # align_corners=False: new token j sits at old position (j + 0.5) * r - 0.5.
    expected = (torch.arange(t // r, dtype=torch.float32) + 0.5) * r - 0.5
    torch.testing.assert_close(grid, expected.repeat(f, 1))
    assert torch.all(out[0, :2, 0] == -7.0)


def test_non_square_grid_layout_is_frequency_major():
    f, t = 2, 8
    values = torch.tensor([0.0, 100.0]).repeat_interleave(t)  # row 0 all 0, row 1 all 100
    pos = torch.cat([torch.zeros(2), values]).reshape(1, -1, 1)
    out = resample_pos_embed(pos, (f, t), (f, 2))[0, 2:, 0]
    assert out.tolist() == [0.0, 0.0, 100.0, 100.0]


def test_dtype_preserved_and_wrong_token_count_rejected():
    pos = _pos((4, 8)).double()
    assert resample_pos_embed(pos, (4, 8), (4, 2)).dtype == torch.float64
    with pytest.raises(ValueError, match="expected 2 prefix"):
        resample_pos_embed(pos, (8, 8), (4, 2))
