"""Reports of an experiment: the paper's tables (Markdown, CSV) and plots of metric vs cost.

``write_report`` puts, in an experiment's folder: ``savings.md`` / ``savings.csv`` /
``savings.json`` (the tables and notes, the CSV's columns with numbers as numbers; first epoch
that beats the baseline, and trained to convergence; with several seeds, the seeds table of
:mod:`coarse2fine.report.seeds`), ``phases.csv`` (measured FLOPs and time per epoch of every
phase, with ratios to the baseline's), any further tables (``kept.csv``: what each phase change
keeps), and ``metric_vs_flops.png`` / ``metric_vs_time.png`` (every run's validation metric after
each epoch, against its cumulative training FLOPs and its load-robust time when measured, else
wall time; ``metric_vs_wall_time.png`` beside it), the baseline's best as a dashed line; with
several seeds the mean curves, shaded ± one standard deviation over the seeds.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from coarse2fine import atomic  # noqa: E402
from coarse2fine.objectives.metrics import FRACTION_METRICS  # noqa: E402
from coarse2fine.report.savings import (  # noqa: E402
    Records,
    baseline_reference,
    format_table,
    json_rows,
    savings_table,
    table_measures,
    table_note,
)
from coarse2fine.training.records import (  # noqa: E402
    TIME_LABELS,
    EpochRecord,
    as_records,
    cumulative_time,
    epoch_times,
    phase_records,
)


@dataclass(frozen=True)
class Table:
    """A further table of a report: written as ``<stem>.csv`` and under ``heading`` in
    ``savings.md``, followed by its ``note``."""

    stem: str
    heading: str
    rows: Sequence[Mapping[str, str]]
    note: str = ""


def phase_rows(baseline: Records, runs: Mapping[str, Records]) -> list[dict[str, str]]:
    """Rows of measured cost per phase: FLOPs and seconds per epoch, with ratios to the
    baseline's epoch by FLOPs and by every time measure all runs carry."""
    measures = table_measures([baseline, *runs.values()])
    base = as_records(baseline)
    ref_times = {m: sum(epoch_times(base, m)) / len(base) for m in measures}
    rows = []
    for label, records in [("Baseline", baseline), *runs.items()]:
        recs = as_records(records)
        for ph in phase_records(recs):
            mine = [r for r in recs if r.phase == ph.phase]
            flops = sum(r.train_flops for r in mine) / ph.epochs
            row = {
                "Setting": label, "phase": str(ph.phase + 1), "R": str(ph.R), "tokens": str(ph.tokens),
                "batch": str(ph.batch_size), "epochs": str(ph.epochs), "GFLOPs/epoch": f"{flops / 1e9:.1f}",
                "s/epoch": f"{ph.train_time / ph.epochs:.2f}",
                "FLOPs ratio": f"{flops / (sum(r.train_flops for r in base) / len(base)):.3f}",
            }
            for m in measures:
                seconds = sum(epoch_times(recs, m)[i] for i, r in enumerate(recs) if r.phase == ph.phase) / ph.epochs
                row[f"{TIME_LABELS[m].lower()} ratio"] = f"{seconds / ref_times[m]:.3f}"
            rows.append(row)
    return rows


def phase_change_xs(records: Sequence[EpochRecord], xs: Sequence[float]) -> list[float]:
    """Where a run's phases change on an axis of cumulative cost ``xs`` (one value per record, at
    the end of its epoch): at the end of each phase's last epoch, before the next phase's first."""
    return [at for a, b, at in zip(records, records[1:], xs) if a.phase != b.phase]


