"""Any supported model across a phase change, and what its training step costs.

:func:`carry` moves a coarse2fine model (:class:`~coarse2fine.model.base.C2FModel`) or
transformers' ``ASTForAudioClassification`` to a phase's input geometry, carrying every learned
weight over; :func:`step_flops` and :func:`schedule_flops` count a training step's FLOPs at a
geometry. The training loop, ``bench``, the FLOPs accounting and the integrations call these
(:mod:`coarse2fine.core` gathers them for other training code).
"""

from __future__ import annotations

import copy
import numbers
from typing import Any

import torch

from coarse2fine.compression import InputGeometry
from coarse2fine.model.ast.hf import hf_geometry, hf_set_geometry, hf_training_flops, is_hf_ast
from coarse2fine.model.base import C2FModel
from coarse2fine.phases import Schedule


def carry(model: torch.nn.Module, geometry: InputGeometry) -> None:
    """Move ``model`` to ``geometry`` in place, carrying every learned weight over: the positional
    embedding is interpolated to the new token grid, a wider patch's kernel is resized (bilinear or
    PI-resize, ``geometry.patch_resize``), HTS-AT's Swin windows follow the new token grid. Works
    for coarse2fine's model families (yours too, registered) and transformers'
    ``ASTForAudioClassification`` / ``ASTModel``; any other model is a ``TypeError`` saying so.

    Parameters that change become new ``nn.Parameter`` objects: build the optimizer (and LR
    schedule) afterwards, as the paper does at every phase change. The same geometry is a no-op.
    """
    if not isinstance(geometry, InputGeometry):
        hint = " (schedule.compression(i) is what compress() takes)" if hasattr(geometry, "method") else ""
        raise TypeError(f"carry(model, geometry): geometry must be an InputGeometry, e.g. schedule.geometry(i), not a "
                        f"{type(geometry).__name__}{hint}")
    if isinstance(model, C2FModel):
        model.set_geometry(geometry)
        check_geometry_set(model, geometry)
    elif is_hf_ast(model):
        hf_set_geometry(model, geometry)
    elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
        raise TypeError(f"cannot move a {type(model).__name__} (a torch.compile wrapper): carry the model itself "
                        "(model._orig_mod), then compile it again for the new geometry")
    else:
        raise TypeError(
            f"cannot move a {type(model).__name__} to another input geometry: coarse-to-fine changes the model's input "
            "size between phases, and carry() knows how only for coarse2fine's model families (AST, HTS-AT, SSAST), "
            "transformers' ASTForAudioClassification / ASTModel, and a family of your own: a "
            "coarse2fine.model.C2FModel subclass with set_geometry(), registered as the README's 'Model families' "
            "section describes (examples/new_family.py is a complete one)")


def check_geometry_set(model: C2FModel, geometry: InputGeometry) -> None:
    """The model seam's contract: after ``set_geometry(geometry)``, ``geometry`` gives back its
    frames, mel bins and time-patch factor. A family that ignores part of it (a Patch phase's wider
    patches, other mel bins) would train and count FLOPs at another input than the phase's,
    silently: a ``ValueError`` naming what it left."""
    got = model.geometry
    fields = ("frames", "mel_bins", "time_patch_factor")  # what the input and the tokens are (time_factor: a note)
    left = ", ".join(f"{f} {getattr(got, f)!r}, not {getattr(geometry, f)!r}" for f in fields
                     if getattr(got, f) != getattr(geometry, f))
    if not left:
        return
    patch = (": this family cannot take the Patch method (wider patches); use fshift, avgpool or maxpool"
             if got.time_patch_factor != geometry.time_patch_factor else "")
    raise ValueError(f"{type(model).__name__}.set_geometry() left the model at another input than asked ({left})"
                     f"{patch}")


def geometry_of(model: torch.nn.Module) -> InputGeometry:
    """The input geometry ``model`` is set to now (what :func:`carry` moved it to last)."""
    if isinstance(model, C2FModel):
        return model.geometry
    if is_hf_ast(model):
        return hf_geometry(model)
    raise TypeError(f"{type(model).__name__} is neither a coarse2fine model nor a transformers AST")


# ----------------------------------------------------------------------------- FLOPs

def step_flops(model: torch.nn.Module, batch_size: int = 1, objective: Any = None) -> int:
    """Analytic FLOPs of one training step (forward and backward) on ``batch_size`` clips at the
    model's current geometry, counted as ``torch.utils.flop_counter.FlopCounterMode`` counts them.
    ``objective`` (a coarse2fine objective) counts its whole step, e.g. SSAST's two masked passes;
    without it, a classifier's step."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"step_flops: batch_size must be a positive integer, got {batch_size!r}")
    if objective is not None:
        return int(objective.training_flops(model, batch_size))
    if isinstance(model, C2FModel):
        return int(model.training_flops(batch_size))
    if is_hf_ast(model):
        return hf_training_flops(model, batch_size)
    raise TypeError(f"no analytic FLOPs for {type(model).__name__}: step_flops() knows coarse2fine's models and "
                    "transformers' AST")


def schedule_flops(model: torch.nn.Module, schedule: Schedule, batch_size: int = 1, objective: Any = None) -> list[int]:
    """The FLOPs of a training step in each phase of ``schedule`` (see :func:`step_flops`),
    counted on a copy of ``model`` on the meta device (no memory, ``model`` untouched)."""
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule_flops(model, schedule): schedule must be a Schedule, e.g. Schedule.build('4-1', "
                        f"epochs, frames=..., mel_bins=..., method=...), not a {type(schedule).__name__}")
    out = []
    for i in range(len(schedule.phases)):
        shadow = _meta_copy(model)
        carry(shadow, schedule.geometry(i))
        out.append(step_flops(shadow, batch_size, objective))
    return out


def _meta_copy(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` copied with its parameters and buffers on the meta device (shapes only)."""
    memo: dict[int, Any] = {}
    for t in [*model.parameters(), *model.buffers()]:
        memo[id(t)] = torch.nn.Parameter(t.detach().to("meta"), t.requires_grad) if isinstance(t, torch.nn.Parameter) \
            else t.detach().to("meta")
    return copy.deepcopy(model, memo)
