"""Commands that read configs, data and logs: compare, stats, check, flops, bench, plan, presets."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Sequence

import torch

from coarse2fine.cli.options import (
    DEVICE_HELP,
    add_common,
    add_method_option,
    add_quiet,
    classes_from_data,
    log_path,
    run_overrides,
)
from coarse2fine.config import (
    RunConfig,
    config_from_dict,
    config_reference,
    config_yaml,
    load_config,
    preset_names,
    read_yaml,
    save_config,
)
from coarse2fine.data.sources import count_classes, count_clips, input_kind, load_splits, load_training
from coarse2fine.data.stats import dataset_stats
from coarse2fine.experiments.grid import calibrate_runs
from coarse2fine.phases import default_initial_fraction, parse_schedule
from coarse2fine.report.accounting import (
    baseline_costs,
    phase_costs,
    run_flops_per_clip,
)
from coarse2fine.report.comparable import RunFacts, incomparable, run_facts, timing_lines, unchecked_lines
from coarse2fine.report.planner import choose, plan, planned_config
from coarse2fine.report.plots import phase_rows, plot_files, report_data, write_report
from coarse2fine.report.savings import (
    check_metric,
    format_table,
    metric_higher_is_better,
    read_log,
    record_metrics,
    savings_table,
    table_note,
)
from coarse2fine.report.timing import BLOCK, StepCost, batch_sweep, bench, disturbed, synthetic_source
from coarse2fine.runtime import check_device, device_name, load_average, resolve_device

log = logging.getLogger("coarse2fine")


def add_parsers(sub) -> None:
    """compare, stats, check, presets: commands that read configs, data and logs."""
    p = sub.add_parser("compare", help="savings of finished runs against a baseline run")
    p.add_argument("baseline", help="baseline run folder (or its log.json)")
    p.add_argument("runs", nargs="+", help="run folders (or log.json files)")
    p.add_argument("--metric", default=None,
                   help="metric to compare (default: the baseline config's train.metric; for a log without a config, "
                        "such as the Lightning callback's, its metric= or the records' one validation metric)")
    p.add_argument("--format", choices=["text", "markdown", "csv", "json"], default="text",
                   help="table format; csv gives each value, its gain or delta and its marks in columns of their own; "
                        "json: the csv's columns with numbers as numbers, the phase costs and the notes, in one object")
    p.add_argument("--calibrate-rounds", type=int, default=0,
                   help="also time every phase's real step in N interleaved rounds for a calibrated time save (with "
                        "--out, kept in OUT/calibration.json and used again while it covers the runs)")
    p.add_argument("--recalibrate", action="store_true", help="calibrate again even when OUT/calibration.json covers "
                                                              "the runs")
    p.add_argument("--include-unfinished", action="store_true",
                   help="tabulate unfinished runs too (marked as such); by default they are listed under the table")
    p.add_argument("--out", default=None, help="also write the tables and the plots (metric against FLOPs and time) "
                                               "into this folder, as experiment does")
    p.add_argument("--allow-different", action="store_true",
                   help="tabulate runs whose data, features, model or metric differ from the baseline's, with a "
                        "warning (by default compare refuses them: their savings would mean nothing)")
    add_quiet(p)

    p = sub.add_parser("stats", help="normalisation mean/std of a config's training set (AST's features.mean/std)")
    p.add_argument("config", help="preset name or YAML path")
    add_common(p)

    p = sub.add_parser("flops", help="each phase's tokens and training GFLOPs per clip, before anything trains")
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("--schedule", help="override c2f.schedule (default: the config's)")
    add_method_option(p)
    p.add_argument("--classes", type=int, default=None, help="number of classes (default: read from the data's manifests)")
    p.add_argument("--json", action="store_true", help="print JSON: each phase with its R, tokens and FLOPs per clip")
    add_common(p)

    add_bench_parser(sub)
    add_plan_parser(sub)
    p = sub.add_parser("presets", help="list the shipped presets, or show one's YAML (or a config file resolved)")
    p.add_argument("name", nargs="?", help="a preset to show: its YAML and the presets it extends; or, with "
                                           "--resolved, a preset or YAML file")
    p.add_argument("--resolved", action="store_true",
                   help="print every key of the config as a run of it loads them: extends followed, defaults filled "
                        "in, --set applied, paths absolute")
    add_common(p)


def add_bench_parser(sub) -> None:
    """``bench``: each phase's real training step, timed interleaved."""
    p = sub.add_parser("bench", help="the real training step of each phase, timed interleaved: FLOPs ratio vs time ratio")
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("--schedule", help="override c2f.schedule (default: the config's)")
    add_method_option(p)
    p.add_argument("--rounds", type=int, default=10, help="timed rounds (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--block", type=int, default=BLOCK,
                   help=f"consecutive steps of each phase per round, the first untimed, as the loop runs a phase's "
                        f"steps back to back (default {BLOCK}; 1: one timed step of each phase in turn)")
    p.add_argument("--classes", type=int, default=None,
                   help="number of classes: time on random audio of the config's shape instead of the data")
    p.add_argument("--inputs", choices=["waveforms", "model_input"], default=None,
                   help="with --classes: what the random clips are served as (default: what the config's source serves)")
    p.add_argument("--breakdown", action="store_true",
                   help="also show where a step's time goes: data, features and augmentation, forward and backward, "
                        "optimizer (and on a GPU the device's busy time)")
    p.add_argument("--batches", type=batch_list, default=None, metavar="B1,B2,...",
                   help="also time each phase at these batch sizes and fit its step as fixed ms + ms per clip: how "
                        "much of a step does not shrink with the batch (launches, the update, the host)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--json", action="store_true", help="print JSON: each phase with its R, flops_ratio and time_ratio")
    add_common(p)