def plot_runs(baseline: Records, runs: Mapping[str, Records], metric: str, x: str, path: Path,
              bands: Mapping[str, Sequence[float]] | None = None, title: str = "",
              dashed: Collection[str] = ()) -> None:
    """Metric after each epoch against cumulative ``x`` (``flops`` or a time measure: ``wall``,
    ``step``, ``calibrated``) as a PNG; dotted lines mark phase changes. ``bands``: per label
    (``Baseline`` for the baseline), a spread per epoch shaded ± around the curve (the standard
    deviation over seeds around the mean curve); ``dashed``: labels drawn dashed (the controls)."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    xlabel = "cumulative training TFLOPs" if x == "flops" else f"cumulative training {TIME_LABELS[x].lower()} (s)"
    scale = 100.0 if metric in FRACTION_METRICS else 1.0
    colours = label_colours(list(runs))
    for label, records in [("Baseline", baseline), *runs.items()]:
        recs = as_records(records)
        xs = [r.cum_flops / 1e12 for r in recs] if x == "flops" else cumulative_time(recs, x)
        ys = [scale * r.metric(metric) for r in recs]
        style = (dict(color="black", linewidth=2.2) if label == "Baseline"
                 else dict(color=colours[label], linewidth=1.4, alpha=0.9))
        if label in dashed:
            style["linestyle"] = "--"
        ax.plot(xs, ys, marker="o", markersize=3, label=label, **style)
        spread = (bands or {}).get(label)
        if spread is not None and len(spread) == len(ys) and not all(math.isnan(v) for v in spread):
            lo = [y - scale * v for y, v in zip(ys, spread)]
            hi = [y + scale * v for y, v in zip(ys, spread)]
            ax.fill_between(xs, lo, hi, color=ax.lines[-1].get_color(), alpha=0.15, linewidth=0)
        for at in phase_change_xs(recs, xs):
            ax.axvline(at, color=ax.lines[-1].get_color(), linestyle=":", linewidth=0.8, alpha=0.6)
    ax.axhline(scale * baseline_reference(baseline, metric).best, color="black", linestyle="--", linewidth=0.8,
               label="Baseline best")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"validation {metric}" + (" (%)" if metric in FRACTION_METRICS else ""))
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan")  # no grey: the baseline is black


def label_colours(labels: Sequence[str]) -> dict[str, str]:
    """A colour per label that follows the label, not its place among the others, so that a setting
    keeps its colour from one report to the next: the palette entry its name hashes to, or the next
    one that no earlier label of the plot holds."""
    taken: dict[str, str] = {}
    for label in labels:
        i = zlib.crc32(label.encode()) % len(PALETTE)
        while PALETTE[i] in taken.values() and len(taken) < len(PALETTE):
            i = (i + 1) % len(PALETTE)
        taken[label] = PALETTE[i]
    return taken


def plot_files(out_dir: str | Path) -> list[str]:
    """The names of the plots :func:`write_report` wrote into ``out_dir``."""
    return sorted(p.name for p in Path(out_dir).glob("metric_vs_*.png"))


def write_report(out_dir: str | Path, baseline: Records, runs: Mapping[str, Records], metric: str, title: str = "",
                 notes: Sequence[str] = (), *, rows: Sequence[Mapping[str, str]] | None = None,
                 bands: Mapping[str, Sequence[float]] | None = None, tables: Sequence[Table] = (),
                 plot_title: str = "", dashed: Collection[str] = ()) -> str:
    """Write tables and plots into ``out_dir``; returns the Markdown report. ``rows``: the main
    table (default: :func:`savings_table` of ``runs``; with several seeds, the seeds table of their
    mean curves, which ``baseline`` and ``runs`` then are); ``bands``: spreads to shade in the plots
    (:func:`plot_runs`), ``dashed``: labels drawn dashed; ``tables``: further tables after the main one."""
    out_dir = Path(out_dir)
    rows = savings_table("Baseline", baseline, runs, metric) if rows is None else rows
    prows = phase_rows(baseline, runs)
    measures = table_measures([baseline, *runs.values()])
    atomic.write_text(out_dir / "savings.csv", format_table(rows, "csv"))
    atomic.write_text(out_dir / "phases.csv", format_table(prows, "csv"))
    for t in tables:
        atomic.write_text(out_dir / f"{t.stem}.csv", format_table(t.rows, "csv"))
    robust = next((m for m in ("step", "calibrated") if m in measures), "wall")
    plots = [("flops", "metric_vs_flops.png"), (robust, "metric_vs_time.png")]
    if robust != "wall":
        plots.append(("wall", "metric_vs_wall_time.png"))
    heading = " - ".join(t for t in (title, plot_title) if t)  # which report a figure is, also on its own
    for x, name in plots:
        plot_runs(baseline, runs, metric, x, out_dir / name, bands, heading, dashed)
    note = table_note(baseline, runs, rows=rows)
    extra = "".join(f"## {t.heading}\n\n" + format_table(t.rows, "markdown") + (f"\n{t.note}\n" if t.note else "")
                    + "\n" for t in tables if t.rows)
    md = ((f"# {title}\n\n" if title else "") + format_table(rows, "markdown") + "\n" + note + "\n\n"
          + "".join(f"{n}\n\n" for n in notes) + extra + "## Phases (phases.csv)\n\n" + format_table(prows, "markdown"))
    atomic.write_text(out_dir / "savings.md", md)
    data = report_data(title, metric, rows, prows, [note, *notes], {t.stem: t.rows for t in tables})
    atomic.write_text(out_dir / "savings.json", json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return md


def report_data(title: str, metric: str, rows: Sequence[Mapping[str, str]], prows: Sequence[Mapping[str, str]],
                notes: Sequence[str], tables: Mapping[str, Sequence[Mapping[str, str]]] | None = None) -> dict[str, Any]:
    """A report as JSON gives it (``savings.json``, ``compare --format json``): the main table and
    the phase costs (and further tables, by their CSV's stem) with the CSV's column names and
    numbers as numbers (:func:`~coarse2fine.report.savings.json_rows`), and the notes."""
    return {"title": title, "metric": metric, "savings": json_rows(rows), "phases": json_rows(prows),
            **{stem: json_rows(t) for stem, t in (tables or {}).items()}, "notes": list(notes)}
