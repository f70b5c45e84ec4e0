"""HTS-AT (Chen et al., ICASSP 2022): a Swin Transformer over a chunk-stacked log-mel image, with a
token-semantic (TSCAM) classifier; geometry-dynamic so that coarse phases really see fewer tokens.

Forward pass of ``x [batch, frames, mel bins]`` (see docs/models.md section 1):

1. ``bn0``: a learned per-mel-bin BatchNorm2d over the features.
2. Spectrogram-to-image: time is cut into ``num_chunks`` chunks stacked along frequency, so the
   one-channel image has ``num_chunks * mel`` rows (row = chunk * mel + mel bin) and
   ``frames / num_chunks`` columns (frame within the chunk). 1024 frames x 64 mel -> 256 x 256.
3. Patch embedding (Conv2d 1 -> embed, kernel = stride = patch, then LayerNorm), Swin stages with
   patch merging between them, final LayerNorm.
4. TSCAM: the final map is un-stacked (each chunk's rows side by side in time) and a
   Conv2d(C, classes, kernel (rows per chunk, 3), padding (0, 1)) gives per-time-step logits;
   the clip logits are their mean over time (:meth:`HTSAT.forward`),
   :meth:`HTSAT.forward_framewise` their sigmoid repeated up to the input's frame count.

Coarse-to-fine (docs/models.md 1.6, option A): a phase with R times fewer frames keeps the 4
chunks and makes each R times narrower, so the image is 256 x 256/R and every stage has R times
fewer tokens; the Patch method keeps the frames and widens the patch to 4 x 4k (the kernel resized
with :func:`~coarse2fine.model.patch_embed.resize_patch_kernel`), giving the same token grid.
Windows shrink to fit small stages and read the same relative-position-bias table
(:mod:`coarse2fine.model.swin`), TSCAM is length-agnostic, so every learned tensor has the same
name and shape at every geometry. There is no absolute positional embedding.

Parameter names are those of the official code (``patch_embed.proj``, ``patch_embed.norm``,
``layers.N.blocks.M.*``, ``layers.N.downsample.*``, ``norm``, ``tscam_conv``, ``bn0``), so its
checkpoints load directly (:func:`convert_official_state_dict`, :func:`htsat_load_pretrained`).
The official ``head`` Linear(classes, classes) is not used on the TSCAM path and is not built.

FLOPs (:func:`htsat_forward_flops`, :func:`htsat_training_flops`) are counted as FlopCounterMode
counts them: convolutions and matmuls only, window attention as two explicit matmuls; in
training every counted op also costs twice its forward in the backward (the patch-embedding conv
included: its input needs a gradient for ``bn0``), so a training step is exactly 3x the forward.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
import torch.nn as nn

from coarse2fine.compression import InputGeometry
from coarse2fine.model.base import C2FModel, ConfigDict
from coarse2fine.model.patch_embed import resize_patch_kernel
from coarse2fine.model.registry import Arch, register
from coarse2fine.model.swin import SwinStage, window_plan

if TYPE_CHECKING:
    from coarse2fine.model.transfer import TransferSummary

log = logging.getLogger(__name__)


def _int_tuple(value: Any, name: str) -> tuple[int, ...]:
    """A tuple of ints from a sequence (JSON gives lists)."""
    try:
        return tuple(int(v) for v in value)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of ints, got {value!r}") from None


@dataclass
class HTSATConfig(ConfigDict):
    """HTS-AT size and input geometry.

    ``target_length`` x ``num_mel_bins``: the input the model expects now (frames change between
    phases). ``patch_size`` is the full-resolution (freq, time) patch on the image;
    ``time_patch_factor`` k > 1 (the Patch compression method) makes it k times wider in time.
    ``time_factor``: how many times fewer frames than at full resolution (Fshift and Pool coarse
    phases); ``patch_resize``: the kernel resize that moved the patch to this geometry.
    ``depths`` and ``num_heads`` list the stages; the channels double at every stage.
    """

    num_classes: int = 527
    num_mel_bins: int = 64
    target_length: int = 1024
    num_chunks: int = 4
    patch_size: tuple[int, int] = (4, 4)
    time_patch_factor: int = 1
    time_factor: int = 1
    patch_resize: str = "pi"
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-5
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1

    def __post_init__(self) -> None:
        self.patch_size = _int_tuple(self.patch_size, "patch_size")  # type: ignore[assignment]
        self.depths = _int_tuple(self.depths, "depths")
        self.num_heads = _int_tuple(self.num_heads, "num_heads")
        self._check_sizes()
        self._check_geometry()

    def _check_sizes(self) -> None:
        """Validate the architecture (everything but the input geometry)."""
        if len(self.patch_size) != 2 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be a positive (freq, time) pair, got {self.patch_size}")
        if not self.depths or len(self.depths) != len(self.num_heads) or min(self.depths) < 1:
            raise ValueError(
                f"depths {self.depths} and num_heads {self.num_heads} must be non-empty, positive and of equal length"
            )
        for i, (dim, heads) in enumerate(zip(self.stage_dims, self.num_heads)):
            if heads < 1 or dim % heads:
                raise ValueError(f"stage {i + 1}: {dim} channels are not divisible by {heads} heads")
        if min(self.num_classes, self.num_chunks, self.window_size, self.time_patch_factor, self.embed_dim) < 1:
            raise ValueError("num_classes, num_chunks, window_size, time_patch_factor and embed_dim must be positive")

    def _check_geometry(self) -> None:
        """Validate the input geometry: the image must tile into patches, merge evenly at every
        stage, un-stack into chunks for TSCAM and cut into windows."""
        merge = 2 ** (self.num_stages - 1)
        pf, pt = self.time_patch
        frames_unit = self.num_chunks * pt * merge
        if self.target_length % frames_unit:
            raise ValueError(
                f"HTS-AT needs the frame count divisible by num_chunks * time patch * 2**(stages-1) = "
                f"{self.num_chunks} * {pt} * {merge} = {frames_unit}, got {self.target_length} frames"
            )
        mel_unit = pf * merge
        if self.num_mel_bins % mel_unit:
            raise ValueError(
                f"HTS-AT needs the mel bins divisible by freq patch * 2**(stages-1) = {pf} * {merge} = {mel_unit}, "
                f"got {self.num_mel_bins} mel bins"
            )
        for i, res in enumerate(self.stage_resolutions):
            try:
                window_plan(res, self.window_size, shifted=True)
            except ValueError as err:
                raise ValueError(f"stage {i + 1} at {self.target_length} frames: {err}") from None

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def stage_dims(self) -> list[int]:
        """Channels per stage (embed_dim doubling at every patch merging)."""
        return [self.embed_dim * 2 ** i for i in range(len(self.depths))]

    @property
    def num_features(self) -> int:
        """Channels of the final map (TSCAM's input)."""
        return self.stage_dims[-1]

    @property
    def time_patch(self) -> tuple[int, int]:
        """The patch (and stride) on the image now: (freq, time * time_patch_factor)."""
        return self.patch_size[0], self.patch_size[1] * self.time_patch_factor

    @property
    def image_size(self) -> tuple[int, int]:
        """(rows, columns) of the chunk-stacked image: (num_chunks * mel, frames / num_chunks)."""
        return self.num_chunks * self.num_mel_bins, self.target_length // self.num_chunks

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (rows, columns) of the first stage."""
        (h, w), (pf, pt) = self.image_size, self.time_patch
        return h // pf, w // pt

    @property
    def stage_resolutions(self) -> list[tuple[int, int]]:
        """Token grid of every stage."""
        h, w = self.grid
        return [(h // 2 ** i, w // 2 ** i) for i in range(self.num_stages)]

    @property
    def num_tokens(self) -> int:
        """Tokens of the first stage."""
        h, w = self.grid
        return h * w

    @property
    def tscam_rows(self) -> int:
        """Rows per chunk in the final map: the height of TSCAM's kernel (2 for HTS-AT)."""
        return self.stage_resolutions[-1][0] // self.num_chunks

    @property
    def time_steps(self) -> int:
        """TSCAM output steps: num_chunks * final-map columns (32 at full resolution, 32/R coarse)."""
        return self.num_chunks * self.stage_resolutions[-1][1]

    @property
    def geometry(self) -> InputGeometry:
        """The input geometry this config describes."""
        return InputGeometry(self.target_length, self.num_mel_bins, self.time_factor, self.time_patch_factor,
                             self.patch_resize)  # type: ignore[arg-type]

    def at_geometry(self, geo: InputGeometry) -> HTSATConfig:
        """This config moved to ``geo`` (validated): its frames, time factor and time patch factor."""
        if geo.mel_bins != self.num_mel_bins:
            raise ValueError(f"the model has {self.num_mel_bins} mel bins; the input geometry {geo.mel_bins}")
        return dataclasses.replace(self, target_length=geo.frames, time_patch_factor=geo.time_patch_factor,
                                   time_factor=geo.time_factor, patch_resize=geo.patch_resize)


HTSAT_PRESETS: dict[str, dict[str, Any]] = {
    # The published model: 27.5 M backbone + 2.4 M TSCAM at 527 classes (the unused head not built).
    "htsat": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(4, 8, 16, 32), window_size=8),
    # A CPU size: every stage has a shifted block; ~3 training GFLOPs per 10-s clip at R=1.
    "tiny": dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=8),
    # For tests: the smallest model that still exercises every stage, shift and head count.
    "micro": dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4), window_size=8),
}
HTSAT_PRESETS["base"] = HTSAT_PRESETS["htsat"]  # the size name every family shares (AST's presets default to it)