def add_plan_parser(sub) -> None:
    """``plan``: candidate schedules for a compute budget."""
    p = sub.add_parser("plan", help="candidate schedules that fit a compute budget, and a config of the chosen one")
    p.add_argument("config", help="preset name or YAML path")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-flops", type=float, help="total training FLOPs, e.g. 2e15")
    budget.add_argument("--budget-hours", type=float, help="total training time on this machine, in hours")
    p.add_argument("--schedules", default="1,2-1,4-1,4-2-1", help="candidate schedules (default 1,2-1,4-1,4-2-1)")
    p.add_argument("--fractions", default="0.15,0.25,0.35",
                   help="candidate shares of the initial phases, comma-separated")
    p.add_argument("--choose", default=None, help="SCHEDULE[:FRACTION] to write (default: the config's schedule, "
                                                   "the paper's share)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the step-time calibration (default 5)")
    p.add_argument("--out", default=None, help="where to write the chosen config (default: <config>_plan.yaml)")
    add_common(p)


def cmd_presets(args) -> int:
    """``presets``: the shipped presets' names; ``presets NAME``: that preset's YAML, after a line
    naming the presets it extends; ``presets CONFIG --resolved``: every key of a preset or YAML file
    (with ``--set``) as a run loads them."""
    if args.name is None:
        if args.resolved or args.overrides:
            raise ValueError("presets --resolved / --set: name the preset or YAML file to resolve")
        print("\n".join(preset_names()))
        return 0
    if args.resolved:
        sets = "".join(f" --set {o}" for o in args.overrides)
        print(f"# {args.name}{sets}, resolved: every key as a run of it loads them\n"
              + config_yaml(load_config(args.name, args.overrides, check_runtime=False)), end="")
        return 0
    if args.overrides:
        raise ValueError("presets NAME --set: add --resolved to see the config with the values set")
    if args.name not in preset_names() and Path(args.name).suffix in (".yaml", ".yml"):
        if not Path(args.name).is_file():
            raise ValueError(f"{args.name}: no such config file ({Path(args.name).absolute()})")
        raise ValueError(f"{args.name} is a config file, not a preset: `coarse2fine presets {args.name} --resolved` "
                         "prints it with every key it extends and defaults")
    print(preset_text(args.name), end="")
    return 0


