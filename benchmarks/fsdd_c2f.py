"""FSDD benchmark: baseline vs coarse-to-fine (4-1 and 2-1) with every compression method.

Trains, on the real Free Spoken Digit Dataset (../shared/data/fsdd), a micro AST on CPU for both
tasks (digits: 10 classes; speakers: 6), the baseline and Fshift, Avg/Max Pool and Patch BL/PI at
4-1 and 2-1, and prints the paper-style tables (first epoch that beats the baseline: metric,
FLOPs save, time save; trained to convergence: best metric and gain) with the measured cost per
phase. Finished runs are reused when the script is run again (delete the folder to retrain).

    python benchmarks/fsdd_c2f.py                       # both tasks, about 20 min on 2 cores
    python benchmarks/fsdd_c2f.py --tasks digits --schedules 4-1 --set train.epochs=6
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
from pathlib import Path

import torch

from coarse2fine.config import load_config
from coarse2fine.data.sources import load_splits
from coarse2fine.experiments.grid import VARIANTS, Variant, run_experiment
from coarse2fine.report.plots import write_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="digits,speakers")
    ap.add_argument("--schedules", default="4-1,2-1")
    ap.add_argument("--methods", default=",".join(VARIANTS))
    ap.add_argument("--root", default=None, help="FSDD folder (default: the preset's ../shared/data/fsdd)")
    ap.add_argument("--out", default="benchmarks/results/fsdd")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override, repeatable")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    summary = {"machine": machine, "tasks": {}}
    for task in args.tasks.split(","):
        overrides = list(args.overrides) + ([f"data.root={args.root}"] if args.root else [])
        cfg = load_config(f"fsdd_{task}-cpu", overrides)
        splits = load_splits(cfg)
        variants = [Variant(m, s) for s in args.schedules.split(",") for m in args.methods.split(",")]
        out = Path(args.out) / task
        baseline, runs = run_experiment(cfg, variants, out, splits=splits, progress=False)
        md = write_report(out, baseline.records, {k: r.records for k, r in runs.items()}, cfg.train.metric,
                          title=f"FSDD {task} ({splits.train.num_classes} classes), {cfg.model.preset} AST, {machine}")
        print(md)
        summary["tasks"][task] = str(out / "savings.md")
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
