"""Hugging Face AST interop, both ways: weights, config and preprocessor settings.

Hugging Face ``ASTForAudioClassification`` / ``ASTModel`` weights into our :class:`AST`: both key
layouts are understood: the one of the checkpoints on the Hub and of transformers 4.x
(``encoder.layer.N.attention.attention.{query,key,value}``, ``attention.output.dense``,
``intermediate.dense``, ``output.dense``) and the one transformers 5.x models produce
(``layers.N.attention.{q,k,v,o}_proj``, ``mlp.fc1``, ``mlp.fc2``). The
``audio_spectrogram_transformer.`` prefix is optional (an ``ASTModel`` state dict has none, and
then has no classifier either: our head is left as it is). Separate query/key/value projections
are concatenated into our fused ``qkv``. :func:`load_hf_checkpoint` reads a whole model folder.

:func:`export_hf_checkpoint` writes the other way, in the Hub (4.x) layout that every
transformers version loads. The original AST release and ImageNet weights are in
:mod:`coarse2fine.model.ast.pretrained`.

A transformers ``ASTForAudioClassification`` can also be trained coarse to fine in place:
:func:`hf_set_geometry` moves it between phases as our AST moves (positional embedding
interpolated, patch conv resized), :func:`hf_training_flops` counts its step, and
:func:`hf_state_dict_for` renames weights of either key layout to the model's own (what
:func:`coarse2fine.core.carry` and :mod:`coarse2fine.integrations.hf` use). Transformers itself
is not imported; every file is read without unpickling code.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors.torch import load_file as load_safetensors

from coarse2fine.atomic import save_safetensors, write_json
from coarse2fine.compression import InputGeometry
from coarse2fine.features import FbankConfig, FeatureSpec
from coarse2fine.model.ast.model import AST, ASTConfig, ast_training_flops
from coarse2fine.model.patch_embed import resize_patch_kernel
from coarse2fine.model.pos_embed import resample_pos_embed

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


def check_state_dict(sd: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], source: str,
                     may_miss: tuple[str, ...] = ("head.",)) -> list[str]:
    """Check converted weights ``sd`` against a model's ``own`` state dict; returns the missing
    keys, which may only be those starting with ``may_miss`` (the classifier head). Raises
    ``ValueError`` otherwise."""
    missing = sorted(set(own) - set(sd))
    bad_missing = [k for k in missing if not k.startswith(may_miss)]
    if bad_missing:
        raise ValueError(f"{source} lacks weights for: {', '.join(bad_missing)}")
    extra = sorted(set(sd) - set(own))
    if extra:
        raise ValueError(f"{source} has weights the model lacks: {', '.join(extra)}")
    bad = [f"{k} {list(v.shape)} vs {list(own[k].shape)}" for k, v in sd.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError(f"shape mismatch ({source} vs model): " + "; ".join(bad))
    return missing


def load_hf_state_dict(model: AST, hf_state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load Hugging Face AST weights into ``model`` (geometry and sizes must match).

    A state dict without a classifier (an ``ASTModel``) loads everything but ``head.*``.
    Shape mismatches (e.g. another token grid: use :meth:`AST.set_patch_geometry` afterwards, not before)
    raise ``ValueError`` naming the parameters.
    """
    ours = convert_hf_state_dict(hf_state_dict)
    missing = check_state_dict(ours, model.state_dict(), "Hugging Face state dict")
    if missing:
        log.info("no classifier in the Hugging Face weights; head left as initialised")
    model.load_state_dict(ours, strict=not missing)


# ============================================================================ our -> Hugging Face

HF_MODEL_TYPE = "audio-spectrogram-transformer"
AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974

# Our per-block module -> the Hub / transformers 4.x module (q/k/v are split separately).
_BLOCK_TO_HF = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
# The same in the layout transformers 5.x modules have (``layers.N.attention.{q,k,v,o}_proj``, ``mlp``).
_BLOCK_TO_HF_V5 = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.o_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_LAYOUTS = {
    "hub": ("encoder.layer", _BLOCK_TO_HF, ("attention.attention.query", "attention.attention.key", "attention.attention.value")),
    "v5": ("layers", _BLOCK_TO_HF_V5, ("attention.q_proj", "attention.k_proj", "attention.v_proj")),
}
_OUR_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")


