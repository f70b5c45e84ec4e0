"""Savings of coarse-to-fine runs against a baseline run, under the paper's two reporting rules.

The baseline reference is the baseline's best epoch (the first one on ties) and its cumulative
training cost up to that epoch (paper, Sec. 3.3). "Best" follows the metric's direction: the
largest accuracy or mAP, the smallest loss or reconstruction error (``higher``; by default the
direction the objective that reports the metric declares, see :func:`metric_higher_is_better`).

(a) *Accuracy/computation trade-off*: the final phase is stopped at the earliest epoch whose
    metric reaches the baseline's best; FLOPs and time saved are measured against the
    baseline's cumulative cost at its best epoch (Tables 2 and 4).
(b) *No budget constraint*: the best metric of the final phase and its gain over the baseline's
    best (Tables 3 and 5).

A run's records are the per-epoch dicts it writes to ``log.json`` (see :mod:`coarse2fine.training.loop`),
in training order, with at least ``phase``, ``epoch``, ``cum_flops``, ``cum_time`` and the
metric. Everything here is a pure function of those records.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from coarse2fine.objectives import objective_metrics, objective_names
from coarse2fine.objectives.metrics import higher_is_better

Record = Mapping[str, Any]

_REQUIRED = ("phase", "epoch", "cum_flops", "cum_time")
_FRACTION_METRICS = frozenset({"acc", "mAP", "mAUC"})
_DISPLAY = {"acc": "Acc", "d_prime": "d-prime"}
FORMATS = ("markdown", "csv", "text")


@dataclass(frozen=True)
class BaselineRef:
    """The baseline's best epoch for ``metric`` and its cumulative cost up to there."""

    metric: str
    best: float
    epoch: int
    cum_flops: float
    cum_time: float
    higher: bool = True
    cum_cal_time: float | None = None

    def reached_by(self, value: float, tolerance: float = 0.0) -> bool:
        """Whether ``value`` is as good as the baseline's best (within ``tolerance``)."""
        return value >= self.best - tolerance if self.higher else value <= self.best + tolerance


@dataclass(frozen=True)
class Savings:
    """One run against a :class:`BaselineRef`.

    Rule (a) fields (``epoch``, ``metric_at_reach``, ``flops_save_pct``, ``time_save_pct``) are
    None when the baseline's best was never reached (``reached`` False). Rule (b) fields are
    always set; ``gain`` is ``best_metric - baseline.best``. ``total_flops``/``total_time`` are
    the whole run's cumulative cost.
    """

    name: str
    metric: str
    reached: bool
    epoch: int | None
    metric_at_reach: float | None
    flops_save_pct: float | None
    time_save_pct: float | None
    best_metric: float
    gain: float
    best_epoch: int
    total_flops: float
    total_time: float
    cal_time_save_pct: float | None = None


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run's ``log.json`` (``{"records": [...], ...}``).

    ``path`` may also be the run folder holding ``log.json``. Raises ``FileNotFoundError`` for
    a missing file and ``ValueError`` for a file that is not a run log with records.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "log.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such run log") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{path}: expected a run log with a non-empty 'records' list")
    return records


def metric_higher_is_better(metric: str) -> bool:
    """The direction of ``metric``: as declared by the objective that reports it, else by name
    (losses are lower-is-better); a custom metric of unknown direction counts as higher-is-better."""
    for name in objective_names():
        metrics = objective_metrics(name)
        if metric in metrics:
            return bool(metrics[metric])
    try:
        return higher_is_better(metric)
    except ValueError:
        return True


def _check(records: Sequence[Record], metric: str, what: str) -> None:
    """Reject empty records and records without the required keys."""
    if not records:
        raise ValueError(f"{what}: no records")
    for i, rec in enumerate(records):
        missing = [k for k in (*_REQUIRED, metric) if k not in rec]
        if missing:
            raise ValueError(f"{what}: record {i} lacks {', '.join(map(repr, missing))}")


def _value(rec: Record, metric: str) -> float:
    return float(rec[metric])


