"""Command-line interface: ``coarse2fine demo | train | compare | presets``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import torch

from coarse2fine import __version__, atomic
from coarse2fine.accounting import baseline_costs, phase_costs, run_flops_per_clip
from coarse2fine.compression import METHODS
from coarse2fine.config import config_from_dict, config_reference, load_config, preset_names, save_config
from coarse2fine.data.sources import count_classes, count_clips, input_kind, load_splits
from coarse2fine.data.stats import dataset_stats
from coarse2fine.distributed import resolve_device
from coarse2fine.experiment import (
    Variant,
    calibrate_runs,
    cross_validate,
    parse_methods,
    run_experiment,
    variant_config,
)
from coarse2fine.model.hf import load_hf_checkpoint
from coarse2fine.model.registry import get_arch
from coarse2fine.phases import default_initial_fraction, parse_schedule
from coarse2fine.planner import choose, plan, planned_config
from coarse2fine.predict import load_run_for_inference, predict_files
from coarse2fine.pretraining import (
    calibrate_pretraining,
    compare_pretraining,
    comparison_rows,
    write_comparison,
)
from coarse2fine.report import phase_rows, write_report
from coarse2fine.savings import (
    TIME_NOTE,
    best_value,
    format_table,
    load_records,
    metric_higher_is_better,
    savings_table,
)
from coarse2fine.timing import bench, load_average
from coarse2fine.train import NonFiniteLossError, train_run

log = logging.getLogger("coarse2fine")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=10 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")


def _add_grid_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that train several runs and compare them."""
    p.add_argument("--fresh", action="store_true", help="retrain runs even when finished results exist")
    p.add_argument("--calibrate-rounds", type=int, default=10,
                   help="interleaved rounds timing each phase's step for the calibrated time saves (0: wall time only)")


