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
from coarse2fine.report.savings import best_value, format_signed, format_table, format_value, json_rows
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
    """Pretraining runs by row label (None: no pretraining) and downstream results per row."""

    pretrain: dict[str, RunResult | None] = field(default_factory=dict)
    downstream: dict[str, dict[str, RunResult]] = field(default_factory=dict)


def compare_pretraining(
    pretrain: RunConfig, downstream: Sequence[RunConfig], schedule: str, method: str, out_root: str | Path,
    progress: bool = True, reuse: bool = True,
) -> PretrainingComparison:
    """Pretrain the baseline and the ``schedule`` / ``method`` variant, fine-tune both (and a model
    without pretraining) on every downstream config; runs go to ``out_root/pretrain/<name>`` and
    ``out_root/finetune/<downstream>/<row>``."""
    out_root = Path(out_root)
    variant = Variant(method, schedule)
    runs = {"Baseline": variant_config(pretrain, None), variant.label: variant_config(pretrain, variant)}
    result = PretrainingComparison(pretrain={"No pretraining": None})
    for label, cfg in runs.items():
        result.pretrain[label] = _train_or_reuse(cfg, out_root / "pretrain" / cfg.name, progress, reuse)
    for task in downstream:
        rows = {}
        for label, run in result.pretrain.items():
            slug = label.lower().replace(" ", "_")
            cfg = finetune_config(task, pretrain, run.out_dir if run else None, f"{task.name}_{slug}")
            rows[label] = _train_or_reuse(cfg, out_root / "finetune" / task.name / slug, progress, reuse)
        result.downstream[task.name] = rows
    return result


def calibrate_pretraining(result: PretrainingComparison, configs: dict[str, RunConfig], rounds: int,
                          saved: Path | None = None, fresh: bool = False) -> dict[str, float] | None:
    """Calibrated pretraining time of each pretraining run (see :mod:`coarse2fine.report.timing`);
    None with ``rounds`` 0 and no saved calibration that covers the runs."""
    labels = [label for label, run in result.pretrain.items() if run is not None]
    cal, records = calibrate_runs([configs[label] for label in labels],
                                  [result.pretrain[label].records for label in labels], 0, rounds, saved=saved, fresh=fresh)
    return None if cal is None else {label: cumulative_time(recs, "calibrated")[-1] for label, recs in zip(labels, records)}


def comparison_rows(result: PretrainingComparison, downstream: Sequence[RunConfig],
                    calibrated: dict[str, float] | None = None, pretext: str | None = None) -> list[dict[str, str]]:
    """The table: each pretraining's whole-run cost and its saves against the baseline's (time:
    calibrated when given, and measured wall time: GFLOPs to 4 significant digits, seconds to 0.1 s
    below 100 s), its own metric ``pretext`` at its best in the final phase, and each downstream
    metric with its gain over the baseline pretraining's (in points for fractions), under
    ``<task> <metric> (gain)`` so that the CSV splits it into ``<task> <metric>`` and
    ``<task> <metric> gain`` (:func:`~coarse2fine.report.savings.csv_rows`)."""
    base = result.pretrain["Baseline"]
    assert base is not None
    base_flops, base_time = base.records[-1].cum_flops, robust_total(base.records)
    cal = calibrated or {}
    base_metric = {t.name: best_value(result.downstream[t.name]["Baseline"].records, t.train.metric) for t in downstream}
    time_cols = (["Pretrain calibrated time save (%)", "Pretrain wall time (s)", "Pretrain wall time save (%)"] if cal
                 else ["Pretrain wall time (s)", "Pretrain wall time save (%)", "Pretrain step time save (%)"])
    pretext_col = [f"Pretext {pretext}"] if pretext else []
    rows = []
    for label, run in result.pretrain.items():
        row = {"Setting": label}
        if run is None:
            row.update({c: "-" for c in ["Pretrain GFLOPs", "Pretrain FLOPs save (%)", *time_cols, *pretext_col]})
        else:
            flops, secs = run.records[-1].cum_flops, run.records[-1].cum_time
            same = run is base
            save = lambda a, b: "-" if same else f"{100 * (1 - a / b):.2f}"  # noqa: E731
            row.update({"Pretrain GFLOPs": significant(flops / 1e9), "Pretrain FLOPs save (%)": save(flops, base_flops)})
            wall = {"Pretrain wall time (s)": f"{secs:.1f}" if secs < 100 else f"{secs:.0f}",
                    "Pretrain wall time save (%)": save(secs, base.records[-1].cum_time)}
            if cal:
                row.update({"Pretrain calibrated time save (%)": save(cal[label], cal["Baseline"]), **wall})
            else:
                row.update({**wall, "Pretrain step time save (%)": save(robust_total(run.records), base_time)})
            if pretext:
                row[pretext_col[0]] = format_value(best_value(run.records, pretext), pretext)
        for task in downstream:
            metric = task.train.metric
            value = best_value(result.downstream[task.name][label].records, metric)
            diff = "" if label == "Baseline" else f" ({format_signed(value - base_metric[task.name], metric)})"
            row[f"{task.name} {metric} (gain)"] = f"{format_value(value, metric)}{diff}"  # CSV: value and gain apart
        rows.append(row)
    return rows


def comparison_notes(pretext: str | None, calibrated: bool) -> list[str]:
    """What the pretraining table's columns measure."""
    timed = "calibrated step times and wall time" if calibrated else "wall time and the in-loop step times"
    notes = [f"Pretrain columns: each pretraining run as a whole (its FLOPs and {timed}); a save is 1 - run / the "
             "baseline pretraining's, over the whole run (savings tables measure up to the first epoch that reaches "
             "the baseline's best; a pretraining has no downstream metric of its own to reach)."]
    if pretext:
        notes.append(f"Pretext {pretext}: the pretraining's own metric, at its best in the final (full-resolution) "
                     "phase.")
    notes.append("<task> <metric>: the best of the model fine-tuned from each row's pretraining (all fine-tuned "
                 "alike, at full resolution), and its gain over the baseline pretraining's row (points for "
                 "fractions); No pretraining: the same fine-tuning from a random initialisation.")
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

