"""Reports of an experiment: the paper's tables (Markdown, CSV) and plots of metric vs cost.

``write_report`` puts, in an experiment's folder: ``savings.md`` / ``savings.csv`` (first epoch
that beats the baseline, and trained to convergence), ``phases.csv`` (measured FLOPs and time
per epoch of every phase, with ratios to the baseline's), and ``metric_vs_flops.png`` /
``metric_vs_time.png`` (every run's validation metric after each epoch, against its cumulative
training FLOPs and wall time, the baseline's best as a dashed line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from coarse2fine import atomic  # noqa: E402
from coarse2fine.report.savings import (  # noqa: E402
    TIME_NOTE,
    baseline_reference,
    format_table,
    savings_table,
)

Records = Sequence[Mapping[str, Any]]


def phase_summary(records: Records) -> list[dict[str, Any]]:
    """Per phase: R, tokens, epochs, FLOPs and training time in total and per epoch."""
    phases: dict[int, dict[str, Any]] = {}
    for r in records:
        s = phases.setdefault(r["phase"], {"phase": r["phase"], "R": r["R"], "tokens": r.get("tokens"), "epochs": 0, "flops": 0, "time": 0.0})
        s["epochs"] += 1
        s["flops"] += r["train_flops"]
        if "cal_time" in r:
            s["cal_time"] = s.get("cal_time", 0.0) + r["cal_time"]
        s["time"] += r["train_time"]
    for s in phases.values():
        s["flops_per_epoch"] = s["flops"] / s["epochs"]
        s["time_per_epoch"] = s["time"] / s["epochs"]
        if "cal_time" in s:
            s["cal_time_per_epoch"] = s["cal_time"] / s["epochs"]
    return list(phases.values())


def phase_rows(baseline: Records, runs: Mapping[str, Records]) -> list[dict[str, str]]:
    """Rows of measured cost per phase, with FLOPs and wall-time ratios to the baseline's epoch
    (and calibrated-time ratios when the records carry ``cal_time``)."""
    ref = phase_summary(baseline)[-1]
    rows = []
    for label, records in [("Baseline", baseline), *runs.items()]:
        for s in phase_summary(records):
            fr = s["flops_per_epoch"] / ref["flops_per_epoch"]
            tr = s["time_per_epoch"] / ref["time_per_epoch"]
            row = {
                "Setting": label, "phase": str(s["phase"] + 1), "R": str(s["R"]), "tokens": str(s["tokens"]),
                "epochs": str(s["epochs"]), "GFLOPs/epoch": f"{s['flops_per_epoch'] / 1e9:.1f}",
                "s/epoch": f"{s['time_per_epoch']:.2f}", "FLOPs ratio": f"{fr:.3f}", "wall time ratio": f"{tr:.3f}",
            }
            if "cal_time_per_epoch" in s and "cal_time_per_epoch" in ref:
                row["calibrated time ratio"] = f"{s['cal_time_per_epoch'] / ref['cal_time_per_epoch']:.3f}"
            rows.append(row)
    return rows


def plot_runs(baseline: Records, runs: Mapping[str, Records], metric: str, x: str, path: Path) -> None:
    """Metric after each epoch against cumulative ``x`` (``cum_flops`` or ``cum_time``) as a PNG."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    scale, xlabel = {"cum_flops": (1e12, "cumulative training TFLOPs"), "cum_time": (1.0, "cumulative training wall time (s)"),
                     "cum_cal_time": (1.0, "cumulative calibrated training time (s)")}[x]
    for label, records in [("Baseline", baseline), *runs.items()]:
        xs = [r[x] / scale for r in records]
        ys = [100 * r[metric] if metric in ("acc", "mAP", "mAUC") else r[metric] for r in records]
        style = dict(color="black", linewidth=2.2) if label == "Baseline" else dict(linewidth=1.4, alpha=0.9)
        ax.plot(xs, ys, marker="o", markersize=3, label=label, **style)
        boundaries = [r[x] / scale for a, r in zip(records, records[1:]) if r["phase"] != a["phase"]]
        for b in boundaries:
            ax.axvline(b, color=ax.lines[-1].get_color(), linestyle=":", linewidth=0.8, alpha=0.6)
    best = baseline_reference(baseline, metric).best
    ax.axhline(100 * best if metric in ("acc", "mAP", "mAUC") else best, color="black", linestyle="--", linewidth=0.8, label="Baseline best")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"validation {metric}" + (" (%)" if metric in ("acc", "mAP", "mAUC") else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_report(out_dir: str | Path, baseline: Records, runs: Mapping[str, Records], metric: str, title: str = "") -> str:
    """Write tables and plots into ``out_dir``; returns the Markdown report."""
    out_dir = Path(out_dir)
    rows = savings_table("Baseline", baseline, runs, metric)
    prows = phase_rows(baseline, runs)
    atomic.write_text(out_dir / "savings.csv", format_table(rows, "csv"))
    atomic.write_text(out_dir / "phases.csv", format_table(prows, "csv"))
    calibrated = all("cum_cal_time" in r for r in baseline)
    plots = [("cum_flops", "metric_vs_flops.png"), ("cum_cal_time" if calibrated else "cum_time", "metric_vs_time.png")]
    if calibrated:
        plots.append(("cum_time", "metric_vs_wall_time.png"))
    for x, name in plots:
        plot_runs(baseline, runs, metric, x, out_dir / name)
    md = ((f"# {title}\n\n" if title else "") + format_table(rows, "markdown") + "\n" + TIME_NOTE[calibrated] + "\n\n"
          + format_table(prows, "markdown"))
    atomic.write_text(out_dir / "savings.md", md)
    return md