def preset_chain(name: str) -> list[str]:
    """The presets ``name`` extends, nearest first (``extends`` followed from preset to preset)."""
    chain: list[str] = []
    parent = read_yaml(name)[0].get("extends")
    while isinstance(parent, str) and parent in preset_names() and parent not in chain and parent != name:
        chain.append(parent)
        parent = read_yaml(parent)[0].get("extends")
    return chain


def preset_text(name: str) -> str:
    """A shipped preset's YAML as the package holds it, after a comment line that says what it
    extends; an unknown name is refused with the list of presets."""
    if name not in preset_names():
        guess = difflib.get_close_matches(name, preset_names(), n=1)
        raise ValueError(f"unknown preset {name!r}" + (f" (did you mean {guess[0]}?)" if guess else "")
                         + f"; the presets are: {', '.join(preset_names())}")
    chain = preset_chain(name)
    about = (f"extends {' -> '.join(chain)}; `coarse2fine presets {chain[0]}` shows it" if chain
             else "extends no other preset")
    text = (resources.files("coarse2fine.presets") / f"{name}.yaml").read_text()
    return (f"# preset {name} ({about}); start a config of your own from it with `extends: {name}`\n"
            + text + ("" if text.endswith("\n") else "\n"))


def cmd_stats(args) -> int:
    cfg = load_config(args.config, [*args.overrides, "data.cache_dir=null", "data.preload=true", "data.in_memory=off"])
    train, skipped = load_training(cfg)
    mean, std = dataset_stats(train, cfg.features.settings, cfg.features.target_length, lengths=train.lengths)
    how = "when the pack was made" if cfg.data.kind == "shards" else "as data.on_error: skip says"
    left_out = f" ({len(skipped)} bad clip(s) skipped, {how})" if skipped else ""
    print(f"{len(train)} training clips{left_out}: mean {mean:.7g}, std {std:.7g}")
    if not cfg.features.normalize:
        print("this config has features.normalize: false (its model normalises its input itself): a mean and std "
              "set here would change nothing")
        return 0
    print(f"features:\n  mean: {mean:.7g}\n  std: {std:.7g}")
    return 0


def cmd_flops(args) -> int:
    cfg = load_config(args.config, run_overrides(args))
    classes = args.classes if args.classes is not None else classes_from_data(cfg)
    costs, base = phase_costs(cfg, classes), baseline_costs(cfg, classes)
    run, baseline = run_flops_per_clip(costs), run_flops_per_clip(base)
    full = base[0].train_flops_per_clip
    if args.json:
        print(json.dumps({"config": cfg.name, "arch": cfg.model.arch, "preset": cfg.model.preset, "method": cfg.c2f.method,
                          "schedule": cfg.c2f.schedule, "classes": classes, "phases": [c.to_dict() for c in costs],
                          "run_flops_per_clip": run, "baseline_flops_per_clip": baseline,
                          "flops_source": costs[0].flops_source, "switch": cfg.c2f.switch,
                          "final_stop": cfg.c2f.final_stop, "epochs_are_caps": bool(_ruled(cfg, len(costs))),
                          "budget_flops": cfg.c2f.budget_flops, "budget_hours": cfg.c2f.budget_hours}, indent=2))
        return 0
    print(f"{cfg.name}: {cfg.model.arch} {cfg.model.preset}, {cfg.c2f.method}, schedule {cfg.c2f.schedule}, {classes} classes")
    dropped = any(c.train_tokens != c.tokens for c in costs)  # patchout: training sees fewer tokens
    rows = [{"phase": str(c.phase), "R": str(c.R), "epochs": str(c.epochs), "input": f"{c.frames} x {c.mel_bins}",
             "tokens": str(c.tokens), **({"train tokens": str(c.train_tokens)} if dropped else {}),
             "train GFLOPs/clip": f"{c.train_flops_per_clip / 1e9:.4g}",
             "eval GFLOPs/clip": f"{c.forward_flops_per_clip / 1e9:.4g}",
             "vs R=1": f"{c.train_flops_per_clip / full:.3f}"} for c in costs]
    print(format_table(rows, "text"), end="")
    if dropped:
        print("train tokens: those a training step sees after patchout (its train GFLOPs count them); evaluation "
              "sees every token")
    if costs[0].flops_source == "measured":
        print(f"FLOPs measured with FlopCounterMode: the {cfg.model.arch} family has no analytic count")
    note = ("; the final phase keeps the baseline's budget, so the saving is measured where a run first beats "
            "the baseline's best (coarse2fine compare)") if costs[-1].epochs == base[0].epochs and len(costs) > 1 else ""
    ruled = _ruled(cfg, len(costs))
    most = "at most " if ruled else ""
    print(f"whole schedule: {most}{run / 1e9:.4g} training GFLOPs per training clip, {run / baseline:.2f}x the baseline's "
          f"{base[0].epochs} epochs at R=1 ({baseline / 1e9:.4g}){note}")
    if ruled:
        print(f"the epochs are caps: with {' and '.join(ruled)} a phase may end before them (as its rule decides when "
              "the run trains)")
    return 0


