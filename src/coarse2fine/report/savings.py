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

A run's records are its :class:`~coarse2fine.training.records.EpochRecord` list (or the dicts of
its ``log.json``), in training order. Time is saved by every measure the records carry: wall
time, and the load-robust step time (see :mod:`coarse2fine.training.records`); each has
its own column. Everything here is a pure function of those records.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from coarse2fine.objectives import objective_metrics, objective_names
from coarse2fine.objectives.metrics import FRACTION_METRICS, higher_is_better
from coarse2fine.training.records import (
    TIME_LABELS,
    TIME_MEASURES,
    EpochRecord,
    as_records,
    best_of,
    cumulative_time,
    epoch_spread,
    final_phase,
    measures,
    phase_step_cost,
)

Records = Sequence[EpochRecord | Mapping[str, Any]]
_DISPLAY = {"acc": "Acc", "d_prime": "d-prime"}
FORMATS = ("markdown", "csv", "text", "json")
MARKS = "*†‡"  # appended to a time save: busy machine, other machines, the machine's speed changed (time_marks)
SPREAD_LIMIT = 2.0
# How far a run's full-resolution step may cost from the baseline's (the same step: same model,
# geometry and batch) before its in-run time saves are marked: the machine's speed changed.
DRIFT_LIMIT = 1.10


@dataclass(frozen=True)
class BaselineRef:
    """The baseline's best epoch for ``metric`` and its cumulative cost up to there: FLOPs, wall
    time (``cum_time``) and every time measure its records carry (``times``, by measure)."""

    metric: str
    best: float
    epoch: int
    cum_flops: float
    cum_time: float
    higher: bool = True
    times: Mapping[str, float] = field(default_factory=dict)

    def reached_by(self, value: float, tolerance: float = 0.0) -> bool:
        """Whether ``value`` is as good as the baseline's best (within ``tolerance``)."""
        return value >= self.best - tolerance if self.higher else value <= self.best + tolerance


@dataclass(frozen=True)
class Savings:
    """One run against a :class:`BaselineRef`.

    Rule (a) fields (``epoch``, ``metric_at_reach``, ``flops_save_pct``, ``time_save_pct``: wall
    time, ``time_saves``: by time measure) are None (empty) when the baseline's best was never
    reached (``reached`` False). Rule (b) fields are always set; ``gain`` is ``best_metric -
    baseline.best``. ``total_flops``/``total_time`` are the whole run's cumulative cost.
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
    time_saves: Mapping[str, float] = field(default_factory=dict)


def read_log(path: str | Path) -> dict[str, Any]:
    """A run's ``log.json`` (``path`` may be the run folder) with its ``records`` as
    :class:`EpochRecord`. Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a
    file that is not a run log with records."""
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
    try:
        return {**data, "records": as_records(records), "path": path}
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def load_records(path: str | Path) -> list[EpochRecord]:
    """The per-epoch records of a run's ``log.json`` (see :func:`read_log`)."""
    return read_log(path)["records"]


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


def record_metrics(records: Records) -> list[str]:
    """The metrics every one of ``records`` carries, sorted."""
    recs = as_records(records)
    common = set(recs[0].metrics) if recs else set()
    for rec in recs[1:]:
        common &= set(rec.metrics)
    return sorted(common)


def check_metric(metric: str, runs: Mapping[str, Records]) -> None:
    """Refuse a ``metric`` the runs' records do not carry: one the first run (the baseline)
    lacks is unknown, and the error lists the metrics every run carries; one only some runs
    lack names them."""
    have = {name: record_metrics(records) for name, records in runs.items()}
    first = next(iter(have.values()), [])
    if metric not in first:
        common = sorted(set(first).intersection(*have.values()))
        raise ValueError(f"unknown metric {metric!r}: the runs' records have {', '.join(common) or 'no common metric'}")
    lacking = [name for name, metrics in have.items() if metric not in metrics]
    if lacking:
        raise ValueError(f"{', '.join(lacking)}: the records lack {metric!r} (the baseline's have it)")