def _best(records: Sequence[Record], metric: str, what: str, higher: bool = True) -> Record:
    """The first record holding the best (largest, or smallest unless ``higher``) non-NaN value."""
    best: Record | None = None
    for rec in records:
        v = _value(rec, metric)
        better = best is None or (v > _value(best, metric) if higher else v < _value(best, metric))
        if not math.isnan(v) and better:
            best = rec
    if best is None:
        raise ValueError(f"{what}: every {metric!r} value is NaN")
    return best


def best_value(records: Sequence[Record], metric: str, higher: bool | None = None) -> float:
    """The best value of ``metric`` over ``records`` in its direction (NaN values ignored)."""
    higher = metric_higher_is_better(metric) if higher is None else higher
    return _value(_best(records, metric, "run", higher), metric)


def baseline_reference(records: Sequence[Record], metric: str, higher: bool | None = None) -> BaselineRef:
    """Best epoch of the baseline (best value of ``metric``, first occurrence on ties);
    ``higher`` defaults to :func:`metric_higher_is_better`."""
    higher = metric_higher_is_better(metric) if higher is None else higher
    _check(records, metric, "baseline")
    best = _best(records, metric, "baseline", higher)
    cal = best.get("cum_cal_time")
    return BaselineRef(metric, _value(best, metric), int(best["epoch"]), float(best["cum_flops"]),
                       float(best["cum_time"]), higher, None if cal is None else float(cal))


def _save_pct(cost: float, reference: float) -> float:
    """Percentage of ``reference`` not spent; NaN when the reference cost is not positive."""
    return 100.0 * (1.0 - cost / reference) if reference > 0 else math.nan


def final_phase(records: Sequence[Record]) -> list[Record]:
    """The records of the highest phase index present (the full-resolution phase of a finished run)."""
    last = max(int(r["phase"]) for r in records)
    return [r for r in records if int(r["phase"]) == last]


def compare(
    run_name: str,
    records: Sequence[Record],
    baseline: BaselineRef,
    any_phase: bool = False,
    tolerance: float = 0.0,
) -> Savings:
    """Both rules for one run against ``baseline``.

    Only epochs of the final phase count (for reaching and for the best) unless ``any_phase``.
    An epoch reaches the baseline when its metric is at least as good as ``baseline.best``
    (within ``tolerance``), in the metric's direction.
    """
    metric = baseline.metric
    _check(records, metric, run_name)
    eligible = list(records) if any_phase else final_phase(records)
    hit = next((r for r in eligible if baseline.reached_by(_value(r, metric), tolerance)), None)
    best = _best(eligible, metric, run_name, baseline.higher)
    best_metric = _value(best, metric)
    return Savings(
        name=run_name,
        metric=metric,
        reached=hit is not None,
        epoch=int(hit["epoch"]) if hit is not None else None,
        metric_at_reach=_value(hit, metric) if hit is not None else None,
        flops_save_pct=_save_pct(float(hit["cum_flops"]), baseline.cum_flops) if hit is not None else None,
        time_save_pct=_save_pct(float(hit["cum_time"]), baseline.cum_time) if hit is not None else None,
        cal_time_save_pct=_save_pct(float(hit["cum_cal_time"]), baseline.cum_cal_time)
        if hit is not None and baseline.cum_cal_time is not None and "cum_cal_time" in hit else None,
        best_metric=best_metric,
        gain=best_metric - baseline.best,
        best_epoch=int(best["epoch"]),
        total_flops=float(records[-1]["cum_flops"]),
        total_time=float(records[-1]["cum_time"]),
    )


def _display_name(metric: str) -> str:
    return _DISPLAY.get(metric, metric)


def _shown(value: float, metric: str) -> float:
    """The value as printed: fractions as percentages with 2 decimals, others with 3."""
    return round(100.0 * value, 2) if metric in _FRACTION_METRICS else round(value, 3)


def _fmt_value(value: float, metric: str) -> str:
    digits = 2 if metric in _FRACTION_METRICS else 3
    return f"{_shown(value, metric):.{digits}f}"


def _fmt_delta(value: float, reference: float, metric: str) -> str:
    """Signed difference of the printed numbers, ``=`` when they print the same."""
    digits = 2 if metric in _FRACTION_METRICS else 3
    text = f"{_shown(value, metric) - _shown(reference, metric):+.{digits}f}"
    return "=" if float(text) == 0.0 else text