def to_hf_state_dict(state_dict: Mapping[str, torch.Tensor], layout: str = "hub") -> dict[str, torch.Tensor]:
    """Our AST ``state_dict`` in the ``ASTForAudioClassification`` key ``layout``: ``hub`` (the Hub /
    transformers 4.x names, what every transformers version loads) or ``v5`` (the module names of
    transformers 5.x).

    The fused ``qkv`` is split into query, key and value; every tensor is a contiguous CPU copy
    (safetensors refuses tensors that share memory). Unknown keys raise ``ValueError``.
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"unknown Hugging Face key layout {layout!r}; choose one of {', '.join(_LAYOUTS)}")
    blocks, block_names, qkv_names = _LAYOUTS[layout]
    inverse_top = {ours: hf for hf, ours in _TOP_LEVEL.items()}
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        value = value.detach().to("cpu")
        if key in inverse_top:
            hf_key = inverse_top[key]
            name = hf_key if hf_key.startswith("classifier.") else _PREFIX + hf_key
            out[name] = value.clone().contiguous()
            continue
        match = _OUR_BLOCK_KEY.match(key)
        if match is None:
            unknown.append(key)
            continue
        idx, module, kind = match[1], match[2], match[3]
        base = f"{_PREFIX}{blocks}.{idx}."
        if module == "attn.qkv":
            for name, chunk in zip(qkv_names, value.chunk(3, dim=0)):
                out[f"{base}{name}.{kind}"] = chunk.clone().contiguous()
        elif module in block_names:
            out[f"{base}{block_names[module]}.{kind}"] = value.clone().contiguous()
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"cannot map AST key(s) to Hugging Face names: {', '.join(sorted(unknown))}")
    return out


def _id2label_dict(id2label: Mapping[int, str] | Sequence[str] | None, num_classes: int) -> dict[int, str]:
    """``{index: name}`` for every class: from a mapping, a list of names, or ``class_i`` defaults."""
    if id2label is None:
        return {i: f"class_{i}" for i in range(num_classes)}
    if isinstance(id2label, Mapping):
        names = {int(k): str(v) for k, v in id2label.items()}
    else:
        names = {i: str(v) for i, v in enumerate(id2label)}
    if sorted(names) != list(range(num_classes)):
        raise ValueError(f"id2label must name classes 0..{num_classes - 1} (the model has {num_classes}), got {len(names)}")
    return names


def hf_config_dict(model_config: ASTConfig, id2label: Mapping[int, str], multilabel: bool = False) -> dict[str, Any]:
    """The ``config.json`` contents of an ``ASTForAudioClassification`` equivalent to ``model_config``;
    ``problem_type`` says whether its scores are sigmoids (``multilabel``: a model trained with
    binary cross-entropy, as on AudioSet) or a softmax, which is what transformers' pipelines and
    loss then apply.

    Hugging Face AST patches are square (one ``patch_size``); other shapes raise ``ValueError``.
    """
    cfg = model_config
    if cfg.pos_embed != "grid":
        raise ValueError("Hugging Face AST has one positional embedding per patch; this model has PaSST's "
                         "disentangled time and frequency embeddings (patchout) and cannot be exported to it")
    pf, pt = cfg.patch_size
    if pf != pt:
        raise ValueError(
            f"Hugging Face AST supports square patches only (one patch_size); this model has "
            f"{pf}x{pt} (freq x time) patches. Export a model at full resolution (after its last "
            "coarse-to-fine phase) or with a square patch."
        )
    intermediate = cfg.embed_dim * cfg.mlp_ratio
    if intermediate != int(intermediate):
        raise ValueError(f"embed_dim {cfg.embed_dim} x mlp_ratio {cfg.mlp_ratio} is not an integer intermediate_size")
    if cfg.drop_path_rate > 0:
        log.info("drop_path_rate %g is not part of Hugging Face AST (training only; inference unaffected)", cfg.drop_path_rate)
    return {
        "architectures": ["ASTForAudioClassification"],
        "model_type": HF_MODEL_TYPE,
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": int(intermediate),
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.drop_rate,
        "attention_probs_dropout_prob": cfg.attn_drop_rate,
        "initializer_range": 0.02,
        "layer_norm_eps": cfg.layer_norm_eps,
        "patch_size": pf,
        "qkv_bias": cfg.qkv_bias,
        "frequency_stride": cfg.stride[0],
        "time_stride": cfg.stride[1],
        "max_length": cfg.target_length,
        "num_mel_bins": cfg.num_mel_bins,
        "id2label": {str(i): name for i, name in sorted(id2label.items())},
        "label2id": {name: i for i, name in sorted(id2label.items())},
        "problem_type": "multi_label_classification" if multilabel else "single_label_classification",
    }


def hf_preprocessor_dict(
    num_mel_bins: int, max_length: int, mean: float, std: float, sample_rate: int = 16000
) -> dict[str, Any]:
    """``preprocessor_config.json`` contents for transformers' ``ASTFeatureExtractor``."""
    return {
        "feature_extractor_type": "ASTFeatureExtractor",
        "feature_size": 1,
        "sampling_rate": int(sample_rate),
        "num_mel_bins": int(num_mel_bins),
        "max_length": int(max_length),
        "padding_side": "right",
        "padding_value": 0.0,
        "do_normalize": True,
        "mean": float(mean),
        "std": float(std),
        "return_attention_mask": False,
    }