def _checked(records: Records, metric: str, what: str) -> list[EpochRecord]:
    """``records`` as :class:`EpochRecord`; empty records and records without ``metric`` are refused
    (a metric no record carries as unknown, with the metrics they have)."""
    if not records:
        raise ValueError(f"{what}: no records")
    try:
        out = as_records(records)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None
    if all(metric not in rec.metrics for rec in out):
        raise ValueError(f"{what}: unknown metric {metric!r}; its records have {', '.join(record_metrics(out))}")
    for i, rec in enumerate(out):
        if metric not in rec.metrics:
            raise ValueError(f"{what}: record {i} lacks {metric!r}")
    return out


def _best(records: Sequence[EpochRecord], metric: str, what: str, higher: bool = True) -> EpochRecord:
    """The first record holding the best (largest, or smallest unless ``higher``) non-NaN value."""
    best = best_of(records, metric, higher)
    if best is None:
        raise ValueError(f"{what}: every {metric!r} value is NaN")
    return best


def best_record(records: Records, metric: str, higher: bool | None = None, any_phase: bool = False) -> EpochRecord:
    """The epoch of the best value of ``metric`` in its direction (NaN values ignored; the first of
    equal values) over the final phase's epochs, the one "best" every table and command reports
    (``any_phase``: over every epoch)."""
    higher = metric_higher_is_better(metric) if higher is None else higher
    recs = _checked(records, metric, "run")
    return _best(recs if any_phase else final_phase(recs), metric, "run", higher)


def best_value(records: Records, metric: str, higher: bool | None = None, any_phase: bool = False) -> float:
    """The value of :func:`best_record`."""
    return best_record(records, metric, higher, any_phase).metric(metric)


def best_coarse_value(records: Records, metric: str, higher: bool | None = None) -> float | None:
    """The best value of ``metric`` before the final phase (None for a one-phase run)."""
    recs = _checked(records, metric, "run")
    coarse = [r for r in recs if r.phase < max(x.phase for x in recs)]
    if not coarse:
        return None
    higher = metric_higher_is_better(metric) if higher is None else higher
    return _best(coarse, metric, "run", higher).metric(metric)


def _times_at(records: Sequence[EpochRecord], rec: EpochRecord) -> dict[str, float]:
    """Cumulative seconds up to ``rec`` by every time measure ``records`` carry."""
    i = records.index(rec)
    return {m: cumulative_time(records, m)[i] for m in measures(records)}


def baseline_reference(records: Records, metric: str, higher: bool | None = None) -> BaselineRef:
    """Best epoch of the baseline (best value of ``metric``, first occurrence on ties);
    ``higher`` defaults to :func:`metric_higher_is_better`."""
    higher = metric_higher_is_better(metric) if higher is None else higher
    recs = _checked(records, metric, "baseline")
    best = _best(recs, metric, "baseline", higher)
    return BaselineRef(metric, best.metric(metric), best.epoch, float(best.cum_flops), float(best.cum_time), higher,
                       _times_at(recs, best))


def _save_pct(cost: float, reference: float) -> float:
    """Percentage of ``reference`` not spent; NaN when the reference cost is not positive."""
    return 100.0 * (1.0 - cost / reference) if reference > 0 else math.nan


