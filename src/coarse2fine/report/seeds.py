"""Settings trained with several seeds (and folds): mean curves, the best's mean and spread, and
the paired difference to the baseline with a bootstrap interval.

Seed k of every setting trains with the same ``train.seed`` (see
:mod:`coarse2fine.experiments.settings`), so a setting is compared with the baseline seed by
seed. For each setting:

* **best**: each seed's best value of the metric in the final phase
  (:func:`~coarse2fine.report.savings.best_value`), their mean and sample standard deviation;
* **paired gain**: the mean over seeds of (the setting's best - the baseline's best, same seed),
  with a 95 % percentile bootstrap interval (:mod:`coarse2fine.report.stats`);
* **mean curves** (:func:`mean_records`): per epoch, the mean over seeds of every metric, of the
  cumulative FLOPs and of every time measure. "First epoch that beats the baseline", its FLOPs
  and time saves are read from the mean curves against the best of the baseline's mean curve,
  by the rules of :mod:`coarse2fine.report.savings`;
* the whole run's FLOPs and time against the baseline's (controls train longer).

Across folds (:func:`fold_table`), ESC-50's convention: each fold's seed-mean best, the mean over
folds, and the paired gain per fold with its bootstrap interval over folds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from coarse2fine.report.savings import (
    SPREAD_SIGN,
    Records,
    baseline_reference,
    best_value,
    busy_runs,
    compare,
    display_name,
    drifted,
    format_delta,
    format_pct,
    format_signed,
    format_value,
    metric_higher_is_better,
    table_measures,
    time_column,
    time_marks,
    timed_elsewhere,
)
from coarse2fine.report.stats import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    bootstrap_interval,
    mean,
    paired_differences,
    sample_std,
)
from coarse2fine.training.records import TIME_LABELS, EpochRecord, as_records, cumulative_time, phase_step_cost

SeedRuns = Sequence[Records]  # one setting: one run's records per seed, seed 0 first


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else mean([float(v) for v in values])  # type: ignore[arg-type]


def _machines(values: Sequence[str | None]) -> str | None:
    """The machine the seeds' epochs were timed on, several joined with `` / `` (None when unknown)."""
    known = sorted({v for v in values if v is not None})
    return " / ".join(known) if known else None


def mean_records(runs: SeedRuns) -> list[EpochRecord]:
    """The mean run of one setting's seeds: per epoch, the mean of every metric, of the loss, of
    the FLOPs and of every time (wall, evaluation, calibrated; the step-time measure as the mean
    of each seed's phase step cost, so that its times are the mean of the seeds' times). The
    seeds must have trained the same epochs in the same phases (fixed phase lengths)."""
    seeds = [as_records(r) for r in runs]
    if not seeds or not all(seeds):
        raise ValueError("mean curves need at least one seed with records")
    if len(seeds) == 1:
        return list(seeds[0])
    shape = [(r.epoch, r.phase, r.R, r.steps) for r in seeds[0]]
    for k, recs in enumerate(seeds[1:], 1):
        if [(r.epoch, r.phase, r.R, r.steps) for r in recs] != shape:
            raise ValueError(f"seed {k} trained other epochs, phases or steps than seed 0; mean curves need the same "
                             "phase lengths in every seed (c2f.switch: fixed, c2f.final_stop: epochs)")
    costs = [phase_step_cost(recs) for recs in seeds]
    out = []
    for i, first in enumerate(seeds[0]):
        recs = [s[i] for s in seeds]
        metrics = {k: mean([r.metrics[k] for r in recs]) for k in first.metrics if all(k in r.metrics for r in recs)}
        step = _mean_or_none([c.get(first.phase) for c in costs]) if first.step_median is not None else None
        out.append(dataclasses.replace(
            first, lr=mean([r.lr for r in recs]), train_loss=_mean_or_none([r.train_loss for r in recs]),
            metrics=metrics,
            train_flops=mean([r.train_flops for r in recs]), cum_flops=mean([r.cum_flops for r in recs]),
            train_time=mean([r.train_time for r in recs]), cum_time=mean([r.cum_time for r in recs]),
            data_time=mean([r.data_time for r in recs]), eval_time=mean([r.eval_time for r in recs]), step_median=step,
            step_deciles=None,
            load_avg=_mean_or_none([r.load_avg for r in recs]), machine=_machines([r.machine for r in recs]),
            mfu=_mean_or_none([r.mfu for r in recs]),
            cal_time=_mean_or_none([r.cal_time for r in recs])))
    return out


def metric_band(runs: SeedRuns, metric: str) -> list[float]:
    """Per epoch, the sample standard deviation of ``metric`` over the seeds (NaN for one seed)."""
    seeds = [as_records(r) for r in runs]
    return [sample_std([s[i].metric(metric) for s in seeds]) for i in range(len(seeds[0]))]


@dataclass(frozen=True)
class SeedSummary:
    """A setting over its seeds: each seed's final-phase best (``bests``), their mean and sample
    standard deviation, and against a baseline the paired differences per seed, their mean
    (``gain``) and its bootstrap interval (``interval``; None without a baseline)."""

    bests: tuple[float, ...]
    mean: float
    std: float
    differences: tuple[float, ...] = ()
    gain: float | None = None
    interval: tuple[float, float] | None = None


