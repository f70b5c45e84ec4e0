"""Optimizer and learning-rate schedule, built fresh at every phase.

AST's recipe (``schedule: step``): Adam (weight decay 5e-7, betas 0.95/0.999), a linear warmup
over the first steps and a step decay by epoch (from epoch ``decay_start`` on, multiply by
``gamma`` every ``decay_every`` epochs). HTS-AT's recipe (``schedule: epochs``): AdamW (weight
decay 0.05) with a per-epoch factor table, ``epoch_factors: [[1, 0.02], [2, 0.05], [3, 0.1],
[12, 0.05], [22, 0.02], [32, 0.03]]`` (each factor applies from that 1-based epoch on; its warm-up
is the first three entries). The paper resets optimizer and schedule at each phase change, which
is what building them anew does; epochs count from the phase's start.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from coarse2fine.config import OptimConfig, PhaseSetup, RunConfig
from coarse2fine.training.sampling import steps_per_epoch


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over ``params`` with the configured lr, betas and weight decay.

    The fused kernel is used where torch has one for the device (CPU from torch 2.4): it cuts
    the optimizer step about 3x (105 -> 35 ms for AST-Base on 2 CPU cores), which matters in
    coarse phases where the step's other costs shrink by R.
    """
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if cfg.optimizer not in kinds:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(kinds)}")
    params = list(params)
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    try:
        return kinds[cfg.optimizer](params, fused=True, **kwargs)
    except RuntimeError:  # no fused kernel for this device / torch version
        return kinds[cfg.optimizer](params, **kwargs)


def lr_factor(step: int, steps_per_epoch: int, cfg: OptimConfig) -> float:
    """LR multiplier after ``step`` optimizer steps of a phase: warmup, then step decay by epoch.

    ``step`` counts from 0; the epoch of a step is ``step // steps_per_epoch + 1``. Decay applies
    from epoch ``decay_start`` on: at epoch e >= decay_start the factor is
    ``gamma ** (1 + (min(e, decay_end) - decay_start) // decay_every)`` (``decay_end`` 0: e).
    AST's ``MultiStepLR(milestones)``, stepped after each epoch, is ``decay_start`` = the first
    milestone + 1 and ``decay_end`` = the last + 1.
    """
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    epoch = step // max(1, steps_per_epoch) + 1
    if cfg.schedule == "epochs":
        return warm * next(f for e, f in reversed(cfg.epoch_factors) if e <= epoch)
    last = min(epoch, cfg.decay_end) if cfg.decay_end else epoch
    decays = 0 if last < cfg.decay_start else 1 + (last - cfg.decay_start) // max(1, cfg.decay_every)
    return warm * cfg.gamma**decays


def warmup_warning(cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> str | None:
    """What is wrong with a warm-up of ``cfg.warmup_steps`` in a phase of ``epochs`` epochs of
    ``steps_per_epoch`` optimizer steps, or None. The warm-up restarts in every phase; one that
    lasts more than half of the phase leaves most of it at a learning rate under ``lr``, and one
    longer than the phase never reaches ``lr`` (a large dataset's recipe on a small one)."""
    warm, steps = cfg.warmup_steps, steps_per_epoch * epochs
    if warm * 2 <= steps:
        return None
    if warm <= steps:  # a warm-up as long as the phase reaches lr at its last step
        return f"a warm-up of {_steps(warm)} takes {100 * warm / steps:.0f} % of the phase's {_steps(steps)}"
    last = lr_factor(steps - 1, steps_per_epoch, cfg) * cfg.lr
    return f"a warm-up of {_steps(warm)} is longer than the phase ({_steps(steps)}): its LR ends at {last:.3g}, never {cfg.lr:g}"


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def long_warmups(cfg: RunConfig, setups: Sequence[PhaseSetup], clips: int, world: int = 1) -> list[str]:
    """One line for each phase of ``cfg`` (its ``setups``, training on ``clips`` clips over
    ``world`` processes) whose LR warm-up lasts more than half of it (:func:`warmup_warning`),
    each ending with the one value that clears every phase of the run: half of the shortest
    phase, in the key's steps (``c2f.coarse_batch: scale`` divides a phase's warm-up by R). Phases
    of fixed length only: automatic switching decides the others' length as it trains."""
    if cfg.c2f.switch != "fixed":
        return []
    t = cfg.train
    steps = [steps_per_epoch(clips, s.batch_size, world, t.epoch_steps, t.batch_size) for s in setups]
    shortest = min(n * s.epochs * t.optim.warmup_steps // max(1, s.optim.warmup_steps) for n, s in zip(steps, setups))
    most = shortest // 2
    clears = f"at most {most} step{'' if most == 1 else 's'}{' (no warm-up)' if most == 0 else ''}"
    lines = []
    for n, s in zip(steps, setups):
        if (problem := warmup_warning(s.optim, n, s.epochs)) is not None:
            lines.append(f"phase {s.index + 1} (R={s.R}, {s.epochs} epoch{'' if s.epochs == 1 else 's'}): {problem}; "
                         f"{clears} clears every phase of this run (--set train.optim.warmup_steps={most})")
    return lines


def build_scheduler(
    optimizer: torch.optim.Optimizer, steps_per_epoch: int, cfg: OptimConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler implementing :func:`lr_factor` (call ``step()`` after each update)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps_per_epoch, cfg))