def _ruled(cfg: RunConfig, num_phases: int) -> list[str]:
    """The rules that may end a phase before its epochs (``c2f.switch: budget``, ...), as settings."""
    c = cfg.c2f
    return [f"c2f.{key}: {rule}" for key, rule, fixed in (("switch", c.switch, "fixed"), ("final_stop", c.final_stop, "epochs"))
            if rule != fixed and (key == "final_stop" or num_phases > 1)]


def _bench_source(args, cfg):
    """The clips bench feeds the steps: the config's data as the loop serves it, or, with
    ``--classes``, random audio served as ``--inputs`` (default: as the config's source would)."""
    if args.classes is None:
        try:
            splits = load_splits(cfg)
        except (OSError, ValueError) as err:
            raise ValueError(f"{err} (or give --classes N to time on random audio of the config's shape)") from err
        return splits.train.num_classes, splits.train
    serves = args.inputs or ("model_input" if input_kind(cfg, 2 * cfg.train.batch_size) == "model_input" else "waveforms")
    return args.classes, synthetic_source(cfg, args.classes, 4 * cfg.train.batch_size, serves)


def batch_list(text: str) -> list[int]:
    """``--batches``: two or more different batch sizes >= 1, comma-separated."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected batch sizes like 4,8,16,32; got {text!r}") from None
    if len(set(values)) < 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"needs at least two different batch sizes >= 1; got {text!r}")
    return values


def cmd_bench(args) -> int:
    for name, value, least in (("--rounds", args.rounds, 1), ("--block", args.block, 1), ("--warmup", args.warmup, 0),
                               ("--classes", args.classes, 1)):
        if value is not None and value < least:
            raise ValueError(f"{name} must be >= {least}, got {value}")
    cfg = load_config(args.config, run_overrides(args))
    check_device(args.device, "--device")
    classes, source = _bench_source(args, cfg)
    rows = bench(cfg, classes, source, args.rounds, args.warmup, args.device, args.breakdown, args.block)
    sweep = (batch_sweep(cfg, classes, args.batches, source, args.rounds, args.warmup, args.device, args.block)
             if args.batches else [])
    load = load_average()
    device = resolve_device(args.device, "--device")
    head = {"config": cfg.name, "arch": cfg.model.arch, "preset": cfg.model.preset, "method": cfg.c2f.method,
            "batch": cfg.train.batch_size, "amp": cfg.train.amp, "inputs": source.serves, "rounds": args.rounds,
            "block": args.block, "device": device_name(device), "threads": torch.get_num_threads(), "load_avg": load}
    unsteady = disturbed(rows)
    if args.json:
        print(json.dumps({**head, "phases": [r.to_dict() for r in rows], "step_cost": [c.to_dict() for c in sweep],
                          "disturbed": unsteady}, indent=2))
        return 0
    batch = (f"batch {cfg.train.batch_size} (x R in a coarse phase: c2f.coarse_batch scale)"
             if cfg.c2f.coarse_batch == "scale" else f"batch {cfg.train.batch_size}")
    print(f"{cfg.name}: {cfg.model.arch} {cfg.model.preset}, {cfg.c2f.method}, {batch}, amp {cfg.train.amp}"
          f"{', compiled (train.compile)' if cfg.train.compile else ''}, inputs {source.serves}, {args.rounds} "
          f"interleaved rounds of {args.block} step(s) per phase on {head['device']}, load average {load}")
    table = []
    for r in rows:
        row = {"R": str(r.R), "tokens": str(r.tokens), "batch": str(r.batch), "step ms": f"{r.step_ms:.1f}",
               "data ms": f"{r.data_ms:.1f}", "FLOPs ratio": f"{r.flops_ratio:.3f}",
               "time ratio": f"{r.time_ratio:.3f} [{r.time_ratio_q25:.3f}, {r.time_ratio_q75:.3f}]",
               "time/FLOPs": f"{r.time_over_flops:.2f}", "MFU": "-" if r.mfu is None else f"{100 * r.mfu:.1f} %"}
        table.append(row)
    print(format_table(table, "text"), end="")
    clips = ("the data source's batches" if args.classes is None
             else f"random audio of the config's shape, {classes} classes (--classes)")
    print(f"step: the loop's training step on {clips} (batch fetch: data ms); time ratio: median of "
          "the per-round ratios to R=1 per clip [quartiles]")
    if unsteady:
        print(f"warning: the rounds disagree ({'; '.join(unsteady)}): the machine's load changed while it ran "
              f"(load average {load}); rerun on a quiet machine, or with more --rounds")
    if args.breakdown:
        parts = []
        for r in rows:
            row = {"R": str(r.R), **{f"{k} ms": f"{v:.1f}" for k, v in (r.stages or {}).items()},
                   "total ms": f"{sum((r.stages or {}).values()):.1f}"}
            if r.device_busy_ms is not None:
                row.update({"device busy ms": f"{r.device_busy_ms:.1f}", "host-bound ms": f"{max(0.0, r.step_ms - r.device_busy_ms):.1f}"})
            parts.append(row)
        print("\nWhere a step's time goes (each stage ends with a device synchronisation):")
        print(format_table(parts, "text"), end="")
    if sweep:
        print_step_cost(sweep)
    return 0


def print_step_cost(sweep: list[StepCost]) -> None:
    """The ``--batches`` table: each phase's step as fixed + per clip."""
    table = [{"R": str(c.R), "batches": "/".join(map(str, c.batches)),
              "step ms": " / ".join(f"{v:.1f}" for v in c.step_ms),
              "fixed ms": f"{c.fixed_ms:.2f}", "ms per clip": f"{c.clip_ms:.3f}",
              "per-clip time/FLOPs": f"{c.per_clip_quotient:.2f}",
              "fixed share of a step": f"{100 * c.fixed_share:.0f} % at batch {c.batch}"} for c in sweep]
    print("\nEach phase's step fitted as fixed ms + ms per clip (least squares over the batch sizes' median steps):")
    print(format_table(table, "text"), end="")
    odd = [str(c.R) for c in sweep if c.fixed_ms < 0 or c.clip_ms <= 0]
    if odd:
        print(f"warning: the fit of R={', R='.join(odd)} has a negative part: its step times do not grow with the "
              "batch as a line (timing noise, a busy machine?); measure again with more --rounds on a quiet machine")


