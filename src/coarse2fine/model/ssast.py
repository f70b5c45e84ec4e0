"""SSAST (Gong et al., AAAI 2022): the self-supervised Audio Spectrogram Transformer, on our AST.

SSAST is AST's encoder (DeiT with cls + distillation tokens, learnable positional embedding)
pretrained by joint masked patch modelling (the objective is in :mod:`coarse2fine.objectives.masked_patch`). Two
variants, chosen by the patch size (``model.patch_size`` in a run config):

* **patch-based**: 16 x 16 patches, stride 16 (the default): 128 mel x 1024 frames -> 8 x 64 = 512 tokens;
* **frame-based**: 128 x 2 patches, stride 128 x 2: 1 x 512 = 512 tokens.

:class:`SSASTConfig` adds to :class:`~coarse2fine.model.ast.ASTConfig`:

* ``pretrain_heads``: a *pretraining* model has the learnable ``mask_embed`` [1, 1, D] and the two
  prediction MLPs ``cpredlayer`` (discriminative) and ``gpredlayer`` (generative), each
  Linear(D, D) -> ReLU -> Linear(D, pf * pt), and no classifier (``forward`` returns the pooled
  embedding); a *fine-tuning* model has the classifier ``head.{norm, fc}`` (SSAST's ``mlp_head``)
  and none of the pretraining parts. Either way every parameter is used (DDP needs no
  ``find_unused_parameters``).
* ``pooling``: ``"mean"`` (SSAST's default ``ft_avgtok``: mean of the patch tokens after the final
  norm, prefix tokens excluded) or ``"cls"`` (``ft_cls``: mean of cls and dist, like AST).

Coarse-to-fine: the geometry change is AST's (positional embedding interpolated along time); the
pretraining parts do not depend on the token count and are carried over unchanged. The Patch
compression method changes what a patch is (p x pR) and so what the heads predict: it is refused
for pretraining models (:data:`PATCH_METHOD_ERROR`), and supported for fine-tuning models.

Interop: the official checkpoints (:func:`load_official_ssast`) and export to Hugging Face AST
(:func:`export_ssast_hf`, patch-based only). :data:`SSAST_ARCH` is the registry entry.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from coarse2fine.compression import InputGeometry
from coarse2fine.model.ast import (
    AST,
    NUM_PREFIX_TOKENS,
    PRESETS,
    ASTConfig,
    ast_forward_flops,
    ast_training_flops,
    prefix_tokens,
)
from coarse2fine.model.base import C2FModel
from coarse2fine.model.registry import Arch, register

if TYPE_CHECKING:
    from coarse2fine.model.transfer import TransferSummary

log = logging.getLogger(__name__)

POOLINGS = ("mean", "cls")
PRETRAIN_PREFIXES = ("mask_embed", "cpredlayer.", "gpredlayer.")
PRETRAIN_TASKS = ("mpc", "mpg")  # discriminative (masked patch classification), generative (reconstruction)
PATCH_METHOD_ERROR = (
    "SSAST pretraining predicts pf x pt patches ({pf} x {pt}); the Patch method (time_patch_factor {k}) "
    "would make them {pf} x {wide} and change what the prediction heads predict: use fshift, avgpool or "
    "maxpool for SSAST pretraining (fine-tuning models, without pretraining heads, support the Patch method)"
)


@dataclass
class SSASTConfig(ASTConfig):
    """:class:`ASTConfig` plus ``pretrain_heads`` (pretraining parts instead of a classifier) and
    ``pooling`` (``"mean"`` of the patch tokens, or ``"cls"``: mean of cls and dist)."""

    pretrain_heads: bool = False
    pooling: str = "mean"

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        k = int(self.time_patch_factor)
        if self.pretrain_heads and k > 1:
            pf, wide = _pair_of(self.patch_size)
            raise ValueError(PATCH_METHOD_ERROR.format(k=k, pf=pf, pt=wide // k, wide=wide))
        super().__post_init__()

    @property
    def patch_values(self) -> int:
        """Values in one patch, pf * pt: what the prediction heads output (256 for 16 x 16 and 128 x 2)."""
        return self.patch_size[0] * self.patch_size[1]


def _pair_of(value: Any) -> tuple[int, int]:
    """``(a, a)`` for an int, else a 2-tuple of ints."""
    if isinstance(value, int):
        return value, value
    a, b = value
    return int(a), int(b)


def ssast_config(preset: str, **overrides: Any) -> SSASTConfig:
    """An :class:`SSASTConfig` from an AST size preset (base, small, tiny, micro) plus overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    return SSASTConfig(**{**PRESETS[preset], **overrides})


