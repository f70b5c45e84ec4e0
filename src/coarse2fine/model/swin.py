"""Geometry-dynamic Swin Transformer pieces: windows that shrink to fit a stage, one bias table.

A Swin stage attends inside non-overlapping windows of ``window_size`` x ``window_size`` tokens,
with the windows shifted by half a window on every other block. The pieces here let a stage's
token grid change between training phases without changing any learned weight:

* **Window rule.** A stage of ``H`` x ``W`` tokens uses windows of ``min(window_size, H)`` x
  ``min(window_size, W)``: a side shorter than the configured window is one window along that
  axis. A side longer than the window must be a multiple of it (:func:`window_plan` raises).
* **Shift rule.** A shifted block shifts by ``window_size // 2`` along an axis only when that axis
  is longer than the window (it has more than one window); otherwise not along that axis. For a
  square stage this is the original Swin / HTS-AT rule (a stage of exactly one window, e.g.
  HTS-AT's 8 x 8 stage 4, runs without shift); a rectangular stage (e.g. 32 x 8) shifts along
  its long axis only.
* **One relative-position-bias table.** Every block keeps the ``(2 * window_size - 1) ** 2`` x
  ``heads`` table of the full window. A smaller or rectangular window reads the exact sub-table
  of its relative offsets: offset ``(dh, dw)`` is entry ``(dh + w - 1) * (2w - 1) + (dw + w - 1)``
  with ``w = window_size`` (:func:`relative_position_index`), which for the full window is the
  original Swin index. Parameter names and shapes are the same at every geometry.
* The relative-position index and the shifted-window mask depend on the geometry only; they are
  rebuilt by :meth:`SwinBlock.set_resolution` and kept as non-persistent buffers (never in the
  state dict).

Attention is computed with explicit matmuls (``q @ k^T``, softmax, ``@ v``), as in the original
code, so that FlopCounterMode counts two matmuls forward and four backward on every device.
Parameter names follow the original code: ``blocks.M.{norm1, attn.qkv, attn.proj,
attn.relative_position_bias_table, norm2, mlp.fc1, mlp.fc2}``, ``downsample.{norm, reduction}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from coarse2fine.model.ast import DropPath, Mlp

MASK_VALUE = -100.0  # added to the scores of token pairs from different shifted regions (as the original)


@dataclass(frozen=True)
class WindowPlan:
    """Window and cyclic shift of one block, per axis: ``window`` (rows, cols), ``shift`` (rows, cols)."""

    window: tuple[int, int]
    shift: tuple[int, int]

    @property
    def tokens(self) -> int:
        """Tokens in one window."""
        return self.window[0] * self.window[1]


def window_plan(resolution: tuple[int, int], window_size: int, shifted: bool) -> WindowPlan:
    """The window and shift of a block over an ``H`` x ``W`` token grid (see the module docstring).

    Raises ``ValueError`` when a side is longer than ``window_size`` but not a multiple of it.
    """
    window, shift = [], []
    for side in resolution:
        if side > window_size and side % window_size:
            raise ValueError(
                f"a stage of {resolution[0]} x {resolution[1]} tokens cannot be cut into windows of "
                f"{window_size}: a side longer than the window must be a multiple of it"
            )
        window.append(min(window_size, side))
        shift.append(window_size // 2 if shifted and side > window_size else 0)
    return WindowPlan((window[0], window[1]), (shift[0], shift[1]))


def relative_position_index(window: tuple[int, int], window_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Index [n, n] (n = window tokens) into the ``(2 * window_size - 1) ** 2`` bias table.

    Entry ``(i, j)`` is the table row of the offset of token ``i`` from token ``j`` (row-major
    within the window): ``(dh + window_size - 1) * (2 * window_size - 1) + (dw + window_size - 1)``.
    """
    if window[0] > window_size or window[1] > window_size:
        raise ValueError(f"window {window} is larger than the bias table's window {window_size}")
    rows, cols = torch.meshgrid(
        torch.arange(window[0], device=device), torch.arange(window[1], device=device), indexing="ij"
    )
    rows, cols = rows.flatten(), cols.flatten()
    dh = rows[:, None] - rows[None, :] + window_size - 1
    dw = cols[:, None] - cols[None, :] + window_size - 1
    return dh * (2 * window_size - 1) + dw


