"""Command-line interface: ``coarse2fine demo | train | compare | presets``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from coarse2fine import __version__, atomic
from coarse2fine.config import load_config, preset_names
from coarse2fine.data.sources import load_splits
from coarse2fine.data.stats import dataset_stats
from coarse2fine.distributed import resolve_device
from coarse2fine.experiment import (
    Variant,
    cross_validate,
    parse_methods,
    run_experiment,
)
from coarse2fine.model.hf import load_hf_checkpoint
from coarse2fine.model.registry import get_arch
from coarse2fine.phases import parse_schedule
from coarse2fine.predict import load_run_for_inference, predict_files
from coarse2fine.report import phase_rows, write_report
from coarse2fine.savings import (
    best_value,
    format_table,
    load_records,
    metric_higher_is_better,
    savings_table,
)
from coarse2fine.train import NonFiniteLossError, train_run

log = logging.getLogger("coarse2fine")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=10 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")


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
    p.add_argument("--fresh", action="store_true", help="retrain runs even when finished results exist")
    _add_common(p)

    p = sub.add_parser("experiment", help="baseline plus methods x schedules on a config's dataset")
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("--schedules", default="4-1", help="comma-separated schedules, e.g. 4-1,2-1,4-2-1")
    p.add_argument("--methods", default="all", help="comma-separated methods or all")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--fresh", action="store_true", help="retrain runs even when finished results exist")
    _add_common(p)

    p = sub.add_parser("train", help="one run (baseline with --schedule 1) from a preset or YAML config")
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("--schedule", help="override c2f.schedule (1 = baseline)")
    p.add_argument("--method", choices=["fshift", "avgpool", "maxpool", "patch"], help="override c2f.method")
    p.add_argument("--out", required=True, help="run folder (logs, weights)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint an interrupted run left in --out")
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

    p = sub.add_parser("stats", help="normalisation mean/std of a config's training set (AST's features.mean/std)")
    p.add_argument("config", help="preset name or YAML path")
    _add_common(p)

    p = sub.add_parser("check", help="check every clip of a config's data and list the bad ones, without training")
    p.add_argument("config", help="preset name or YAML path")
    _add_common(p)

    sub.add_parser("presets", help="list the shipped presets")


def _log_path(path: str) -> Path:
    p = Path(path)
    return p / "log.json" if p.is_dir() else p


def _print_experiment(baseline, results, metric: str, out_root: Path, title: str) -> None:
    runs = {label: r.records for label, r in results.items()}
    write_report(out_root, baseline.records, runs, metric, title)
    print(format_table(savings_table("Baseline", baseline.records, runs, metric), "text"))
    print("Measured FLOPs and time per training epoch, by phase (ratios to the baseline's epoch):")
    print(format_table(phase_rows(baseline.records, runs), "text"))
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
    _print_experiment(baseline, results, cfg.train.metric, out_root, f"{cfg.name}: baseline vs {', '.join(schedules)}")
    return 0


def cmd_train(args) -> int:
    cfg = load_config(args.config, _run_overrides(args))
    result = train_run(cfg, load_splits(cfg), args.out, progress=not args.quiet, resume=args.resume)
    best = best_value(result.records, cfg.train.metric)
    print(f"{cfg.name}: best {cfg.train.metric} {best:.4f}; logs in {result.out_dir}")
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
    cfg = load_config(args.config, [*args.overrides, "data.cache_dir=null", "data.preload=true"])
    splits = load_splits(cfg)
    mean, std = dataset_stats(splits.train, cfg.features.settings, cfg.features.target_length, lengths=splits.train.lengths)
    print(f"{len(splits.train)} training clips: mean {mean:.7g}, std {std:.7g}")
    print(f"features:\n  mean: {mean:.7g}\n  std: {std:.7g}")
    return 0


def cmd_check(args) -> int:
    cfg = load_config(args.config, [*args.overrides, "data.on_error=skip", "data.preload=false", "data.cache_dir=null"])
    splits = load_splits(cfg)
    print(f"{len(splits.train)} training and {len(splits.val)} validation clips usable; {len(splits.skipped)} bad")
    for p in splits.skipped:
        print(f"  {p.path}: {p.problem}")
    return 1 if splits.skipped else 0


def cmd_compare(args) -> int:
    base = load_records(_log_path(args.baseline))
    saved = json.loads(_log_path(args.baseline).read_text())
    metric = args.metric or saved["config"]["train"]["metric"]
    direction = saved.get("metrics", {}).get(metric)
    higher = metric_higher_is_better(metric) if direction is None else direction == "max"
    runs = {Path(r).name if Path(r).is_dir() else Path(r).parent.name: load_records(_log_path(r)) for r in args.runs}
    print(format_table(savings_table("Baseline", base, runs, metric, higher=higher), args.format))
    return 0


COMMANDS = {
    "presets": cmd_presets, "demo": cmd_experiment, "experiment": cmd_experiment, "train": cmd_train,
    "crossval": cmd_crossval, "predict": cmd_predict, "export-hf": cmd_export_hf, "stats": cmd_stats,
    "check": cmd_check, "compare": cmd_compare,
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
