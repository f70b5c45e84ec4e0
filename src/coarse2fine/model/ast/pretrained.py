"""Pretrained weights from outside Hugging Face: the original AST release and ImageNet ViT/DeiT.

:func:`load_original_ast_checkpoint` reads the original AST release (``audioset_10_10_0.4593.pth``:
``module.v.*`` timm names, fused ``qkv``, ``mlp_head``); :func:`init_from_imagenet` initialises
from ImageNet ViT/DeiT weights as AST does (RGB-summed patch kernel, pos-embed centre-cropped or
interpolated per axis). Files are read with safetensors or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from coarse2fine.model.ast.hf import check_state_dict, load_state_dict_file
from coarse2fine.model.ast.model import AST, ASTConfig, PatchResize
from coarse2fine.model.patch_embed import resize_patch_kernel

log = logging.getLogger(__name__)


# ============================================================================ original AST release

_ORIGINAL_BLOCK = re.compile(r"^blocks\.(\d+)\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)$")
_ORIGINAL_TOP = {"cls_token", "dist_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
                 "norm.weight", "norm.bias"}
_ORIGINAL_HEAD = {"mlp_head.0.": "head.norm.", "mlp_head.1.": "head.fc."}
_IMAGENET_HEADS = ("head.", "head_dist.")  # timm's ImageNet classifiers, unused by AST
HEADS_BY_DIM = {768: 12, 384: 6, 192: 3}


def convert_original_ast_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original AST release's state dict (``audioset_10_10_0.4593.pth``) in our names.

    ``module.`` (DataParallel) is optional; ``v.*`` (timm DeiT names, the same as ours) keeps its
    name without ``v.``; ``mlp_head.0`` / ``mlp_head.1`` become ``head.norm`` / ``head.fc``. The
    unused ImageNet heads ``v.head`` / ``v.head_dist`` are dropped; other keys raise ``ValueError``.
    """
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    dropped: list[str] = []
    for raw_key, value in sd.items():
        key = raw_key[len("module."):] if raw_key.startswith("module.") else raw_key
        if key.startswith("v."):
            name = key[2:]
            if name in _ORIGINAL_TOP or _ORIGINAL_BLOCK.match(name):
                out[name] = value
            elif name.startswith(_IMAGENET_HEADS):
                dropped.append(raw_key)
            else:
                unknown.append(raw_key)
            continue
        prefix = next((p for p in _ORIGINAL_HEAD if key.startswith(p)), None)
        if prefix is not None and key[len(prefix):] in ("weight", "bias"):
            out[_ORIGINAL_HEAD[prefix] + key[len(prefix):]] = value
        else:
            unknown.append(raw_key)
    if unknown:
        shown = sorted(unknown)[:5]
        more = f", ... {len(unknown) - len(shown)} more" if len(unknown) > len(shown) else ""
        raise ValueError(f"not in the original AST layout (module.v.*): {len(unknown)} key(s) it does not have: "
                         f"{', '.join(shown)}{more}")
    if dropped:
        log.debug("dropped the unused ImageNet head(s) of the original AST checkpoint: %s", ", ".join(sorted(dropped)))
    return out


def _pair_of(value: Any) -> tuple[int, int]:
    """``(a, a)`` for an int, else a 2-tuple of ints."""
    if isinstance(value, int):
        return value, value
    a, b = value
    return int(a), int(b)


def _default_target_length(time_tokens: int, patch: int, stride: int) -> int:
    """An input length giving ``time_tokens`` tokens: the smallest power of two among the lengths
    that do (1024 for AST's 101 tokens at stride 10), else the smallest such length."""
    low = (time_tokens - 1) * stride + patch
    for length in range(low, low + stride):
        if length & (length - 1) == 0:
            return length
    return low