def compare(
    run_name: str,
    records: Records,
    baseline: BaselineRef,
    any_phase: bool = False,
    tolerance: float = 0.0,
) -> Savings:
    """Both rules for one run against ``baseline``.

    Only epochs of the final phase count (for reaching and for the best) unless ``any_phase``.
    An epoch reaches the baseline when its metric is at least as good as ``baseline.best``
    (within ``tolerance``), in the metric's direction. Time is saved by every measure both the
    run and the baseline carry.
    """
    metric = baseline.metric
    recs = _checked(records, metric, run_name)
    eligible = recs if any_phase else final_phase(recs)
    hit = next((r for r in eligible if baseline.reached_by(r.metric(metric), tolerance)), None)
    best = _best(eligible, metric, run_name, baseline.higher)
    saves = {}
    if hit is not None:
        at = _times_at(recs, hit)
        saves = {m: _save_pct(at[m], baseline.times[m]) for m in TIME_MEASURES if m in at and m in baseline.times}
    return Savings(
        name=run_name,
        metric=metric,
        reached=hit is not None,
        epoch=hit.epoch if hit is not None else None,
        metric_at_reach=hit.metric(metric) if hit is not None else None,
        flops_save_pct=_save_pct(float(hit.cum_flops), baseline.cum_flops) if hit is not None else None,
        time_save_pct=_save_pct(float(hit.cum_time), baseline.cum_time) if hit is not None else None,
        best_metric=best.metric(metric),
        gain=best.metric(metric) - baseline.best,
        best_epoch=best.epoch,
        total_flops=float(recs[-1].cum_flops),
        total_time=float(recs[-1].cum_time),
        time_saves=saves,
    )


def display_name(metric: str) -> str:
    """The metric's name in table headers (``Acc``, ``d-prime``, ``mAP``)."""
    return _DISPLAY.get(metric, metric)


def shown_value(value: float, metric: str) -> float:
    """The value as printed: fractions as percentages with 2 decimals, others with 3."""
    return round(100.0 * value, 2) if metric in FRACTION_METRICS else round(value, 3)


def format_value(value: float, metric: str) -> str:
    """``value`` as tables print it (fractions as percentages, 2 decimals; others 3 decimals)."""
    digits = 2 if metric in FRACTION_METRICS else 3
    return f"{shown_value(value, metric):.{digits}f}"


def format_signed(value: float, metric: str) -> str:
    """A difference of ``metric`` values as tables print it, with its sign (``+1.25``)."""
    digits = 2 if metric in FRACTION_METRICS else 3
    return f"{shown_value(value, metric):+.{digits}f}"


def format_delta(value: float, reference: float, metric: str) -> str:
    """Signed difference of the printed numbers, ``=`` when they print the same."""
    digits = 2 if metric in FRACTION_METRICS else 3
    text = f"{shown_value(value, metric) - shown_value(reference, metric):+.{digits}f}"
    return "=" if float(text) == 0.0 else text


def format_pct(value: float) -> str:
    """A percentage with 2 decimals (``n/a`` for NaN)."""
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def time_column(measure: str) -> str:
    """The savings-table column of a time measure, e.g. ``Wall time save (%)``."""
    return f"{TIME_LABELS[measure]} save (%)"


def table_columns(metric: str, time_measures: Sequence[str] = ("wall",)) -> list[str]:
    """Column headers of :func:`savings_table` rows for ``metric``, one time column per measure."""
    m = display_name(metric)
    return ["Setting", f"{m} at first beat (delta)", "Beat epoch", "FLOPs save (%)",
            *(time_column(t) for t in time_measures), f"Best {m} (gain)", "Best epoch"]


TIME_NOTES = {
    "wall": "wall time: the measured time of the training epochs",
    "step": "step time: each phase's lower quartile of its steps' times, pooled over its epochs (other load only adds time), "
            "times the steps each run took, measured in the run itself",
    "calibrated": "calibrated time: each phase's real step timed interleaved in one process on real batches, "
                  "times the steps each run took",
}


ELSEWHERE_MEASURES = ("wall", "step")  # measured in the runs themselves, so on each run's machine