def _check_hf_features(spec: FeatureSpec, model_config: ASTConfig) -> None:
    """Warn where ``spec`` differs from what ``ASTFeatureExtractor`` computes (25/10 ms Kaldi fbank)."""
    fb = spec.frontend
    if getattr(fb, "kind", "") != "fbank":
        raise ValueError(f"Hugging Face AST computes Kaldi fbank features; this model was trained on {fb.kind!r} features")
    if (fb.frame_length_ms, fb.frame_shift_ms) != (25.0, 10.0) or fb.window != "hanning":
        log.warning(
            "features use a %g ms window / %g ms shift (%s); ASTFeatureExtractor always uses 25 ms / 10 ms "
            "hanning: Hugging Face users will feed the model different features",
            fb.frame_length_ms, fb.frame_shift_ms, fb.window,
        )
    if spec.target_length != model_config.target_length or fb.num_mel_bins != model_config.num_mel_bins:
        raise ValueError(
            f"feature spec ({spec.target_length} frames x {fb.num_mel_bins} bins) does not match the model "
            f"({model_config.target_length} x {model_config.num_mel_bins})"
        )


def export_hf_checkpoint(
    model: AST,
    directory: str | os.PathLike,
    id2label: Mapping[int, str] | Sequence[str] | None = None,
    feature_mean: float = AUDIOSET_MEAN,
    feature_std: float = AUDIOSET_STD,
    sample_rate: int = 16000,
    feature_spec: FeatureSpec | None = None,
    multilabel: bool = False,
    clip_seconds: float | None = None,
    pad: str = "zeros",
) -> Path:
    """Write ``model`` as a Hugging Face ``ASTForAudioClassification`` folder; returns the folder.

    Files (each written atomically): ``model.safetensors`` in the Hub / transformers 4.x key layout
    (what Hub checkpoints use; transformers 5.x converts it on load), ``preprocessor_config.json``
    (``ASTFeatureExtractor`` with ``feature_mean`` / ``feature_std``) and ``config.json`` last.
    ``id2label``: a ``{index: name}`` mapping or a list of names (default ``class_i``).
    ``feature_spec``, if given, supplies mean, std and sample rate instead and is checked against
    the model and against what ``ASTFeatureExtractor`` computes (a warning where it differs).
    ``multilabel``: the model was trained multi-label (sigmoid scores; ``problem_type`` in
    ``config.json``). ``clip_seconds`` / ``pad``: how training cut and padded its clips
    (``data.clip_seconds``, ``data.pad``): ``ASTFeatureExtractor`` pads a short clip's features
    with 0 instead, which a warning says, with what to do. Raises ``ValueError`` for models
    Hugging Face AST cannot express (non-square patches).
    """
    out = Path(directory)
    cfg = model.config
    names = _id2label_dict(id2label, cfg.num_classes)
    config = hf_config_dict(cfg, names, multilabel)  # validates before anything is written
    if feature_spec is not None:
        _check_hf_features(feature_spec, cfg)
        feature_mean, feature_std = feature_spec.mean, feature_spec.std
        sample_rate = feature_spec.frontend.sample_rate
    if clip_seconds is not None:
        how = "with silence" if pad == "zeros" else "by repeating them"
        log.warning("the run pads any clip shorter than %g s %s (data.pad: %s) before its features; transformers' "
                    "ASTFeatureExtractor pads a short clip's features with 0 instead, so such clips score otherwise "
                    "than in training: pad the audio to %g s (%s) before the feature extractor, or score with "
                    "`coarse2fine predict` on the run", clip_seconds, how, pad, clip_seconds,
                    "zeros" if pad == "zeros" else "repeated")
    tensors = to_hf_state_dict(model.state_dict())
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(out / "model.safetensors", tensors, metadata={"format": "pt"})
    write_json(out / "preprocessor_config.json",
               hf_preprocessor_dict(cfg.num_mel_bins, cfg.target_length, feature_mean, feature_std, sample_rate))
    write_json(out / "config.json", config)
    log.info("exported Hugging Face AST checkpoint to %s (%d tensors, %d classes)", out, len(tensors), cfg.num_classes)
    return out