def original_ast_config(sd: Mapping[str, torch.Tensor], heads_if_unknown: int | None = None,
                        **overrides: Any) -> ASTConfig:
    """:class:`ASTConfig` of a converted original-AST state dict (see :func:`convert_original_ast_state_dict`).

    Inferred from the weights: embed_dim, depth, mlp_ratio, qkv_bias, num_classes, patch_size.
    ``num_heads`` cannot be: it comes from ``overrides`` or the DeiT default for the width
    (768 -> 12, 384 -> 6, 192 -> 3), else ``heads_if_unknown`` (the config's, for ``init_from``). ``stride`` defaults to AST's released (10, 10) and
    ``num_mel_bins`` to 128; the token count of ``pos_embed`` then fixes the time grid and
    ``target_length`` (default: the smallest power of two giving that grid, 1024 for AST).
    LayerNorm eps is timm's 1e-6. Any field can be overridden; the result is checked against
    ``pos_embed``.
    """
    required = ("cls_token", "pos_embed", "patch_embed.proj.weight")
    missing = [k for k in required if k not in sd]
    if missing:
        raise ValueError(f"original AST state dict lacks {', '.join(missing)}")
    dim = int(sd["cls_token"].shape[-1])
    depths = {int(m[1]) for k in sd if (m := _ORIGINAL_BLOCK.match(k))}
    if not depths:
        raise ValueError("original AST state dict has no transformer blocks")
    num_heads = overrides.pop("num_heads", HEADS_BY_DIM.get(dim, heads_if_unknown))
    if num_heads is None:
        raise ValueError(f"cannot infer num_heads for embed dim {dim}: pass num_heads=...")
    patch = tuple(int(s) for s in sd["patch_embed.proj.weight"].shape[-2:])
    stride = _pair_of(overrides.pop("stride", (10, 10)))
    mel_bins = int(overrides.pop("num_mel_bins", 128))
    n_tokens = int(sd["pos_embed"].shape[1]) - 2
    freq_tokens = (mel_bins - patch[0]) // stride[0] + 1
    if freq_tokens < 1 or n_tokens % freq_tokens:
        raise ValueError(
            f"pos_embed has {n_tokens} patch tokens, which is not a multiple of the {freq_tokens} frequency "
            f"tokens of {mel_bins} mel bins at patch {patch} / stride {stride}: pass num_mel_bins / stride"
        )
    target_length = int(overrides.pop("target_length", _default_target_length(n_tokens // freq_tokens, patch[1], stride[1])))
    head = sd.get("head.fc.weight")
    fields: dict[str, Any] = dict(
        num_classes=int(head.shape[0]) if head is not None else 527,
        embed_dim=dim,
        depth=max(depths) + 1,
        num_heads=int(num_heads),
        mlp_ratio=int(sd["blocks.0.mlp.fc1.weight"].shape[0]) / dim,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        layer_norm_eps=1e-6,
        num_mel_bins=mel_bins,
        target_length=target_length,
        patch_size=patch,
        stride=stride,
    )
    cfg = ASTConfig(**{**fields, **overrides})
    if cfg.num_tokens != n_tokens:
        raise ValueError(f"config grid {cfg.grid} gives {cfg.num_tokens} tokens but pos_embed has {n_tokens}")
    return cfg


def load_original_ast_checkpoint(path: str | os.PathLike, heads_if_unknown: int | None = None,
                                 **config_overrides: Any) -> AST:
    """Our :class:`AST` (eval mode) from an original AST release file (``audioset_10_10_0.4593.pth``).

    Loaded with ``torch.load(weights_only=True)``; see :func:`original_ast_config` for what is
    inferred and what ``config_overrides`` (any :class:`ASTConfig` field) may set. A file without
    ``mlp_head`` loads everything but the head. Errors are ``ValueError`` naming the file.
    """
    p = Path(path)
    raw = load_state_dict_file(p)
    other = _other_layout(p, raw)
    if other:
        raise ValueError(f"{p}: {other}")
    try:
        sd = convert_original_ast_state_dict(raw)
        cfg = original_ast_config(sd, heads_if_unknown, **config_overrides)
        model = AST(cfg)
        missing = check_state_dict(sd, model.state_dict(), "checkpoint")
    except (TypeError, ValueError) as err:
        raise ValueError(f"{p}: {err}") from None
    if missing:
        log.info("%s: no mlp_head; the classifier is left as initialised", p)
    model.load_state_dict(sd, strict=not missing)
    log.info("loaded original AST checkpoint %s: %s", p, cfg)
    return model.eval()


def _other_layout(path: Path, state: Mapping[str, Any]) -> str:
    """What ``state``, read from ``path``, is when it is a known layout other than AST's release
    (and what to give instead); empty otherwise."""
    if any(key.startswith("audio_spectrogram_transformer.") for key in state):
        return (f"the weights of a Hugging Face AST folder: set model.init_from to the folder ({path.parent}, with "
                "its config.json)")
    if (path.parent / "model_config.json").is_file():
        return f"the weights of a coarse2fine run: set model.init_from to the run folder ({path.parent})"
    if any(key.startswith("model.") for key in state) and (path.parent / "config.yaml").is_file():
        return (f"the checkpoint of a coarse2fine run that has not finished ({path.parent}): continue it "
                f"(coarse2fine train CONFIG --out {path.parent}), then set model.init_from to its folder")
    return ""


# ============================================================================ ImageNet ViT / DeiT init

def _ast_resize_axis(grid: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    """AST's per-axis rule on ``grid`` [1, D, H, W]: centre-crop ``axis`` (2 or 3) when ``size`` is
    not larger, else bilinear interpolation along that axis only (align_corners=False)."""
    old = grid.shape[axis]
    if size == old:
        return grid
    if size < old:
        start = old // 2 - size // 2
        return grid.narrow(axis, start, size)
    new_hw = (size, grid.shape[3]) if axis == 2 else (grid.shape[2], size)
    return F.interpolate(grid, size=new_hw, mode="bilinear", align_corners=False)


def imagenet_pos_embed(
    pos_embed: torch.Tensor, num_prefix: int, src_grid: tuple[int, int], grid: tuple[int, int]
) -> torch.Tensor:
    """An ImageNet ``pos_embed`` [1, prefix + H*W, D] as ours [1, 2 + F*T, D], the AST way.

    The (H, W) grid becomes (freq, time): time (W) first, then frequency (H), each centre-cropped
    or bilinearly interpolated (:func:`_ast_resize_axis`). With one prefix token (plain ViT) the
    cls position is also used for the distillation token.
    """
    h, w = src_grid
    if pos_embed.shape[1] != num_prefix + h * w:
        raise ValueError(f"pos_embed has {pos_embed.shape[1]} tokens, expected {num_prefix} prefix + {h}x{w} grid")
    dim = pos_embed.shape[-1]
    prefix = pos_embed[:, :num_prefix].float()
    if num_prefix == 1:
        prefix = torch.cat([prefix, prefix], dim=1)
    body = pos_embed[:, num_prefix:].float().reshape(1, h, w, dim).permute(0, 3, 1, 2)
    body = _ast_resize_axis(body, 3, grid[1])
    body = _ast_resize_axis(body, 2, grid[0])
    body = body.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim)
    return torch.cat([prefix, body], dim=1).to(pos_embed.dtype)


def _infer_src_grid(n_grid: int) -> tuple[int, int]:
    """A square grid of ``n_grid`` tokens (ImageNet models are square); ``ValueError`` otherwise."""
    side = int(round(math.sqrt(n_grid)))
    if side * side != n_grid:
        raise ValueError(f"pos_embed grid of {n_grid} tokens is not square: pass src_grid=(H, W)")
    return side, side


def init_from_imagenet(
    model: AST,
    vit_state_dict: Mapping[str, torch.Tensor] | str | os.PathLike,
    src_grid: tuple[int, int] | None = None,
    patch_resize: PatchResize = "pi",
) -> list[str]:
    """Initialise ``model`` from ImageNet ViT/DeiT weights (timm names) the AST way; returns the
    names of our parameters that were set.

    ``vit_state_dict`` is a state dict or a local file (safetensors or a torch checkpoint, loaded
    with ``weights_only=True``). The patch-embedding kernel is summed over the RGB channels (then
    resized to our patch with ``patch_resize`` if it differs); ``pos_embed`` goes through
    :func:`imagenet_pos_embed` (``src_grid`` (H, W) defaults to the square grid its size implies);
    DeiT-distilled weights (cls + dist) give both tokens, plain ViT's cls is copied into ``dist_token``
    too. Blocks and the final norm are copied; ImageNet heads (``head``, ``head_dist``) and our
    ``head.*`` are not. Missing or mis-shaped weights raise ``ValueError``.
    """
    source = load_state_dict_file(vit_state_dict) if isinstance(vit_state_dict, (str, os.PathLike)) else vit_state_dict
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in source.items()}
    own = model.state_dict()
    missing = [k for k in ("cls_token", "pos_embed", "patch_embed.proj.weight") if k not in sd]
    if missing:
        raise ValueError(f"ImageNet state dict lacks {', '.join(missing)} (timm ViT/DeiT names expected)")
    num_prefix = 2 if "dist_token" in sd else 1
    pos = sd["pos_embed"]
    grid_src = tuple(src_grid) if src_grid is not None else _infer_src_grid(pos.shape[1] - num_prefix)

    new: dict[str, torch.Tensor] = {
        "cls_token": sd["cls_token"],
        "dist_token": sd["dist_token"] if num_prefix == 2 else sd["cls_token"],
        "pos_embed": imagenet_pos_embed(pos, num_prefix, grid_src, model.config.grid),  # type: ignore[arg-type]
    }
    kernel = sd["patch_embed.proj.weight"]
    kernel = kernel.sum(dim=1, keepdim=True) if kernel.shape[1] != 1 else kernel
    new["patch_embed.proj.weight"] = resize_patch_kernel(kernel, model.config.patch_size, patch_resize)
    if "patch_embed.proj.bias" in sd:
        new["patch_embed.proj.bias"] = sd["patch_embed.proj.bias"]
    body = [k for k in own if k.startswith(("blocks.", "norm."))]
    absent = [k for k in body if k not in sd]
    if absent:
        raise ValueError(f"ImageNet state dict lacks weights for: {', '.join(absent)}")
    new.update({k: sd[k] for k in body})
    extra_blocks = sorted(k for k in sd if k.startswith("blocks.") and k not in own)
    if extra_blocks:
        raise ValueError(f"ImageNet state dict has block weights the model lacks (depth?): {', '.join(extra_blocks[:6])}")
    bad = [f"{k} {list(v.shape)} vs {list(own[k].shape)}" for k, v in new.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError("shape mismatch (ImageNet vs ours): " + "; ".join(bad))
    ignored = sorted(k for k in sd if k not in new and k not in ("dist_token",))
    if ignored:
        log.info("ImageNet weights not used: %s", ", ".join(ignored))
    with torch.no_grad():
        for k, v in new.items():
            own[k].copy_(v.to(own[k].dtype))
    log.info("initialised %d tensors from ImageNet weights (%d prefix token(s), grid %s -> %s)",
             len(new), num_prefix, grid_src, model.config.grid)
    return sorted(new)