def time_note(time_measures: Sequence[str], busy: Sequence[str] = (),
              elsewhere: Mapping[str, Sequence[str]] | None = None, drift: Mapping[str, float] | None = None,
              turns: tuple[Sequence[str], Sequence[str]] = ((), ())) -> str:
    """What each time column of a table measures, how the runs were trained (``turns``:
    :func:`in_turns`), which runs' wall times cannot be trusted (``busy``, marked ``*``), which
    runs were timed on other machines than the baseline (``elsewhere``, :func:`timed_elsewhere`,
    marked ``†``) and on which the same step took another time than in the baseline (``drift``,
    :func:`drifted`, marked ``‡``)."""
    note = "Time saves by " + "; ".join(TIME_NOTES[m] for m in time_measures) + "."
    together, apart = turns
    if together and not apart:
        note += (" The runs were trained in turns of one epoch each in one process (experiment.interleave): a "
                 "change of the machine's speed that lasted longer than a round of epochs slowed every run alike "
                 "(a shorter one did not).")
    elif together:
        note += (f" Trained in turns of one epoch each (experiment.interleave), in whole or in part: "
                 f"{', '.join(together)}; alone: {', '.join(apart)}.")
    if busy:
        note += (f" * {', '.join(busy)}: epochs of one phase took more than {SPREAD_LIMIT:g}x as long as others "
                 "(the machine was busy): their wall time save cannot be trusted.")
    if elsewhere:
        where = "; ".join(f"{name} on {' and '.join(m)}" for name, m in elsewhere.items())
        note += (f" † Timed on different machines or thread counts ({where}): their wall and step time saves "
                 "compare those as well as the training; the calibrated column (--calibrate-rounds) times every "
                 "phase on one.")
    if drift:
        ratios = ", ".join(f"{name} {ratio:.2f}x" for name, ratio in drift.items())
        note += (f" ‡ The same full-resolution step took another time than in the baseline ({ratios}): the "
                 "machine ran it at another speed for these runs than for the baseline, and their wall and step time "
                 "saves measure that too; "
                 "the calibrated column (--calibrate-rounds) times every phase in one process.")
    return note


def in_turns(named: Mapping[str, Records]) -> tuple[list[str], list[str]]:
    """The runs with epochs trained in turns with others (:mod:`coarse2fine.training.interleave`),
    and the runs trained alone throughout."""
    together = [name for name, recs in named.items() if any((r.turns or 0) > 1 for r in as_records(recs))]
    return together, [name for name in named if name not in together]


def run_machines(records: Records) -> list[str]:
    """The machines a run's epochs were timed on, in the order they first appear (a run resumed
    elsewhere has several; records that do not say are left out)."""
    return list(dict.fromkeys(r.machine for r in as_records(records) if r.machine is not None))


def timed_elsewhere(named: Mapping[str, Records], baseline: str) -> dict[str, list[str]]:
    """The runs whose times do not compare with the baseline's because they were measured on
    other machines, with the machines of each: every run timed (in part) on a machine the
    baseline was not timed on, and every run when the baseline itself was timed on several.
    Empty when all runs that say where they ran ran on one machine; runs that do not say are
    taken to match."""
    machines = {name: run_machines(recs) for name, recs in named.items()}
    base = set(machines.get(baseline, []))
    if not base or len({m for ms in machines.values() for m in ms}) <= 1:
        return {}
    return {name: ms for name, ms in machines.items() if ms and (len(base) > 1 or set(ms) != base)}


def full_step_cost(records: Records) -> tuple[float, int, int] | None:
    """A run's full-resolution step as its records give it: the load-robust seconds per step of
    its phases at R = 1 pooled (:func:`~coarse2fine.training.records.phase_step_cost`; the final
    phase of a coarse-to-fine run, every phase of a restart control), with the final phase's clips
    per step and tokens per clip in training (patchout trains on fewer than the model has); None
    without step times or when the final phase is not at R = 1."""
    recs = as_records(records)
    last = final_phase(recs)
    full = [dataclasses.replace(r, phase=0) for r in recs if r.R == 1]
    if not last or last[0].R != 1 or any(r.step_median is None or not r.steps or not r.clips for r in full):
        return None
    return phase_step_cost(full)[0], round(last[0].clips / last[0].steps), last[0].train_tokens or last[0].tokens


