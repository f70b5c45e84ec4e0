"""The Audio Spectrogram Transformer: a ViT over log-mel patches with cls + distillation tokens.

Input is time-major like AST and Hugging Face, ``[batch, frames, mel bins]``; inside it becomes
a one-channel image ``[batch, 1, mel bins, frames]`` cut into (freq, time) patches. The pooled
output is the mean of the two prefix tokens after the final LayerNorm, then LayerNorm + Linear
(AST's ``mlp_head``). :meth:`AST.set_geometry` moves the model to a phase's input geometry (token
grid and patch shape), :meth:`AST.set_patch_geometry` to any explicit one;
:func:`adapt_state_dict` does the same to a state dict. The model counts its own training FLOPs
(:func:`ast_training_flops`, equal to FlopCounterMode's count; see :mod:`coarse2fine.model.flops`).

Parameter names follow timm's ViT: ``patch_embed.proj``, ``cls_token``, ``dist_token``,
``pos_embed``, ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``,
``head.{norm, fc}``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from coarse2fine.compression import InputGeometry
from coarse2fine.model.base import C2FModel, ConfigDict
from coarse2fine.model.patch_embed import resize_patch_kernel
from coarse2fine.model.patchout import DisentangledPosEmbed, patchout
from coarse2fine.model.pos_embed import resample_pos_embed

log = logging.getLogger(__name__)

NUM_PREFIX_TOKENS = 2
PatchResize = Literal["bilinear", "pi"]


def _pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """``(a, b)`` from an int or a length-2 sequence (JSON gives lists)."""
    if isinstance(value, int):
        return value, value
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a (freq, time) pair, got {value!r}")
    return pair  # type: ignore[return-value]


@dataclass
class ASTConfig(ConfigDict):
    """Model size and input geometry. ``patch_size`` and ``stride`` are (freq, time).

    ``target_length`` is the number of input frames the model currently expects (it changes
    between coarse and fine phases); ``num_mel_bins`` the number of frequency bins.
    ``time_patch_factor``: how many times wider in time ``patch_size`` and ``stride`` are than at
    full resolution (the Patch compression method's coarse phases; 1 otherwise); ``time_factor``:
    how many times fewer frames than at full resolution (Fshift and Pool coarse phases);
    ``patch_resize``: the kernel resize (bilinear or pi) that moved the patch to this geometry.

    ``pos_embed``: ``grid`` (AST's one embedding per patch) or ``disentangled`` (PaSST's time and
    frequency embeddings, :mod:`coarse2fine.model.patchout`), which ``patchout_time`` /
    ``patchout_freq`` need: time columns / frequency rows dropped in training (the time count is
    given at full resolution and scales with the phase's time tokens).
    """

    num_classes: int = 527
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    num_mel_bins: int = 128
    target_length: int = 1024
    patch_size: tuple[int, int] = (16, 16)
    stride: tuple[int, int] = (16, 16)
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    time_patch_factor: int = 1
    time_factor: int = 1
    patch_resize: str = "pi"
    pos_embed: str = "grid"
    patchout_time: int = 0
    patchout_freq: int = 0

    def __post_init__(self) -> None:
        self.patch_size = _pair(self.patch_size, "patch_size")
        self.stride = _pair(self.stride, "stride")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if min(self.patch_size + self.stride) < 1:
            raise ValueError(f"patch_size {self.patch_size} and stride {self.stride} must be positive")
        k = self.time_patch_factor
        if k < 1 or self.patch_size[1] % k or self.stride[1] % k:
            raise ValueError(f"time_patch_factor {k} must divide the time patch {self.patch_size[1]} and stride {self.stride[1]}")
        if self.num_mel_bins < self.patch_size[0] or self.target_length < self.patch_size[1]:
            raise ValueError(
                f"patch {self.patch_size} (freq, time) does not fit a {self.num_mel_bins} mel bins x "
                f"{self.target_length} frames input"
            )
        if self.pos_embed not in ("grid", "disentangled"):
            raise ValueError(f"pos_embed: {self.pos_embed!r} is not one of grid, disentangled")
        if (self.patchout_time or self.patchout_freq) and self.pos_embed != "disentangled":
            raise ValueError("patchout needs pos_embed: disentangled (kept patches keep their positions)")
        if self.patchout_time < 0 or self.patchout_freq < 0 or self.patchout_freq >= self.grid[0]:
            raise ValueError(f"patchout_freq {self.patchout_freq} must leave at least one of the {self.grid[0]} frequency rows "
                             f"(and patchout_time {self.patchout_time} must be >= 0)")
        if self.patchout_time >= self.full_time_tokens:
            raise ValueError(f"patchout_time {self.patchout_time} must leave at least one of the {self.full_time_tokens} "
                             "time columns at full resolution (it counts columns there, and each coarse phase drops the "
                             "same fraction of its own)")

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (freq tokens, time tokens)."""
        (pf, pt), (sf, st) = self.patch_size, self.stride
        return (self.num_mel_bins - pf) // sf + 1, (self.target_length - pt) // st + 1

    @property
    def num_tokens(self) -> int:
        """Patch tokens (the two prefix tokens not included)."""
        f, t = self.grid
        return f * t

    @property
    def full_time_tokens(self) -> int:
        """Time tokens of this model at full resolution (R = 1)."""
        k = self.time_patch_factor
        pt, st = self.patch_size[1] // k, self.stride[1] // k
        return (self.target_length * self.time_factor - pt) // st + 1

    @property
    def patchout_counts(self) -> tuple[int, int]:
        """(frequency rows, time columns) dropped in training at this geometry: the time count
        scaled with the time tokens, so the dropped fraction stays the same across phases."""
        f, t = self.grid
        drop_t = min(t - 1, int(round(self.patchout_time * t / self.full_time_tokens))) if self.patchout_time else 0
        return min(self.patchout_freq, f - 1), drop_t

    @property
    def train_tokens(self) -> int:
        """Patch tokens a training forward sees (after patchout)."""
        (f, t), (df, dt) = self.grid, self.patchout_counts
        return (f - df) * (t - dt)

    @property
    def geometry(self) -> InputGeometry:
        """The input geometry this config describes."""
        return InputGeometry(self.target_length, self.num_mel_bins, self.time_factor, self.time_patch_factor,
                             self.patch_resize)  # type: ignore[arg-type]

    @property
    def ignored_frames(self) -> int:
        """Input frames at the end that no patch covers."""
        t, (_, pt), (_, st) = self.grid[1], self.patch_size, self.stride
        return self.target_length - (pt + (t - 1) * st)

    def at_geometry(self, geo: InputGeometry) -> ASTConfig:
        """This config moved to ``geo``: input frames and mel bins, and a time patch / stride
        ``geo.time_patch_factor`` times the full-resolution one."""
        k = self.time_patch_factor
        (pf, pt), (sf, st) = self.patch_size, self.stride
        g = geo.time_patch_factor
        return dataclasses.replace(
            self, target_length=geo.frames, num_mel_bins=geo.mel_bins,
            patch_size=(pf, pt // k * g), stride=(sf, st // k * g), time_patch_factor=g, time_factor=geo.time_factor,
            patch_resize=geo.patch_resize,
        )


PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "micro": dict(embed_dim=64, depth=4, num_heads=4),
}


def ast_config(preset: str, **overrides: Any) -> ASTConfig:
    """An :class:`ASTConfig` from a size preset (base, small, tiny, micro) plus overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    return ASTConfig(**{**PRESETS[preset], **overrides})


def prefix_tokens(tokens: Sequence[torch.Tensor], batch: int) -> torch.Tensor:
    """Prefix tokens (each ``[1, 1, D]``) for a batch: ``[batch, len(tokens), D]``. Each token is
    expanded on its own over at least 2 clips, then the batch is cut out, so that its gradient is a
    tensor of its own with the parameter's strides, never a view of the next layer's gradient
    (which DDP copies at every step, with a warning, when a process's micro-batch holds 1 clip)."""
    n = max(batch, 2)
    return torch.cat([t.expand(n, -1, -1) for t in tokens], dim=1)[:batch]


class PatchEmbed(nn.Module):
    """Conv2d patchifier: [B, 1, F, T] -> tokens [B, N, D] (frequency-major token order)."""

    def __init__(self, patch_size: tuple[int, int], stride: tuple[int, int], dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection and ``F.scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, d)))


class Mlp(nn.Module):
    """Linear -> GELU (exact) -> Linear."""

    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability ``p`` in training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, cfg: ASTConfig, drop_path: float):
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.attn = Attention(d, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate)
        self.norm2 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio), cfg.drop_rate)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Head(nn.Module):
    """AST's classifier (``mlp_head``): LayerNorm then Linear."""

    def __init__(self, dim: int, num_classes: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x))


