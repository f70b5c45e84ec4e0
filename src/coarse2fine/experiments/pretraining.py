"""The comparison the paper makes for self-supervised pretraining (its Table 6, SSAST rows).

:func:`compare_pretraining` pretrains twice from one pretraining config (the baseline at R = 1
and a coarse-to-fine variant), fine-tunes each pretrained model the same way on every downstream
config (and a model without pretraining, to show what pretraining buys), and tabulates:
pretraining FLOPs and time of each, the FLOPs and time saved against the baseline, and every
downstream metric with its difference to the baseline pretraining's. Fine-tuning runs at full
resolution (schedule 1), so the pretraining is the only difference between the rows. Finished
runs with the same config are reused; interrupted ones continue from their checkpoint.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Sequence

from coarse2fine import atomic
from coarse2fine.config import RunConfig
from coarse2fine.data.sources import load_splits
from coarse2fine.experiments.grid import Variant, calibrate_runs, variant_config
from coarse2fine.experiments.settings import seed_config, seed_folder
from coarse2fine.report.savings import best_value, format_signed, format_table, format_value, json_rows
from coarse2fine.report.seeds import format_gain, format_spread
from coarse2fine.report.stats import bootstrap_interval, mean, paired_differences, sample_std
from coarse2fine.training.loop import RunResult, train_run
from coarse2fine.training.records import EpochRecord, cumulative_time, measures

log = logging.getLogger(__name__)


def finetune_config(downstream: RunConfig, pretrain: RunConfig, init_from: Path | None, name: str) -> RunConfig:
    """``downstream`` fine-tuning the pretraining config's model (same family, size and patch;
    no pretraining heads), from ``init_from`` (None: from scratch; held absolute, as in a loaded
    config, so the run's config.yaml reads the same from any folder), at full resolution."""
    m = pretrain.model
    return downstream.baseline(name).replace({
        "model.arch": m.arch, "model.preset": m.preset, "model.patch_size": m.patch_size, "model.stride": m.stride,
        "model.overrides": {k: v for k, v in m.overrides.items() if k != "pretrain_heads"},
        "model.init_from": str(Path(init_from).absolute()) if init_from is not None else None,
    })


def _train_or_reuse(cfg: RunConfig, out_dir: Path, progress: bool, reuse: bool) -> RunResult:
    return train_run(cfg, functools.partial(load_splits, cfg), out_dir, progress=progress, resume=reuse, fresh=not reuse)


@dataclass
class PretrainingComparison:
    """Per row label, each seed's pretraining run (None: no pretraining) and, per downstream
    config, each seed's fine-tuned run."""

    pretrain: dict[str, list[RunResult] | None] = field(default_factory=dict)
    downstream: dict[str, dict[str, list[RunResult]]] = field(default_factory=dict)

    @property
    def seeds(self) -> int:
        return len(next(runs for runs in self.pretrain.values() if runs))


def compare_pretraining(
    pretrain: RunConfig, downstream: Sequence[RunConfig], schedule: str, method: str, out_root: str | Path,
    progress: bool = True, reuse: bool = True, seeds: int = 1,
) -> PretrainingComparison:
    """Pretrain the baseline and the ``schedule`` / ``method`` variant, fine-tune both (and a model
    without pretraining) on every downstream config, with ``seeds`` seeds (seed k's fine-tuning
    starts from seed k's pretraining, with seed k's ``train.seed``: :func:`seed_config`); runs go
    to ``out_root/pretrain/<name>`` and ``out_root/finetune/<downstream>/<row>`` (``_s<k>`` for
    seed k > 0, :func:`seed_folder`), seed by seed."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    out_root = Path(out_root)
    variant = Variant(method, schedule)
    runs = {"Baseline": variant_config(pretrain, None), variant.label: variant_config(pretrain, variant)}
    result = PretrainingComparison(pretrain={"No pretraining": None, **{label: [] for label in runs}})
    for k in range(seeds):
        for label, cfg in runs.items():
            run = _train_or_reuse(seed_config(cfg, k), seed_folder(out_root / "pretrain", cfg.name, k), progress, reuse)
            result.pretrain[label].append(run)  # type: ignore[union-attr]
        for task in downstream:
            rows = result.downstream.setdefault(task.name, {})
            for label, pretrained in result.pretrain.items():
                slug = label.lower().replace(" ", "_")
                start = pretrained[k].out_dir if pretrained else None
                cfg = finetune_config(seed_config(task, k), pretrain, start, f"{task.name}_{slug}")
                folder = seed_folder(out_root / "finetune" / task.name, slug, k)
                rows.setdefault(label, []).append(_train_or_reuse(cfg, folder, progress, reuse))
    return result


def calibrate_pretraining(result: PretrainingComparison, configs: dict[str, RunConfig], rounds: int,
                          saved: Path | None = None, fresh: bool = False) -> dict[str, float] | None:
    """Calibrated pretraining time of each pretraining row, the mean over its seeds (see
    :mod:`coarse2fine.report.timing`); None with ``rounds`` 0 and no saved calibration that
    covers the runs."""
    runs = [(label, k, run) for label, seeded in result.pretrain.items() if seeded for k, run in enumerate(seeded)]
    cal, records = calibrate_runs([seed_config(configs[label], k) for label, k, _ in runs],
                                  [run.records for _, _, run in runs], 0, rounds, saved=saved, fresh=fresh)
    if cal is None:
        return None
    totals: dict[str, list[float]] = {}
    for (label, _, _), recs in zip(runs, records):
        totals.setdefault(label, []).append(cumulative_time(recs, "calibrated")[-1])
    return {label: mean(values) for label, values in totals.items()}


def comparison_rows(result: PretrainingComparison, downstream: Sequence[RunConfig],
                    calibrated: dict[str, float] | None = None, pretext: str | None = None) -> list[dict[str, str]]:
    """The table: each pretraining's whole-run cost (the mean over seeds) and its saves against the
    baseline's (time: calibrated when given, and measured wall time: GFLOPs to 4 significant
    digits, seconds to 0.1 s below 100 s), its own metric ``pretext`` at its best in the final
    phase, and each downstream metric with its gain over the baseline pretraining's (in points for
    fractions). One seed: under ``<task> <metric> (gain)``, which the CSV splits into ``<task>
    <metric>`` and ``<task> <metric> gain`` (:func:`~coarse2fine.report.savings.csv_rows`);
    several: the metric's mean ± std over seeds and the paired gain (the mean over seeds of the
    difference to the baseline pretraining's row with the same seed) with its bootstrap interval."""
    seeds = result.seeds
    base = result.pretrain["Baseline"]
    assert base
    base_flops, base_wall, base_time = (mean([r.records[-1].cum_flops for r in base]),
                                        mean([r.records[-1].cum_time for r in base]),
                                        mean([robust_total(r.records) for r in base]))
    cal = calibrated or {}
    time_cols = (["Pretrain calibrated time save (%)", "Pretrain wall time (s)", "Pretrain wall time save (%)"] if cal
                 else ["Pretrain wall time (s)", "Pretrain wall time save (%)", "Pretrain step time save (%)"])
    pretext_col = [f"Pretext {pretext}" + (" (mean ± std)" if seeds > 1 else "")] if pretext else []
    rows = []
    for label, runs in result.pretrain.items():
        row = {"Setting": label} if seeds == 1 else {"Setting": label, "Seeds": str(seeds)}
        if not runs:
            row.update({c: "-" for c in ["Pretrain GFLOPs", "Pretrain FLOPs save (%)", *time_cols, *pretext_col]})
        else:
            flops, secs = mean([r.records[-1].cum_flops for r in runs]), mean([r.records[-1].cum_time for r in runs])
            same = runs is base
            save = lambda a, b: "-" if same else f"{100 * (1 - a / b):.2f}"  # noqa: E731
            row.update({"Pretrain GFLOPs": significant(flops / 1e9), "Pretrain FLOPs save (%)": save(flops, base_flops)})
            wall = {"Pretrain wall time (s)": f"{secs:.1f}" if secs < 100 else f"{secs:.0f}",
                    "Pretrain wall time save (%)": save(secs, base_wall)}
            if cal:
                row.update({"Pretrain calibrated time save (%)": save(cal[label], cal["Baseline"]), **wall})
            else:
                row.update({**wall, "Pretrain step time save (%)": save(mean([robust_total(r.records) for r in runs]),
                                                                        base_time)})
            if pretext:
                values = [best_value(r.records, pretext) for r in runs]
                row[pretext_col[0]] = format_spread(mean(values), sample_std(values), pretext)
        for task in downstream:
            row.update(_downstream_cells(result.downstream[task.name], label, task.name, task.train.metric, seeds))
        rows.append(row)
    return rows


