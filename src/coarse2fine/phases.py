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

import operator
from dataclasses import dataclass
from typing import Sequence

from coarse2fine.compression import Compression, InputGeometry, PatchResize, resolve_method


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
        if not text.strip():
            raise ValueError(f"schedule {text!r} is empty")
        # Every part a factor: an empty one ('4--1', '4-1-', '-4-1') is a typo, not a phase to drop.
        parts = [p.strip() for p in text.replace(",", "-").replace(">", "-").split("-")]
        if not all(p.isascii() and p.isdigit() for p in parts):  # int() would also take '+1', '1_0'
            raise ValueError(f"schedule {text!r}: expected factors joined by '-', like '4-1' or '4-2-1'")
        factors = tuple(int(p) for p in parts)
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


def _whole(value: object) -> bool:
    """Whether ``value`` is an integer (NumPy's too), not a bool, float or string."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True


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
    if not _whole(baseline_epochs) or baseline_epochs < 1:
        raise ValueError(f"baseline_epochs must be an integer >= 1, got {baseline_epochs!r}")
    baseline_epochs = operator.index(baseline_epochs)
    if initial_fraction is not None and not 0 < initial_fraction < 1:
        raise ValueError(f"initial_fraction must be in (0, 1), the initial phases' share of the baseline's epochs; "
                         f"got {initial_fraction!r}")
    if phase_epochs is not None:
        epochs = [int(e) for e in phase_epochs]
        if len(epochs) != len(factors):
            raise ValueError(
                f"phase_epochs {list(epochs)} has {len(epochs)} entries but schedule "
                f"{schedule_name(factors)} has {len(factors)} phases"
            )
        if any(not _whole(e) or e < 1 for e in phase_epochs):
            raise ValueError(f"phase_epochs must all be integers >= 1, got {list(phase_epochs)}")
        return [Phase(R, e) for R, e in zip(factors, epochs)]
    n_initial = len(factors) - 1
    frac = default_initial_fraction(len(factors)) if initial_fraction is None else initial_fraction
    per_initial = max(1, round(frac * baseline_epochs / n_initial)) if n_initial else 0
    final = baseline_epochs if final_epochs is None else final_epochs
    return [Phase(R, per_initial) for R in factors[:-1]] + [Phase(1, final)]


# ----------------------------------------------------------------------------- where training stands

@dataclass(frozen=True)
class PhaseAt:
    """A position in a schedule: phase ``index`` (0-based) with factor ``R``, ``phase_epoch``
    (0-based epoch within the phase) and whether it is the ``last`` (full-resolution) phase."""

    index: int
    R: int
    phase_epoch: int
    last: bool


def phase_at(phases: Sequence[Phase], epoch: int) -> PhaseAt:
    """The phase that trains 0-based ``epoch`` of ``phases`` (an epoch past the end belongs to the
    last phase, so a loop that trains on stays at full resolution)."""
    if not phases:
        raise ValueError("the schedule has no phases")
    if not _whole(epoch) or epoch < 0:
        raise ValueError(f"epoch must be an integer >= 0 (0-based), got {epoch!r}")
    epoch = operator.index(epoch)
    start = 0
    for i, ph in enumerate(phases):
        if epoch < start + ph.epochs or i == len(phases) - 1:
            return PhaseAt(i, ph.R, epoch - start, i == len(phases) - 1)
        start += ph.epochs
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Schedule:
    """A coarse-to-fine schedule for a model input of ``frames`` x ``mel_bins`` at full resolution:
    the ``phases`` (factor R and epochs each, coarsest first, the last at R = 1) and how the input
    is compressed (``method``: fshift, avgpool, maxpool or patch, or as the command line names them,
    ``patch-bl`` / ``patch-pi``; ``patch_resize`` of the Patch method's kernel, None: the method's
    own, ``pi`` unless ``patch-bl``; ``scale_window``: Fshift also widens the analysis window)."""

    phases: tuple[Phase, ...]
    frames: int
    mel_bins: int
    method: str = "fshift"
    patch_resize: PatchResize | None = None
    scale_window: bool = False

    def __post_init__(self) -> None:
        method, resize = resolve_method(self.method, self.patch_resize)
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "patch_resize", resize)
        object.__setattr__(self, "phases", tuple(self.phases))
        if not self.phases or not all(isinstance(p, Phase) for p in self.phases):
            raise ValueError(f"phases must be a non-empty sequence of Phase, got {self.phases!r}")
        if self.phases[-1].R != 1:
            raise ValueError(f"the last phase must be full resolution (R=1), got R={self.phases[-1].R}")
        if min(self.frames, self.mel_bins) < 1:
            raise ValueError(f"frames and mel_bins must be positive, got {self.frames} x {self.mel_bins}")
        for i in range(len(self.phases)):
            self.compression(i)  # checks R and patch_resize

    @classmethod
    def build(cls, schedule: str | Sequence[int], epochs: int, *, frames: int, mel_bins: int, method: str = "fshift",
              phase_epochs: Sequence[int] | None = None, initial_fraction: float | None = None,
              patch_resize: PatchResize | None = None, scale_window: bool = False) -> Schedule:
        """A schedule from its text (``"4-1"``, ``"4-2-1"``) and the baseline's ``epochs``: each
        phase's epochs are ``phase_epochs``, or the paper's split (the initial phases share about
        25 % of ``epochs``, 30 % for three phases or more; the last phase gets ``epochs``)."""
        phases = build_phases(schedule, epochs, phase_epochs, initial_fraction)
        return cls(tuple(phases), frames, mel_bins, method, patch_resize, scale_window)

    @property
    def epochs(self) -> int:
        """Epochs of the whole schedule."""
        return sum(p.epochs for p in self.phases)

    def start_epoch(self, index: int) -> int:
        """0-based first epoch of phase ``index``."""
        return sum(p.epochs for p in self.phases[:index])

    def at_epoch(self, epoch: int) -> PhaseAt:
        """The phase of 0-based ``epoch`` (see :func:`phase_at`)."""
        return phase_at(self.phases, epoch)

    def at_step(self, step: int, steps_per_epoch: int) -> PhaseAt:
        """The phase of 0-based optimizer ``step`` when phases are counted in steps: phase ``i``
        starts after ``start_epoch(i) * steps_per_epoch`` steps."""
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        return phase_at(self.phases, step // steps_per_epoch)

    def compression(self, index: int) -> Compression:
        """How phase ``index`` compresses the input."""
        if not -len(self.phases) <= index < len(self.phases):
            raise IndexError(f"phase {index}: the schedule has {len(self.phases)} phases (0 to {len(self.phases) - 1})")
        return Compression(self.method, self.phases[index].R, self.patch_resize, self.scale_window)

    def geometry(self, index: int) -> InputGeometry:
        """The model input of phase ``index``."""
        return self.compression(index).input_geometry(self.frames, self.mel_bins)