def htsat_config(preset: str, **overrides: Any) -> HTSATConfig:
    """An :class:`HTSATConfig` from a size preset (htsat = base, tiny, micro) plus overrides."""
    if preset not in HTSAT_PRESETS:
        raise ValueError(f"unknown HTS-AT preset {preset!r}; choose one of: {', '.join(HTSAT_PRESETS)}")
    return HTSATConfig(**{**HTSAT_PRESETS[preset], **overrides})


class PatchEmbed(nn.Module):
    """Conv2d patchifier (kernel = stride) + LayerNorm: image [B, 1, H, W] -> tokens [B, N, C]
    in row-major order."""

    def __init__(self, patch: tuple[int, int], dim: int, eps: float):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))

    def resize(self, patch: tuple[int, int], method: str) -> None:
        """Replace the conv by one with kernel = stride = ``patch``, its kernel resized from the
        current one (bilinear or PI-resize; bias kept). New ``nn.Parameter`` objects."""
        old = self.proj
        weight = resize_patch_kernel(old.weight.detach(), patch, method)  # type: ignore[arg-type]
        proj = nn.Conv2d(1, old.out_channels, kernel_size=patch, stride=patch,
                         device=old.weight.device, dtype=old.weight.dtype)
        proj.weight = nn.Parameter(weight.clone(), requires_grad=old.weight.requires_grad)
        proj.bias = nn.Parameter(old.bias.detach().clone(), requires_grad=old.bias.requires_grad)
        proj.train(old.training)
        self.proj = proj


