"""What a run records: one :class:`EpochRecord` per epoch and one :class:`PhaseRecord` per phase.

The loop makes them, ``log.json`` holds them (:meth:`EpochRecord.to_dict`: flat, metrics beside the
other fields, as in ``log.csv``), and switching, the savings tables, the plots and TensorBoard
read them. Older logs and hand-made dicts become records with :func:`as_records`.

Time is measured three ways, each a named :data:`TIME_MEASURES` entry read with
:func:`cumulative_time` (and nowhere else):

* ``wall``: the wall time of each epoch's training loop (data, features, forward, backward,
  update; evaluation excluded), what the run took;
* ``step``: load-robust: each phase's cost per step is the lower quartile of its steps' times,
  pooled over the phase's epochs (from each epoch's deciles, weighted by its steps), times the
  steps each epoch took. Other load on the machine only ever adds time, so a lower quantile of
  many steps is close to the step's own cost for as long as a quarter of the phase's steps ran
  undisturbed, and a steady machine moves it no differently from the median;
* ``calibrated``: from a separate interleaved timing of every phase's real step
  (``--calibrate-rounds``, :mod:`coarse2fine.report.timing`), when it was made.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

TIME_MEASURES = ("wall", "step", "calibrated")
TIME_LABELS = {"wall": "Wall time", "step": "Step time", "calibrated": "Calibrated time"}


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: where it stands (``epoch`` 1-based overall, ``phase`` 0-based, ``phase_epoch``
    1-based in its phase, factor ``R``), the model (``tokens``; ``train_tokens`` seen in training,
    fewer with patchout), the optimisation (``batch_size``, ``lr`` at the epoch's start,
    ``train_loss``, ``clips``, ``steps``), the objective's ``metrics``, its cost (``train_flops``,
    ``cum_flops``; seconds: ``train_time`` wall, ``data_time`` waiting for batches, ``step_time`` in
    the steps themselves, ``step_median`` median seconds per step, waiting included, and
    ``step_deciles`` the 10th to 90th percentiles of the steps' seconds; ``eval_time``
    outside the training time, in a phase's first epoch with the carried-over model's evaluation
    on entering the phase), the
    machine's 1-minute ``load_avg`` at its end, the ``machine`` it was timed on (the CPU or GPU in
    words, :func:`~coarse2fine.runtime.machine_name`) and ``mfu`` (model FLOPs utilisation, when
    the device's peak is known), ``turns`` (how many runs took turns of one epoch in the process
    that trained it, this one included; None: it trained alone,
    :mod:`coarse2fine.training.interleave`), why the phase ended after it (``switch``) and, once
    calibrated, ``cal_time``."""

    epoch: int
    phase: int
    cum_flops: float
    cum_time: float
    R: int = 1
    phase_epoch: int = 1
    tokens: int = 0
    train_tokens: int = 0
    batch_size: int = 0
    lr: float = 0.0
    train_loss: float | None = None
    clips: int = 0
    steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    train_flops: float = 0.0
    train_time: float = 0.0
    data_time: float = 0.0
    step_time: float = 0.0
    step_median: float | None = None
    step_deciles: list[float] | None = None
    eval_time: float = 0.0
    load_avg: float | None = None
    machine: str | None = None
    mfu: float | None = None
    turns: int | None = None
    switch: str | None = None
    cal_time: float | None = None

    def metric(self, name: str) -> float:
        """The value of metric ``name`` (``KeyError`` naming the metrics it has otherwise)."""
        if name not in self.metrics:
            raise KeyError(f"epoch {self.epoch} has no metric {name!r}; it has {', '.join(self.metrics) or 'none'}")
        return float(self.metrics[name])

    def to_dict(self) -> dict[str, Any]:
        """Flat, as ``log.json`` and ``log.csv`` hold it: metrics beside the other fields, unset
        optional fields left out."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "metrics"}
        out = {k: v for k, v in out.items() if v is not None}
        return {**out, **self.metrics}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EpochRecord:
        """A record from :meth:`to_dict`'s form (or an older log's): numeric keys that are no
        field are metrics."""
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("epoch", "phase", "cum_flops", "cum_time") if k not in d]
        if missing:
            raise ValueError(f"record lacks {', '.join(map(repr, missing))}")
        metrics = {k: float(v) for k, v in d.items() if k not in names and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if isinstance(d.get("metrics"), Mapping):
            metrics.update(d["metrics"])
        return cls(**{k: v for k, v in d.items() if k in names and k != "metrics"}, metrics=metrics)


def as_records(records: Iterable[EpochRecord | Mapping[str, Any]]) -> list[EpochRecord]:
    """Records as :class:`EpochRecord` (dicts from a ``log.json`` converted)."""
    return [r if isinstance(r, EpochRecord) else EpochRecord.from_dict(r) for r in records]


def final_phase(records: Sequence[EpochRecord]) -> list[EpochRecord]:
    """The records of the highest phase present (the full-resolution phase of a finished run)."""
    last = max(r.phase for r in records)
    return [r for r in records if r.phase == last]


def best_of(records: Sequence[EpochRecord], metric: str, higher: bool = True) -> EpochRecord | None:
    """The first record holding the best (largest, or smallest unless ``higher``) non-NaN value of
    ``metric`` (None when every value is NaN): the rule of every "best" a run reports or keeps."""
    best: EpochRecord | None = None
    for rec in records:
        v = rec.metric(metric)
        if not math.isnan(v) and (best is None or (v > best.metric(metric) if higher else v < best.metric(metric))):
            best = rec
    return best


ROBUST_QUANTILE = 0.25


def phase_step_cost(records: Sequence[EpochRecord], quantile: float = ROBUST_QUANTILE) -> dict[int, float]:
    """Per phase, the load-robust seconds per step: the ``quantile`` of its steps' times pooled over
    its epochs, each epoch given by its deciles (or its median, for records without them)
    weighted by its steps."""
    samples: dict[int, list[tuple[float, float]]] = {}
    for r in records:
        points = r.step_deciles or ([r.step_median] if r.step_median is not None else [])
        for value in points:
            samples.setdefault(r.phase, []).append((value, max(r.steps, 1) / len(points)))
    return {phase: _weighted_quantile(values, quantile) for phase, values in samples.items()}


def _weighted_quantile(samples: list[tuple[float, float]], q: float) -> float:
    """The ``q`` quantile of weighted samples (the smallest value whose cumulative weight reaches q)."""
    ordered = sorted(samples)
    total, acc = sum(w for _, w in ordered), 0.0
    for value, weight in ordered:
        acc += weight
        if acc >= q * total - 1e-12:
            return value
    return ordered[-1][0]


def measures(records: Sequence[EpochRecord]) -> list[str]:
    """The time measures every one of ``records`` carries, in :data:`TIME_MEASURES` order."""
    have = ["wall"]
    if records and all(r.step_median is not None for r in records):
        have.append("step")
    if records and all(r.cal_time is not None for r in records):
        have.append("calibrated")
    return have


def epoch_times(records: Sequence[EpochRecord], measure: str) -> list[float]:
    """Seconds of each epoch's training by ``measure`` (see the module docstring)."""
    if measure == "wall":
        return [r.train_time for r in records]
    if measure == "step":
        costs = phase_step_cost(records)
        return [r.steps * costs[r.phase] for r in records]
    if measure == "calibrated":
        return [float(r.cal_time) for r in records]  # type: ignore[arg-type]
    raise ValueError(f"unknown time measure {measure!r}; choose one of {', '.join(TIME_MEASURES)}")


