"""What a run will cost before anything trains: tokens and analytic FLOPs of every phase.

:func:`phase_costs` builds each phase's model on the meta device (no weights are allocated, so
AST-Base or HTS-AT cost nothing to inspect) and asks the model and the objective for their
analytic FLOPs per clip: what the training loop will count. ``coarse2fine flops CONFIG`` prints
it; the planner and the savings tables build on the same numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from coarse2fine.compression import Compression
from coarse2fine.config import RunConfig, phase_model_config
from coarse2fine.model.registry import get_arch
from coarse2fine.objectives import build_objective


@dataclass(frozen=True)
class PhaseCost:
    """One phase: compression factor, epochs, model input, tokens, and training / evaluation
    FLOPs per clip (the objective's whole training step; one forward pass)."""

    phase: int
    R: int
    epochs: int
    frames: int
    mel_bins: int
    tokens: int
    train_flops_per_clip: int
    forward_flops_per_clip: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def phase_costs(cfg: RunConfig, num_classes: int) -> list[PhaseCost]:
    """Every phase of ``cfg``'s schedule with its analytic cost per clip."""
    phases = cfg.phases()
    objective = build_objective(cfg.train.objective, cfg)
    arch = get_arch(cfg.model.arch)
    costs = []
    for i, phase in enumerate(phases):
        comp = Compression(cfg.c2f.method, phase.R, cfg.c2f.patch_resize, cfg.c2f.scale_window)
        geo = comp.input_geometry(cfg.features.target_length, cfg.features.num_mel_bins)
        with torch.device("meta"):
            model = arch.model_cls(phase_model_config(cfg, phase.R, num_classes))
        costs.append(PhaseCost(i + 1, phase.R, phase.epochs, geo.frames, geo.mel_bins, model.num_tokens,
                               int(objective.training_flops(model, 1)), int(model.forward_flops(1))))
    return costs


def run_flops_per_clip(costs: list[PhaseCost]) -> int:
    """Training FLOPs of the whole schedule per training clip (each epoch sees every clip once)."""
    return sum(c.epochs * c.train_flops_per_clip for c in costs)


def baseline_costs(cfg: RunConfig, num_classes: int) -> list[PhaseCost]:
    """The costs of ``cfg``'s baseline: schedule 1 with ``train.epochs`` epochs."""
    import copy

    base = copy.deepcopy(cfg)
    base.c2f.schedule, base.c2f.phase_epochs, base.c2f.phase_steps = "1", None, None
    return phase_costs(base, num_classes)
