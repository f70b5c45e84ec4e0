"""Training checkpoints: one safetensors file of named sections, enough to resume exactly.

A checkpoint holds sections by name (the training loop writes ``model``, ``optimizer``,
``scheduler``, ``rng``, ``averager`` and ``progress``), each the ``state_dict()`` of the object it
restores. Any state dict (nested dicts, lists, tuples, integer keys, tensors and plain values) is
stored losslessly: tensors become safetensors tensors named ``<section>.<path>``, everything else
goes into the file's JSON metadata, one entry per section. Loading therefore never unpickles
anything. The file is written atomically: a kill during the write leaves the previous checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open

from coarse2fine import atomic

FORMAT = "coarse2fine-checkpoint-v2"
_TENSOR, _MAP, _TUPLE = "__tensor__", "__map__", "__tuple__"


def encode(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able tree of ``value`` whose tensors are moved into ``tensors`` under ``prefix``."""
    if isinstance(value, torch.Tensor):
        if prefix in tensors:
            raise ValueError(f"two checkpoint entries would share the name {prefix}")
        tensors[prefix] = value
        return {_TENSOR: prefix}
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: encode(v, f"{prefix}.{k}", tensors) for k, v in value.items()}
        return {_MAP: [[encode(k, f"{prefix}.k{i}", tensors), encode(v, f"{prefix}.{i}", tensors)]
                       for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, tuple):
        return {_TUPLE: [encode(v, f"{prefix}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode(v, f"{prefix}.{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} at {prefix} in a checkpoint")


def decode(tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(tree, dict):
        if _TENSOR in tree:
            return tensors[tree[_TENSOR]]
        if _MAP in tree:
            return {decode(k, tensors): decode(v, tensors) for k, v in tree[_MAP]}
        if _TUPLE in tree:
            return tuple(decode(v, tensors) for v in tree[_TUPLE])
        return {k: decode(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [decode(v, tensors) for v in tree]
    return tree


def save_checkpoint(path: str | Path, sections: Mapping[str, Any]) -> None:
    """Atomically write ``sections`` (name -> state dict) to ``path``."""
    tensors: dict[str, torch.Tensor] = {}
    metadata = {"format": FORMAT, "sections": json.dumps(list(sections))}
    for name, state in sections.items():
        metadata[f"section.{name}"] = json.dumps(encode(state, name, tensors))
    atomic.save_safetensors(path, tensors, metadata=metadata)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The sections of a checkpoint written by :func:`save_checkpoint` (tensors on the CPU)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable checkpoint ({err})") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: not a coarse2fine checkpoint of this version (format {metadata.get('format')!r})")
    return {name: decode(json.loads(metadata[f"section.{name}"]), tensors) for name in json.loads(metadata["sections"])}