def _downstream_cells(rows: dict[str, list[RunResult]], label: str, task: str, metric: str,
                      seeds: int) -> dict[str, str]:
    """A row's cells of one downstream task: its best and its gain over the baseline pretraining's."""
    values = [best_value(r.records, metric) for r in rows[label]]
    reference = [best_value(r.records, metric) for r in rows["Baseline"]]
    if seeds == 1:
        diff = "" if label == "Baseline" else f" ({format_signed(values[0] - reference[0], metric)})"
        return {f"{task} {metric} (gain)": f"{format_value(values[0], metric)}{diff}"}  # CSV: value and gain apart
    gains = paired_differences(values, reference)
    gain = "-" if label == "Baseline" else format_gain(mean(gains), bootstrap_interval(gains), metric)
    return {f"{task} {metric} (mean ± std)": format_spread(mean(values), sample_std(values), metric),
            f"{task} {metric} paired gain (95 % CI)": gain}


def comparison_notes(pretext: str | None, calibrated: bool, seeds: int = 1) -> list[str]:
    """What the pretraining table's columns measure."""
    timed = "calibrated step times and wall time" if calibrated else "wall time and the in-loop step times"
    over = f", the mean over its {seeds} seeds" if seeds > 1 else ""
    notes = [f"Pretrain columns: each pretraining run as a whole (its FLOPs and {timed}{over}); a save is 1 - run / "
             "the baseline pretraining's, over the whole run (savings tables measure up to the first epoch that "
             "reaches the baseline's best; a pretraining has no downstream metric of its own to reach)."]
    if pretext:
        notes.append(f"Pretext {pretext}: the pretraining's own metric, at its best in the final (full-resolution) "
                     "phase" + (", mean ± sample std over seeds." if seeds > 1 else "."))
    notes.append("<task> <metric>: the best of the model fine-tuned from each row's pretraining (all fine-tuned "
                 "alike, at full resolution); No pretraining: the same fine-tuning from a random initialisation. "
                 + ("Its gain: over the baseline pretraining's row (points for fractions)." if seeds == 1 else
                    f"Mean ± sample std (n - 1) over {seeds} seeds (seed k fine-tunes seed k's pretraining, with seed "
                    "k's train.seed); paired gain: the mean over seeds of (row - baseline pretraining's row with the "
                    "same seed), with its 95 % percentile bootstrap interval over the seeds."))
    return notes