def _fmt_pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def table_columns(metric: str, calibrated: bool = False) -> list[str]:
    """Column headers of :func:`savings_table` rows for ``metric``. With calibrated time
    (records with ``cum_cal_time``, see :mod:`coarse2fine.report.timing`) "Time save" is the calibrated
    one and the measured wall time has its own column."""
    m = _display_name(metric)
    times = ["Time save (%)", "Wall time save (%)"] if calibrated else ["Time save (%)"]
    return ["Setting", f"{m} at first beat (delta)", "Beat epoch", "FLOPs save (%)", *times,
            f"Best {m} (gain)", "Best epoch"]


TIME_NOTE = {
    True: "Time save: calibrated (each phase's step cost timed interleaved in one process, times the steps each "
          "run took), which other load on the machine hardly moves; wall time save: measured epoch time.",
    False: "Time save: measured wall time of the training epochs.",
}


def savings_table(
    baseline_name: str,
    baseline_records: Sequence[Record],
    runs: Mapping[str, Sequence[Record]],
    metric: str,
    *,
    any_phase: bool = False,
    tolerance: float = 0.0,
    higher: bool | None = None,
) -> list[dict[str, str]]:
    """Rows of the paper-style savings table as strings, baseline first.

    The baseline row shows its best value, its best epoch and ``-`` in the save columns. A run
    that never reaches the baseline shows ``not reached`` and ``-`` in the rule (a) columns.
    Fraction metrics (acc, mAP, mAUC) are printed as percentages with 2 decimals; deltas and
    gains are differences of the printed numbers (``=`` for none).
    """
    ref = baseline_reference(baseline_records, metric, higher)
    calibrated = ref.cum_cal_time is not None
    cols = table_columns(metric, calibrated)
    dashes = ["-"] * (3 if calibrated else 2)
    rows = [dict(zip(cols, [baseline_name, _fmt_value(ref.best, metric), str(ref.epoch), *dashes,
                            _fmt_value(ref.best, metric), str(ref.epoch)]))]
    for name, records in runs.items():
        s = compare(name, records, ref, any_phase=any_phase, tolerance=tolerance)
        if s.reached:
            assert s.metric_at_reach is not None and s.flops_save_pct is not None and s.time_save_pct is not None
            times = [_fmt_pct(s.cal_time_save_pct if s.cal_time_save_pct is not None else math.nan),
                     _fmt_pct(s.time_save_pct)] if calibrated else [_fmt_pct(s.time_save_pct)]
            beat = [f"{_fmt_value(s.metric_at_reach, metric)} ({_fmt_delta(s.metric_at_reach, ref.best, metric)})",
                    str(s.epoch), _fmt_pct(s.flops_save_pct), *times]
        else:
            beat = ["not reached", "-", *dashes]
        best = [f"{_fmt_value(s.best_metric, metric)} ({_fmt_delta(s.best_metric, ref.best, metric)})", str(s.best_epoch)]
        rows.append(dict(zip(cols, [name, *beat, *best])))
    return rows


def _grid(rows: Sequence[Mapping[str, str]]) -> tuple[list[str], list[list[str]]]:
    cols = list(rows[0])
    return cols, [[str(r.get(c, "")) for c in cols] for r in rows]


def format_table(rows: Sequence[Mapping[str, str]], fmt: str = "markdown") -> str:
    """Render :func:`savings_table` rows as ``markdown``, ``csv`` or aligned plain ``text``.

    The columns are those of the first row. In markdown and text the first column is
    left-aligned and the others right-aligned. The result ends with a newline ("" for no rows).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not rows:
        return ""
    cols, cells = _grid(rows)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(cols)
        writer.writerows(cells)
        return buf.getvalue()
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]

    def align(values: Sequence[str]) -> list[str]:
        return [v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths))]

    if fmt == "markdown":
        rule = [("-" * w if i == 0 else "-" * (w - 1) + ":") for i, w in enumerate(widths)]
        lines = [align(cols), rule, *(align(row) for row in cells)]
        return "".join("| " + " | ".join(line) + " |\n" for line in lines)
    lines = [align(cols), ["-" * w for w in widths], *(align(row) for row in cells)]
    return "".join("  ".join(line).rstrip() + "\n" for line in lines)