def drifted(named: Mapping[str, Records], baseline: str, limit: float = DRIFT_LIMIT) -> dict[str, float]:
    """The runs whose full-resolution step (:func:`full_step_cost`: the same model, geometry and
    batch as the baseline's) cost more than ``limit`` times the baseline's, or less than its
    inverse, with the ratio: a measure, from the runs themselves, of how much the machine's speed
    changed between them. Runs whose step differs from the baseline's (another batch, or another
    token count in training, as with patchout) or that lack step times are left out."""
    base = full_step_cost(named[baseline]) if baseline in named else None
    if base is None or base[0] <= 0:
        return {}
    out = {}
    for name, records in named.items():
        cost = full_step_cost(records) if name != baseline else None
        if cost is None or cost[1:] != base[1:]:
            continue
        ratio = cost[0] / base[0]
        if ratio > limit or ratio < 1 / limit:
            out[name] = ratio
    return out


def table_note(baseline: Records, runs: Mapping[str, Records], baseline_name: str = "Baseline",
               rows: Sequence[Mapping[str, str]] | None = None) -> str:
    """:func:`time_note` for a table of ``runs`` against ``baseline``: the time measures they all
    carry, the busy runs, the runs timed on other machines, the runs whose same step drifted; with
    the table's ``rows``, of those only the baseline and the runs whose row shows a time (a run
    that never reached the baseline's best has no time save to mark)."""
    named = {baseline_name: baseline, **runs}
    time_measures = table_measures([baseline, *runs.values()])
    marked = named if rows is None else {name: recs for name, recs in named.items()
                                         if name == baseline_name or name in _timed_rows(rows)}
    return time_note(time_measures, busy_runs(marked), timed_elsewhere(marked, baseline_name),
                     drifted(marked, baseline_name), in_turns(named))


def _timed_rows(rows: Sequence[Mapping[str, str]]) -> set[str]:
    """The settings whose row shows a time in a column that time marks may mark."""
    return {str(row.get("Setting")) for row in rows
            if any(MARKED_COLUMN.search(col) and str(cell).rstrip(MARKS) not in ("", "-", "n/a")
                   for col, cell in row.items())}


def time_marks(measure: str, name: str, baseline_name: str, busy: set[str], elsewhere: Mapping[str, Any],
               drift: Mapping[str, float] | None = None) -> str:
    """The marks on a run's time save by ``measure``: ``*`` for a wall time on a busy machine,
    ``†`` for a time measured in the runs on other machines than the baseline's, ``‡`` for one
    measured in a run whose full-resolution step took another time than the baseline's."""
    marks = "*" if measure == "wall" and busy & {name, baseline_name} else ""
    if measure in ELSEWHERE_MEASURES and (name in elsewhere or baseline_name in elsewhere):
        marks += "†"
    if measure in ELSEWHERE_MEASURES and drift and name in drift:
        marks += "‡"
    return marks


def table_measures(runs: Sequence[Records]) -> list[str]:
    """The time measures every run carries (``wall`` always)."""
    have = [set(measures(as_records(r))) for r in runs]
    return [m for m in TIME_MEASURES if all(m in h for h in have)]


def busy_runs(named: Mapping[str, Records]) -> list[str]:
    """The runs whose epochs of one phase varied by more than :data:`SPREAD_LIMIT` in wall time per clip."""
    return [name for name, recs in named.items() if epoch_spread(as_records(recs)) > SPREAD_LIMIT]


