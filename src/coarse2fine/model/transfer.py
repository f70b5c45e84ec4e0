"""Initialising a model from another one: a finished coarse2fine run, or a family's release.

``model.init_from`` in a config names the source. A coarse2fine run folder (``model_config.json``
+ ``model.safetensors``) works for every family; each family may also read the checkpoints of its
own public releases (:attr:`coarse2fine.model.registry.Arch.load_pretrained`). The source model is
first moved to the target's input geometry (its own geometry change: positional embeddings
interpolated, kernels resized, windows narrowed), then every tensor with the same name and shape
is copied. The classifier head is dropped when the classes differ; any other mismatch is an error
naming the tensors.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from coarse2fine.model.base import C2FModel
from coarse2fine.model.registry import get_arch, model_from_config_dict

log = logging.getLogger(__name__)


def load_saved_model(run_dir: str | os.PathLike, weights: str = "model.safetensors") -> C2FModel:
    """The model a finished run folder holds (``model_config.json`` + ``weights``), in eval mode on
    the CPU. Errors are ``ValueError`` naming the file."""
    run = Path(run_dir)
    config_path = run / "model_config.json"
    if not config_path.is_file():
        raise ValueError(f"{config_path}: file not found (is this a finished coarse2fine run folder?)")
    try:
        model = model_from_config_dict(json.loads(config_path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError, ValueError) as err:
        raise ValueError(f"{config_path}: {err}") from None
    weights_path = run / weights
    if not weights_path.is_file():
        raise ValueError(f"{weights_path}: file not found (is this a finished coarse2fine run folder?)")
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except Exception as err:  # noqa: BLE001 - safetensors and load_state_dict raise various types
        raise ValueError(f"{weights_path}: cannot load weights into the model of {config_path} ({err})") from None
    return model.eval()


def transfer_weights(source: C2FModel, target: C2FModel, what: str) -> list[str]:
    """Copy ``source``'s weights into ``target`` after moving ``source`` to ``target``'s geometry;
    returns the target keys left as initialised. ``what`` names the source in messages."""
    source.match_geometry(target)
    own, theirs = target.state_dict(), source.state_dict()
    heads = set(target.head_keys(own))
    taken, bad = {}, []
    for key, value in theirs.items():
        if key not in own:
            continue
        if value.shape != own[key].shape:
            if key not in heads:
                bad.append(f"{key} {list(value.shape)} vs {list(own[key].shape)}")
            continue
        taken[key] = value
    if bad:
        raise ValueError(f"{what}: weights do not fit the model ({'; '.join(bad)})")
    with torch.no_grad():
        for key, value in taken.items():
            own[key].copy_(value.to(own[key].dtype))
    new = sorted(set(own) - set(taken))
    unused = sorted(set(theirs) - set(own))
    log.info("initialised from %s: %d tensors taken; new: %s; unused: %s", what, len(taken),
             ", ".join(new) or "none", ", ".join(unused[:8]) + (" ..." if len(unused) > 8 else "") if unused else "none")
    return new


def initialise(model: C2FModel, source: str) -> None:
    """Start ``model`` from ``source``: a coarse2fine run folder, or a checkpoint of the model's
    family that its registry entry can read (e.g. AST: a Hugging Face folder, an original AST
    ``.pth``, ``imagenet:PATH``)."""
    path = Path(source)
    if (path / "model_config.json").is_file():
        transfer_weights(load_saved_model(path), model, f"run {path}")
        return
    arch = get_arch(model.arch)
    if arch.load_pretrained is not None and arch.load_pretrained(model, source):
        return
    if not path.exists() and not source.startswith("imagenet:"):
        raise ValueError(f"model.init_from: {source} does not exist")
    raise ValueError(f"model.init_from: {source} is neither a coarse2fine run folder nor a checkpoint the {arch.name} family reads")
