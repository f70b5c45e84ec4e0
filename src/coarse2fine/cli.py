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
from coarse2fine.experiment import Variant, cross_validate, parse_methods, run_experiment
from coarse2fine.report import phase_rows, write_report
from coarse2fine.phases import parse_schedule
from coarse2fine.savings import format_table, load_records, savings_table
from coarse2fine.model.hf import export_hf_checkpoint, load_hf_checkpoint
from coarse2fine.predict import load_run_for_inference, predict_files
from coarse2fine.distributed import resolve_device
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

    p = sub.add_parser("predict", help="top-k labels for audio files of any length (sliding windows)")
    p.add_argument("model", help="a finished run folder, or a Hugging Face AST model folder")
    p.add_argument("audio", nargs="+", help="audio files")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--hop", type=float, default=None, help="window hop in seconds (default: half a window)")
    p.add_argument("--reduce", choices=["mean", "max"], default="mean", help="how window scores make the clip's")
    p.add_argument("--multilabel", action="store_true", help="sigmoid scores (Hugging Face models; runs know)")
    p.add_argument("--weights", default="model.safetensors", help="weights file in a run folder (e.g. model_wa.safetensors)")
    p.add_argument("--json", action="store_true", help="print JSON with every window's scores")
    p.add_argument("--skip-errors", action="store_true", help="report unreadable files and go on")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("export-hf", help="export a finished run as a Hugging Face ASTForAudioClassification folder")
    p.add_argument("run", help="run folder")
    p.add_argument("out", help="output folder")

    p = sub.add_parser("crossval", help="k-fold cross-validation (ESC-50 style): {fold} in data.train/data.val")
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("--folds", type=int, default=5, help="number of folds, numbered from 1 (default 5)")
    p.add_argument("--schedule", help="override c2f.schedule (1 = baseline)")
    p.add_argument("--out", required=True, help="output folder (one run folder per fold)")
    _add_common(p)

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
    return parser


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


def _predict(args) -> int:
    device = resolve_device(args.device)
    path = Path(args.model)
    if (path / "model_config.json").exists():
        model, spec, labels, names, multilabel = load_run_for_inference(path, weights=args.weights)
    else:
        model, info = load_hf_checkpoint(path)
        spec, labels, names, multilabel = info["feature_spec"], info["labels"], info["labels"], args.multilabel
    preds = predict_files(model.to(device), args.audio, spec, labels, names, top_k=args.top_k, multilabel=multilabel,
                          hop_seconds=args.hop, device=device, reduce=args.reduce, skip_errors=args.skip_errors)
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
    return 1 if any(p.error for p in preds) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        if args.command == "presets":
            print("\n".join(preset_names()))
        elif args.command in ("demo", "experiment"):
            cfg = load_config(args.config, args.overrides)
            schedules = [args.schedule] if args.command == "demo" else args.schedules.split(",")
            for s in schedules:
                parse_schedule(s)
            variants = [Variant(m, s.strip()) for s in schedules for m in parse_methods(args.methods)]
            out_root = Path(args.out)
            baseline, results = run_experiment(cfg, variants, out_root, progress=not quiet, reuse=not args.fresh)
            _print_experiment(baseline, results, cfg.train.metric, out_root, f"{cfg.name}: baseline vs {', '.join(schedules)}")
        elif args.command == "train":
            overrides = list(args.overrides)
            if args.schedule:
                overrides.append(f"c2f.schedule={args.schedule}")
            if args.method:
                overrides.append(f"c2f.method={args.method}")
            cfg = load_config(args.config, overrides)
            result = train_run(cfg, load_splits(cfg), args.out, progress=not quiet, resume=args.resume)
            best = max(r[cfg.train.metric] for r in result.records)
            print(f"{cfg.name}: best {cfg.train.metric} {best:.4f}; logs in {result.out_dir}")
        elif args.command == "crossval":
            overrides = [*args.overrides, *([f"c2f.schedule={args.schedule}"] if args.schedule else [])]
            cfg = load_config(args.config, overrides)
            results = cross_validate(cfg, range(1, args.folds + 1), args.out, progress=not quiet)
            metric = cfg.train.metric
            best = {fold: max(r[metric] for r in res.records) for fold, res in results.items()}
            rows = [{"fold": str(f), f"best {metric}": f"{v:.4f}"} for f, v in best.items()]
            values = list(best.values())
            mean = sum(values) / len(values)
            std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
            rows.append({"fold": "mean", f"best {metric}": f"{mean:.4f} +/- {std:.4f}"})
            atomic.write_text(Path(args.out) / "folds.csv", format_table(rows, "csv"))
            print(format_table(rows, "text"))
        elif args.command == "predict":
            return _predict(args)
        elif args.command == "export-hf":
            model, spec, _labels, names, _ = load_run_for_inference(args.run)
            out = export_hf_checkpoint(model, args.out, id2label=names, feature_spec=spec)
            print(f"exported {args.run} to {out} (loads with transformers.ASTForAudioClassification.from_pretrained)")
        elif args.command == "stats":
            cfg = load_config(args.config, [*args.overrides, "data.cache_dir=null", "data.preload=true"])
            splits = load_splits(cfg)
            lengths = getattr(splits.train, "lengths", None)
            mean, std = dataset_stats(splits.train, cfg.features.spec().fbank, cfg.features.target_length, lengths=lengths)
            print(f"{len(splits.train)} training clips: mean {mean:.7g}, std {std:.7g}")
            print(f"features:\n  mean: {mean:.7g}\n  std: {std:.7g}")
        elif args.command == "check":
            cfg = load_config(args.config, [*args.overrides, "data.on_error=skip", "data.preload=false", "data.cache_dir=null"])
            splits = load_splits(cfg)
            print(f"{len(splits.train)} training and {len(splits.val)} validation clips usable; {len(splits.skipped)} bad")
            for p in splits.skipped:
                print(f"  {p.path}: {p.problem}")
            return 1 if splits.skipped else 0
        elif args.command == "compare":
            base = load_records(_log_path(args.baseline))
            metric = args.metric or json.loads(_log_path(args.baseline).read_text())["config"]["train"]["metric"]
            runs = {Path(r).name if Path(r).is_dir() else Path(r).parent.name: load_records(_log_path(r)) for r in args.runs}
            print(format_table(savings_table("Baseline", base, runs, metric), args.format))
    except NonFiniteLossError as err:
        print(f"coarse2fine: stopped: {err}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as err:
        print(f"coarse2fine: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
