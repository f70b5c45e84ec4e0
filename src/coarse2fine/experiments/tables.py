"""An experiment's report from its settings' runs: the main table (the savings table of one seed,
or the seeds table of several), what each phase change keeps, what the controls are, the phase
costs and the plots, written into the experiment's folder.

``experiment``, ``demo`` and every fold of ``crossval`` report through :func:`write_experiment`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from coarse2fine.data.datasets import ClipDataset
from coarse2fine.experiments.grid import SettingRuns, calibrate_runs
from coarse2fine.report.kept import kept_note, kept_rows
from coarse2fine.report.plots import Table, phase_rows, write_report
from coarse2fine.report.savings import savings_table, table_note
from coarse2fine.report.seeds import mean_records, metric_band, seed_note, seed_table
from coarse2fine.report.timing import Calibration
from coarse2fine.training.records import EpochRecord

SeedRecords = list[list[EpochRecord]]  # one setting: one run's records per seed


@dataclass(frozen=True)
class ExperimentReport:
    """What an experiment reports: the main table (``rows``), the kept table, the phase costs,
    and the notes that say what the columns, the controls and the statistics are."""

    rows: list[dict[str, str]]
    kept: list[dict[str, str]]
    phases: list[dict[str, str]]
    notes: list[str]
    markdown: str


def calibrate_settings(done: Sequence[SettingRuns], num_classes: int, rounds: int, saved: Path | None = None,
                       source: ClipDataset | None = None,
                       fresh: bool = False) -> tuple[Calibration | None, list[SeedRecords]]:
    """``(calibration or None, records)``: every run's records, per setting and seed, with their
    calibrated time (one calibration for all: seeds share their step costs) when ``rounds`` > 0 or
    ``saved`` covers them (see :func:`~coarse2fine.experiments.grid.calibrate_runs`); as they are
    otherwise."""
    records = [[list(r.records) for r in d.runs] for d in done]
    configs = [cfg for d in done for cfg in d.configs()]
    flat_records = [r for seeds in records for r in seeds]
    cal, flat = calibrate_runs(configs, flat_records, num_classes, rounds, source, saved, fresh)
    out, i = [], 0
    for seeds in records:
        out.append(flat[i:i + len(seeds)])
        i += len(seeds)
    return cal, out


def control_notes(done: Sequence[SettingRuns]) -> list[str]:
    """One line per control: what it trained."""
    return [f"{d.setting.label}: {d.setting.about}." for d in done if d.setting.role == "control"]


def noise_notes(done: Sequence[SettingRuns], rows: Sequence[Mapping[str, str]]) -> list[str]:
    """What the equal-epochs control says of the time measures: it trains the baseline's steps
    again up to the baseline's best (FLOPs save 0.00), so its time saves are how much two runs of
    the same steps differ in time on this machine; a time save that far from a setting's FLOPs save
    is within that spread."""
    labels = {d.setting.label for d in done if d.setting.name.startswith("equal_epochs")}
    out = []
    for row in rows:
        if row.get("Setting") in labels and row.get("FLOPs save (%)") == "0.00":
            times = [f"{col.removesuffix(' save (%)').lower()} {cell}" for col, cell in row.items()
                     if col.endswith("time save (%)") and cell not in ("", "-")]
            if times:
                out.append(f"{row['Setting']} trains the baseline's steps again up to the baseline's best (FLOPs save "
                           f"0.00): its time saves ({', '.join(times)}) are how far two runs of the same steps differ "
                           "in time here; a setting's time save within that of its FLOPs save says no more than its "
                           "FLOPs save.")
    return out


def write_experiment(out_root: str | Path, done: Sequence[SettingRuns], records: Sequence[SeedRecords], metric: str,
                     title: str, more_notes: Sequence[str] = ()) -> ExperimentReport:
    """Write the report of ``done`` (the baseline first; ``records``: each setting's records per
    seed, e.g. calibrated; ``more_notes`` under the table after its own, such as the calibration's
    summary) into ``out_root`` and return it. One seed: the paper's savings table.
    Several: the seeds table (mean ± std of the best, paired gain with its bootstrap interval,
    first beat and saves on the mean curves) and plots of the mean curves with bands."""
    if not done or done[0].setting.role != "baseline":
        raise ValueError("an experiment's report needs its baseline first")
    seeds = len(records[0])
    labels = [d.setting.label for d in done]
    base_label, names = labels[0], labels[1:]
    if seeds == 1:
        base = records[0][0]
        runs = {n: r[0] for n, r in zip(names, records[1:])}
        rows = savings_table(base_label, base, runs, metric)
        bands = None
        notes = []
    else:
        base = mean_records(records[0])
        runs = {n: mean_records(r) for n, r in zip(names, records[1:])}
        rows = seed_table(base_label, records[0], dict(zip(names, records[1:])), metric)
        bands = {label: metric_band(r, metric) for label, r in zip(["Baseline", *names], records)}
        notes = [seed_note(seeds)]
    notes += [*control_notes(done), *noise_notes(done, rows), *more_notes]
    kept = kept_rows({d.setting.label: [(recs, run.phases) for recs, run in zip(r, d.runs)]
                      for d, r in zip(done, records)}, metric)
    tables = [Table("kept", "What the transfer keeps at each phase change", kept, kept_note(metric))] if kept else []
    unevaluated = [d.setting.label for d in done if len(d.setting.config.phases()) > 1
                   and not d.setting.config.c2f.eval_on_entry]
    if unevaluated:
        notes.append(f"No kept table for {', '.join(unevaluated)}: c2f.eval_on_entry: false (the carried-over model is "
                     "not evaluated at a phase change)")
    controls = [d.setting.label for d in done if d.setting.role == "control"]
    markdown = write_report(out_root, base, runs, metric, title, notes, rows=rows, bands=bands, tables=tables,
                            plot_title=f"mean of {seeds} seeds, ± 1 std shaded" if seeds > 1 else "", dashed=controls)
    notes.insert(0, table_note(base, runs, rows=rows))
    return ExperimentReport(list(rows), kept, phase_rows(base, runs), notes, markdown)