def cmd_plan(args) -> int:
    for name, value in (("--budget-flops", args.budget_flops), ("--budget-hours", args.budget_hours)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value:g}")
    cfg = load_config(args.config, args.overrides)
    schedules = [s.strip() for s in args.schedules.split(",") if s.strip()]
    fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    clips, classes = count_clips(cfg), count_classes(cfg)
    found, cal = plan(cfg, classes, clips, args.budget_flops or 0.0, args.budget_hours or 0.0, schedules, fractions, args.rounds)
    wanted, _, frac = (args.choose or cfg.c2f.schedule).partition(":")
    paper = default_initial_fraction(len(parse_schedule(wanted)))
    note = ""
    if args.choose is None and found and wanted not in {c.schedule for c in found}:  # the config's: the best instead
        note = f" (the config's schedule {wanted} is not among the candidates: the one with the most epochs)"
        chosen = max(found, key=lambda c: (c.epochs, -abs(c.share - default_initial_fraction(len(c.phase_epochs)))))
    else:
        chosen = choose(found, wanted, float(frac) if frac else paper)
    rows = [{"": "->" if c is chosen else "", "schedule": c.schedule,
             "initial share asked": ", ".join(f"{f:.2f}" for f in c.fractions), "initial share": f"{c.share:.2f}",
             "epochs per phase": "-".join(map(str, c.phase_epochs)), "epochs": str(c.epochs),
             "predicted FLOPs": f"{c.flops:.4g}", "predicted time": _duration(c.seconds)} for c in found]
    rows_note = (" (rows of the manifests: with data.on_error: skip a run trains only the usable ones, which "
                 "`coarse2fine check` counts, and the predicted FLOPs shrink by the share it drops)"
                 if cfg.data.on_error == "skip" and cfg.data.kind not in ("synthetic", "shards") else "")
    print(f"{cfg.name}: {clips} training clips{rows_note}, budget "
          + (f"{args.budget_flops:.4g} FLOPs" if args.budget_flops else f"{args.budget_hours:g} h")
          + f"; step times from {cal.rounds} interleaved rounds on {cal.device} (load average {cal.load_avg})")
    print(format_table(rows, "text"), end="")
    out = Path(args.out or f"{cfg.name}_plan.yaml")
    planned = planned_config(cfg, chosen)
    save_config(planned, out, extends=config_reference(args.config))
    print(f"wrote {out}: schedule {chosen.schedule}, phase epochs {list(chosen.phase_epochs)}{note}; train it with "
          f"`coarse2fine train {out} --out runs/{planned.name}`, then `coarse2fine compare` shows predicted vs measured")
    return 0