def adapt_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    old: ASTConfig,
    new: ASTConfig,
    patch_resize: PatchResize = "pi",
) -> dict[str, torch.Tensor]:
    """A copy of an AST ``state_dict`` moved from geometry ``old`` to ``new``.

    ``pos_embed`` is resampled from ``old.grid`` to ``new.grid`` (prefix tokens kept) and
    ``patch_embed.proj.weight`` resized to ``new.patch_size``; every other tensor is shared.
    """
    out = dict(state_dict)
    out["pos_embed"] = resample_pos_embed(state_dict["pos_embed"], old.grid, new.grid, NUM_PREFIX_TOKENS)
    key = "patch_embed.proj.weight"
    out[key] = resize_patch_kernel(state_dict[key], new.patch_size, patch_resize)
    return out


class AST(C2FModel):
    """Audio Spectrogram Transformer. ``forward(x [B, frames, mel bins]) -> logits [B, classes]``."""

    arch = "ast"
    head_prefixes = ("head.fc.",)

    def __init__(self, config: ASTConfig):
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.patch_embed = PatchEmbed(config.patch_size, config.stride, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        if config.pos_embed == "grid":
            self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens + NUM_PREFIX_TOKENS, d))
        else:
            self.pos = DisentangledPosEmbed(d, config.grid, NUM_PREFIX_TOKENS)
        self.pos_drop = nn.Dropout(config.drop_rate)
        # Python floats (not torch.linspace) so that the model can be built on the meta device.
        rates = [config.drop_path_rate * i / max(config.depth - 1, 1) for i in range(config.depth)]
        self.blocks = nn.ModuleList(Block(config, r) for r in rates)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.head = Head(d, config.num_classes, config.layer_norm_eps)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ViT initialisation: truncated normal (std 0.02) for tokens, pos-embed and Linear weights,
        zero biases, LayerNorm ones/zeros; the patch-embedding conv keeps PyTorch's default."""
        if self.config.pos_embed == "grid":
            for p in (self.cls_token, self.dist_token, self.pos_embed):
                nn.init.trunc_normal_(p, std=0.02)
        else:
            for p in (self.cls_token, self.dist_token):
                nn.init.trunc_normal_(p, std=0.02)
            self.pos.reset_parameters()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


    @property
    def train_tokens(self) -> int:
        return self.config.train_tokens

    def training_flops(self, batch_size: int = 1) -> int:
        return ast_training_flops(self.config, batch_size)

    def forward_flops(self, batch_size: int = 1) -> int:
        return ast_forward_flops(self.config, batch_size)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All token outputs after the final LayerNorm: [B, 2 + N, D] (cls, dist, patches)."""
        self.check_input(x)
        tokens = self.patch_embed(x.transpose(1, 2).unsqueeze(1))
        prefix = prefix_tokens((self.cls_token, self.dist_token), x.shape[0])
        if self.config.pos_embed == "grid":
            h = self.pos_drop(torch.cat([prefix, tokens], dim=1) + self.pos_embed)
        else:  # disentangled embeddings added before patchout, so kept patches keep their positions
            grid = self.pos.add(tokens, self.config.grid)
            drop_f, drop_t = self.config.patchout_counts if self.training else (0, 0)
            h = self.pos_drop(torch.cat([prefix + self.pos.prefix, patchout(grid, drop_f, drop_t)], dim=1))
        for block in self.blocks:
            h = block(h)
        return self.norm(h)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embedding [B, D]: mean of the cls and distillation tokens after the final norm."""
        h = self.forward_tokens(x)
        return (h[:, 0] + h[:, 1]) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes] of input [B, target_length frames, num_mel_bins]."""
        return self.head(self.forward_features(x))

    def grid_settings(self) -> dict[str, tuple[int, ...]]:
        """Patch size and stride at full resolution (``model.patch_size``, ``model.stride``)."""
        cfg, k = self.config, self.config.time_patch_factor
        return {"patch_size": (cfg.patch_size[0], cfg.patch_size[1] // k), "stride": (cfg.stride[0], cfg.stride[1] // k)}

    def match_geometry(self, other: C2FModel) -> None:
        """Take ``other``'s token grid exactly (frames, patch size and stride) when it is an AST."""
        if isinstance(other, AST):
            cfg = other.config
            self.set_patch_geometry(cfg.target_length, cfg.patch_size, cfg.stride)
        else:
            super().match_geometry(other)

    def set_geometry(self, geometry: InputGeometry) -> None:
        """Move to a phase's input geometry: ``geometry.frames`` input frames, and a time patch and
        stride ``geometry.time_patch_factor`` times the full-resolution ones (kernel resized with
        ``geometry.patch_resize``). See :meth:`set_patch_geometry`."""
        if geometry.mel_bins != self.config.num_mel_bins:
            raise ValueError(f"the model has {self.config.num_mel_bins} mel bins; the input geometry {geometry.mel_bins}")
        self._move_to(self.config.at_geometry(geometry), geometry.patch_resize)

    @torch.no_grad()
    def set_patch_geometry(
        self,
        target_length: int,
        patch_size: tuple[int, int] | None = None,
        stride: tuple[int, int] | None = None,
        patch_resize: PatchResize = "pi",
    ) -> None:
        """Move to a new input length / patch shape / stride, carrying the weights over.

        Positional embeddings are interpolated bilinearly from the old token grid to the new one
        (prefix tokens kept); a new patch size resizes the patch-embedding kernel by bilinear
        interpolation or PI-resize (bias kept). ``None`` keeps the current patch size / stride.
        Changed parameters are replaced by new ``nn.Parameter`` objects (``requires_grad`` kept),
        so build the optimizer after calling this. Unchanged geometry is a no-op.
        """
        old = self.config
        new = dataclasses.replace(
            old,
            target_length=int(target_length),
            patch_size=old.patch_size if patch_size is None else patch_size,
            stride=old.stride if stride is None else stride,
            time_patch_factor=1,
        )
        if (new.target_length, new.patch_size, new.stride) == (old.target_length, old.patch_size, old.stride):
            return
        self._move_to(new, patch_resize)

    @torch.no_grad()
    def _move_to(self, new: ASTConfig, patch_resize: PatchResize) -> None:
        """Take config ``new`` (another grid or patch), the weights carried over."""
        old = self.config
        if new.grid != old.grid and old.pos_embed == "grid":
            pos = resample_pos_embed(self.pos_embed.detach(), old.grid, new.grid, NUM_PREFIX_TOKENS)
            self.pos_embed = nn.Parameter(pos.clone(), requires_grad=self.pos_embed.requires_grad)
        elif new.grid != old.grid:
            self.pos.resize(new.grid)
        if (new.patch_size, new.stride) != (old.patch_size, old.stride):
            self.patch_embed.proj = self._resized_proj(new, patch_resize)
        log.debug(
            "geometry (frames %d, patch %s, stride %s) -> (frames %d, patch %s, stride %s): grid %s -> %s",
            old.target_length, old.patch_size, old.stride,
            new.target_length, new.patch_size, new.stride, old.grid, new.grid,
        )
        self.config = new

    def _resized_proj(self, new: ASTConfig, patch_resize: PatchResize) -> nn.Conv2d:
        """A patch-embedding conv for ``new``'s patch size and stride, weights carried over."""
        old_proj = self.patch_embed.proj
        weight = resize_patch_kernel(old_proj.weight.detach(), new.patch_size, patch_resize)
        proj = nn.Conv2d(
            1, self.config.embed_dim, kernel_size=new.patch_size, stride=new.stride,
            device=old_proj.weight.device, dtype=old_proj.weight.dtype,
        )
        proj.weight = nn.Parameter(weight.clone(), requires_grad=old_proj.weight.requires_grad)
        proj.bias = nn.Parameter(old_proj.bias.detach().clone(), requires_grad=old_proj.bias.requires_grad)
        proj.train(old_proj.training)
        return proj