class HTSAT(C2FModel):
    """HTS-AT. ``forward(x [B, frames, mel bins]) -> clip logits [B, classes]``."""

    arch = "htsat"
    head_prefixes = ("tscam_conv.", "head.")

    def __init__(self, config: HTSATConfig):
        super().__init__()
        self.config = config
        c = config
        self.bn0 = nn.BatchNorm2d(c.num_mel_bins)
        self.patch_embed = PatchEmbed(c.time_patch, c.embed_dim, c.layer_norm_eps)
        self.pos_drop = nn.Dropout(c.drop_rate)
        total = sum(c.depths)
        # Python floats (not torch.linspace) so that the model can be built on the meta device.
        rates = [c.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.layers = nn.ModuleList()
        for i, (dim, depth, heads) in enumerate(zip(c.stage_dims, c.depths, c.num_heads)):
            start = sum(c.depths[:i])
            self.layers.append(SwinStage(
                dim, depth, heads, c.window_size, c.mlp_ratio, c.qkv_bias, c.drop_rate, c.attn_drop_rate,
                rates[start:start + depth], c.layer_norm_eps, downsample=i < c.num_stages - 1,
            ))
        self.norm = nn.LayerNorm(c.num_features, eps=c.layer_norm_eps)
        self.tscam_conv = nn.Conv2d(c.num_features, c.num_classes, kernel_size=(c.tscam_rows, 3), padding=(0, 1))
        self.reset_parameters()
        self._set_resolutions()

    def reset_parameters(self) -> None:
        """The official initialisation: truncated normal (std 0.02) for Linear weights and the
        bias tables, zero Linear biases, LayerNorm ones/zeros; convs and bn0 keep PyTorch's."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for name, p in self.named_parameters():
            if name.endswith("relative_position_bias_table"):
                nn.init.trunc_normal_(p, std=0.02)

    def _set_resolutions(self) -> None:
        """Set every stage to its token grid at the current geometry (windows, index, masks)."""
        for stage, res in zip(self.layers, self.config.stage_resolutions):
            stage.set_resolution(res)


    def training_flops(self, batch_size: int = 1) -> int:
        return htsat_training_flops(self.config, batch_size)

    def forward_flops(self, batch_size: int = 1) -> int:
        return htsat_forward_flops(self.config, batch_size)

    @torch.no_grad()
    def set_geometry(self, geometry: InputGeometry) -> None:
        """Move to a phase's geometry: ``geometry.frames`` frames (each chunk narrower, windows
        narrowed) and a time patch ``geometry.time_patch_factor`` times the full-resolution one
        (kernel resized with ``geometry.patch_resize``). Only a changed patch kernel becomes a new
        parameter; every other tensor is kept as is. The same geometry is a no-op."""
        old = self.config
        new = old.at_geometry(geometry)  # validates before anything changes
        if (new.target_length, new.time_patch_factor) == (old.target_length, old.time_patch_factor):
            self.config = new  # the same token grid: only what the geometry says of itself changes
            return
        if new.time_patch != old.time_patch:
            self.patch_embed.resize(new.time_patch, geometry.patch_resize)
        self.config = new
        self._set_resolutions()
        log.debug("HTS-AT geometry: %d frames, patch %s -> %d frames, patch %s; stages %s",
                  old.target_length, old.time_patch, new.target_length, new.time_patch, new.stage_resolutions)

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """bn0 then the chunk-stacked image: [B, frames, mel] -> [B, 1, num_chunks * mel, frames / num_chunks]."""
        self.check_input(x)
        b, t, f = x.shape
        x = self.bn0(x.transpose(1, 2).unsqueeze(-1)).squeeze(-1)  # [B, mel, frames], normalised per mel bin
        nc = self.config.num_chunks
        x = x.reshape(b, f, nc, t // nc).permute(0, 2, 1, 3)  # [B, chunk, mel, frame in chunk]
        return x.reshape(b, 1, nc * f, t // nc)

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """The final normalised map, un-stacked for TSCAM: [B, C, rows per chunk, time steps]
        with time step = chunk * columns + column (chronological)."""
        h = self.pos_drop(self.patch_embed(self.image(x)))
        for stage in self.layers:
            h = stage(h)
        h = self.norm(h)
        b, _, c = h.shape
        (rows, cols), nc = self.config.stage_resolutions[-1], self.config.num_chunks
        m = h.transpose(1, 2).reshape(b, c, nc, rows // nc, cols)
        return m.permute(0, 1, 3, 2, 4).reshape(b, c, rows // nc, nc * cols)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embedding [B, C]: the mean of the final map (the official ``latent_output``)."""
        return self.forward_map(x).flatten(2).mean(dim=-1)

    def tscam_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Per-time-step logits [B, classes, time steps] of the token-semantic module."""
        return self.tscam_conv(self.forward_map(x)).flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clip logits [B, classes]: the TSCAM logits averaged over time."""
        return self.tscam_logits(x).mean(dim=-1)

    def forward_framewise(self, x: torch.Tensor) -> torch.Tensor:
        """Framewise probabilities [B, frames, classes]: sigmoid of the TSCAM logits, each time
        step repeated to cover its frames (as the official ``interpolate``)."""
        probs = torch.sigmoid(self.tscam_logits(x)).transpose(1, 2)  # [B, steps, classes]
        return probs.repeat_interleave(x.shape[1] // probs.shape[1], dim=1)


# ----------------------------------------------------------------------------- FLOPs
# Counted as FlopCounterMode counts them; see coarse2fine.model.flops for the conventions.

def _block_flops(tokens: int, dim: int, window_tokens: int, mlp_ratio: float) -> int:
    """Forward FLOPs of one Swin block on one clip: qkv, q @ k^T and attn @ v inside windows, proj, MLP."""
    hidden = int(dim * mlp_ratio)
    return (
        2 * tokens * dim * 3 * dim  # qkv
        + 2 * 2 * tokens * window_tokens * dim  # two attention matmuls, all windows and heads
        + 2 * tokens * dim * dim  # proj
        + 2 * 2 * tokens * dim * hidden  # fc1 + fc2
    )


def htsat_forward_flops(cfg: HTSATConfig, batch_size: int = 1) -> int:
    """Forward FLOPs of ``batch_size`` clips: patch-embedding conv, blocks, patch merging, TSCAM conv."""
    pf, pt = cfg.time_patch
    total = 2 * cfg.num_tokens * cfg.embed_dim * pf * pt
    for i, ((h, w), dim) in enumerate(zip(cfg.stage_resolutions, cfg.stage_dims)):
        n = window_plan((h, w), cfg.window_size, shifted=False).tokens
        total += cfg.depths[i] * _block_flops(h * w, dim, n, cfg.mlp_ratio)
        if i < cfg.num_stages - 1:
            total += 2 * (h * w // 4) * (4 * dim) * (2 * dim)  # patch merging reduction (no bias)
    total += 2 * cfg.time_steps * cfg.num_classes * cfg.num_features * cfg.tscam_rows * 3
    return batch_size * total


def htsat_training_flops(cfg: HTSATConfig, batch_size: int = 1) -> int:
    """Forward + backward FLOPs of one training step: every counted op's backward costs twice its
    forward (input and weight gradients; the patch conv's input gradient flows to ``bn0``)."""
    return 3 * htsat_forward_flops(cfg, batch_size)


# ----------------------------------------------------------------------------- official checkpoints

_DROPPED_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.", "head.")
_DROPPED_SUFFIXES = ("relative_position_index", "attn_mask")
_PREFIXES = ("sed_model.", "module.")


def convert_official_state_dict(sd: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Our state dict from an official HTS-AT one (or a Lightning checkpoint dict holding it under
    ``state_dict``): ``sed_model.`` / ``module.`` prefixes stripped; the geometry buffers
    (``relative_position_index``, ``attn_mask``), the feature extractor's fixed weights and the
    unused ``head`` dropped. The result loads into an :class:`HTSAT` of the same size at the
    official geometry (``num_chunks**2 * mel`` frames, 1024 for 64 mel)."""
    if "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith(_DROPPED_PREFIXES) or key.endswith(_DROPPED_SUFFIXES):
            continue
        out[key] = value
    return out


def official_config(sd: Mapping[str, torch.Tensor], **overrides: Any) -> HTSATConfig:
    """The :class:`HTSATConfig` of a converted official state dict, read off its shapes, at the
    official geometry (square image: ``num_chunks**2 * mel`` frames)."""
    try:
        proj = sd["patch_embed.proj.weight"]
        stages = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
        depths = [1 + max(int(k.split(".")[3]) for k in sd if k.startswith(f"layers.{i}.blocks.")) for i in range(stages)]
        tables = [sd[f"layers.{i}.blocks.0.attn.relative_position_bias_table"] for i in range(stages)]
        fc1 = sd["layers.0.blocks.0.mlp.fc1.weight"]
        tscam = sd["tscam_conv.weight"]
        mel = int(sd["bn0.weight"].shape[0])
    except (KeyError, ValueError) as err:
        raise ValueError(f"not an HTS-AT state dict (missing {err})") from None
    window = (round(tables[0].shape[0] ** 0.5) + 1) // 2
    chunks = overrides.pop("num_chunks", 4)
    fields = dict(
        num_classes=int(tscam.shape[0]), num_mel_bins=mel, target_length=chunks * chunks * mel, num_chunks=chunks,
        patch_size=tuple(proj.shape[-2:]), embed_dim=int(proj.shape[0]), depths=tuple(depths),
        num_heads=tuple(int(t.shape[1]) for t in tables), window_size=window,
        mlp_ratio=fc1.shape[0] / fc1.shape[1], drop_path_rate=0.0,
    )
    return HTSATConfig(**{**fields, **overrides})


def load_official_checkpoint(path: str | Path) -> HTSAT:
    """An :class:`HTSAT` holding an official HTS-AT checkpoint (at the official geometry, eval mode).
    Errors are ``ValueError`` naming the file."""
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types for foreign files
        raise ValueError(f"{path}: cannot read as a torch checkpoint with weights_only=True ({err})") from None
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(ckpt).__name__}")
    sd = convert_official_state_dict(ckpt)
    try:
        model = HTSAT(official_config(sd))
        model.load_state_dict(sd)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{path}: not an official HTS-AT checkpoint ({err})") from None
    return model.eval()


def htsat_load_pretrained(model: C2FModel, source: str) -> TransferSummary | bool:
    """Initialise ``model`` from an official HTS-AT checkpoint file (moved to the model's geometry;
    the classifier dropped when the classes differ). False when ``source`` is not a file."""
    from coarse2fine.model.transfer import transfer_weights

    path = Path(source)
    if not path.is_file():
        return False
    return transfer_weights(load_official_checkpoint(path), model, str(path))


# ----------------------------------------------------------------------------- registry entry

def _settings_pair(value: Any, name: str) -> tuple[int, int] | None:
    """``None`` or an (int, int) pair from a run's model settings."""
    if value is None:
        return None
    pair = _int_tuple(value, name)
    if len(pair) != 2:
        raise ValueError(f"model.{name} must be a (freq, time) pair, got {value!r}")
    return pair[0], pair[1]


def auto_chunks(full_frames: int, mel_bins: int) -> int:
    """HTS-AT's chunk count for an input: the power of two that makes the full-resolution image
    closest to square (4 for 1024 frames x 64 mel bins: 256 x 256; 1 for 128 x 128), at most 8."""
    ratio = max(full_frames / mel_bins, 1.0)
    return int(min(8, 2 ** round(math.log2(ratio) / 2)))


def htsat_make_config(settings: Any, num_classes: int, geo: InputGeometry) -> HTSATConfig:
    """HTS-AT at a phase's geometry. ``model.patch_size`` (default 4 x 4) is the full-resolution
    patch; the patches never overlap, so ``model.stride`` must be unset or equal to it; the Patch
    method widens the patch ``geo.time_patch_factor`` times in time. Without
    ``model.overrides.num_chunks`` the chunk count is :func:`auto_chunks` of the full-resolution
    input, so that HTS-AT fits any preset (the HTS-AT recipes set HTS-AT's 4)."""
    patch = _settings_pair(settings.patch_size, "patch_size") or (4, 4)
    stride = _settings_pair(settings.stride, "stride")
    if stride is not None and stride != patch:
        raise ValueError(f"HTS-AT uses non-overlapping patches: model.stride {stride} must equal model.patch_size {patch}")
    overrides = dict(settings.overrides or {})
    overrides.setdefault("num_chunks", auto_chunks(geo.frames * geo.time_factor, geo.mel_bins))
    return htsat_config(
        settings.preset, num_classes=num_classes, num_mel_bins=geo.mel_bins, target_length=geo.frames,
        patch_size=patch, time_patch_factor=geo.time_patch_factor, time_factor=geo.time_factor,
        patch_resize=geo.patch_resize, drop_path_rate=settings.drop_path_rate, **overrides,
    )


HTSAT_ARCH = register(Arch(
    name="htsat", model_cls=HTSAT, config_cls=HTSATConfig, presets=HTSAT_PRESETS,
    make_config=htsat_make_config, load_pretrained=htsat_load_pretrained,
    description="HTS-AT (Swin Transformer over a chunk-stacked 64-mel image, token-semantic classifier)",
))
