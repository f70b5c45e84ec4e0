"""What the transfer keeps: at each phase change, the model carried over from the previous phase,
evaluated once at the new phase's resolution before it trains (``c2f.eval_on_entry``), beside
the previous phase's last evaluation.

``kept = after / before``: 1.00 when the model scores at the new R what it scored at the old one
(a restart control, which changes nothing but the optimizer, keeps exactly 1.00); for accuracy,
below 1 is what the change of resolution lost (for a lower-is-better metric, above 1). The score
after the new phase's first epoch shows how fast it comes back. Pure functions of a run's epoch
and phase records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from coarse2fine.report.savings import SPREAD_SIGN, Records, display_name, format_value
from coarse2fine.report.stats import mean, sample_std
from coarse2fine.training.records import PhaseRecord, as_records

Phases = Sequence[PhaseRecord | Mapping[str, Any]]


@dataclass(frozen=True)
class Transfer:
    """One phase change of one run: the phase entered (0-based ``phase``), the factors before and
    after it, the previous phase's last evaluation (``before``), the carried-over model's
    evaluation before training (``after``) and the score after the new phase's first epoch
    (``first``; None when it has not trained one)."""

    phase: int
    R_from: int
    R_to: int
    before: float
    after: float
    first: float | None

    @property
    def kept(self) -> float:
        """``after / before`` (NaN when ``before`` is 0)."""
        return self.after / self.before if self.before else math.nan


def transfers(records: Records, phases: Phases, metric: str) -> list[Transfer]:
    """Every phase change of a run whose entry evaluation holds ``metric``."""
    recs = as_records(records)
    out = []
    for ph in (p if isinstance(p, PhaseRecord) else PhaseRecord.from_dict(p) for p in phases):
        prev = [r for r in recs if r.phase == ph.phase - 1]
        if ph.phase == 0 or metric not in ph.entry_metrics or not prev:
            continue
        mine = [r for r in recs if r.phase == ph.phase]
        out.append(Transfer(ph.phase, prev[-1].R, ph.R, prev[-1].metric(metric), float(ph.entry_metrics[metric]),
                            mine[0].metric(metric) if mine else None))
    return out


def kept_columns(metric: str) -> list[str]:
    """Column headers of :func:`kept_rows`."""
    m = display_name(metric)
    return ["Setting", "Phase change", "Seeds", f"{m} before (last evaluation)", f"{m} after (carried over, untrained)",
            "Kept (after / before)", f"{m} after the first epoch"]


def kept_rows(runs: Mapping[str, Sequence[tuple[Records, Phases]]], metric: str) -> list[dict[str, str]]:
    """Per setting (its seeds' ``(records, phases)``) and phase change, the mean over seeds of the
    score before and after the change and after the first epoch, and the mean ± sample std of
    each seed's kept ratio. Settings without a phase change or without entry evaluations have no
    row."""
    cols = kept_columns(metric)
    rows = []
    for name, seeds in runs.items():
        changes: dict[int, list[Transfer]] = {}
        for records, phases in seeds:
            for t in transfers(records, phases, metric):
                changes.setdefault(t.phase, []).append(t)
        for phase, ts in sorted(changes.items()):
            firsts = [t.first for t in ts if t.first is not None]
            kept = [t.kept for t in ts]
            rows.append(dict(zip(cols, [
                name, f"phase {phase} -> {phase + 1}: R={ts[0].R_from} -> R={ts[0].R_to}", str(len(ts)),
                format_value(mean([t.before for t in ts]), metric), format_value(mean([t.after for t in ts]), metric),
                _format_ratio(mean(kept), sample_std(kept)),
                format_value(mean(firsts), metric) if firsts else "-",
            ])))
    return rows


def _format_ratio(value: float, spread: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f}" if math.isnan(spread) else f"{value:.2f}{SPREAD_SIGN}{spread:.2f}"


def kept_note(metric: str) -> str:
    """What the kept table's ratios mean, for ``metric``."""
    if metric != "masked_acc":
        return KEPT_NOTE
    return KEPT_NOTE + (" masked_acc picks each masked patch among the clip's masked patches, whose number follows "
                        "the phase's tokens: its chance level (1 / that number) is R times higher in a coarse phase, "
                        "so part of a kept below 1.00 is the lower chance at full resolution, not a loss.")


KEPT_NOTE = ("Kept: at each phase change the carried-over model is evaluated once at the new resolution before it "
             "trains (after) and set against the previous phase's last evaluation (before); 1.00 keeps everything (a "
             "restart control, whose phases share the resolution, keeps exactly 1.00). Means over seeds; kept: mean "
             "± sample std of each seed's ratio.")
