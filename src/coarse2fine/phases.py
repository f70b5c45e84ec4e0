"""Coarse-to-fine schedules: which factor R each phase uses and for how many epochs.

A schedule is written as the factors joined by dashes, coarsest first, ending at full resolution:
``"1"`` (the baseline), ``"4-1"``, ``"2-1"``, ``"4-2-1"``. Each dash is a phase change, where the
model carries its weights over and the optimizer and LR schedule start again, so a factor may
repeat: ``"1-1"`` and ``"1-1-1"`` train at full resolution throughout with the resets of a two- or
three-phase run (the *restart control* of ``"4-1"`` and ``"4-2-1"``: the same phases, epochs and
resets without the coarse input), and ``"2-2-1"`` resets once inside the coarse part. Factors never
grow (``"1-4"`` is refused: fine to coarse is not this method). By the paper's rule the initial phases
together take about 25 % of the baseline's epochs in a two-phase schedule and about 30 % in a
longer one (split evenly between them), and the final phase gets the baseline's full budget so the
run can be judged both "at the first epoch that beats the baseline" and "trained to convergence".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Phase:
    """One phase: compression factor and number of epochs."""

    R: int
    epochs: int


def parse_schedule(text: str | int | Sequence[int]) -> tuple[int, ...]:
    """Parse ``"4-2-1"`` (or ``[4, 2, 1]``) into factors: positive, never increasing (a factor may
    repeat: ``"1-1"``), ending at 1."""
    if isinstance(text, int):
        factors: tuple[int, ...] = (text,)
    elif isinstance(text, str):
        parts = [p.strip() for p in text.replace(",", "-").replace(">", "-").split("-") if p.strip()]
        try:
            factors = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"schedule {text!r}: expected factors joined by '-', like '4-1' or '4-2-1'") from None
    else:
        factors = tuple(int(f) for f in text)
    if not factors:
        raise ValueError(f"schedule {text!r} is empty")
    if any(f < 1 for f in factors):
        raise ValueError(f"schedule {text!r}: factors must be positive integers")
    if factors[-1] != 1:
        raise ValueError(f"schedule {text!r}: the last phase must be full resolution (factor 1)")
    if any(a < b for a, b in zip(factors, factors[1:])):
        raise ValueError(f"schedule {text!r}: factors must not increase (coarse to fine; a factor may repeat, "
                         "as in '1-1')")
    return factors


def schedule_name(factors: Sequence[int]) -> str:
    """``(4, 2, 1)`` -> ``"4-2-1"``."""
    return "-".join(str(f) for f in factors)


def restart_schedule(factors: Sequence[int]) -> tuple[int, ...]:
    """The restart control of a schedule: as many phases, all at full resolution (``(4, 1)`` ->
    ``(1, 1)``)."""
    return (1,) * len(factors)


def default_initial_fraction(num_phases: int) -> float:
    """The paper's share of the baseline budget for all initial phases together."""
    return 0.25 if num_phases <= 2 else 0.30


def build_phases(
    schedule: str | Sequence[int],
    baseline_epochs: int,
    phase_epochs: Sequence[int] | None = None,
    initial_fraction: float | None = None,
    final_epochs: int | None = None,
) -> list[Phase]:
    """Expand a schedule into phases.

    ``phase_epochs`` gives every phase's epochs explicitly. Otherwise each initial phase gets
    ``max(1, round(initial_fraction * baseline_epochs / number_of_initial_phases))`` epochs and the
    final phase ``final_epochs`` (default: ``baseline_epochs``).
    """
    factors = parse_schedule(schedule)
    if baseline_epochs < 1:
        raise ValueError(f"baseline_epochs must be >= 1, got {baseline_epochs}")
    if phase_epochs is not None:
        epochs = [int(e) for e in phase_epochs]
        if len(epochs) != len(factors):
            raise ValueError(
                f"phase_epochs {list(epochs)} has {len(epochs)} entries but schedule "
                f"{schedule_name(factors)} has {len(factors)} phases"
            )
        if any(e < 1 for e in epochs):
            raise ValueError(f"phase_epochs must all be >= 1, got {list(epochs)}")
        return [Phase(R, e) for R, e in zip(factors, epochs)]
    n_initial = len(factors) - 1
    frac = default_initial_fraction(len(factors)) if initial_fraction is None else initial_fraction
    per_initial = max(1, round(frac * baseline_epochs / n_initial)) if n_initial else 0
    final = baseline_epochs if final_epochs is None else final_epochs
    return [Phase(R, per_initial) for R in factors[:-1]] + [Phase(1, final)]
