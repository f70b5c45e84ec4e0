"""Commands that train: demo, experiment, train, pretrain, pretrain-experiment, crossval."""

from __future__ import annotations

import logging
from pathlib import Path

from coarse2fine import atomic
from coarse2fine.cli.options import (
    add_common,
    add_grid_options,
    add_run_options,
    calibrated,
    run_overrides,
)
from coarse2fine.compression import METHODS
from coarse2fine.config import (
    load_config,
)
from coarse2fine.data.sources import load_splits
from coarse2fine.experiments.grid import (
    Variant,
    cross_validate,
    parse_methods,
    run_experiment,
    variant_config,
)
from coarse2fine.experiments.pretraining import (
    calibrate_pretraining,
    compare_pretraining,
    comparison_rows,
    write_comparison,
)
from coarse2fine.phases import parse_schedule
from coarse2fine.report.plots import phase_rows, write_report
from coarse2fine.report.savings import (
    best_coarse_value,
    best_value,
    busy_runs,
    format_table,
    savings_table,
    table_measures,
    time_note,
)
from coarse2fine.training.loop import RunResult, train_run

log = logging.getLogger("coarse2fine")


def add_parsers(sub) -> None:
    """demo, experiment, train, crossval: commands that train."""
    p = sub.add_parser("demo", help="baseline vs coarse-to-fine on the embedded synthetic set, with the savings table")
    p.add_argument("--config", default="demo", help="preset name or YAML path (default: demo)")
    p.add_argument("--schedule", default="4-1", help="coarse-to-fine schedule, e.g. 4-1, 2-1, 4-2-1 (default 4-1)")
    p.add_argument("--methods", default="all", help="comma-separated: fshift,avgpool,maxpool,patch-bl,patch-pi or all")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    add_grid_options(p)
    add_common(p)

    p = sub.add_parser("experiment", help="baseline plus methods x schedules on a config's dataset")
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("--schedules", default="4-1", help="comma-separated schedules, e.g. 4-1,2-1,4-2-1")
    p.add_argument("--methods", default="all", help="comma-separated methods or all")
    p.add_argument("--out", required=True, help="output folder")
    add_grid_options(p)
    add_common(p)

    p = sub.add_parser("train", help="one run (baseline with --schedule 1) from a preset or YAML config")
    add_run_options(p, METHODS, "run folder (logs, weights)")

    p = sub.add_parser("pretrain", help="self-supervised pretraining (SSAST masked patch modelling) on unlabeled audio")
    add_run_options(p, ("fshift", "avgpool", "maxpool"), "run folder; fine-tune from it with model.init_from=FOLDER")

    p = sub.add_parser("pretrain-experiment", help="baseline vs coarse-to-fine pretraining, each fine-tuned on downstream tasks")
    p.add_argument("config", help="a pretraining preset or YAML path")
    p.add_argument("--finetune", required=True, help="comma-separated downstream configs, e.g. esc50-cpu,fsdd_speakers-cpu")
    p.add_argument("--schedule", default="4-1", help="the coarse-to-fine pretraining schedule (default 4-1)")
    p.add_argument("--method", default="fshift", choices=["fshift", "avgpool", "maxpool"])
    p.add_argument("--finetune-set", dest="finetune_overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a value of every downstream config (repeatable)")
    p.add_argument("--out", required=True, help="output folder (pretrain/, finetune/, pretraining.md)")
    add_grid_options(p)
    add_common(p)

    p = sub.add_parser("crossval", help="k-fold cross-validation (ESC-50 style): {fold} in data.train/data.val")
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("--folds", type=int, default=5, help="number of folds, numbered from 1 (default 5)")
    p.add_argument("--schedule", help="override c2f.schedule (1 = baseline)")
    p.add_argument("--out", required=True, help="output folder (one run folder per fold)")
    add_common(p)


def _print_experiment(base_records, runs: dict, metric: str, out_root: Path, title: str) -> None:
    write_report(out_root, base_records, runs, metric, title)
    print(format_table(savings_table("Baseline", base_records, runs, metric), "text"), end="")
    print(time_note(table_measures([base_records, *runs.values()]), busy_runs({"Baseline": base_records, **runs})))
    print("Measured FLOPs and time per training epoch, by phase (ratios to the baseline's epoch):")
    print(format_table(phase_rows(base_records, runs), "text"))
    print(f"Tables and plots in {out_root}: savings.md, savings.csv, phases.csv, metric_vs_flops.png, metric_vs_time.png")


