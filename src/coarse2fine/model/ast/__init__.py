"""The Audio Spectrogram Transformer family: the model (:mod:`.model`), its Hugging Face interop
(:mod:`.hf`) and the original AST / ImageNet ViT releases (:mod:`.pretrained`), registered here
as ``model.arch: ast``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from coarse2fine.compression import InputGeometry
from coarse2fine.model.ast import hf, pretrained
from coarse2fine.model.ast.model import (
    AST,
    NUM_PREFIX_TOKENS,
    PRESETS,
    ASTConfig,
    Attention,
    Block,
    DropPath,
    Head,
    Mlp,
    PatchEmbed,
    PatchResize,
    adapt_state_dict,
    ast_config,
    ast_forward_flops,
    ast_training_flops,
    prefix_tokens,
)
from coarse2fine.model.base import C2FModel
from coarse2fine.model.registry import Arch, register
from coarse2fine.model.transfer import TransferSummary, named_classes, transfer_weights

__all__ = [
    "AST", "NUM_PREFIX_TOKENS", "PRESETS", "ASTConfig", "Attention", "Block", "DropPath", "Head", "Mlp", "PatchEmbed",
    "PatchResize", "adapt_state_dict", "ast_config", "ast_forward_flops", "ast_load_pretrained", "ast_make_config",
    "ast_training_flops", "prefix_tokens",
]


def _settings_pair(value: Any, default: tuple[int, int]) -> tuple[int, int]:
    return default if value is None else (int(value[0]), int(value[1]))


def ast_make_config(settings: Any, num_classes: int, geo: InputGeometry) -> ASTConfig:
    """AST at a phase's geometry: ``model.patch_size`` / ``model.stride`` (default 16 x 16,
    non-overlapping) are the full-resolution ones; the Patch method widens them in time."""
    patch = _settings_pair(settings.patch_size, (16, 16))
    stride = _settings_pair(settings.stride, patch)
    k = geo.time_patch_factor
    return ast_config(
        settings.preset, num_classes=num_classes, num_mel_bins=geo.mel_bins, target_length=geo.frames,
        patch_size=(patch[0], patch[1] * k), stride=(stride[0], stride[1] * k), time_patch_factor=k,
        time_factor=geo.time_factor, patch_resize=geo.patch_resize, drop_path_rate=settings.drop_path_rate,
        **dict(settings.overrides or {}),
    )


def ast_load_pretrained(model: C2FModel, source: str) -> TransferSummary | bool:
    """AST releases: a Hugging Face AST folder, an original AST ``.pth``, or ``imagenet:PATH``
    (what was taken, see :func:`~coarse2fine.model.transfer.transfer_weights`); False for others."""
    if source.startswith("imagenet:"):
        taken = pretrained.init_from_imagenet(model, source[len("imagenet:"):])
        return TransferSummary(source, len(taken), tuple(sorted(set(model.state_dict()) - set(taken))))
    path = Path(source)
    names = None
    if path.is_dir() and (path / "config.json").is_file():
        other, info = hf.load_hf_checkpoint(path)
        names = named_classes(info["labels"])
    elif path.is_file():
        other = pretrained.load_original_ast_checkpoint(path, heads_if_unknown=model.config.num_heads)
    else:
        return False
    return dataclasses.replace(transfer_weights(other, model, str(path)), source_classes=names)

register(Arch(
    name="ast", model_cls=AST, config_cls=ASTConfig, presets=PRESETS, make_config=ast_make_config,
    load_pretrained=ast_load_pretrained, export_hf=hf.export_hf_checkpoint,
    description="Audio Spectrogram Transformer (ViT over 16x16 log-mel patches, cls + distillation tokens)",
))