# ============================================================================ Hugging Face folder -> ours

def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ``ValueError`` naming the file when missing or invalid."""
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a torch checkpoint (``weights_only=True``: no code runs).

    A torch checkpoint that wraps its weights in ``{"state_dict": ...}`` or ``{"model": ...}`` is
    unwrapped. Errors are ``ValueError`` naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: file not found")
    text = _text_kind(p)
    if text:
        raise ValueError(f"{p}: {text}, not a file of weights")
    try:
        if p.suffix == ".safetensors":
            sd: Any = load_safetensors(str(p))
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch's message advises weights_only=False, which nothing here does
        reason = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()[0].split(". ")[0]
        raise ValueError(f"{p}: not a file of tensors that loads without running code from it ({reason}): a torch "
                         "checkpoint holding other objects too can be saved as its state dict alone, "
                         "torch.save(state_dict, 'weights.pth'), where you trust the file") from None
    except Exception as err:  # noqa: BLE001 - safetensors, pickle and zip errors have no common base
        raise ValueError(f"{p}: cannot load weights ({type(err).__name__}: {err})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, Mapping) and isinstance(sd.get(wrapper), Mapping):
            sd = sd[wrapper]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{p}: expected a mapping of parameter names to tensors")
    return dict(sd)


def _text_kind(path: Path) -> str:
    """What a text file given as weights is (``a JSON file``, ``a CSV or text file``), or empty for
    anything else: weights files start with binary headers (safetensors' length, a zip's PK)."""
    with path.open("rb") as f:
        head = f.read(512)
    if not head or b"\x00" in head:
        return ""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not only a character cut at the end of the sample
            return ""
        text = head[:err.start].decode("utf-8")
    text = text.lstrip("\ufeff \t\r\n")
    if not text or not all(c.isprintable() or c in "\t\r\n" for c in text):
        return ""
    if text[0] in "{[":
        return "a JSON file"
    return "a YAML file" if path.suffix in (".yaml", ".yml") else "a CSV or text file"


def _hf_weights(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The state dict of a Hugging Face folder (single or sharded safetensors, else pytorch_model.bin)."""
    single = directory / "model.safetensors"
    if single.is_file():
        return load_state_dict_file(single), single
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: no weight_map")
        sd: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            sd.update(load_state_dict_file(directory / shard))
        return sd, index
    legacy = directory / "pytorch_model.bin"
    if legacy.is_file():
        return load_state_dict_file(legacy), legacy
    raise ValueError(f"{directory}: no weights (model.safetensors, model.safetensors.index.json or pytorch_model.bin)")


def _labels_from_config(config: Mapping[str, Any], num_classes: int, where: Path) -> dict[int, str]:
    """``{index: name}`` from a config's id2label (JSON keys are strings); ``class_i`` where absent."""
    raw = config.get("id2label") or {}
    try:
        names = {int(k): str(v) for k, v in raw.items()}
    except (AttributeError, ValueError):
        raise ValueError(f"{where}: id2label must map integer ids to names") from None
    return {i: names.get(i, f"class_{i}") for i in range(num_classes)}