def savings_table(
    baseline_name: str,
    baseline_records: Records,
    runs: Mapping[str, Records],
    metric: str,
    *,
    any_phase: bool = False,
    tolerance: float = 0.0,
    higher: bool | None = None,
) -> list[dict[str, str]]:
    """Rows of the paper-style savings table as strings, baseline first.

    The baseline row shows its best value, its best epoch and ``-`` in the save columns. A run
    that never reaches the baseline shows ``not reached`` and ``-`` in the rule (a) columns; one
    whose last phase is not at full resolution (an unfinished run's records) is not compared.
    There is a time column per measure every run carries (:func:`table_measures`); a wall time
    save whose run was on a busy machine (:func:`busy_runs`) is marked ``*``, and a wall or step
    time save measured on another machine than the baseline's (:func:`timed_elsewhere`) ``†``. Fraction metrics
    (acc, mAP, mAUC) are printed as percentages with 2 decimals; deltas and gains are
    differences of the printed numbers (``=`` for none).
    """
    ref = baseline_reference(baseline_records, metric, higher)
    time_measures = table_measures([baseline_records, *runs.values()])
    named = {baseline_name: baseline_records, **runs}
    busy, elsewhere, drift = set(busy_runs(named)), timed_elsewhere(named, baseline_name), drifted(named, baseline_name)
    cols = table_columns(metric, time_measures)
    dashes = ["-"] * (2 + len(time_measures))
    rows = [dict(zip(cols, [baseline_name, format_value(ref.best, metric), str(ref.epoch), *dashes[1:],
                            format_value(ref.best, metric), str(ref.epoch)]))]
    for name, records in runs.items():
        if records and (at := final_phase(as_records(records))[0].R) != 1:  # read mid-run, or stopped coarse
            rows.append(dict(zip(cols, [name, f"not at full resolution (last phase R={at})", *dashes, "-", "-"])))
            continue
        s = compare(name, records, ref, any_phase=any_phase, tolerance=tolerance)
        if s.reached:
            assert s.metric_at_reach is not None and s.flops_save_pct is not None
            times = [format_pct(s.time_saves.get(m, math.nan)) + time_marks(m, name, baseline_name, busy, elsewhere,
                                                                            drift)
                     for m in time_measures]
            beat = [f"{format_value(s.metric_at_reach, metric)} ({format_delta(s.metric_at_reach, ref.best, metric)})",
                    str(s.epoch), format_pct(s.flops_save_pct), *times]
        else:
            beat = ["not reached", *dashes]
        best = [f"{format_value(s.best_metric, metric)} ({format_delta(s.best_metric, ref.best, metric)})",
                str(s.best_epoch)]
        rows.append(dict(zip(cols, [name, *beat, *best])))
    return rows


SPLIT_SUFFIXES = {" (delta)": "delta", " (gain)": "gain"}
SPREAD_SIGN = " ± "  # between a mean and its standard deviation (seeds.format_spread)
INTERVAL = re.compile(r"(\S+) \[(\S+), (\S+)\]")  # a value and its interval (seeds.format_gain)
CI_COLUMN = re.compile(r" \(\d+(\.\d+)? % CI\)$")  # a column of such intervals
MARKED_COLUMN = re.compile(r"time save \(%\)$|^Run .*time \(x baseline\)$")  # columns time_marks may mark


def _split_cell(cell: str) -> tuple[str, str]:
    """``"49.90 (+0.50)"`` -> ``("49.90", "+0.50")``; ``"44.30 (=)"`` -> ``("44.30", "+0.00")``;
    a cell without a difference (the baseline's, ``not reached``) -> ``(cell, "-")``."""
    value, sep, rest = cell.partition(" (")
    if not sep or not rest.endswith(")"):
        return cell, "-"
    diff = rest[:-1]
    if diff == "=":
        decimals = len(value.partition(".")[2])
        diff = "+0" + ("." + "0" * decimals if decimals else "")
    return value, diff