def ssast_make_config(settings: Any, num_classes: int, geo: InputGeometry) -> SSASTConfig:
    """SSAST at a phase's geometry from a run's model settings (duck-typed: ``preset``,
    ``patch_size`` (None: 16 x 16 patch-based; (128, 2): frame-based), ``stride`` (None: the
    patch), ``drop_path_rate``, ``overrides`` (e.g. ``pretrain_heads: true``, ``pooling: cls``)).

    A pretraining model must not overlap its patches (stride = patch, as SSAST requires) and
    cannot take the Patch method: both raise ``ValueError``.
    """
    patch = _pair_of(settings.patch_size) if settings.patch_size is not None else (16, 16)
    stride = _pair_of(settings.stride) if settings.stride is not None else patch
    overrides = dict(settings.overrides or {})
    if overrides.get("pretrain_heads") and stride != patch:
        raise ValueError(f"SSAST pretraining needs non-overlapping patches: stride {stride} must equal the patch {patch}")
    k = geo.time_patch_factor
    return ssast_config(
        settings.preset, num_classes=num_classes, num_mel_bins=geo.mel_bins, target_length=geo.frames,
        patch_size=(patch[0], patch[1] * k), stride=(stride[0], stride[1] * k), time_patch_factor=k,
        time_factor=geo.time_factor, patch_resize=geo.patch_resize, drop_path_rate=settings.drop_path_rate, **overrides,
    )