def summarize(runs: SeedRuns, metric: str, baseline: SeedRuns | None = None, higher: bool | None = None,
              level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> SeedSummary:
    """:class:`SeedSummary` of one setting's seeds (against ``baseline``'s seeds, paired by index)."""
    bests = tuple(best_value(r, metric, higher) for r in runs)
    if baseline is None:
        return SeedSummary(bests, mean(bests), sample_std(bests))
    if len(baseline) != len(runs):
        raise ValueError(f"paired by seed: {len(runs)} seeds against the baseline's {len(baseline)}")
    diffs = tuple(paired_differences(bests, [best_value(r, metric, higher) for r in baseline]))
    return SeedSummary(bests, mean(bests), sample_std(bests), diffs, mean(diffs),
                       bootstrap_interval(diffs, level, resamples, seed))


def format_spread(value: float, spread: float, metric: str) -> str:
    """``mean ± std`` as tables print it (the mean alone when the spread is undefined)."""
    if math.isnan(spread):
        return format_value(value, metric)
    return f"{format_value(value, metric)}{SPREAD_SIGN}{format_value(spread, metric)}"


def format_gain(gain: float, interval: tuple[float, float] | None, metric: str) -> str:
    """``+2.50 [+0.75, +4.00]``: a paired gain with its interval (the gain alone without one)."""
    if interval is None or any(math.isnan(v) for v in interval):
        return format_signed(gain, metric)
    return f"{format_signed(gain, metric)} [{format_signed(interval[0], metric)}, {format_signed(interval[1], metric)}]"


def robust_measure(time_measures: Sequence[str]) -> str:
    """The time measure least moved by other load among those present (calibrated, step time, wall)."""
    return next((m for m in ("calibrated", "step") if m in time_measures), "wall")


def seed_columns(metric: str, time_measures: Sequence[str], level: float = 0.95) -> list[str]:
    """Column headers of :func:`seed_table` rows."""
    m = display_name(metric)
    return ["Setting", "Seeds", f"Best {m} (mean ± std)", f"Paired gain ({100 * level:g} % CI)",
            f"{m} at first beat on mean curve (delta)", "Beat epoch", "FLOPs save (%)",
            *(time_column(t) for t in time_measures), "Run FLOPs (x baseline)",
            f"Run {TIME_LABELS[robust_measure(time_measures)].lower()} (x baseline)"]


def seed_table(baseline_name: str, baseline: SeedRuns, runs: Mapping[str, SeedRuns], metric: str, *,
               higher: bool | None = None, tolerance: float = 0.0, level: float = 0.95,
               resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> list[dict[str, str]]:
    """Rows of the seeds table, baseline first: seeds, best (mean ± sample std over seeds), the
    paired gain over the baseline with its bootstrap interval, the first epoch of the mean curve
    that beats the best of the baseline's mean curve with its FLOPs and time saves (every time
    measure all runs carry; a wall time save on a busy machine marked ``*``, one timed on other
    machines ``†``, one whose seeds' mean full-resolution step took another time than the
    baseline's ``‡``: :func:`~coarse2fine.report.savings.drifted`), and the whole run's
    FLOPs and time (the most robust measure) as multiples of the baseline's."""
    higher = metric_higher_is_better(metric) if higher is None else higher
    base_mean = mean_records(baseline)
    ref = baseline_reference(base_mean, metric, higher)
    means = {name: mean_records(r) for name, r in runs.items()}
    time_measures = table_measures([base_mean, *means.values()])
    robust = robust_measure(time_measures)
    busy = set(busy_runs({f"{baseline_name} seed {k}": r for k, r in enumerate(baseline)}))
    # every seed's records, so that seeds timed on different machines count as such
    every_seed = {n: [r for run in seeds for r in run] for n, seeds in {baseline_name: baseline, **runs}.items()}
    elsewhere = timed_elsewhere(every_seed, baseline_name)
    drift = drifted({baseline_name: base_mean, **means}, baseline_name)  # the seeds' mean full-resolution steps
    cols = seed_columns(metric, time_measures, level)
    base_flops, base_time = base_mean[-1].cum_flops, cumulative_time(base_mean, robust)[-1]
    b = summarize(baseline, metric, None, higher)
    rows = [dict(zip(cols, [baseline_name, str(len(baseline)), format_spread(b.mean, b.std, metric), "-",
                            format_value(ref.best, metric), str(ref.epoch), *["-"] * (1 + len(time_measures)),
                            "1.00", "1.00"]))]
    for name, seeds in runs.items():
        s = summarize(seeds, metric, baseline, higher, level, resamples, seed)
        c = compare(name, means[name], ref, tolerance=tolerance)
        marked = busy or busy_runs({f"{name} seed {k}": r for k, r in enumerate(seeds)})
        if c.reached:
            assert c.metric_at_reach is not None and c.flops_save_pct is not None
            flagged = {name} if marked else set()
            times = [format_pct(c.time_saves.get(m, math.nan)) + time_marks(m, name, baseline_name, flagged, elsewhere,
                                                                           drift)
                     for m in time_measures]
            beat = [f"{format_value(c.metric_at_reach, metric)} ({format_delta(c.metric_at_reach, ref.best, metric)})",
                    str(c.epoch), format_pct(c.flops_save_pct), *times]
        else:
            beat = ["not reached", *["-"] * (2 + len(time_measures))]
        cost = [f"{means[name][-1].cum_flops / base_flops:.2f}" if base_flops > 0 else "n/a",
                f"{cumulative_time(means[name], robust)[-1] / base_time:.2f}" + time_marks(robust, name, baseline_name,
                                                                                           set(), elsewhere, drift)
                if base_time > 0 else "n/a"]
        assert s.gain is not None
        rows.append(dict(zip(cols, [name, str(len(seeds)), format_spread(s.mean, s.std, metric),
                                    format_gain(s.gain, s.interval, metric), *beat, *cost])))
    return rows


def seed_note(seeds: int, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES) -> str:
    """What the seeds table's statistics are."""
    return (f"{seeds} seeds per setting (train.seed varied: data order, initialisation, augmentation). Best: each "
            "seed's best in the final phase, mean ± sample standard deviation (n - 1) over seeds. Paired gain: the "
            "mean over seeds of (setting's best - baseline's best with the same seed), with its "
            f"{100 * level:g} % percentile bootstrap interval ({resamples} resamples of the seeds, fixed generator; "
            "with few seeds it cannot reach beyond the smallest and largest difference). First beat, FLOPs and time "
            "saves: from the mean curves (per epoch, the mean over seeds), against the best of the baseline's mean "
            "curve. Run FLOPs / time: the whole run's, as a multiple of the baseline's.")


def fold_table(folds: Mapping[int, Mapping[str, SeedRuns]], baseline_name: str, metric: str, *,
               higher: bool | None = None, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
               seed: int = BOOTSTRAP_SEED) -> list[dict[str, str]]:
    """Rows of the cross-validation table: per setting (as in the first fold, baseline first),
    each fold's best (the mean over its seeds), the mean over folds ± sample std over folds (the
    ESC-50 convention), the paired gain over the baseline per fold with its bootstrap interval
    over folds, and the whole run's FLOPs and time as multiples of the baseline's (the mean over
    folds of each fold's ratio)."""
    if not folds:
        raise ValueError("no folds")
    fold_ids = sorted(folds)
    names = list(folds[fold_ids[0]])
    if baseline_name not in names:
        raise ValueError(f"no {baseline_name!r} among the settings ({', '.join(names)})")
    names = [baseline_name, *(n for n in names if n != baseline_name)]
    per_fold: dict[str, list[float]] = {n: [] for n in names}
    for f in fold_ids:
        missing = [n for n in names if n not in folds[f]]
        if missing:
            raise ValueError(f"fold {f} lacks {', '.join(missing)}")
        for n in names:
            per_fold[n].append(summarize(folds[f][n], metric, None, higher).mean)
    costs, robust = _fold_costs(folds, baseline_name)
    m = display_name(metric)
    cols = ["Setting", "Seeds", *(f"Fold {f}" for f in fold_ids), f"{m} mean over folds (± std)",
            f"Paired gain by fold ({100 * level:g} % CI)", "Run FLOPs (x baseline)",
            f"Run {TIME_LABELS[robust].lower()} (x baseline)"]
    rows = []
    for n in names:
        values = per_fold[n]
        gain = "-"
        if n != baseline_name:
            diffs = paired_differences(values, per_fold[baseline_name])
            gain = format_gain(mean(diffs), bootstrap_interval(diffs, level, resamples, seed), metric)
        seeds = sorted({len(folds[f][n]) for f in fold_ids})
        rows.append(dict(zip(cols, [n, "/".join(map(str, seeds)), *(format_value(v, metric) for v in values),
                                    format_spread(mean(values), sample_std(values), metric), gain, *costs[n]])))
    return rows


def _fold_costs(folds: Mapping[int, Mapping[str, SeedRuns]], baseline_name: str) -> tuple[dict[str, list[str]], str]:
    """Per setting, its whole run's FLOPs and time as multiples of the baseline's in the same fold
    (each from the mean run over the fold's seeds), averaged over the folds; the time by the most
    load-robust measure every run carries, which is returned with them."""
    means = {f: {n: mean_records(runs) for n, runs in settings.items()} for f, settings in folds.items()}
    robust = robust_measure(table_measures([r for settings in means.values() for r in settings.values()]))
    ratios: dict[str, list[tuple[float, float]]] = {}
    for settings in means.values():
        base = settings[baseline_name]
        base_flops, base_time = base[-1].cum_flops, cumulative_time(base, robust)[-1]
        for n, recs in settings.items():
            ratios.setdefault(n, []).append((recs[-1].cum_flops / base_flops if base_flops > 0 else math.nan,
                                             cumulative_time(recs, robust)[-1] / base_time if base_time > 0 else math.nan))
    return {n: [_ratio(mean([f for f, _ in r])), _ratio(mean([t for _, t in r]))] for n, r in ratios.items()}, robust


def _ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"