def _add_run_options(p: argparse.ArgumentParser, methods: Sequence[str], out_help: str) -> None:
    """Options of the commands that train one run."""
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("--schedule", help="override c2f.schedule (1 = full resolution only)")
    p.add_argument("--method", choices=list(methods), help="override c2f.method")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint an interrupted run left in --out")
    _add_common(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coarse2fine", description="Coarse-to-fine training of audio spectrogram transformers.")
    parser.add_argument("--version", action="version", version=f"coarse2fine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_training_commands(sub)
    _add_model_commands(sub)
    _add_report_commands(sub)
    return parser


def _add_training_commands(sub) -> None:
    """demo, experiment, train, crossval: commands that train."""
    p = sub.add_parser("demo", help="baseline vs coarse-to-fine on the embedded synthetic set, with the savings table")
    p.add_argument("--config", default="demo", help="preset name or YAML path (default: demo)")
    p.add_argument("--schedule", default="4-1", help="coarse-to-fine schedule, e.g. 4-1, 2-1, 4-2-1 (default 4-1)")
    p.add_argument("--methods", default="all", help="comma-separated: fshift,avgpool,maxpool,patch-bl,patch-pi or all")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    _add_grid_options(p)
    _add_common(p)

    p = sub.add_parser("experiment", help="baseline plus methods x schedules on a config's dataset")
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("--schedules", default="4-1", help="comma-separated schedules, e.g. 4-1,2-1,4-2-1")
    p.add_argument("--methods", default="all", help="comma-separated methods or all")
    p.add_argument("--out", required=True, help="output folder")
    _add_grid_options(p)
    _add_common(p)

    p = sub.add_parser("train", help="one run (baseline with --schedule 1) from a preset or YAML config")
    _add_run_options(p, METHODS, "run folder (logs, weights)")

    p = sub.add_parser("pretrain", help="self-supervised pretraining (SSAST masked patch modelling) on unlabeled audio")
    _add_run_options(p, ("fshift", "avgpool", "maxpool"), "run folder; fine-tune from it with model.init_from=FOLDER")

    p = sub.add_parser("pretrain-experiment", help="baseline vs coarse-to-fine pretraining, each fine-tuned on downstream tasks")
    p.add_argument("config", help="a pretraining preset or YAML path")
    p.add_argument("--finetune", required=True, help="comma-separated downstream configs, e.g. esc50-cpu,fsdd_speakers-cpu")
    p.add_argument("--schedule", default="4-1", help="the coarse-to-fine pretraining schedule (default 4-1)")
    p.add_argument("--method", default="fshift", choices=["fshift", "avgpool", "maxpool"])
    p.add_argument("--finetune-set", dest="finetune_overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a value of every downstream config (repeatable)")
    p.add_argument("--out", required=True, help="output folder (pretrain/, finetune/, pretraining.md)")
    _add_grid_options(p)
    _add_common(p)

    p = sub.add_parser("crossval", help="k-fold cross-validation (ESC-50 style): {fold} in data.train/data.val")
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("--folds", type=int, default=5, help="number of folds, numbered from 1 (default 5)")
    p.add_argument("--schedule", help="override c2f.schedule (1 = baseline)")
    p.add_argument("--out", required=True, help="output folder (one run folder per fold)")
    _add_common(p)


def _add_model_commands(sub) -> None:
    """predict, export-hf: commands that use a trained model."""
    p = sub.add_parser("predict", help="top-k labels for audio files of any length (sliding windows)")
    p.add_argument("model", help="a finished run folder, or a Hugging Face AST model folder")
    p.add_argument("audio", nargs="+", help="audio files")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--hop", type=float, default=None, help="window hop in seconds (default: half a window)")
    p.add_argument("--reduce", choices=["mean", "max"], default="mean", help="how window scores make the clip's")
    p.add_argument("--multilabel", action="store_true", help="sigmoid scores (Hugging Face models; runs know)")
    p.add_argument("--weights", default="model.safetensors", help="weights file in a run folder (e.g. model_wa.safetensors)")
    p.add_argument("--json", action="store_true", help="print JSON with every window's scores")
    p.add_argument("--skip-errors", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    p.add_argument("--device", default="auto")

    p = sub.add_parser("export-hf", help="export a finished run as a Hugging Face ASTForAudioClassification folder")
    p.add_argument("run", help="run folder")
    p.add_argument("out", help="output folder")


def _add_report_commands(sub) -> None:
    """compare, stats, check, presets: commands that read configs, data and logs."""
    p = sub.add_parser("compare", help="savings of finished runs against a baseline run")
    p.add_argument("baseline", help="baseline run folder (or its log.json)")
    p.add_argument("runs", nargs="+", help="run folders (or log.json files)")
    p.add_argument("--metric", default=None, help="metric to compare (default: the baseline config's train.metric)")
    p.add_argument("--format", choices=["text", "markdown", "csv"], default="text")
    p.add_argument("--calibrate-rounds", type=int, default=0,
                   help="time every phase's step in N interleaved rounds and report calibrated time saves (0: wall time only)")

    p = sub.add_parser("stats", help="normalisation mean/std of a config's training set (AST's features.mean/std)")
    p.add_argument("config", help="preset name or YAML path")
    _add_common(p)

    p = sub.add_parser("check", help="check every clip of a config's data and list the bad ones, without training")
    p.add_argument("config", help="preset name or YAML path")
    _add_common(p)

    p = sub.add_parser("flops", help="each phase's tokens and training GFLOPs per clip, before anything trains")
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("--schedule", help="override c2f.schedule")
    p.add_argument("--method", choices=list(METHODS), help="override c2f.method")
    p.add_argument("--classes", type=int, default=None, help="number of classes (default: read from the data's manifests)")
    p.add_argument("--json", action="store_true", help="print JSON: each phase with its R, tokens and FLOPs per clip")
    _add_common(p)

    p = sub.add_parser("bench", help="one training step of each phase, timed interleaved: FLOPs ratio vs time ratio")
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("--schedule", help="override c2f.schedule")
    p.add_argument("--method", choices=list(METHODS), help="override c2f.method")
    p.add_argument("--rounds", type=int, default=10, help="timed rounds (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--classes", type=int, default=None, help="number of classes (default: read from the data's manifests)")
    p.add_argument("--inputs", choices=["waveforms", "features", "model_input"], default=None,
                   help="what the step starts from (default: what the config's data source serves)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print JSON: each phase with its R, flops_ratio and time_ratio")
    _add_common(p)

    p = sub.add_parser("plan", help="candidate schedules that fit a compute budget, and a config of the chosen one")
    p.add_argument("config", help="preset name or YAML path")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-flops", type=float, help="total training FLOPs, e.g. 2e15")
    budget.add_argument("--budget-hours", type=float, help="total training time on this machine, in hours")
    p.add_argument("--schedules", default="1,2-1,4-1,4-2-1", help="candidate schedules (default 1,2-1,4-1,4-2-1)")
    p.add_argument("--fractions", default="0.15,0.25,0.35", help="candidate shares of the initial phases")
    p.add_argument("--choose", default=None, help="SCHEDULE[:FRACTION] to write (default: the config's schedule, "
                                                   "the paper's share)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the step-time calibration (default 5)")
    p.add_argument("--out", default=None, help="where to write the chosen config (default: <config>_plan.yaml)")
    _add_common(p)

    sub.add_parser("presets", help="list the shipped presets")


def _log_path(path: str) -> Path:
    p = Path(path)
    return p / "log.json" if p.is_dir() else p


def _calibrated(configs: list, records: list, classes: int, rounds: int, out_root: Path | None,
                serves: str | None = None) -> list:
    """Records with calibrated time (``rounds`` 0: as they are); the calibration goes to
    ``out_root/calibration.json``."""
    if rounds <= 0:
        return records
    cal, records = calibrate_runs(configs, records, classes, rounds, serves=serves)
    if out_root is not None:
        atomic.write_json(out_root / "calibration.json", cal.to_dict())
    return records


def _print_experiment(base_records, runs: dict, metric: str, out_root: Path, title: str) -> None:
    write_report(out_root, base_records, runs, metric, title)
    print(format_table(savings_table("Baseline", base_records, runs, metric), "text"), end="")
    print(TIME_NOTE["cum_cal_time" in base_records[0]])
    print("Measured FLOPs and time per training epoch, by phase (ratios to the baseline's epoch):")
    print(format_table(phase_rows(base_records, runs), "text"))
    print(f"Tables and plots in {out_root}: savings.md, savings.csv, phases.csv, metric_vs_flops.png, metric_vs_time.png")


def cmd_predict(args) -> int:
    device = resolve_device(args.device)
    path = Path(args.model)
    if (path / "model_config.json").exists():
        model, spec, labels, names, multilabel = load_run_for_inference(path, weights=args.weights)
    else:
        model, info = load_hf_checkpoint(path)
        spec, labels, names, multilabel = info["feature_spec"], info["labels"], info["labels"], args.multilabel
    # Every readable file is scored; each unreadable one is listed with its problem (exit 1).
    preds = predict_files(model.to(device), args.audio, spec, labels, names, top_k=args.top_k, multilabel=multilabel,
                          hop_seconds=args.hop, device=device, reduce=args.reduce, skip_errors=True)
    if args.json:
        print(json.dumps([p.to_dict() for p in preds], indent=2))
    else:
        for pred in preds:
            if pred.error:
                print(f"{pred.path}: error: {pred.error}")
                continue
            print(f"{pred.path} ({pred.duration_s:.2f} s, {len(pred.windows)} window(s)):")
            for label, name, score in pred.top:
                print(f"  {score:.4f}  {name}" + (f"  [{label}]" if name != label else ""))
    failed = [p for p in preds if p.error]
    if failed:
        print(f"coarse2fine: {len(failed)} of {len(preds)} file(s) could not be scored:", file=sys.stderr)
        for p in failed:
            print(f"  {p.path}: {p.error}", file=sys.stderr)
    return 1 if failed else 0


def _run_overrides(args) -> list[str]:
    """``--set`` values plus the ``--schedule`` / ``--method`` shortcuts of train and crossval."""
    extra = [f"c2f.schedule={args.schedule}"] if getattr(args, "schedule", None) else []
    extra += [f"c2f.method={args.method}"] if getattr(args, "method", None) else []
    return [*args.overrides, *extra]


def cmd_presets(args) -> int:
    print("\n".join(preset_names()))
    return 0


def cmd_experiment(args) -> int:
    """``demo`` and ``experiment``: the baseline plus every method x schedule, and the tables."""
    cfg = load_config(args.config, args.overrides)
    schedules = [args.schedule] if args.command == "demo" else [s.strip() for s in args.schedules.split(",")]
    for s in schedules:
        parse_schedule(s)
    variants = [Variant(m, s) for s in schedules for m in parse_methods(args.methods)]
    out_root = Path(args.out)
    baseline, results = run_experiment(cfg, variants, out_root, progress=not args.quiet, reuse=not args.fresh)
    configs = [variant_config(cfg, None), *(variant_config(cfg, v) for v in variants)]
    records = _calibrated(configs, [baseline.records, *(r.records for r in results.values())], count_classes(cfg),
                          args.calibrate_rounds, out_root)
    runs = dict(zip(results, records[1:]))
    _print_experiment(records[0], runs, cfg.train.metric, out_root, f"{cfg.name}: baseline vs {', '.join(schedules)}")
    return 0


def cmd_train(args) -> int:
    cfg = load_config(args.config, _run_overrides(args))
    result = train_run(cfg, load_splits(cfg), args.out, progress=not args.quiet, resume=args.resume)
    best = best_value(result.records, cfg.train.metric)
    print(f"{cfg.name}: best {cfg.train.metric} {best:.4f}; logs in {result.out_dir}")
    return 0


def cmd_pretrain(args) -> int:
    cfg = load_config(args.config, _run_overrides(args))
    if cfg.train.objective != "masked_patch":
        raise ValueError(f"{args.config} is a {cfg.train.objective} config; pretraining needs train.objective: "
                         "masked_patch (start from the ssast_pretrain or ssast_pretrain-cpu preset)")
    result = train_run(cfg, load_splits(cfg), args.out, progress=not args.quiet, resume=args.resume)
    best = best_value(result.records, cfg.train.metric)
    print(f"{cfg.name}: best {cfg.train.metric} {best:.4f}; fine-tune from it with --set model.init_from={result.out_dir}")
    return 0


def cmd_pretrain_experiment(args) -> int:
    pre = load_config(args.config, args.overrides)
    tasks = [load_config(name.strip(), args.finetune_overrides) for name in args.finetune.split(",") if name.strip()]
    result = compare_pretraining(pre, tasks, args.schedule, args.method, args.out, progress=not args.quiet, reuse=not args.fresh)
    configs = {"Baseline": variant_config(pre, None), Variant(args.method, args.schedule).label:
               variant_config(pre, Variant(args.method, args.schedule))}
    calibrated = calibrate_pretraining(result, configs, args.calibrate_rounds) if args.calibrate_rounds > 0 else None
    rows = comparison_rows(result, tasks, calibrated)
    write_comparison(args.out, rows)
    print(format_table(rows, "text"), end="")
    print(f"Tables in {args.out}: pretraining.md, pretraining.csv")
    return 0


def cmd_crossval(args) -> int:
    cfg = load_config(args.config, _run_overrides(args))
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


def cmd_export_hf(args) -> int:
    model, spec, _labels, names, _ = load_run_for_inference(args.run)
    export = get_arch(model.arch).export_hf
    if export is None:
        raise ValueError(f"{args.run}: {model.arch} models have no Hugging Face format to export to")
    out = export(model, args.out, id2label=names, feature_spec=spec)
    print(f"exported {args.run} to {out} (loads with transformers.ASTForAudioClassification.from_pretrained)")
    return 0


def cmd_stats(args) -> int:
    cfg = load_config(args.config, [*args.overrides, "data.cache_dir=null", "data.preload=true", "data.in_memory=off"])
    splits = load_splits(cfg)
    mean, std = dataset_stats(splits.train, cfg.features.settings, cfg.features.target_length, lengths=splits.train.lengths)
    print(f"{len(splits.train)} training clips: mean {mean:.7g}, std {std:.7g}")
    print(f"features:\n  mean: {mean:.7g}\n  std: {std:.7g}")
    return 0


def cmd_check(args) -> int:
    cfg = load_config(args.config, [*args.overrides, "data.on_error=skip", "data.preload=false", "data.cache_dir=null",
                                    "data.in_memory=off"])
    splits = load_splits(cfg)
    print(f"{len(splits.train)} training and {len(splits.val)} validation clips usable; {len(splits.skipped)} bad")
    for p in splits.skipped:
        print(f"  {p.path}: {p.problem}")
    return 1 if splits.skipped else 0


def cmd_flops(args) -> int:
    cfg = load_config(args.config, _run_overrides(args))
    classes = args.classes if args.classes is not None else _classes_from_data(cfg)
    costs, base = phase_costs(cfg, classes), baseline_costs(cfg, classes)
    run, baseline = run_flops_per_clip(costs), run_flops_per_clip(base)
    full = base[0].train_flops_per_clip
    if args.json:
        print(json.dumps({"config": cfg.name, "arch": cfg.model.arch, "preset": cfg.model.preset, "method": cfg.c2f.method,
                          "schedule": cfg.c2f.schedule, "classes": classes, "phases": [c.to_dict() for c in costs],
                          "run_flops_per_clip": run, "baseline_flops_per_clip": baseline}, indent=2))
        return 0
    print(f"{cfg.name}: {cfg.model.arch} {cfg.model.preset}, {cfg.c2f.method}, schedule {cfg.c2f.schedule}, {classes} classes")
    rows = [{"phase": str(c.phase), "R": str(c.R), "epochs": str(c.epochs), "input": f"{c.frames} x {c.mel_bins}",
             "tokens": str(c.tokens), "train GFLOPs/clip": f"{c.train_flops_per_clip / 1e9:.4g}",
             "eval GFLOPs/clip": f"{c.forward_flops_per_clip / 1e9:.4g}",
             "vs R=1": f"{c.train_flops_per_clip / full:.3f}"} for c in costs]
    print(format_table(rows, "text"), end="")
    note = ("; the final phase keeps the baseline's budget, so the saving is measured where a run first beats "
            "the baseline's best (coarse2fine compare)") if costs[-1].epochs == base[0].epochs and len(costs) > 1 else ""
    print(f"whole schedule: {run / 1e9:.4g} training GFLOPs per training clip, {run / baseline:.2f}x the baseline's "
          f"{base[0].epochs} epochs at R=1 ({baseline / 1e9:.4g}){note}")
    return 0


def cmd_bench(args) -> int:
    cfg = load_config(args.config, _run_overrides(args))
    classes = args.classes if args.classes is not None else _classes_from_data(cfg)
    serves = args.inputs or input_kind(cfg, count_clips(cfg))
    rows = bench(cfg, classes, args.rounds, args.warmup, args.device, serves)
    load = load_average()
    if args.json:
        print(json.dumps({"config": cfg.name, "arch": cfg.model.arch, "method": cfg.c2f.method, "batch": cfg.train.batch_size, "inputs": serves,
                          "rounds": args.rounds, "threads": torch.get_num_threads(), "load_avg": load,
                          "phases": [r.to_dict() for r in rows]}, indent=2))
        return 0
    print(f"{cfg.name}: {cfg.model.arch} {cfg.model.preset}, {cfg.c2f.method}, batch {cfg.train.batch_size}, inputs "
          f"{serves}, {args.rounds} interleaved rounds, {torch.get_num_threads()} threads, load average {load}")
    table = [{"R": str(r.R), "tokens": str(r.tokens), "step ms": f"{r.step_ms:.1f}", "FLOPs ratio": f"{r.flops_ratio:.3f}",
              "time ratio": f"{r.time_ratio:.3f} [{r.time_ratio_q25:.3f}, {r.time_ratio_q75:.3f}]",
              "time/FLOPs": f"{r.time_over_flops:.2f}", "model ms": f"{r.model_ms:.1f}",
              "model time/FLOPs": f"{r.model_time_over_flops:.2f}"} for r in rows]
    print(format_table(table, "text"), end="")
    print("time ratio: median of the per-round ratios to R=1 [quartiles]; model: forward, backward and update only")
    return 0


def cmd_plan(args) -> int:
    cfg = load_config(args.config, args.overrides)
    schedules = [s.strip() for s in args.schedules.split(",") if s.strip()]
    fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    clips, classes = count_clips(cfg), count_classes(cfg)
    found, cal = plan(cfg, classes, clips, args.budget_flops or 0.0, args.budget_hours or 0.0, schedules, fractions, args.rounds)
    wanted, _, frac = (args.choose or cfg.c2f.schedule).partition(":")
    paper = default_initial_fraction(len(parse_schedule(wanted)))
    chosen = choose(found, wanted, float(frac) if frac else paper)
    rows = [{"": "->" if c is chosen else "", "schedule": c.schedule, "initial share": f"{c.fraction:.2f}",
             "epochs per phase": "-".join(map(str, c.phase_epochs)), "epochs": str(c.epochs),
             "predicted PFLOPs": f"{c.flops / 1e15:.4g}", "predicted hours": f"{c.seconds / 3600:.3g}"} for c in found]
    print(f"{cfg.name}: {clips} training clips, budget "
          + (f"{args.budget_flops:.4g} FLOPs" if args.budget_flops else f"{args.budget_hours:g} h")
          + f"; step times from {cal.rounds} interleaved rounds on {cal.device} (load average {cal.load_avg})")
    print(format_table(rows, "text"), end="")
    out = Path(args.out or f"{cfg.name}_plan.yaml")
    save_config(planned_config(cfg, chosen), out, extends=config_reference(args.config))
    print(f"wrote {out}: schedule {chosen.schedule}, phase epochs {list(chosen.phase_epochs)}; "
          f"train it with `coarse2fine train {out} --out runs/plan`, then `coarse2fine compare` shows predicted vs measured")
    return 0


def _classes_from_data(cfg) -> int:
    """The config's number of classes, read from its data; the error says how to do without."""
    try:
        return count_classes(cfg)
    except (OSError, ValueError) as err:
        raise ValueError(f"{err} (or give --classes N: only the classifier's size needs the data)") from err


def _plan_lines(configs: list, records: list, names: list) -> list[str]:
    """Predicted (``coarse2fine plan``) against measured cost, for the runs that were planned."""
    lines = []
    for cfg, recs, name in zip(configs, records, names):
        if cfg.c2f.planned_flops or cfg.c2f.planned_seconds:
            flops, secs = recs[-1]["cum_flops"], recs[-1]["cum_time"]
            lines.append(f"{name}: planned {cfg.c2f.planned_flops:.4g} FLOPs, {cfg.c2f.planned_seconds:.0f} s; "
                         f"measured {flops:.4g} FLOPs ({flops / cfg.c2f.planned_flops:.3f}x), {secs:.0f} s "
                         f"({secs / cfg.c2f.planned_seconds:.2f}x)")
    return lines


def cmd_compare(args) -> int:
    paths = [_log_path(args.baseline), *(_log_path(r) for r in args.runs)]
    logs = [json.loads(p.read_text()) for p in paths]
    records = [load_records(p) for p in paths]
    metric = args.metric or logs[0]["config"]["train"]["metric"]
    direction = logs[0].get("metrics", {}).get(metric)
    higher = metric_higher_is_better(metric) if direction is None else direction == "max"
    configs = [config_from_dict(saved["config"]) for saved in logs]
    # Runs logged before the "inputs" field existed trained from waveforms.
    records = _calibrated(configs, records, len(logs[0].get("classes") or []) or count_classes(configs[0]),
                          args.calibrate_rounds, None, logs[0].get("inputs", "waveforms"))
    names = [p.parent.name for p in paths[1:]]
    print(format_table(savings_table("Baseline", records[0], dict(zip(names, records[1:])), metric, higher=higher), args.format), end="")
    notes = [TIME_NOTE["cum_cal_time" in records[0][0]], *_plan_lines(configs, records, ["baseline", *names])]
    if args.format == "text":
        print("\n".join(notes))
    elif args.format == "markdown":  # notes as paragraphs under the table
        print("\n" + "\n\n".join(notes))
    return 0


COMMANDS = {
    "presets": cmd_presets, "demo": cmd_experiment, "experiment": cmd_experiment, "train": cmd_train,
    "crossval": cmd_crossval, "pretrain": cmd_pretrain, "pretrain-experiment": cmd_pretrain_experiment, "predict": cmd_predict, "export-hf": cmd_export_hf, "stats": cmd_stats,
    "check": cmd_check, "compare": cmd_compare, "flops": cmd_flops, "bench": cmd_bench, "plan": cmd_plan,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return COMMANDS[args.command](args)
    except NonFiniteLossError as err:
        print(f"coarse2fine: stopped: {err}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as err:
        print(f"coarse2fine: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