def cmd_experiment(args) -> int:
    """``demo`` and ``experiment``: the baseline plus every method x schedule, and the tables."""
    cfg = load_config(args.config, args.overrides)
    schedules = [args.schedule] if args.command == "demo" else [s.strip() for s in args.schedules.split(",")]
    for s in schedules:
        parse_schedule(s)
    variants = [Variant(m, s) for s in schedules for m in parse_methods(args.methods)]
    out_root = Path(args.out)
    splits = load_splits(cfg)
    baseline, results = run_experiment(cfg, variants, out_root, splits, progress=not args.quiet, reuse=not args.fresh)
    configs = [variant_config(cfg, None), *(variant_config(cfg, v) for v in variants)]
    records = calibrated(configs, [baseline.records, *(r.records for r in results.values())], splits.train.num_classes,
                         args.calibrate_rounds, out_root / "calibration.json", splits.train, args.recalibrate)
    runs = dict(zip(results, records[1:]))
    _print_experiment(records[0], runs, cfg.train.metric, out_root, f"{cfg.name}: baseline vs {', '.join(schedules)}")
    return 0


def _train_one(args, cfg) -> RunResult:
    """Train one run into ``--out`` and print what happened and its best metric (the final
    phase's; the best of the coarse phases beside it)."""
    result = train_run(cfg, load_splits(cfg), args.out, progress=not args.quiet, resume=True, fresh=args.fresh)
    metric = cfg.train.metric
    what = {"trained": "trained", "resumed": "resumed from its checkpoint and finished",
            "finished": "already finished in this folder (nothing trained; --fresh trains it again)"}[result.status]
    coarse = best_coarse_value(result.records, metric)
    also = f" (coarse phases: {coarse:.4f})" if coarse is not None else ""
    print(f"{cfg.name}: {what}; best {metric} {best_value(result.records, metric):.4f} in the final phase{also}; "
          f"logs in {result.out_dir}")
    return result


def cmd_train(args) -> int:
    _train_one(args, load_config(args.config, run_overrides(args)))
    return 0


def cmd_pretrain(args) -> int:
    cfg = load_config(args.config, run_overrides(args))
    if cfg.train.objective != "masked_patch":
        raise ValueError(f"{args.config} is a {cfg.train.objective} config; pretraining needs train.objective: "
                         "masked_patch (start from the ssast_pretrain or ssast_pretrain-cpu preset)")
    result = _train_one(args, cfg)
    print(f"fine-tune from it with --set model.init_from={result.out_dir}")
    return 0


def cmd_pretrain_experiment(args) -> int:
    pre = load_config(args.config, args.overrides)
    tasks = [load_config(name.strip(), args.finetune_overrides) for name in args.finetune.split(",") if name.strip()]
    result = compare_pretraining(pre, tasks, args.schedule, args.method, args.out, progress=not args.quiet, reuse=not args.fresh)
    configs = {"Baseline": variant_config(pre, None), Variant(args.method, args.schedule).label:
               variant_config(pre, Variant(args.method, args.schedule))}
    calibrated = (calibrate_pretraining(result, configs, args.calibrate_rounds, Path(args.out) / "calibration.json",
                                        args.recalibrate) if args.calibrate_rounds > 0 else None)
    rows = comparison_rows(result, tasks, calibrated)
    write_comparison(args.out, rows)
    print(format_table(rows, "text"), end="")
    print(f"Tables in {args.out}: pretraining.md, pretraining.csv")
    return 0


def cmd_crossval(args) -> int:
    cfg = load_config(args.config, run_overrides(args))
    results = cross_validate(cfg, range(1, args.folds + 1), args.out, progress=not args.quiet)
    metric = cfg.train.metric
    best = {fold: best_value(res.records, metric) for fold, res in results.items()}
    rows = [{"fold": str(f), f"best {metric}": f"{v:.4f}"} for f, v in best.items()]
    values = list(best.values())
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    rows.append({"fold": "mean", f"best {metric}": f"{mean:.4f} +/- {std:.4f}"})
    atomic.write_text(Path(args.out) / "folds.csv", format_table(rows, "csv"))
    print(format_table(rows, "text"))
    return 0


COMMANDS = {"demo": cmd_experiment, "experiment": cmd_experiment, "train": cmd_train, "pretrain": cmd_pretrain,
            "pretrain-experiment": cmd_pretrain_experiment, "crossval": cmd_crossval}
