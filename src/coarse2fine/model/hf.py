"""Weights from Hugging Face ``ASTForAudioClassification`` / ``ASTModel`` into our :class:`AST`.

Both key layouts are understood: the one of the checkpoints on the Hub and of transformers 4.x
(``encoder.layer.N.attention.attention.{query,key,value}``, ``attention.output.dense``,
``intermediate.dense``, ``output.dense``) and the one transformers 5.x models produce
(``layers.N.attention.{q,k,v,o}_proj``, ``mlp.fc1``, ``mlp.fc2``). The
``audio_spectrogram_transformer.`` prefix is optional (an ``ASTModel`` state dict has none, and
then has no classifier either: our head is left as it is). Separate query/key/value projections
are concatenated into our fused ``qkv``. Transformers itself is not imported.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Mapping

import torch

from coarse2fine.model.ast import AST, ASTConfig

log = logging.getLogger(__name__)

_PREFIX = "audio_spectrogram_transformer."

# HF name (without the model prefix) -> our name, for everything outside the blocks.
_TOP_LEVEL = {
    "embeddings.cls_token": "cls_token",
    "embeddings.distillation_token": "dist_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "classifier.layernorm.weight": "head.norm.weight",
    "classifier.layernorm.bias": "head.norm.bias",
    "classifier.dense.weight": "head.fc.weight",
    "classifier.dense.bias": "head.fc.bias",
}

# Per-block HF module name -> our module name (both layouts); q/k/v are fused separately.
_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",  # 4.x / Hub
    "attention.o_proj": "attn.proj",  # 5.x
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_QKV = {
    "attention.attention.query": "q", "attention.attention.key": "k", "attention.attention.value": "v",
    "attention.q_proj": "q", "attention.k_proj": "k", "attention.v_proj": "v",
}
_BLOCK_KEY = re.compile(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)$")


def _strip_prefix(key: str) -> str:
    return key[len(_PREFIX):] if key.startswith(_PREFIX) else key


def convert_hf_state_dict(hf_state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an HF AST state dict to our parameter names, fusing q/k/v into ``qkv``.

    Raises ``ValueError`` for keys it does not know or for incomplete q/k/v triples.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for raw_key, value in hf_state_dict.items():
        key = _strip_prefix(raw_key)
        if key in _TOP_LEVEL:
            out[_TOP_LEVEL[key]] = value
            continue
        match = _BLOCK_KEY.match(key)
        if match is None:
            unknown.append(raw_key)
            continue
        idx, module, kind = int(match[1]), match[2], match[3]
        if module in _BLOCK:
            out[f"blocks.{idx}.{_BLOCK[module]}.{kind}"] = value
        elif module in _QKV:
            qkv.setdefault((idx, kind), {})[_QKV[module]] = value
        else:
            unknown.append(raw_key)
    if unknown:
        raise ValueError(f"unrecognised Hugging Face AST key(s): {', '.join(sorted(unknown))}")
    for (idx, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"layer {idx}: incomplete query/key/value {kind} (have {sorted(parts)})")
        out[f"blocks.{idx}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def ast_config_from_hf(hf_config: Any, **overrides: Any) -> ASTConfig:
    """Our :class:`ASTConfig` for a Hugging Face ``ASTConfig`` (object or its ``to_dict()``).

    HF's ``hidden_act`` must be exact ``"gelu"`` (the only activation our MLP has).
    """
    get = hf_config.get if isinstance(hf_config, Mapping) else lambda k, d=None: getattr(hf_config, k, d)
    act = get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"hidden_act {act!r} is not supported (only exact 'gelu')")
    hidden, patch = int(get("hidden_size")), int(get("patch_size"))
    id2label = get("id2label") or {}
    fields = dict(
        num_classes=int(get("num_labels", None) or len(id2label) or 2),
        embed_dim=hidden,
        depth=int(get("num_hidden_layers")),
        num_heads=int(get("num_attention_heads")),
        mlp_ratio=int(get("intermediate_size")) / hidden,
        qkv_bias=bool(get("qkv_bias", True)),
        layer_norm_eps=float(get("layer_norm_eps")),
        num_mel_bins=int(get("num_mel_bins")),
        target_length=int(get("max_length")),
        patch_size=(patch, patch),
        stride=(int(get("frequency_stride")), int(get("time_stride"))),
        drop_rate=float(get("hidden_dropout_prob", 0.0)),
        attn_drop_rate=float(get("attention_probs_dropout_prob", 0.0)),
    )
    return ASTConfig(**{**fields, **overrides})


def load_hf_state_dict(model: AST, hf_state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load Hugging Face AST weights into ``model`` (geometry and sizes must match).

    A state dict without a classifier (an ``ASTModel``) loads everything but ``head.*``.
    Shape mismatches (e.g. another token grid: use :meth:`AST.set_geometry` afterwards, not before)
    raise ``ValueError`` naming the parameters.
    """
    ours = convert_hf_state_dict(hf_state_dict)
    own = model.state_dict()
    missing = sorted(set(own) - set(ours))
    if missing and not all(k.startswith("head.") for k in missing):
        raise ValueError(f"Hugging Face state dict lacks weights for: {', '.join(missing)}")
    extra = sorted(set(ours) - set(own))
    if extra:
        raise ValueError(f"Hugging Face state dict has weights the model lacks: {', '.join(extra)}")
    bad = [f"{k} {list(v.shape)} vs {list(own[k].shape)}" for k, v in ours.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError("shape mismatch (HF vs ours): " + "; ".join(bad))
    if missing:
        log.info("no classifier in the Hugging Face weights; head left as initialised")
    model.load_state_dict(ours, strict=not missing)