def _duration(seconds: float) -> str:
    """``seconds`` in the unit that reads best: s below 2 minutes, min below 2 hours, else h."""
    if seconds < 120:
        return f"{seconds:.3g} s"
    return f"{seconds / 60:.3g} min" if seconds < 7200 else f"{seconds / 3600:.3g} h"


def _plan_lines(configs: list, records: list, names: list) -> list[str]:
    """Predicted (``coarse2fine plan``) against measured cost, for the runs that were planned."""
    lines = []
    for cfg, recs, name in zip(configs, records, names):
        if cfg is not None and (cfg.c2f.planned_flops or cfg.c2f.planned_seconds):
            flops, secs = recs[-1].cum_flops, recs[-1].cum_time
            lines.append(f"{name}: planned {cfg.c2f.planned_flops:.4g} FLOPs, {cfg.c2f.planned_seconds:.0f} s; "
                         f"measured {flops:.4g} FLOPs ({flops / cfg.c2f.planned_flops:.3f}x), {secs:.0f} s "
                         f"({secs / cfg.c2f.planned_seconds:.2f}x)")
    return lines


def _planned_epochs(log: dict, cfg: RunConfig | None) -> int | None:
    """The epochs a run was to train: its config's phases, else its log's ``schedule`` (the
    Lightning callback's); None when the log says neither."""
    if cfg is not None:
        return sum(p.epochs for p in cfg.phases())
    schedule = log.get("schedule")
    epochs = schedule.get("epochs") if isinstance(schedule, dict) else None
    return int(epochs) if isinstance(epochs, int) else None