def load_hf_checkpoint(directory: str | os.PathLike) -> tuple[AST, dict[str, Any]]:
    """Our :class:`AST` (in eval mode) from a Hugging Face AST folder, plus what the folder says
    about labels and features.

    The folder holds ``config.json`` and ``model.safetensors`` (or shards, or ``pytorch_model.bin``,
    read with ``weights_only=True``). The info dict has ``id2label`` (``{int: str}``), ``labels``
    (names in class order), ``max_length``, ``num_mel_bins``, ``sampling_rate``, ``mean``, ``std``
    (from ``preprocessor_config.json`` when present, else AudioSet's) and ``feature_spec`` (a
    :class:`~coarse2fine.features.FeatureSpec` with the 25/10 ms Kaldi fbank ASTFeatureExtractor
    uses) and ``multilabel`` (``config.json``'s ``problem_type`` is ``multi_label_classification``:
    sigmoid scores; folders that do not say, such as the AudioSet releases, read False). Every
    problem raises ``ValueError`` naming the file.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a directory")
    config_path = folder / "config.json"
    config = _read_json(config_path)
    model_type = config.get("model_type")
    if model_type not in (None, HF_MODEL_TYPE):
        raise ValueError(f"{config_path}: model_type {model_type!r} is not {HF_MODEL_TYPE!r}")
    try:
        cfg = ast_config_from_hf(config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{config_path}: {err}") from None
    sd, weights_path = _hf_weights(folder)
    model = AST(cfg)
    try:
        load_hf_state_dict(model, sd)
    except ValueError as err:
        raise ValueError(f"{weights_path}: {err} (model from {config_path})") from None
    model.eval()

    id2label = _labels_from_config(config, cfg.num_classes, config_path)
    pre_path = folder / "preprocessor_config.json"
    pre = _read_json(pre_path) if pre_path.is_file() else {}
    if not pre:
        log.info("%s: no preprocessor_config.json; using AudioSet normalisation", folder)
    mean, std = float(pre.get("mean", AUDIOSET_MEAN)), float(pre.get("std", AUDIOSET_STD))
    sample_rate = int(pre.get("sampling_rate", 16000))
    if int(pre.get("max_length", cfg.target_length)) != cfg.target_length:
        log.warning("%s: max_length %s differs from the model's %d; using the model's",
                    pre_path, pre.get("max_length"), cfg.target_length)
    spec = FeatureSpec(FbankConfig(sample_rate=sample_rate, num_mel_bins=cfg.num_mel_bins),
                       target_length=cfg.target_length, mean=mean, std=std)
    info = {
        "id2label": id2label,
        "labels": [id2label[i] for i in range(cfg.num_classes)],
        "max_length": cfg.target_length,
        "num_mel_bins": cfg.num_mel_bins,
        "sampling_rate": sample_rate,
        "mean": mean,
        "std": std,
        "feature_spec": spec,
        "multilabel": config.get("problem_type") == "multi_label_classification",
    }
    log.info("loaded Hugging Face AST from %s (%d classes, grid %s)", folder, cfg.num_classes, cfg.grid)
    return model, info


# ============================================================================ a transformers model, coarse to fine
# transformers' ``ASTForAudioClassification`` (or ``ASTModel``) trained coarse to fine in place: its
# positional embedding and patch conv move between geometries exactly as our AST's do. The model
# is recognised by duck typing (``config.model_type`` and the embeddings' attribute names), so
# that this module still never imports transformers.

_HF_STATE = "_coarse2fine_geometry"  # per-module attribute holding (full-resolution config, current config)


def is_hf_ast(model: Any) -> bool:
    """Whether ``model`` is a transformers ``ASTForAudioClassification`` or ``ASTModel``."""
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) == HF_MODEL_TYPE and isinstance(model, torch.nn.Module) \
        and hasattr(_hf_embeddings(model), "position_embeddings")


def _hf_embeddings(model: Any) -> Any:
    return getattr(getattr(model, "audio_spectrogram_transformer", model), "embeddings", None)


def _hf_configs(model: torch.nn.Module) -> tuple[ASTConfig, ASTConfig]:
    """(full-resolution, current) :class:`ASTConfig` of an HF AST; the full-resolution one is read
    from the HF config the first time and kept on the module (not in ``config.json``)."""
    state = model.__dict__.get(_HF_STATE)
    if state is None:
        full = ast_config_from_hf(model.config)
        proj = _hf_embeddings(model).patch_embeddings.projection
        if (tuple(proj.kernel_size), tuple(proj.stride)) != (full.patch_size, full.stride):
            raise ValueError(f"the model's patch conv (kernel {tuple(proj.kernel_size)}, stride {tuple(proj.stride)}) "
                             f"does not match its config ({full.patch_size}, {full.stride}); load it at full resolution")
        state = (full, full)
        model.__dict__[_HF_STATE] = state
    return state


def hf_ast_config(model: torch.nn.Module) -> ASTConfig:
    """Our :class:`ASTConfig` equal to a transformers AST *at its current geometry* (for FLOPs)."""
    if not is_hf_ast(model):
        raise TypeError(f"{type(model).__name__} is not a transformers AST model")
    return _hf_configs(model)[1]


def hf_geometry(model: torch.nn.Module) -> InputGeometry:
    """The input geometry a transformers AST is set to now."""
    return hf_ast_config(model).geometry


@torch.no_grad()
def hf_set_geometry(model: torch.nn.Module, geometry: InputGeometry) -> None:
    """Move a transformers AST to ``geometry``, carrying its weights over as our AST does: the
    positional embedding is interpolated to the new token grid and, for the Patch method, the
    patch conv becomes ``p x p*k`` with stride ``(fs, ts*k)`` (kernel resized by
    ``geometry.patch_resize``). ``config.max_length`` and ``config.time_stride`` follow; at full
    resolution the config is the original again, so ``save_pretrained`` then writes a model that
    ``from_pretrained`` and ``pipeline`` load. (A coarse Patch phase has a non-square kernel,
    which a transformers config cannot describe.) Changed parameters are new ``nn.Parameter``
    objects: build the optimizer afterwards."""
    full, current = _hf_configs(model)
    new = full.at_geometry(geometry)
    if new.num_mel_bins != full.num_mel_bins:
        raise ValueError(f"the model has {full.num_mel_bins} mel bins; the input geometry {geometry.mel_bins}")
    emb = _hf_embeddings(model)
    if new.grid != current.grid:
        pos = resample_pos_embed(emb.position_embeddings.detach(), current.grid, new.grid, 2)
        emb.position_embeddings = torch.nn.Parameter(pos.clone(), requires_grad=emb.position_embeddings.requires_grad)
    proj = emb.patch_embeddings.projection
    if (new.patch_size, new.stride) != (tuple(proj.kernel_size), tuple(proj.stride)):
        weight = resize_patch_kernel(proj.weight.detach(), new.patch_size, geometry.patch_resize)
        conv = torch.nn.Conv2d(proj.in_channels, proj.out_channels, new.patch_size, new.stride,
                               device=weight.device, dtype=weight.dtype)
        conv.weight = torch.nn.Parameter(weight.clone(), requires_grad=proj.weight.requires_grad)
        conv.bias = torch.nn.Parameter(proj.bias.detach().clone(), requires_grad=proj.bias.requires_grad)
        conv.train(proj.training)
        emb.patch_embeddings.projection = conv
    model.config.max_length = new.target_length
    model.config.time_stride = new.stride[1]
    model.__dict__[_HF_STATE] = (full, new)


def hf_training_flops(model: torch.nn.Module, batch_size: int = 1) -> int:
    """Analytic FLOPs of one training step of a transformers AST at its current geometry (equal to
    what ``FlopCounterMode`` counts with SDPA attention, as for our AST)."""
    return ast_training_flops(hf_ast_config(model), batch_size)


def hf_state_dict_for(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` (Hub / 4.x or 5.x key layout) renamed to the keys of a transformers
    ``ASTForAudioClassification`` ``model``. ``save_pretrained`` of transformers 5.x writes the Hub
    layout, which ``Trainer``'s own checkpoint reload (``load_state_dict(strict=False)``) then does
    not match: every encoder tensor would silently stay as it was."""
    own = model.state_dict().keys()
    layout = "v5" if any(".layers." in k for k in own) else "hub"
    out = to_hf_state_dict(convert_hf_state_dict(state_dict), layout)
    if set(out) != set(own):
        missing, extra = sorted(set(own) - set(out)), sorted(set(out) - set(own))
        raise ValueError(f"weights do not fit the model (missing: {', '.join(missing[:5]) or 'none'}; "
                         f"unexpected: {', '.join(extra[:5]) or 'none'})")
    return out
