"""Commands that train: demo, experiment, train, pretrain, pretrain-experiment, crossval."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from coarse2fine import atomic
from coarse2fine.cli.options import (
    METHOD_CHOICES,
    add_common,
    add_evidence_options,
    add_grid_options,
    add_report_only,
    add_run_options,
    add_schedules_option,
    config_methods,
    evidence,
    interleaved,
    run_overrides,
)
from coarse2fine.compression import Compression
from coarse2fine.config import RunConfig, load_config
from coarse2fine.data.sources import clip_lists, count_classes, count_clips, load_splits
from coarse2fine.experiments.grid import (
    SettingRuns,
    Variant,
    check_experiment_root,
    cross_validate,
    cross_validate_settings,
    finished_first_seeds,
    finished_settings,
    fold_config,
    parse_methods,
    run_settings,
    variant_config,
)
from coarse2fine.experiments.pretraining import (
    calibrate_pretraining,
    compare_pretraining,
    comparison_notes,
    comparison_rows,
    write_comparison,
)
from coarse2fine.experiments.settings import experiment_settings
from coarse2fine.experiments.tables import ExperimentReport, calibrate_settings, write_experiment
from coarse2fine.logs import run_log_file
from coarse2fine.objectives.masked_patch import masked_per_phase
from coarse2fine.objectives.metrics import metric_text
from coarse2fine.phases import parse_schedule
from coarse2fine.report.accounting import budget_lines
from coarse2fine.report.kept import transfers
from coarse2fine.report.plots import plot_files
from coarse2fine.report.savings import best_coarse_value, best_record, best_value, format_table, json_rows, read_log
from coarse2fine.report.seeds import fold_table, format_spread
from coarse2fine.report.stats import mean, sample_std
from coarse2fine.run_folders import BEST_WEIGHTS
from coarse2fine.training.folder import CHECKPOINT, RunFolderError, holds_run, run_clip_lists_differ
from coarse2fine.training.loop import RunResult, train_run
from coarse2fine.training.progress import show_bars

log = logging.getLogger("coarse2fine")

DEMO_CALIBRATE_ROUNDS = 10  # the demo's calibrated column: about 20 s on 2 CPU cores, on any machine the time to trust
SCHEDULES_HELP = "coarse-to-fine schedule(s), comma-separated, e.g. 4-1 or 4-1,2-1,4-2-1 (default 4-1)"
METHODS_HELP = ("comma-separated: fshift,avgpool,maxpool,patch-bl,patch-pi (patch: patch with the config's "
                "c2f.patch_resize) or all")


def add_parsers(sub) -> None:
    """demo, experiment, train, pretrain, pretrain-experiment, crossval: commands that train."""
    p = sub.add_parser("demo", help="baseline vs coarse-to-fine on the embedded synthetic set, with the savings table")
    p.add_argument("--config", default="demo", help="preset name or YAML path (default: demo)")
    add_schedules_option(p, "4-1", SCHEDULES_HELP)
    p.add_argument("--methods", default="all", help=METHODS_HELP)
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    add_evidence_options(p)
    add_grid_options(p, calibrate_rounds=DEMO_CALIBRATE_ROUNDS)
    add_report_only(p)
    add_common(p)

    p = sub.add_parser("experiment",
                       help="baseline plus methods x schedules (and controls, seeds) on a config's dataset")
    p.add_argument("config", help="preset name or YAML path")
    add_schedules_option(p, "4-1", SCHEDULES_HELP)
    p.add_argument("--methods", default="all", help=METHODS_HELP)
    p.add_argument("--out", required=True, help="output folder")
    add_evidence_options(p)
    add_grid_options(p)
    add_report_only(p)
    add_common(p)

    p = sub.add_parser("train", help="one run (baseline with --schedule 1) from a preset or YAML config")
    add_run_options(p, METHOD_CHOICES, "run folder (logs, weights)")

    p = sub.add_parser("pretrain", help="self-supervised pretraining (SSAST masked patch modelling) on unlabeled audio")
    add_run_options(p, ("fshift", "avgpool", "maxpool"), "run folder; fine-tune from it with model.init_from=FOLDER")

    add_pretrain_experiment_parser(sub)

    p = sub.add_parser("crossval", help="k-fold cross-validation (ESC-50 style): one setting, or with --methods an "
                                        "experiment (baseline, variants, controls) per fold; mean over folds")
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("--folds", type=int, default=5, help="number of folds, numbered from 1 (default 5)")
    add_schedules_option(p, None, "without --methods: the c2f.schedule of the one setting trained (1 = baseline; "
                                  "default: the config's); with --methods: comma-separated schedules (default 4-1)")
    p.add_argument("--methods", help="comma-separated methods or all: per fold the baseline, these methods x "
                                     "--schedules and the --controls, each with --seeds seeds (patch: the config's "
                                     "c2f.patch_resize; default: no methods, one setting)")
    p.add_argument("--out", required=True, help="output folder (one run folder per fold and seed, or one experiment "
                                                "folder per fold)")
    add_evidence_options(p)
    add_grid_options(p)
    p.add_argument("--report-only", action="store_true",
                   help="with --methods: train nothing; write and print the table over the folds whose every setting "
                        "and seed has finished in --out so far (the others are named), e.g. while the folds train")
    add_common(p)


def add_pretrain_experiment_parser(sub) -> None:
    """pretrain-experiment: baseline vs coarse-to-fine pretraining, each fine-tuned downstream."""
    p = sub.add_parser("pretrain-experiment", help="baseline vs coarse-to-fine pretraining, each fine-tuned on downstream tasks")
    p.add_argument("config", help="a pretraining preset or YAML path")
    p.add_argument("--finetune", required=True, help="comma-separated downstream configs, e.g. esc50-cpu,fsdd_speakers-cpu")
    p.add_argument("--schedule", default="4-1", help="the coarse-to-fine pretraining schedule (default 4-1)")
    p.add_argument("--method", default="fshift", choices=["fshift", "avgpool", "maxpool"],
                   help="compression method of the coarse-to-fine pretraining")
    p.add_argument("--finetune-set", dest="finetune_overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a value of every downstream config, or with NAME:SECTION.KEY=VALUE of the one "
                        "named NAME in --finetune (or whose file is NAME.yaml) (repeatable)")
    p.add_argument("--out", required=True, help="output folder (pretrain/, finetune/, pretraining.md/.csv/.json)")
    p.add_argument("--seeds", type=int, default=None,
                   help="pretrain and fine-tune every row with N seeds (train.seed varied; seed k fine-tunes seed k's "
                        "pretraining) and report mean ± std and the paired gain with a bootstrap interval "
                        "(default: experiment.seeds of the pretraining config, 1)")
    add_grid_options(p)
    add_common(p)


def _variants(schedules: str, methods: str) -> list[Variant]:
    names = [s.strip() for s in schedules.split(",") if s.strip()]
    for s in names:
        parse_schedule(s)
    return [Variant(m, s) for s in names for m in parse_methods(methods)]


def _one_schedule(text: str | None) -> list[str]:
    """``crossval``'s ``--schedule`` without ``--methods``: the one setting's ``c2f.schedule``."""
    if text is None:
        return []
    names = [s.strip() for s in text.split(",") if s.strip()]
    if len(names) != 1:
        raise ValueError(f"crossval: without --methods one setting trains, with one schedule (got {text!r}); give "
                         "--methods to compare several schedules")
    return [f"c2f.schedule={names[0]}"]


def _report(args, done: list[SettingRuns], splits, metric: str, out_root: Path, title: str) -> ExperimentReport:
    """Calibrate (``--calibrate-rounds``, on ``splits``' training clips), write and print an
    experiment's report."""
    cal, records = calibrate_settings(done, splits.train.num_classes if splits else 0, args.calibrate_rounds,
                                      out_root / "calibration.json", splits.train if splits else None, args.recalibrate)
    report = write_experiment(out_root, done, records, metric, title, [cal.summary()] if cal is not None else [])
    print(format_table(report.rows, "text"), end="")
    print("\n".join(report.notes))
    if report.kept:
        print("\nWhat the transfer keeps at each phase change (the carried-over model evaluated before it trains):")
        print(format_table(report.kept, "text"), end="")
    print("\nMeasured FLOPs and time per training epoch, by phase (ratios to the baseline's epoch):")
    print(format_table(report.phases, "text"))
    plots = ", ".join(plot_files(out_root))
    print(f"Tables and plots in {out_root}: savings.md, savings.csv, savings.json, phases.csv{', kept.csv' if report.kept else ''}, {plots}")
    return report


def _experiment_log(command):
    """``command`` (a ``demo``, ``experiment``, ``crossval`` or ``pretrain-experiment``) with its
    log lines also kept in ``--out``'s ``experiment.log`` once a run of it has claimed its folder."""
    @functools.wraps(command)
    def logged(args) -> int:
        with run_log_file(args.out, experiment=True):
            return command(args)
    return logged


@_experiment_log
def cmd_experiment(args) -> int:
    """``demo`` and ``experiment``: the baseline, the controls and every method x schedule, with
    every seed, and the tables (with ``--report-only``, the tables of what has finished)."""
    cfg = load_config(args.config, args.overrides)
    controls, seeds = evidence(cfg, args)
    variants = _variants(args.schedules, config_methods(args.methods, cfg.c2f.patch_resize))
    settings = experiment_settings(cfg, variants, controls)
    out_root = Path(args.out)
    title = f"{cfg.name}: baseline vs {', '.join(dict.fromkeys(v.schedule for v in variants))}"
    if args.report_only:
        return _report_finished(args, cfg, settings, seeds, out_root, title)
    check_experiment_root(out_root)  # before the data is read
    splits = load_splits(cfg)
    done = run_settings(settings, out_root, splits, seeds, progress=show_bars(args.quiet), reuse=not args.fresh,
                        interleave=interleaved(cfg, args))
    _report(args, done, splits, cfg.train.metric, out_root, title + (f", {seeds} seeds" if seeds > 1 else ""))
    return 0


def _report_only_keeps(args) -> None:
    """``--report-only`` with ``--fresh``: refused, as one would discard what the other reads."""
    if args.fresh:
        raise ValueError("--report-only trains nothing and keeps every run; it does not go with --fresh")


def _report_finished(args, cfg, settings, seeds: int, out_root: Path, title: str) -> int:
    """``--report-only``: the report of the whole seeds that have finished in ``out_root`` (see
    :func:`finished_settings`); nothing trains, and the data is read only to calibrate."""
    _report_only_keeps(args)
    done, missing, path_diffs = finished_settings(settings, out_root, seeds)
    whole = len(done[0].runs)
    unfinished = ", ".join(p.name for p in missing)
    if whole == 0:
        return _report_first_seeds(args, cfg, settings, out_root, title, unfinished)
    splits = load_splits(cfg) if args.calibrate_rounds > 0 else None
    counted = "" if seeds == 1 else f", {seeds} seeds" if whole == seeds else f", {whole} of {seeds} seeds finished"
    print(f"{out_root}: {whole} of {seeds} seed(s) finished for every setting; their tables (nothing trained):")
    _report(args, done, splits, cfg.train.metric, out_root, title + counted)
    if path_diffs:
        print("The runs were trained with other paths than this command resolves (their value vs this command's; "
              "tabulated as the same settings): " + "; ".join(path_diffs))
    _note_other_clips(cfg, [run for entry in done for run in entry.runs])
    if missing:
        print(f"Not finished (left out of the tables; train them with the same command without --report-only): "
              f"{unfinished}")
    return 0


def _note_other_clips(cfg, runs: list[RunResult], where: str = "") -> None:
    """``--report-only``: name the tabulated runs that trained on other clips than the config's
    data lists now (a manifest edited since), which the same command without it would refuse to
    reuse (``where``: what the run names start with, ``fold2/``)."""
    try:
        lists = clip_lists(cfg)
    except (OSError, ValueError) as err:  # the data is not here: the tables need only the runs' logs
        print(f"The runs' clips were not compared with the data ({err})")
        return
    other = [f"{where}{run.out_dir.name} ({', '.join(splits)})" for run in runs
             if (splits := run_clip_lists_differ(run.out_dir, lists))]
    if other:
        print(f"warning: trained on other clips than the data lists now (the tables compare these runs with each "
              f"other, not on this data; the same command without --report-only refuses to reuse them): "
              f"{', '.join(other)}")


def _report_first_seeds(args, cfg, settings, out_root: Path, title: str, unfinished: str) -> int:
    """``--report-only`` while not one seed has finished for every setting: the tables of the
    settings whose first seed has, against the baseline, when the baseline has finished."""
    partial = finished_first_seeds(settings, out_root)
    if not partial or partial[0].setting.role != "baseline" or len(partial) < 2:
        has = ("a finished baseline but no other finished setting" if partial and partial[0].setting.role == "baseline"
               else "no finished baseline")
        turns = ("; an experiment trained in turns (--interleave, as this one is) finishes its settings together, "
                 "at its end" if interleaved(cfg, args) else "")
        raise ValueError(f"--report-only: {out_root} holds {has} to tabulate yet (not finished: {unfinished}){turns}")
    splits = load_splits(cfg) if args.calibrate_rounds > 0 else None
    print(f"{out_root}: {len(partial)} of {len(settings)} settings finished (first seed); their tables (nothing "
          "trained):")
    _report(args, partial, splits, cfg.train.metric, out_root, title + f", {len(partial)} of {len(settings)} settings")
    _note_other_clips(cfg, [run for entry in partial for run in entry.runs])
    print(f"Not finished (left out of the tables; train them with the same command without --report-only): {unfinished}")
    return 0


def one_run(cfg, command: str, seeds: bool = False) -> RunConfig:
    """The config that ``command``, which trains no controls and (unless ``seeds``) one seed of a
    setting, trains: ``experiment`` at its defaults (as every run's own config holds it), with a
    warning when the config asks for what it does not train."""
    e = cfg.experiment
    asked = [f"experiment.seeds: {e.seeds}"] * (e.seeds > 1 and not seeds) + [
        f"experiment.controls: {list(e.controls)}"] * bool(e.controls)
    if asked:
        trains = "no controls" if seeds else f"one seed (train.seed: {cfg.train.seed}) and no controls"
        log.warning("%s: %s trains %s; %s %s read by `coarse2fine experiment` and `crossval --methods` (and the "
                    "seeds by `pretrain-experiment`), which train them", cfg.name, command, trains,
                    " and ".join(asked), "are" if len(asked) > 1 else "is")
    return cfg.run_only()


def weights_line(result: RunResult, metric: str, save_best: bool = True) -> str:
    """Which epoch's weights each weights file of a finished run holds (``predict`` and the exports
    read ``model.safetensors`` unless told otherwise)."""
    line = f"weights: model.safetensors (the last epoch's, {result.records[-1].epoch})"
    epoch = best_record(result.records, metric).epoch
    if (result.out_dir / BEST_WEIGHTS).is_file():
        line += (f", {BEST_WEIGHTS} (the best epoch's, {epoch}: predict, export-hf and export-onnx take it with "
                 f"--weights {BEST_WEIGHTS})")
    elif save_best:
        line += f"; no {BEST_WEIGHTS}: its best epoch, {epoch}, was trained by an earlier version, which did not keep it"
    return line


def _train_one(args, cfg) -> RunResult:
    """Train one run into ``--out`` and print what happened, its best metric (the final phase's;
    the best of the coarse phases beside it) and what each phase change kept."""
    cfg = one_run(cfg, args.command)
    if cfg.c2f.budget_flops and "budget" in (cfg.c2f.switch, cfg.c2f.final_stop):  # before any epoch is spent
        for line in budget_lines(cfg, count_classes(cfg), count_clips(cfg)):
            log.warning("%s", line)
    if args.resume and not holds_run(Path(args.out)):
        raise RunFolderError(f"--resume: {args.out} holds no run to continue (no {CHECKPOINT}, no log.json); check "
                             "--out, or leave out --resume to start a run there")
    # the data is read once the folder is claimed: a refused folder or a finished run reads none
    result = train_run(cfg, functools.partial(load_splits, cfg), args.out, progress=show_bars(args.quiet),
                       resume=True, fresh=args.fresh)
    metric = cfg.train.metric
    what = {"trained": "trained", "resumed": "resumed from its checkpoint and finished",
            "finished": "already finished in this folder (nothing trained; --fresh trains it again)"}[result.status]
    coarse = best_coarse_value(result.records, metric)
    shown = functools.partial(metric_text, metric=metric)
    also = f" (coarse phases: {shown(coarse)})" if coarse is not None else ""
    print(f"{cfg.name}: {what}; best {metric} {shown(best_value(result.records, metric))} in the final phase{also}; "
          f"logs in {result.out_dir}")
    print(f"  {weights_line(result, metric, cfg.train.save_best)}")
    logged = read_log(result.out_dir) if (result.out_dir / "log.json").is_file() else {}
    lost = [f"{len(logged[key])} {words}" for key, words in (
        ("skipped", "bad clip(s) skipped before training (log.json: skipped)"),
        ("load_failures", "clip(s) unreadable during the run, trained as silence (log.json: load_failures)"))
        if logged.get(key)]
    if lost:
        print(f"  {'; '.join(lost)}")
    kept = transfers(result.records, result.phases, metric)
    for t in kept:
        print(f"  phase {t.phase} -> {t.phase + 1} (R={t.R_from} -> R={t.R_to}): {metric} {shown(t.before)} at the end "
              f"of phase {t.phase}, {shown(t.after)} carried over before training (kept {t.kept:.2f})")
    if kept and metric == "masked_acc":
        counts = ", ".join(f"{n} at R={R}" for R, n in dict(masked_per_phase(cfg)).items())
        print(f"  masked_acc's chance level is 1 / the masked patches per clip ({counts}): part of a kept below 1.00 "
              "is the lower chance at full resolution")
    return result


def cmd_train(args) -> int:
    with run_log_file(args.out):  # from the config's warnings on, kept once the run holds its folder
        _train_one(args, load_config(args.config, run_overrides(args)))
    return 0


def cmd_pretrain(args) -> int:
    with run_log_file(args.out):
        return _pretrain(args)


def _pretrain(args) -> int:
    cfg = load_config(args.config, run_overrides(args))
    if cfg.train.objective != "masked_patch":
        raise ValueError(f"{args.config} is a {cfg.train.objective} config; pretraining needs train.objective: "
                         "masked_patch (start from the ssast_pretrain or ssast_pretrain-cpu preset)")
    result = _train_one(args, cfg)
    print(f"fine-tune from it with --set model.init_from={result.out_dir}")
    return 0


def task_overrides(names: list[str], overrides: list[str]) -> dict[str, list[str]]:
    """Each downstream config's ``--finetune-set`` overrides, in order: ``KEY=VALUE`` for every
    one, ``NAME:KEY=VALUE`` for the one named ``NAME`` in ``--finetune``, or whose file is named
    ``NAME`` (``ft`` for ``configs/ft.yaml``, as its folder and columns are; keys hold no colon)."""
    out: dict[str, list[str]] = {name: [] for name in names}
    stems = {Path(n).stem: n for n in names if Path(n).stem not in names}  # ft for ft.yaml, as its folder is named
    for item in overrides:
        key = item.partition("=")[0]
        name, colon, rest = key.rpartition(":") if ":" in key else ("", "", key)
        if not colon:
            for each in out.values():
                each.append(item)
        elif name in out or name in stems:
            out[name if name in out else stems[name]].append(rest + item[len(key):])
        else:
            raise ValueError(f"--finetune-set {item}: {name!r} is not a --finetune config (they are: "
                             f"{', '.join(names)})")
    return out


@_experiment_log
def cmd_pretrain_experiment(args) -> int:
    loaded = load_config(args.config, args.overrides)
    if loaded.train.objective != "masked_patch":
        raise ValueError(f"{args.config} is a {loaded.train.objective} config; pretrain-experiment pretrains with "
                         "train.objective: masked_patch (start from the ssast_pretrain or ssast_pretrain-cpu preset) "
                         "and fine-tunes on the --finetune configs")
    seeds = args.seeds if args.seeds is not None else loaded.experiment.seeds
    if seeds < 1:
        raise ValueError(f"--seeds: at least 1, got {seeds}")
    pre = one_run(loaded, "pretrain-experiment", seeds=True)
    names = [name.strip() for name in args.finetune.split(",") if name.strip()]
    tasks = [one_run(load_config(name, overrides), "pretrain-experiment", seeds=True)
             for name, overrides in task_overrides(names, args.finetune_overrides).items()]
    result = compare_pretraining(pre, tasks, args.schedule, args.method, args.out, progress=show_bars(args.quiet),
                                 reuse=not args.fresh, seeds=seeds)
    configs = {"Baseline": variant_config(pre, None), Variant(args.method, args.schedule).label:
               variant_config(pre, Variant(args.method, args.schedule))}
    calibrated = calibrate_pretraining(result, configs, args.calibrate_rounds, Path(args.out) / "calibration.json",
                                       args.recalibrate)
    rows = comparison_rows(result, tasks, calibrated, pre.train.metric)
    title = (f"{pre.name}: pretraining at R = 1 vs {Variant(args.method, args.schedule).label}, fine-tuned on "
             f"{', '.join(t.name for t in tasks)}" + (f", {seeds} seeds" if seeds > 1 else ""))
    notes = comparison_notes(pre.train.metric, calibrated is not None, seeds)
    write_comparison(args.out, rows, title, notes)
    print(f"== {title} ==")
    print(format_table(rows, "text"), end="")
    print("\n".join(notes))
    print(f"Tables in {args.out}: pretraining.md, pretraining.csv, pretraining.json")
    return 0


@_experiment_log
def cmd_crossval(args) -> int:
    """``crossval``: one setting per fold and seed (``folds.csv``), or with ``--methods`` an
    experiment per fold (its own report in ``fold<N>/``) and the table over folds
    (``crossval.md`` / ``crossval.csv``: each fold's seed-mean best, the mean over folds)."""
    if args.methods is None:
        if args.report_only:
            raise ValueError("crossval --report-only tabulates the experiments per fold of --methods; without "
                             "--methods, the same command reuses the finished folds and trains the rest")
        return _crossval_one(args)
    cfg = load_config(args.config, args.overrides)
    controls, seeds = evidence(cfg, args)
    variants = _variants(args.schedules or "4-1", config_methods(args.methods, cfg.c2f.patch_resize))
    out_root = Path(args.out)
    folds = range(1, args.folds + 1)
    if args.report_only:
        return _crossval_finished(args, cfg, variants, controls, seeds, out_root, folds)
    by_fold = {}
    for f in cross_validate_settings(cfg, variants, controls, folds, out_root, seeds, progress=show_bars(args.quiet),
                                     reuse=not args.fresh, interleave=interleaved(cfg, args)):
        print(f"\n== fold {f.fold} ==")
        _report(args, f.settings, f.splits, cfg.train.metric, out_root / f"fold{f.fold}", f"{cfg.name}, fold {f.fold}")
        by_fold[f.fold] = {d.setting.label: [r.records for r in d.runs] for d in f.settings}
    _fold_report(cfg, by_fold, seeds, out_root, f"cross-validation over {len(folds)} folds")
    return 0


def _crossval_finished(args, cfg, variants, controls, seeds: int, out_root: Path, folds: range) -> int:
    """``crossval --methods ... --report-only``: the table over the folds whose every setting has
    finished every seed in ``out_root`` (their runs' logs; nothing trains, no data is read)."""
    _report_only_keeps(args)
    by_fold, unfinished = {}, []
    for fold in folds:
        fold_cfg = fold_config(cfg, fold)
        settings = experiment_settings(fold_cfg, variants, controls)
        done, missing, _ = finished_settings(settings, out_root / f"fold{fold}", seeds)
        if missing:
            unfinished.append(f"fold{fold}")
        else:
            by_fold[fold] = {d.setting.label: [r.records for r in d.runs] for d in done}
            _note_other_clips(fold_cfg, [run for entry in done for run in entry.runs], f"fold{fold}/")
    if not by_fold:
        raise ValueError(f"--report-only: no fold in {out_root} has finished every setting and seed yet (not finished: "
                         f"{', '.join(unfinished)})")
    _fold_report(cfg, by_fold, seeds, out_root, f"cross-validation, {len(by_fold)} of {len(folds)} folds finished")
    if unfinished:
        print(f"Not finished (left out of the table; train them with the same command without --report-only): "
              f"{', '.join(unfinished)}")
    return 0


def _fold_report(cfg, by_fold: dict, seeds: int, out_root: Path, title: str) -> None:
    """Write and print the table over folds (``crossval.md`` / ``crossval.csv``) of ``by_fold``."""
    rows = fold_table(by_fold, "Baseline", cfg.train.metric)
    note = (f"{len(by_fold)} folds x {seeds} seed(s). Fold columns: each fold's best in the final phase, the mean "
            "over its seeds; mean over folds ± sample std (n - 1) over folds (ESC-50's convention); paired gain: the "
            "mean over folds of (setting - baseline) per fold, with its 95 % percentile bootstrap interval over folds. Run "
            "FLOPs / time: the whole run's (the mean run over the fold's seeds) as a multiple of the baseline's in the "
            "same fold, the mean over folds.")
    atomic.write_text(out_root / "crossval.csv", format_table(rows, "csv"))
    atomic.write_text(out_root / "crossval.md", f"# {cfg.name}: {title}\n\n" + format_table(rows, "markdown")
                      + f"\n{note}\n")
    atomic.write_json(out_root / "crossval.json", {"title": f"{cfg.name}: {title}", "metric": cfg.train.metric,
                                                   "folds": sorted(by_fold), "crossval": json_rows(rows), "notes": [note]})
    print(f"\n== {title} ==")
    print(format_table(rows, "text"), end="")
    print(note)
    print(f"Tables in {out_root}: crossval.md, crossval.csv, crossval.json; each fold's report (FLOPs and time saves) "
          "in fold<N>/")


def _crossval_one(args) -> int:
    """One setting (the config's schedule and method) per fold and seed: ``folds.csv``."""
    cfg = load_config(args.config, [*run_overrides(args), *_one_schedule(args.schedules)])
    controls, seeds = evidence(cfg, args)
    if args.interleave:
        raise ValueError("crossval: --interleave trains an experiment's settings in turns; without --methods one "
                         "setting trains: give --methods")
    if controls:
        raise ValueError(f"crossval: controls ({', '.join(controls)}) need the variants they control: give --methods")
    if args.calibrate_rounds > 0 or args.recalibrate:
        raise ValueError("crossval: --calibrate-rounds / --recalibrate time each setting's steps against the "
                         "baseline's; without --methods one setting trains, with nothing to compare: give --methods")
    results = cross_validate(cfg, range(1, args.folds + 1), args.out, progress=show_bars(args.quiet), seeds=seeds,
                             reuse=not args.fresh)
    metric = cfg.train.metric
    best = {fold: [best_value(r.records, metric) for r in runs] for fold, runs in results.items()}
    rows = [{"fold": str(f), f"best {metric}": format_spread(mean(v), sample_std(v), metric)} for f, v in best.items()]
    values = [mean(v) for v in best.values()]
    rows.append({"fold": "mean", f"best {metric}": format_spread(mean(values), sample_std(values), metric)})
    over_seeds = f", mean ± sample std over {seeds} seeds per fold" if seeds > 1 else ""
    note = f"Best {metric} in the final phase{over_seeds}; mean: over folds ± sample std (n - 1) over folds."
    out = Path(args.out)
    atomic.write_text(out / "folds.csv", format_table(rows, "csv"))
    method = Compression(cfg.c2f.method, 1, cfg.c2f.patch_resize).label
    what = "baseline" if cfg.c2f.schedule == "1" else f"{method} {cfg.c2f.schedule}"
    atomic.write_text(out / "folds.md", f"# {cfg.name} ({what}): cross-validation over {args.folds} folds\n\n"
                      + format_table(rows, "markdown") + f"\n{note}\n")
    print(format_table(rows, "text"), end="")
    print(note)
    print(f"Table in {out}: folds.md, folds.csv; each fold's run in fold<N>/")
    return 0


COMMANDS = {"demo": cmd_experiment, "experiment": cmd_experiment, "train": cmd_train, "pretrain": cmd_pretrain,
            "pretrain-experiment": cmd_pretrain_experiment, "crossval": cmd_crossval}