def _unfinished(log: dict, cfg: RunConfig | None) -> str | None:
    """How far an unfinished run got, or None for a finished one (and for a log that does not say:
    one without ``done`` and without a config)."""
    if log.get("done") or ("done" not in log and cfg is None):
        return None
    planned = _planned_epochs(log, cfg)
    why = f", stopped: {log['stopped']}" if log.get("stopped") else ""
    of = f" of {planned}" if planned is not None else ""
    return f"unfinished: {len(log['records'])}{of} epochs{why}"


def check_comparable(paths: list[Path], logs: list[dict], metric_given: bool, allow: bool) -> list[RunFacts]:
    """Refuse (or with ``allow``, warn about) runs whose data, features, model or metric differ
    from the baseline's (``paths[0]``; see :mod:`coarse2fine.report.comparable`); warn about what
    could not be compared (logs without a config, such as the Lightning callback's). Returns the
    runs' facts."""
    facts = [run_facts(p.parent, saved) for p, saved in zip(paths, logs)]
    problems = incomparable(facts, metric_given)
    if problems and not allow:
        raise ValueError("\n".join(problems) + "\ncompare tabulates runs of the baseline's data, features, model and "
                         "metric only (--allow-different tabulates them anyway, with a warning)")
    for line in problems:
        log.warning("%s; tabulated anyway (--allow-different)", line)
    for line in unchecked_lines(facts, metric_given):
        log.warning("%s", line)
    return facts


def _log_config(path: Path, saved: dict) -> RunConfig | None:
    """The :class:`~coarse2fine.config.RunConfig` of a run log (``path``), or None for a log
    without one (the Lightning callback's for a module of your own); a ``config`` that is no
    coarse2fine config is an error naming the file."""
    raw = saved.get("config")
    if raw is None:
        return None
    problem = f"a {type(raw).__name__}"
    if isinstance(raw, dict):
        try:
            return config_from_dict(raw)
        except (KeyError, TypeError, ValueError) as err:
            problem = str(err)
    raise ValueError(f"{path}: its 'config' is not a coarse2fine config ({problem})")


def _default_metric(paths: list[Path], logs: list[dict], configs: list[RunConfig | None]) -> str:
    """The metric compare tabulates without ``--metric``: the baseline config's ``train.metric``,
    else its log's ``metric`` (the Lightning callback's ``metric=``), else the one validation
    metric (a name not starting with ``train``) every record of the baseline carries."""
    if configs[0] is not None:
        return configs[0].train.metric
    named = logs[0].get("metric")
    if isinstance(named, str) and named:
        return named
    have = record_metrics(logs[0]["records"])
    candidates = [m for m in have if not m.startswith("train")]
    if len(candidates) != 1:
        offer = f"one of {', '.join(have)}" if have else "its records carry no metric"
        raise ValueError(f"{paths[0]}: the run log names no metric (no config, no 'metric'): give --metric ({offer})")
    log.info("comparing by %s, the records' one validation metric (--metric picks another)", candidates[0])
    return candidates[0]


def _direction(saved: dict, metric: str) -> bool:
    """Whether higher is better for ``metric``: as the run log's ``metrics`` say, else by its name."""
    directions = saved.get("metrics")
    direction = directions.get(metric) if isinstance(directions, dict) else None
    return metric_higher_is_better(metric) if direction not in ("max", "min") else direction == "max"


def run_labels(folders: Sequence[Path]) -> list[str]:
    """Each run folder's name as tables show it, with as many parent folders as tell apart runs
    of the same name (``exp1/fshift_41``, ``exp2/fshift_41``)."""
    parts = [Path(os.path.abspath(f)).parts for f in folders]
    depths = [1] * len(parts)
    while True:
        labels = ["/".join(p[-d:]) for p, d in zip(parts, depths)]
        shared = [i for i, label in enumerate(labels) if depths[i] < len(parts[i])
                  and any(labels[j] == label and parts[j] != parts[i] for j in range(len(parts)))]  # not itself again
        if not shared:
            return labels
        for i in shared:
            depths[i] += 1


