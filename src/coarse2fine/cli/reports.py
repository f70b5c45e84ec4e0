"""Commands that read configs, data and logs: compare, stats, check, flops, bench, plan, presets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from coarse2fine.cli.options import (
    add_common,
    calibrated,
    classes_from_data,
    log_path,
    run_overrides,
)
from coarse2fine.compression import METHODS
from coarse2fine.config import (
    config_from_dict,
    config_reference,
    load_config,
    preset_names,
    save_config,
)
from coarse2fine.data.sources import count_classes, count_clips, input_kind, load_splits
from coarse2fine.data.stats import dataset_stats
from coarse2fine.phases import default_initial_fraction, parse_schedule
from coarse2fine.report.accounting import (
    baseline_costs,
    phase_costs,
    run_flops_per_clip,
)
from coarse2fine.report.planner import choose, plan, planned_config
from coarse2fine.report.savings import (
    TIME_NOTE,
    format_table,
    load_records,
    metric_higher_is_better,
    savings_table,
)
from coarse2fine.report.timing import bench
from coarse2fine.runtime import load_average

log = logging.getLogger("coarse2fine")


def add_parsers(sub) -> None:
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
    add_common(p)

    p = sub.add_parser("check", help="check every clip of a config's data and list the bad ones, without training")
    p.add_argument("config", help="preset name or YAML path")
    add_common(p)

    p = sub.add_parser("flops", help="each phase's tokens and training GFLOPs per clip, before anything trains")
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("--schedule", help="override c2f.schedule")
    p.add_argument("--method", choices=list(METHODS), help="override c2f.method")
    p.add_argument("--classes", type=int, default=None, help="number of classes (default: read from the data's manifests)")
    p.add_argument("--json", action="store_true", help="print JSON: each phase with its R, tokens and FLOPs per clip")
    add_common(p)

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
    add_common(p)

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
    add_common(p)

    sub.add_parser("presets", help="list the shipped presets")


def cmd_presets(args) -> int:
    print("\n".join(preset_names()))
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
    cfg = load_config(args.config, run_overrides(args))
    classes = args.classes if args.classes is not None else classes_from_data(cfg)
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
    cfg = load_config(args.config, run_overrides(args))
    classes = args.classes if args.classes is not None else classes_from_data(cfg)
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
    paths = [log_path(args.baseline), *(log_path(r) for r in args.runs)]
    logs = [json.loads(p.read_text()) for p in paths]
    records = [load_records(p) for p in paths]
    metric = args.metric or logs[0]["config"]["train"]["metric"]
    direction = logs[0].get("metrics", {}).get(metric)
    higher = metric_higher_is_better(metric) if direction is None else direction == "max"
    configs = [config_from_dict(saved["config"]) for saved in logs]
    # Runs logged before the "inputs" field existed trained from waveforms.
    records = calibrated(configs, records, len(logs[0].get("classes") or []) or count_classes(configs[0]),
                          args.calibrate_rounds, None, logs[0].get("inputs", "waveforms"))
    names = [p.parent.name for p in paths[1:]]
    print(format_table(savings_table("Baseline", records[0], dict(zip(names, records[1:])), metric, higher=higher), args.format), end="")
    notes = [TIME_NOTE["cum_cal_time" in records[0][0]], *_plan_lines(configs, records, ["baseline", *names])]
    if args.format == "text":
        print("\n".join(notes))
    elif args.format == "markdown":  # notes as paragraphs under the table
        print("\n" + "\n\n".join(notes))
    return 0


COMMANDS = {"compare": cmd_compare, "stats": cmd_stats, "check": cmd_check, "flops": cmd_flops, "bench": cmd_bench,
            "plan": cmd_plan, "presets": cmd_presets}