def _prediction_mlp(dim: int, out: int) -> nn.Sequential:
    """SSAST's ``cpredlayer`` / ``gpredlayer``: Linear(D, D) -> ReLU -> Linear(D, out)."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out))


class SSAST(AST):
    """SSAST: ``forward(x [B, frames, mel bins])`` gives logits (fine-tuning model) or the pooled
    embedding [B, D] (pretraining model); ``forward(x, mpc_mask=..., mpg_mask=...)`` runs the
    pretraining passes (:meth:`forward_pretrain`)."""

    arch = "ssast"
    config: SSASTConfig

    def __init__(self, config: SSASTConfig):
        with warnings.catch_warnings():  # a pretraining model's data has no classes: AST's head is 0-wide, then dropped
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
            super().__init__(config)
        if config.pretrain_heads:
            self.head = nn.Identity()  # no classifier in a pretraining model
            d = config.embed_dim
            self.mask_embed = nn.Parameter(torch.zeros(1, 1, d))
            self.cpredlayer = _prediction_mlp(d, config.patch_values)
            self.gpredlayer = _prediction_mlp(d, config.patch_values)
            self._init_pretrain_parts()

    def reset_parameters(self) -> None:
        """AST's initialisation; the pretraining parts as SSAST: ``mask_embed`` xavier-normal, the
        prediction MLPs PyTorch's Linear default."""
        super().reset_parameters()
        if getattr(self, "mask_embed", None) is not None:
            self._init_pretrain_parts()

    def _init_pretrain_parts(self) -> None:
        nn.init.xavier_normal_(self.mask_embed)
        for mlp in (self.cpredlayer, self.gpredlayer):
            for layer in mlp:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()

    @property
    def has_pretrain_heads(self) -> bool:
        return bool(self.config.pretrain_heads)

    def training_flops(self, batch_size: int = 1) -> int:
        """Forward + backward of ``forward(x)`` (see :func:`ssast_training_flops`); the pretraining
        step's count is the objective's (:func:`ssast_pretrain_flops`)."""
        return ssast_training_flops(self.config, batch_size)

    def forward_flops(self, batch_size: int = 1) -> int:
        return ssast_forward_flops(self.config, batch_size)

    # ------------------------------------------------------------------ encoder
    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embeddings [B, N, D] of input [B, frames, mel bins] (no positional embedding)."""
        self.check_input(x)
        return self.patch_embed(x.transpose(1, 2).unsqueeze(1))

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Prefix tokens, positional embedding, blocks, final norm: [B, N, D] -> [B, 2 + N, D]."""
        prefix = prefix_tokens((self.cls_token, self.dist_token), tokens.shape[0])
        h = self.pos_drop(torch.cat([prefix, tokens], dim=1) + self.pos_embed)
        for block in self.blocks:
            h = block(h)
        return self.norm(h)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All token outputs after the final LayerNorm: [B, 2 + N, D] (cls, dist, patches)."""
        return self.encode(self.embed_patches(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embedding [B, D]: mean of the patch tokens (``"mean"``) or of cls and dist (``"cls"``)."""
        h = self.forward_tokens(x)
        if self.config.pooling == "mean":
            return h[:, NUM_PREFIX_TOKENS:].mean(dim=1)
        return (h[:, 0] + h[:, 1]) / 2

    def forward(
        self, x: torch.Tensor, mpc_mask: torch.Tensor | None = None, mpg_mask: torch.Tensor | None = None
    ) -> Any:
        """Logits (or the pooled embedding of a pretraining model); with masks, the pretraining
        passes' ``{task: (predictions, targets)}`` (:meth:`forward_pretrain`). Going through
        ``forward`` keeps DistributedDataParallel's gradient synchronisation intact."""
        if mpc_mask is None and mpg_mask is None:
            return self.head(self.forward_features(x))
        return self.forward_pretrain(x, mpc_mask, mpg_mask)

    # ------------------------------------------------------------------ pretraining
    def patch_targets(self, x: torch.Tensor) -> torch.Tensor:
        """The input's patches [B, N, pf * pt] in token order (frequency-major, as the patch conv
        flattens them), each patch's values frequency-major: SSAST's ``nn.Unfold`` targets."""
        self.check_input(x)
        image = x.transpose(1, 2).unsqueeze(1)
        return F.unfold(image, kernel_size=self.config.patch_size, stride=self.config.stride).transpose(1, 2)

    def masked_pass(self, x: torch.Tensor, mask_index: torch.Tensor, head: nn.Module) -> torch.Tensor:
        """One masked encoder pass: the patch embeddings at ``mask_index`` [B, M] (after the patch
        conv, before the positional embedding) become ``mask_embed``; returns ``head`` applied to
        the outputs at the masked positions, [B, M, pf * pt]."""
        tokens = self.embed_patches(x)
        masked = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        masked.scatter_(1, mask_index, True)
        tokens = torch.where(masked.unsqueeze(-1), self.mask_embed.to(tokens.dtype), tokens)
        h = self.encode(tokens)[:, NUM_PREFIX_TOKENS:]
        picked = torch.gather(h, 1, mask_index.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        return head(picked)

    def forward_pretrain(
        self, x: torch.Tensor, mpc_mask: torch.Tensor | None, mpg_mask: torch.Tensor | None
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """SSAST's ``pretrain_mpc`` / ``pretrain_mpg``: a separate masked pass per given mask
        ([B, M] token indices), each with its own head. Returns ``{"mpc" | "mpg": (predictions
        [B, M, P], targets [B, M, P])}``; targets are the true patches, without gradient."""
        self.require_pretrain_heads()
        with torch.no_grad():
            patches = self.patch_targets(x)
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for task, mask, head in (("mpc", mpc_mask, self.cpredlayer), ("mpg", mpg_mask, self.gpredlayer)):
            if mask is None:
                continue
            mask = mask.to(device=x.device, dtype=torch.long)
            target = torch.gather(patches, 1, mask.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
            out[task] = (self.masked_pass(x, mask, head), target)
        return out

    def require_pretrain_heads(self) -> None:
        """Raise a clear error unless the model can run the pretraining objective as it is now."""
        cfg = self.config
        if not cfg.pretrain_heads:
            raise ValueError("this SSAST has no pretraining heads: build it with pretrain_heads=True "
                             "(model.overrides: {pretrain_heads: true}) to pretrain")
        out = self.cpredlayer[-1].out_features
        if cfg.patch_values != out or cfg.stride != cfg.patch_size:
            raise ValueError(
                f"SSAST pretraining needs non-overlapping patches of the heads' size ({out} values); the model "
                f"now has patch {cfg.patch_size}, stride {cfg.stride}"
            )


# ----------------------------------------------------------------------------- FLOPs
# Counted as FlopCounterMode counts them (see coarse2fine.model.flops).

def _encoder_config(cfg: SSASTConfig) -> SSASTConfig:
    """``cfg`` without a classifier (a pretraining model's forward ends at the pooled embedding)."""
    return dataclasses.replace(cfg, num_classes=0) if cfg.pretrain_heads else cfg


def ssast_forward_flops(cfg: SSASTConfig, batch_size: int = 1) -> int:
    """Forward FLOPs of ``forward(x)``: AST's; a pretraining model has no classifier. Mean pooling adds none."""
    return ast_forward_flops(_encoder_config(cfg), batch_size)


def ssast_training_flops(cfg: SSASTConfig, batch_size: int = 1) -> int:
    """Forward + backward FLOPs of ``forward(x)`` (AST's count; no classifier in a pretraining model)."""
    return ast_training_flops(_encoder_config(cfg), batch_size)


def prediction_head_flops(cfg: SSASTConfig, num_masked: int, batch_size: int = 1) -> int:
    """Forward FLOPs of one prediction MLP on ``num_masked`` tokens per clip: 2 M D (D + P)."""
    d = cfg.embed_dim
    return 2 * batch_size * num_masked * d * (d + cfg.patch_values)


def nce_similarity_flops(cfg: SSASTConfig, num_masked: int, batch_size: int = 1) -> int:
    """Forward FLOPs of the NCE similarity targets @ predictions^T per clip: 2 M^2 P."""
    return 2 * batch_size * num_masked * num_masked * cfg.patch_values


def ssast_pretrain_flops(
    cfg: SSASTConfig, batch_size: int, num_masked: int, tasks: Sequence[str] = PRETRAIN_TASKS
) -> int:
    """FLOPs of one pretraining step (forward + backward) with ``num_masked`` masked patches per clip.

    Per pass (one per task): the encoder's forward + backward (:func:`ssast_training_flops` without
    a classifier) plus the prediction MLP on the masked tokens, 3x its forward (input and weight
    gradients). The discriminative pass adds the similarity matmul, forward and the gradient with
    respect to the predictions only (the targets need none): 2x its forward.
    """
    unknown = set(tasks) - set(PRETRAIN_TASKS)
    if unknown:
        raise ValueError(f"unknown pretraining task(s) {sorted(unknown)}; choose from {', '.join(PRETRAIN_TASKS)}")
    enc = ast_training_flops(dataclasses.replace(cfg, num_classes=0), batch_size)
    total = 0
    for task in tasks:
        total += enc + 3 * prediction_head_flops(cfg, num_masked, batch_size)
        if task == "mpc":
            total += 2 * nce_similarity_flops(cfg, num_masked, batch_size)
    return total


# ----------------------------------------------------------------------------- official checkpoints

_OFFICIAL_SIZE_KEYS = ("p_input_fdim", "p_input_tdim")


def convert_official_state_dict(
    sd: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], tuple[int, int] | None]:
    """An official SSAST state dict (``torch.save`` of the ``DataParallel`` model) in our names.

    ``module.`` is optional. ``v.*`` (timm DeiT names) lose ``v.``, the unused ImageNet heads
    ``v.head`` / ``v.head_dist`` are dropped, ``mlp_head.0`` / ``.1`` (fine-tuned models) become
    ``head.norm`` / ``head.fc``; ``mask_embed``, ``cpredlayer.{0,2}`` and ``gpredlayer.{0,2}`` keep
    their names. The pretraining input size is stored as ``p_input_fdim`` / ``p_input_tdim``
    (0-dim parameters; pretraining checkpoints only) and returned as ``(mel bins, frames)``,
    else None. Unknown keys raise ``ValueError``.
    """
    from coarse2fine.model.ast.pretrained import convert_original_ast_state_dict

    encoder: dict[str, torch.Tensor] = {}
    extra: dict[str, torch.Tensor] = {}
    sizes: dict[str, int] = {}
    for raw_key, value in sd.items():
        key = raw_key[len("module."):] if raw_key.startswith("module.") else raw_key
        if key in _OFFICIAL_SIZE_KEYS:
            sizes[key] = int(value.item())
        elif key == "mask_embed" or key.startswith(("cpredlayer.", "gpredlayer.")):
            extra[key] = value
        else:
            encoder[raw_key] = value
    out = convert_original_ast_state_dict(encoder)
    if "cls_token" in out and "dist_token" not in out:
        raise ValueError("the checkpoint has one prefix token (SSAST base_nokd); only cls + dist models are supported")
    out.update(extra)
    size = (sizes["p_input_fdim"], sizes["p_input_tdim"]) if len(sizes) == 2 else None
    return out, size


def official_ssast_config(
    sd: Mapping[str, torch.Tensor], input_size: tuple[int, int] | None, pretrain_heads: bool, **overrides: Any
) -> SSASTConfig:
    """:class:`SSASTConfig` of a converted official state dict (:func:`convert_official_state_dict`).

    Sizes come from the weights (:func:`~coarse2fine.model.ast.pretrained.original_ast_config`); the
    patch from the kernel. A pretraining checkpoint stores its input size, and its stride is the
    patch. A fine-tuned one stores neither: ``num_mel_bins`` defaults to 128 and ``stride`` to
    SSAST's fine-tuning strides (10 x 10 for square patches, (pf, 1) for frame-based), with the
    input length inferred from the positional embedding; pass any of them in ``overrides``.
    """
    from coarse2fine.model.ast.pretrained import original_ast_config

    pf, pt = (int(s) for s in sd["patch_embed.proj.weight"].shape[-2:])
    if input_size is not None:
        defaults: dict[str, Any] = dict(num_mel_bins=input_size[0], target_length=input_size[1], stride=(pf, pt))
    else:
        defaults = dict(num_mel_bins=128, stride=(pf, 1) if pf == overrides.get("num_mel_bins", 128) else (10, 10))
    args = {**defaults, **overrides}
    pooling = args.pop("pooling", "mean")
    encoder = {k: v for k, v in sd.items() if not k.startswith(PRETRAIN_PREFIXES)}
    base = original_ast_config(encoder, **args)
    return SSASTConfig(**dataclasses.asdict(base), pretrain_heads=pretrain_heads, pooling=pooling)


def _check_official_weights(sd: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Missing keys of ``sd`` for a model whose state dict is ``own``; only the classifier and the
    pretraining parts may be missing. Extra keys and shape mismatches raise ``ValueError``."""
    from coarse2fine.model.ast.hf import check_state_dict

    return check_state_dict(sd, own, source, may_miss=("head.",) + PRETRAIN_PREFIXES)


def model_from_official_state_dict(
    raw: Mapping[str, torch.Tensor], pretrain_heads: bool | None = None, source: str = "state dict", **overrides: Any
) -> SSAST:
    """Our :class:`SSAST` (eval mode) from an official SSAST state dict.

    ``pretrain_heads``: None keeps what the checkpoint has (a pretraining checkpoint gives a
    pretraining model); False drops ``mask_embed`` and the prediction heads (a fine-tuning model,
    classifier as initialised unless the checkpoint has ``mlp_head``); True keeps them, initialising
    any the checkpoint lacks. ``overrides``: :class:`SSASTConfig` fields (see :func:`official_ssast_config`).
    """
    sd, size = convert_official_state_dict(raw)
    has_heads = any(k.startswith(PRETRAIN_PREFIXES) for k in sd)
    heads = has_heads if pretrain_heads is None else bool(pretrain_heads)
    if not heads:
        sd = {k: v for k, v in sd.items() if not k.startswith(PRETRAIN_PREFIXES)}
    else:
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}  # a pretraining model has no classifier
    model = SSAST(official_ssast_config(sd, size, heads, **overrides))
    missing = _check_official_weights(sd, model.state_dict(), source)
    if missing:
        log.info("%s: left as initialised: %s", source, ", ".join(missing))
    model.load_state_dict(sd, strict=False)
    log.info("loaded official SSAST %s: %s", source, model.config)
    return model.eval()


def load_official_ssast(path: str | os.PathLike, pretrain_heads: bool | None = None, **overrides: Any) -> SSAST:
    """Our :class:`SSAST` from an official SSAST checkpoint file (e.g. ``SSAST-Base-Patch-400.pth``),
    read with ``torch.load(weights_only=True)``; see :func:`model_from_official_state_dict`.
    Errors are ``ValueError`` naming the file."""
    from coarse2fine.model.ast.hf import load_state_dict_file

    p = Path(path)
    raw = load_state_dict_file(p)
    try:
        return model_from_official_state_dict(raw, pretrain_heads, str(p), **overrides)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{p}: {err}") from None


def _full_patch(cfg: ASTConfig) -> tuple[int, int]:
    """The full-resolution patch of ``cfg`` (the Patch method's coarse phases widen it in time)."""
    return cfg.patch_size[0], cfg.patch_size[1] // cfg.time_patch_factor


def ssast_load_pretrained(model: C2FModel, source: str) -> TransferSummary | bool:
    """Initialise ``model`` from an official SSAST checkpoint file; False when ``source`` is not a
    file. The checkpoint is moved to ``model``'s geometry (positional embedding interpolated)
    by :func:`~coarse2fine.model.transfer.transfer_weights`; its pretraining parts are kept only
    when ``model`` has them. The patch shape must be the pretraining one (as SSAST requires).
    The attention heads are not in the weights: the DeiT count for the width (tiny, small, base),
    else ``model``'s."""
    from coarse2fine.model.ast.hf import load_state_dict_file
    from coarse2fine.model.ast.pretrained import HEADS_BY_DIM
    from coarse2fine.model.transfer import transfer_weights

    path = Path(source)
    if not path.is_file():
        return False
    raw = load_state_dict_file(path)
    dim = next((int(v.shape[-1]) for k, v in raw.items() if k.endswith("v.cls_token")), None)
    heads = HEADS_BY_DIM.get(dim, model.config.num_heads) if dim is not None else model.config.num_heads
    try:
        other = model_from_official_state_dict(
            raw, bool(getattr(model.config, "pretrain_heads", False)), str(path), num_heads=heads)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None
    if _full_patch(other.config) != _full_patch(model.config):
        raise ValueError(
            f"{path}: SSAST fine-tuning must keep the pretraining patch shape {other.config.patch_size}; "
            f"the model's is {_full_patch(model.config)}"
        )
    if other.config.num_heads != model.config.num_heads:
        log.warning("%s: %d attention heads (DeiT's for width %d); the model has %d",
                    path, other.config.num_heads, other.config.embed_dim, model.config.num_heads)
    return transfer_weights(other, model, str(path))


# ----------------------------------------------------------------------------- Hugging Face

def export_ssast_hf(
    model: SSAST,
    directory: str | os.PathLike,
    id2label: Mapping[int, str] | Sequence[str] | None = None,
    **kwargs: Any,
) -> Path:
    """Write a patch-based SSAST as a Hugging Face ``ASTForAudioClassification`` folder
    (:func:`~coarse2fine.model.ast.hf.export_hf_checkpoint`; ``kwargs`` go to it).

    Hugging Face AST takes square patches only, so frame-based SSAST (128 x 2) raises
    ``ValueError``. Hugging Face AST pools ``(cls + dist) / 2``, while SSAST's default pools the
    mean of the patch tokens: for a ``pooling="mean"`` model the exported encoder (hidden states)
    is identical but the classifier sees another pooled vector, so its logits differ (a warning is
    logged); ``pooling="cls"`` models export exactly. A pretraining model has no classifier: the
    exported one is freshly initialised (warning); ``mask_embed`` and the prediction heads are not exported.
    """
    from coarse2fine.model.ast.hf import export_hf_checkpoint

    cfg = model.config
    pf, pt = cfg.patch_size
    if pf != pt:
        raise ValueError(
            f"Hugging Face AST takes square patches only; this SSAST has {pf} x {pt} (freq x time) patches "
            "(frame-based SSAST, or a Patch-method coarse phase) and cannot be exported to it"
        )
    if cfg.pooling == "mean":
        log.warning("Hugging Face AST pools (cls + dist) / 2, this SSAST the mean of its patch tokens: the exported "
                    "encoder is identical but its classification logits are not; use the hidden states")
    names = {f.name for f in dataclasses.fields(ASTConfig)}
    plain = AST(ASTConfig(**{k: v for k, v in dataclasses.asdict(cfg).items() if k in names}))
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith(PRETRAIN_PREFIXES)}
    missing = plain.load_state_dict(weights, strict=False).missing_keys
    if missing:
        log.warning("this SSAST has no classifier (a pretraining model): the exported one is randomly initialised")
    return export_hf_checkpoint(plain.eval(), directory, id2label=id2label, **kwargs)


SSAST_ARCH = register(Arch(
    name="ssast", model_cls=SSAST, config_cls=SSASTConfig, presets=PRESETS, make_config=ssast_make_config,
    load_pretrained=ssast_load_pretrained, export_hf=export_ssast_hf,
    description="Self-supervised AST (joint masked patch modelling; patch-based 16x16 or frame-based 128x2)",
))