# ----------------------------------------------------------------------------- FLOPs
# Counted as FlopCounterMode counts them; see coarse2fine.model.flops for the conventions.

def _attention_matmul_flops(cfg: ASTConfig, tokens: int) -> int:
    """One q @ k^T (or attn @ v) over all heads, one clip, one block: 2 * N^2 * D."""
    n = tokens + NUM_PREFIX_TOKENS
    return 2 * n * n * cfg.embed_dim


def _patch_embed_flops(cfg: ASTConfig) -> int:
    """Forward FLOPs of the patch-embedding conv for one clip (every patch, before any patchout)."""
    pf, pt = cfg.patch_size
    return 2 * cfg.num_tokens * cfg.embed_dim * pf * pt


def ast_forward_flops(cfg: ASTConfig, batch_size: int = 1, tokens: int | None = None) -> int:
    """Forward-pass FLOPs of ``batch_size`` clips (matmuls, conv and attention only) with
    ``tokens`` patch tokens through the blocks (default: all of them, as in evaluation)."""
    tokens = cfg.num_tokens if tokens is None else tokens
    d, n = cfg.embed_dim, tokens + NUM_PREFIX_TOKENS
    hidden = int(d * cfg.mlp_ratio)
    per_block = (
        2 * n * d * 3 * d  # qkv
        + 2 * _attention_matmul_flops(cfg, tokens)  # q @ k^T and attn @ v over all heads
        + 2 * n * d * d  # proj
        + 2 * n * d * hidden * 2  # fc1 + fc2
    )
    head = 2 * d * cfg.num_classes
    return batch_size * (_patch_embed_flops(cfg) + cfg.depth * per_block + head)


def ast_training_flops(cfg: ASTConfig, batch_size: int = 1) -> int:
    """Forward + backward FLOPs of one training step on ``batch_size`` clips, as FlopCounterMode
    counts them with fused attention: 3x forward, less the first conv's input gradient, plus the
    attention-score recomputation of the fused backward; the blocks see the tokens left after
    patchout (``cfg.train_tokens``)."""
    tokens = cfg.train_tokens
    no_input_grad = _patch_embed_flops(cfg)
    recompute = cfg.depth * _attention_matmul_flops(cfg, tokens)
    return 3 * ast_forward_flops(cfg, batch_size, tokens) + batch_size * (recompute - no_input_grad)