def cmd_compare(args) -> int:
    paths = [log_path(args.baseline), *(log_path(r) for r in args.runs)]
    seen = [p.resolve() for p in paths[1:]]
    again = sorted({str(r) for r, p in zip(args.runs, seen) if seen.count(p) > 1})
    if again:  # one row a run: a second would hide the first
        raise ValueError(f"compare: {', '.join(again)} given more than once among the runs")
    logs = [read_log(p) for p in paths]
    configs = [_log_config(p, saved) for p, saved in zip(paths, logs)]
    facts = check_comparable(paths, logs, args.metric is not None, args.allow_different)
    metric = args.metric or _default_metric(paths, logs, configs)
    check_metric(metric, {str(p.parent): saved["records"] for p, saved in zip(paths, logs)})
    higher = _direction(logs[0], metric)
    lacking = [str(p) for p, cfg in zip(paths, configs) if cfg is None]
    if args.calibrate_rounds > 0 and lacking:
        raise ValueError(f"--calibrate-rounds times each run's steps from its config; {', '.join(lacking)} has none "
                         "(a Lightning callback's log: use CoarseToFine.from_config, or leave --calibrate-rounds out)")
    kept = Path(args.out) / "calibration.json" if args.out and not lacking else None
    if kept is not None and args.calibrate_rounds > 0:
        kept.parent.mkdir(parents=True, exist_ok=True)
    cal, records = calibrate_runs(configs, [saved["records"] for saved in logs],
                                  len(logs[0].get("classes") or []) or 2, args.calibrate_rounds, saved=kept,
                                  fresh=args.recalibrate)
    names = run_labels([p.parent for p in paths])
    notes, runs = [], {}
    for name, saved, cfg, recs in zip(names[1:], logs[1:], configs[1:], records[1:]):
        state = _unfinished(saved, cfg)
        if state is None or args.include_unfinished:
            runs[f"{name} ({state.split(':')[0]})" if state else name] = recs
        if state:
            notes.append(f"{name}: {state}" + ("" if args.include_unfinished else "; not in the table (--include-unfinished)"))
    if (base_state := _unfinished(logs[0], configs[0])) is not None:
        notes.append(f"baseline {names[0]}: {base_state}; its best so far is the reference")
    if cal is not None:
        notes.append(cal.summary())
    named = any(Path(n).name.lower().startswith("baseline") for n in runs)  # a run named baseline: say which is
    base_label = f"Baseline ({names[0]})" if named else "Baseline"
    rows = savings_table(base_label, records[0], runs, metric, higher=higher)
    if args.format != "json":
        print(format_table(rows, args.format), end="")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_report(args.out, records[0], runs, metric, f"{names[0]} vs {', '.join(names[1:])}", notes, rows=rows)
        notes.append(f"Tables and plots in {args.out}: savings.md, savings.csv, savings.json, phases.csv, "
                     + ", ".join(plot_files(args.out)))
    notes = [table_note(records[0], runs, base_label, rows), *timing_lines(facts),
             *notes, *_plan_lines(configs, records, names)]
    if args.format == "json":  # one object: the tables and the notes, as savings.json holds them
        title = f"{names[0]} vs {', '.join(names[1:])}"
        print(json.dumps(report_data(title, metric, rows, phase_rows(records[0], runs), notes), indent=1,
                         ensure_ascii=False))
    elif args.format == "text":
        print("\n".join(notes))
    elif args.format == "markdown":  # notes as paragraphs under the table
        print("\n" + "\n\n".join(notes))
    return 0


COMMANDS = {"compare": cmd_compare, "stats": cmd_stats, "flops": cmd_flops, "bench": cmd_bench,
            "plan": cmd_plan, "presets": cmd_presets}