def csv_rows(rows: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """Rows as CSV gives them: a ``value (difference)`` column (``Best Acc (gain)``, ``Acc at first
    beat (delta)``) becomes two, the value (``Best Acc``) and the difference (``Best Acc gain``),
    and a column holding ``mean ± std`` cells becomes two, the mean and the std (``Best Acc (mean ±
    std)`` -> ``Best Acc``, ``Best Acc std``; empty where a cell has no spread), and a column of
    ``value [low, high]`` cells three (``Paired gain (95 % CI)`` -> ``Paired gain``, ``Paired gain
    CI low``, ``Paired gain CI high``), and a column whose cells carry :data:`MARKS` two, the
    value and its marks (``Wall time save (%)`` -> ``Wall time save (%)``, ``Wall time save (%)
    marks``), so that each cell holds one number, and a table's ``-`` (no value) is an empty cell;
    the other columns stay as they are."""
    cols = list(dict.fromkeys(col for row in rows for col in row))
    # By the column's name, so that every table of a kind has the same CSV columns, whatever its cells hold
    spread = {col for col in cols if col.endswith(("(mean ± std)", "(± std)"))} | {
        col for row in rows for col, cell in row.items() if SPREAD_SIGN in str(cell)}
    interval = {col for col in cols if CI_COLUMN.search(col)} | {
        col for row in rows for col, cell in row.items() if INTERVAL.fullmatch(str(cell))}
    marked = {col for col in cols if MARKED_COLUMN.search(col)} | {
        col for row in rows for col, cell in row.items() if str(cell)[-1:] in tuple(MARKS)}
    out = []
    for row in rows:
        new: dict[str, str] = {}
        for col, cell in row.items():
            suffix = next((s for s in SPLIT_SUFFIXES if col.endswith(s)), None)
            if col in interval:
                head = CI_COLUMN.sub("", col)
                found = INTERVAL.fullmatch(str(cell))
                new[head], new[f"{head} CI low"], new[f"{head} CI high"] = found.groups() if found else (cell, "", "")
                continue
            if col in spread:
                head = col.removesuffix(" (mean ± std)").removesuffix(" (± std)")
                new[head], _, new[f"{head} std"] = str(cell).partition(SPREAD_SIGN)
                continue
            if col in marked:
                value = str(cell).rstrip(MARKS)
                new[col], new[f"{col} marks"] = value, str(cell)[len(value):]
                continue
            if suffix is None:
                new[col] = cell
                continue
            head = col[: -len(suffix)]
            new[head], new[f"{head} {SPLIT_SUFFIXES[suffix]}"] = _split_cell(str(cell))
        out.append({col: "" if cell == "-" else cell for col, cell in new.items()})
    return out


def json_value(cell: str) -> float | int | str | None:
    """A CSV cell as JSON gives it: a number as a number, ``-`` or an empty cell as null, text
    (``not reached``, a name, marks) as it is."""
    if cell in ("", "-"):
        return None
    try:
        number = float(cell)
    except ValueError:
        return cell
    return int(number) if re.fullmatch(r"[+-]?\d+", cell) else number


def json_rows(rows: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Rows as JSON gives them: the CSV's columns (:func:`csv_rows`), under the same names, with
    numbers as numbers (:func:`json_value`)."""
    return [{col: json_value(str(cell)) for col, cell in row.items()} for row in csv_rows(rows)]


def _grid(rows: Sequence[Mapping[str, str]]) -> tuple[list[str], list[list[str]]]:
    cols = list(rows[0])
    return cols, [[str(r.get(c, "")) for c in cols] for r in rows]


def format_table(rows: Sequence[Mapping[str, str]], fmt: str = "markdown") -> str:
    """Render :func:`savings_table` rows as ``markdown``, ``csv``, ``json`` or aligned plain ``text``.

    The columns are those of the first row. In markdown and text the first column is
    left-aligned and the others right-aligned; in CSV a ``value (difference)`` column is two
    (:func:`csv_rows`); JSON is a list of objects with the CSV's columns (:func:`json_rows`).
    The result ends with a newline ("" for no rows; ``[]`` in JSON).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(json_rows(rows), indent=1, ensure_ascii=False) + "\n"
    if not rows:
        return ""
    cols, cells = _grid(csv_rows(rows) if fmt == "csv" else rows)
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
        widths = [max(w, 3) for w in widths]  # a delimiter cell needs a '-' beside its ':' (GFM)
        rule = [("-" * w if i == 0 else "-" * (w - 1) + ":") for i, w in enumerate(widths)]
        lines = [align(cols), rule, *(align(row) for row in cells)]
        return "".join("| " + " | ".join(line) + " |\n" for line in lines)
    lines = [align(cols), ["-" * w for w in widths], *(align(row) for row in cells)]
    return "".join("  ".join(line).rstrip() + "\n" for line in lines)