def window_partition(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """[B, H, W, C] -> [B * num_windows, wh * ww, C], windows in row-major order per clip."""
    b, h, w, c = x.shape
    wh, ww = window
    x = x.view(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def window_reverse(windows: torch.Tensor, window: tuple[int, int], resolution: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: [B * num_windows, wh * ww, C] -> [B, H, W, C]."""
    (wh, ww), (h, w) = window, resolution
    c = windows.shape[-1]
    x = windows.view(-1, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def _region_labels(side: int, window: int, shift: int) -> torch.Tensor:
    """Per-position region label along one axis of the cyclically shifted grid (0, 1, 2)."""
    labels = torch.zeros(side, dtype=torch.long)
    if shift:
        labels[side - window:side - shift] = 1
        labels[side - shift:] = 2
    return labels


def shift_attention_mask(resolution: tuple[int, int], plan: WindowPlan) -> torch.Tensor | None:
    """Additive mask [num_windows, n, n] of a shifted block (None without shift).

    After the cyclic shift a window may hold tokens from up to four regions that are not
    neighbours in the unshifted grid; pairs from different regions get :data:`MASK_VALUE`.
    """
    if plan.shift == (0, 0):
        return None
    rows = _region_labels(resolution[0], plan.window[0], plan.shift[0])
    cols = _region_labels(resolution[1], plan.window[1], plan.shift[1])
    labels = (rows[:, None] * 3 + cols[None, :]).to(torch.float32)
    windows = window_partition(labels[None, :, :, None], plan.window).squeeze(-1)  # [nW, n]
    differ = windows[:, :, None] != windows[:, None, :]
    return torch.zeros(differ.shape).masked_fill(differ, MASK_VALUE)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a relative position bias read from the
    full window's table. ``forward(x [B * nW, n, C], mask [nW, n, n] | None)``."""

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool, attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.register_buffer("relative_position_index", torch.zeros(0, 0, dtype=torch.long), persistent=False)

    def set_window(self, window: tuple[int, int]) -> None:
        """Rebuild the relative-position index for ``window`` (on the table's device)."""
        index = relative_position_index(window, self.window_size)
        self.relative_position_index = index.to(self.relative_position_bias_table.device)

    def position_bias(self) -> torch.Tensor:
        """The relative position bias [heads, n, n] of the current window."""
        n = self.relative_position_index.shape[0]
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # [B * nW, heads, n, n]
        bias = self.position_bias().unsqueeze(0)
        if mask is not None:
            bias = bias + mask.unsqueeze(1).to(bias.dtype)  # [nW, heads, n, n]
        attn = (attn.view(-1, bias.shape[0], h, n, n) + bias).view(b, h, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class SwinBlock(nn.Module):
    """Pre-norm Swin block: (shifted) window attention, then MLP, each with a residual.

    :meth:`set_resolution` fixes the token grid the block runs on; blocks with ``shifted`` set
    shift per the shift rule of the module docstring.
    """

    def __init__(
        self, dim: int, num_heads: int, window_size: int, shifted: bool, mlp_ratio: float, qkv_bias: bool,
        drop: float, attn_drop: float, drop_path: float, eps: float,
    ):
        super().__init__()
        self.window_size = window_size
        self.shifted = shifted
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.resolution = (0, 0)
        self.plan = WindowPlan((0, 0), (0, 0))
        self.register_buffer("attn_mask", None, persistent=False)

    def set_resolution(self, resolution: tuple[int, int]) -> None:
        """Run on an ``H`` x ``W`` token grid: choose window and shift, rebuild index and mask."""
        plan = window_plan(resolution, self.window_size, self.shifted)
        self.resolution, self.plan = (int(resolution[0]), int(resolution[1])), plan
        self.attn.set_window(plan.window)
        mask = shift_attention_mask(self.resolution, plan)
        device = self.attn.relative_position_bias_table.device
        self.attn_mask = None if mask is None else mask.to(device)

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, window={self.plan.window}, shift={self.plan.shift}"

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        """Window attention over x [B, H, W, C] (shift, partition, attend, merge, unshift)."""
        (sh, sw), resolution = self.plan.shift, self.resolution
        if sh or sw:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        windows = self.attn(window_partition(x, self.plan.window), self.attn_mask)
        x = window_reverse(windows, self.plan.window, resolution)
        if sh or sw:
            x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h, w = self.resolution
        if n != h * w:
            raise ValueError(f"block set to {h} x {w} tokens got {n}")
        y = self._attend(self.norm1(x).view(b, h, w, c)).reshape(b, n, c)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2 x 2 neighbouring tokens -> LayerNorm(4C) -> Linear(4C, 2C, no bias); halves H and W."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
        b, _, c = x.shape
        h, w = resolution
        x = x.view(b, h, w, c)
        # Concatenation order of the original code (and its checkpoints): (0,0), (1,0), (0,1), (1,1).
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c)))


class SwinStage(nn.Module):
    """``depth`` Swin blocks (odd ones shifted) and an optional patch merging after them."""

    def __init__(
        self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float, qkv_bias: bool,
        drop: float, attn_drop: float, drop_paths: list[float], eps: float, downsample: bool,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, i % 2 == 1, mlp_ratio, qkv_bias, drop, attn_drop, drop_paths[i], eps)
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim, eps) if downsample else None
        self.resolution = (0, 0)

    def set_resolution(self, resolution: tuple[int, int]) -> None:
        """Run every block on an ``H`` x ``W`` token grid."""
        self.resolution = (int(resolution[0]), int(resolution[1]))
        for block in self.blocks:
            block.set_resolution(self.resolution)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x, self.resolution)