def cumulative_time(records: Sequence[EpochRecord], measure: str) -> list[float]:
    """Cumulative training seconds after each epoch by ``measure`` (``wall`` is the recorded
    ``cum_time``, so a run that resumed keeps its own clock)."""
    if measure == "wall":
        return [r.cum_time for r in records]
    total, out = 0.0, []
    for seconds in epoch_times(records, measure):
        total += seconds
        out.append(total)
    return out


def epoch_spread(records: Sequence[EpochRecord]) -> float:
    """The largest ratio of the slowest to the fastest epoch's wall time per clip within a phase
    (1.0: steady; above 2: the machine was busy for part of the run)."""
    worst = 1.0
    for p in {r.phase for r in records}:
        per_clip = [r.train_time / r.clips for r in records if r.phase == p and r.clips and r.train_time > 0]
        if len(per_clip) > 1:
            worst = max(worst, max(per_clip) / min(per_clip))
    return worst


@dataclass(frozen=True)
class PhaseRecord:
    """One phase of a run: factor ``R``, its epochs, tokens and batch, its training FLOPs per clip,
    the wall and load-robust seconds it took (``step_cost``: seconds per step, see
    :func:`phase_step_cost`), the one-time ``warmup_seconds`` before its first epoch (kernel
    selection, ``torch.compile``), outside the epochs' time, and ``entry_metrics``: the
    carried-over model evaluated once at the phase's resolution before it trained (empty when
    that evaluation was not asked for)."""

    phase: int
    R: int
    epochs: int
    tokens: int
    batch_size: int
    flops_per_clip: float
    train_time: float
    step_cost: float | None
    warmup_seconds: float = 0.0
    entry_metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PhaseRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def phase_records(records: Sequence[EpochRecord], warmups: Mapping[int, float] | None = None,
                  entries: Mapping[int, Mapping[str, float]] | None = None) -> list[PhaseRecord]:
    """A :class:`PhaseRecord` per phase of ``records``."""
    costs, out = phase_step_cost(records), []
    for p in sorted({r.phase for r in records}):
        mine = [r for r in records if r.phase == p]
        clips = sum(r.clips for r in mine)
        out.append(PhaseRecord(p, mine[0].R, len(mine), mine[0].tokens, mine[0].batch_size,
                               sum(r.train_flops for r in mine) / clips if clips else 0.0,
                               sum(r.train_time for r in mine), costs.get(p), (warmups or {}).get(p, 0.0),
                               dict((entries or {}).get(p, {}))))
    return out
