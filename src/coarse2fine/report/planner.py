"""Plan a coarse-to-fine run against a compute budget, before training.

For each candidate schedule (R sequence) and share of the initial phases, the planner finds the
longest run that fits the budget: the final phase gets F epochs, the initial phases together
``fraction x F`` (split evenly), and the run's cost is the training clips times the sum over its
phases of epochs x cost per clip. The cost per clip of a phase is its analytic training FLOPs
(:mod:`coarse2fine.report.accounting`) and its measured seconds, from a short interleaved calibration of
one training step of every phase on this machine (:mod:`coarse2fine.report.timing`). A budget in FLOPs
predicts the time, a budget in hours the FLOPs. The chosen plan (by default the config's own
schedule with the paper's initial share) is written as a config a user can train; its predicted
FLOPs and time travel in it (``c2f.planned_flops`` / ``c2f.planned_seconds``), and ``compare``
shows them beside the measured ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from coarse2fine.config import RunConfig
from coarse2fine.data.sources import input_kind
from coarse2fine.phases import parse_schedule
from coarse2fine.report.accounting import phase_costs
from coarse2fine.report.timing import Calibration, calibrate, phase_key, synthetic_source

DEFAULT_SCHEDULES = ("1", "2-1", "4-1", "4-2-1")
DEFAULT_FRACTIONS = (0.15, 0.25, 0.35)


@dataclass(frozen=True)
class Candidate:
    """One plan: schedule, the initial share asked for, epochs per phase and its predicted cost;
    ``also``: the other shares asked for that give the same epochs (:func:`merged`)."""

    schedule: str
    fraction: float
    phase_epochs: tuple[int, ...]
    flops: float
    seconds: float
    also: tuple[float, ...] = ()

    @property
    def epochs(self) -> int:
        return sum(self.phase_epochs)

    @property
    def share(self) -> float:
        """The initial phases' epochs over the final phase's: the share the epochs give, after rounding."""
        return sum(self.phase_epochs[:-1]) / self.phase_epochs[-1]

    @property
    def fractions(self) -> tuple[float, ...]:
        """Every share asked for that gives this plan."""
        return (self.fraction, *self.also)


def merged(candidates: Sequence[Candidate]) -> list[Candidate]:
    """``candidates`` with the plans that round to the same schedule and epochs as an earlier one
    folded into it (their shares kept in ``also``): at a small budget several shares give one run."""
    out: dict[tuple[str, tuple[int, ...]], Candidate] = {}
    for c in candidates:
        key = (c.schedule, c.phase_epochs)
        first = out.get(key)
        out[key] = c if first is None else replace(first, also=(*first.also, c.fraction))
    return list(out.values())


def schedule_config(cfg: RunConfig, schedule: str) -> RunConfig:
    """``cfg`` with ``schedule`` and the default phase split (for costs per clip)."""
    return cfg.replace({"c2f.schedule": schedule, "c2f.phase_epochs": None, "c2f.phase_steps": None,
                        "c2f.switch": "fixed", "c2f.final_stop": "epochs"})


def phase_epochs_for(final: int, fraction: float, num_phases: int) -> tuple[int, ...]:
    """Epochs per phase: the initial phases share ``fraction x final`` evenly (at least 1 each)."""
    if num_phases == 1:
        return (final,)
    each = max(1, round(fraction * final / (num_phases - 1)))
    return (*([each] * (num_phases - 1)), final)


def candidate(cfg: RunConfig, schedule: str, fraction: float, clips: int, flops_per_clip: Sequence[float],
              seconds_per_clip: Sequence[float], budget_flops: float = 0.0, budget_seconds: float = 0.0) -> Candidate | None:
    """The longest run of ``schedule`` within the budget (None when not even one epoch fits)."""
    n = len(parse_schedule(schedule))
    best = None
    final = 1
    while True:
        epochs = phase_epochs_for(final, fraction, n)
        flops = clips * sum(e * f for e, f in zip(epochs, flops_per_clip))
        seconds = clips * sum(e * s for e, s in zip(epochs, seconds_per_clip))
        if (budget_flops and flops > budget_flops) or (budget_seconds and seconds > budget_seconds) or final > 100_000:
            return best
        best = Candidate(schedule, fraction if n > 1 else 0.0, epochs, flops, seconds)
        final += 1


def plan(cfg: RunConfig, num_classes: int, clips: int, budget_flops: float = 0.0, budget_hours: float = 0.0,
         schedules: Sequence[str] = DEFAULT_SCHEDULES, fractions: Sequence[float] = DEFAULT_FRACTIONS,
         rounds: int = 5, device: str = "auto") -> tuple[list[Candidate], Calibration]:
    """Every candidate schedule x initial share that fits the budget (shares that give the same
    epochs as one candidate: :func:`merged`), with the calibration used."""
    if (budget_flops > 0) == (budget_hours > 0):
        raise ValueError("give one budget: FLOPs or hours")
    configs = [schedule_config(cfg, s) for s in schedules]
    source = synthetic_source(cfg, num_classes, 4 * cfg.train.batch_size, input_kind(cfg, clips))
    cal = calibrate(configs, num_classes, source, rounds=rounds, device=device)
    out = []
    for scfg in configs:
        costs = phase_costs(scfg, num_classes)
        flops = [c.train_flops_per_clip for c in costs]
        steps = [cal.steps[phase_key(scfg, c.phase - 1)] for c in costs]  # PhaseCost counts from 1
        secs = [step.median / step.batch for step in steps]
        for fraction in (fractions if len(costs) > 1 else (0.0,)):
            found = candidate(scfg, scfg.c2f.schedule, fraction, clips, flops, secs, budget_flops, budget_hours * 3600.0)
            if found is not None:
                out.append(found)
    return merged(out), cal


def choose(candidates: Sequence[Candidate], schedule: str, fraction: float) -> Candidate:
    """The candidate of ``schedule`` one of whose shares asked for is closest to ``fraction``; a
    ``ValueError`` when no candidate has that schedule (none fits the budget, or it was not asked for)."""
    if not candidates:
        raise ValueError("no schedule fits the budget: not even one epoch of the full-resolution phase")
    mine = [c for c in candidates if c.schedule == schedule]
    if not mine:
        raise ValueError(f"schedule {schedule} is not among the candidates that fit the budget "
                         f"({', '.join(dict.fromkeys(c.schedule for c in candidates))}); plan it with "
                         f"--schedules {schedule},... (a budget too small for it leaves it out)")
    return min(mine, key=lambda c: min(abs(f - fraction) for f in c.fractions))


def planned_config(cfg: RunConfig, chosen: Candidate) -> RunConfig:
    """``cfg`` set to the chosen plan, its prediction recorded."""
    return schedule_config(cfg, chosen.schedule).replace({
        "name": f"{cfg.name}_plan_{chosen.schedule.replace('-', '')}", "train.epochs": chosen.phase_epochs[-1],
        "c2f.phase_epochs": list(chosen.phase_epochs), "c2f.planned_flops": float(chosen.flops),
        "c2f.planned_seconds": float(chosen.seconds)})