def significant(x: float, digits: int = 4) -> str:
    """``x`` to ``digits`` significant digits, written out without an exponent (``51.78``,
    ``0.001234``, ``123500000``) so that small and large counts both stay readable."""
    return format(Decimal(f"{x:.{digits}g}"), "f")


def robust_total(records: Sequence[EpochRecord]) -> float:
    """A run's whole training time by the load-robust step-time measure (wall time for runs
    logged before it was measured)."""
    return cumulative_time(records, "step" if "step" in measures(records) else "wall")[-1]


def write_comparison(out_root: str | Path, rows: list[dict[str, str]], title: str, notes: Sequence[str]) -> None:
    """``pretraining.md`` (``title``, the table, ``notes``), ``pretraining.csv`` (one number a
    cell: a metric and its gain over the baseline pretraining's in two columns) and
    ``pretraining.json`` (``title``, ``pretraining``: the CSV's rows with numbers as numbers,
    ``notes``) in ``out_root``."""
    out_root = Path(out_root)
    atomic.write_text(out_root / "pretraining.md", f"# {title}\n\n" + format_table(rows, "markdown")
                      + "".join(f"\n{note}\n" for note in notes))
    atomic.write_text(out_root / "pretraining.csv", format_table(rows, "csv"))
    atomic.write_json(out_root / "pretraining.json", {"title": title, "pretraining": json_rows(rows), "notes": list(notes)})

