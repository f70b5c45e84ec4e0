"""Training checkpoints: one safetensors file holding everything needed to resume exactly.

Tensors (model weights, optimizer moments, RNG states) are safetensors tensors; everything else
(phase, epoch, step, scheduler, optimizer hyper-parameters, records so far) is JSON in the file's
metadata. Loading therefore never unpickles anything. The file is written atomically: a kill
during the write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from coarse2fine import atomic

FORMAT = "coarse2fine-checkpoint-v1"


@dataclass
class Checkpoint:
    """What a checkpoint restores."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, torch.Tensor]
    state: dict[str, Any]


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: dict[str, torch.Tensor],
    state: dict[str, Any],
) -> None:
    """Atomically write a checkpoint of the training state to ``path``."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    tensors.update({f"rng.{k}": v for k, v in rng.items()})
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    metadata = {
        "format": FORMAT,
        "optimizer": json.dumps(opt_meta),
        "scheduler": json.dumps(sched),
        "state": json.dumps(state),
    }
    atomic.save_safetensors(path, tensors, metadata=metadata)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on CPU)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable checkpoint ({err})") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: not a coarse2fine checkpoint (format {metadata.get('format')!r})")
    group = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    opt_tensors = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    return Checkpoint(
        model=group("model."),
        optimizer=_unflatten_optimizer(opt_tensors, json.loads(metadata["optimizer"])),
        scheduler=json.loads(metadata["scheduler"]),
        rng=group("rng."),
        state=json.loads(metadata["state"]),
    )
