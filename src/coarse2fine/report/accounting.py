"""What a run will cost before anything trains: tokens and analytic FLOPs of every phase.

:func:`phase_costs` builds each phase's model on the meta device (no weights are allocated, so
AST-Base or HTS-AT cost nothing to inspect) and asks the model and the objective for their
analytic FLOPs per clip: what the training loop will count (a family without an analytic count
is measured once per geometry with FlopCounterMode, and says so: ``flops_source``). ``coarse2fine flops CONFIG`` prints
it; the planner and the savings tables build on the same numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from coarse2fine.config import RunConfig
from coarse2fine.model.phase_change import step_flops
from coarse2fine.objectives import build_objective


@dataclass(frozen=True)
class PhaseCost:
    """One phase: compression factor, epochs, model input, tokens (``train_tokens``: those a
    training step sees, fewer with patchout), and training / evaluation FLOPs per clip (the
    objective's whole training step; one forward pass)."""

    phase: int
    R: int
    epochs: int
    frames: int
    mel_bins: int
    tokens: int
    train_flops_per_clip: int
    forward_flops_per_clip: int
    flops_source: str = "analytic"
    train_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def phase_costs(cfg: RunConfig, num_classes: int) -> list[PhaseCost]:
    """Every phase of ``cfg``'s schedule with its analytic cost per clip."""
    objective = build_objective(cfg.train.objective, cfg)
    costs = []
    for i in range(len(cfg.phases())):
        setup = cfg.phase(i, num_classes)
        device = "meta" if _analytic(setup) else "cpu"
        with torch.device(device):
            model = setup.build_model()
        costs.append(PhaseCost(i + 1, setup.R, setup.epochs, setup.geometry.frames, setup.geometry.mel_bins, model.num_tokens,
                               step_flops(model, 1, objective), int(model.forward_flops(1)), model.flops_source,
                               model.train_tokens))
    return costs


def _analytic(setup) -> bool:
    """Whether the phase's family counts its FLOPs itself (so its model can live on the meta
    device, no weights allocated); measured counts need a real model."""
    from coarse2fine.model.base import C2FModel
    from coarse2fine.model.registry import get_arch

    return get_arch(setup.arch).model_cls.training_flops is not C2FModel.training_flops


def run_flops_per_clip(costs: list[PhaseCost]) -> int:
    """Training FLOPs of the whole schedule per training clip (each epoch sees every clip once)."""
    return sum(c.epochs * c.train_flops_per_clip for c in costs)


def baseline_costs(cfg: RunConfig, num_classes: int) -> list[PhaseCost]:
    """The costs of ``cfg``'s baseline: schedule 1 with ``train.epochs`` epochs."""
    return phase_costs(cfg.baseline(), num_classes)


def budget_lines(cfg: RunConfig, num_classes: int, clips: int) -> list[str]:
    """What a FLOPs budget (``c2f.budget_flops`` with ``c2f.switch`` or ``final_stop: budget``)
    cannot hold with ``clips`` training clips an epoch: every phase trains at least one epoch, so
    a budget below one epoch of each is spent several times over."""
    c = cfg.c2f
    if not c.budget_flops or "budget" not in (c.switch, c.final_stop):
        return []
    epochs = [(p.phase, p.R, p.train_flops_per_clip * clips) for p in phase_costs(cfg, num_classes)]
    least = sum(f for _, _, f in epochs)
    if least <= c.budget_flops:
        return []
    each = ", ".join(f"phase {p} (R={R}) {f:.3g}" for p, R, f in epochs)
    return [f"c2f.budget_flops {c.budget_flops:g}: every phase trains at least one epoch, and one epoch of each "
            f"({each} FLOPs for {clips} clips) is {least:.3g} FLOPs, {least / c.budget_flops:.1f}x the budget: "
            f"give a budget of at least {least:.3g}, or shorter epochs (train.epoch_steps)"]
