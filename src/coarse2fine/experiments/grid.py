"""Experiments: a baseline plus coarse-to-fine variants (and controls) on one dataset, trained
with one or more seeds, and cross-validation over folds.

What is trained is decided in :mod:`coarse2fine.experiments.settings` (the settings and their
seeds); here they are trained. Each run lives in ``out_root/<run name>`` (``<run name>_s<k>`` for
seed k > 0); a run whose log says it finished with the same config is reused instead of trained
again, and an interrupted one continues from its checkpoint (:func:`~coarse2fine.training.loop.train_run`).
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from coarse2fine import atomic
from coarse2fine.config import RunConfig
from coarse2fine.data.datasets import ClipDataset, DataSplits
from coarse2fine.data.shards import split_summary
from coarse2fine.data.sources import load_splits, manifests
from coarse2fine.experiments.settings import (
    VARIANTS,
    Setting,
    Variant,
    experiment_settings,
    parse_methods,
    seed_config,
    seed_folder,
    variant_config,
)
from coarse2fine.report.savings import Records
from coarse2fine.report.timing import Calibration, calibrate, calibrated_records, phase_key
from coarse2fine.run_folders import is_run_folder
from coarse2fine.training.folder import read_finished
from coarse2fine.training.interleave import Epochs, train_interleaved
from coarse2fine.training.interrupt import StopRequest
from coarse2fine.training.loop import RunResult, train_epochs, train_run
from coarse2fine.training.records import EpochRecord

log = logging.getLogger(__name__)

__all__ = [
    "VARIANTS", "FoldRuns", "SettingRuns", "Variant", "calibrate_runs", "cross_validate", "cross_validate_settings",
    "finished_settings", "fold_config", "fold_configs", "parse_methods", "run_experiment", "run_settings", "variant_config",
]


@dataclass
class SettingRuns:
    """A setting and its runs, one per seed (seed 0 first)."""

    setting: Setting
    runs: list[RunResult]

    def configs(self) -> list[RunConfig]:
        """The config of each seed's run."""
        return [seed_config(self.setting.config, k) for k in range(len(self.runs))]


def check_experiment_root(out_root: Path) -> None:
    """Refuse an experiment's ``--out`` that is a run folder itself: its runs would be written
    inside another run's folder."""
    if is_run_folder(out_root):
        raise ValueError(f"{out_root} is a run folder (it holds a run's log or checkpoint): an experiment writes its "
                         "runs in folders below its --out; give another --out")


def run_settings(settings: Sequence[Setting], out_root: str | Path, splits: DataSplits | None = None, seeds: int = 1,
                 progress: bool = True, reuse: bool = True, interleave: bool = False) -> list[SettingRuns]:
    """Train every setting with ``seeds`` seeds into ``out_root`` (see :func:`seed_folder`), seed
    by seed (every setting's seed 0 first, so an interrupted experiment has whole seeds); finished
    runs are reused and interrupted ones continue (``reuse``; without it every run starts over).
    With ``interleave`` a seed's settings train in turns of one epoch each
    (:func:`~coarse2fine.training.interleave.train_interleaved`), each on its own
    :meth:`~coarse2fine.data.datasets.DataSplits.separate` view of the data: the same runs,
    trained in a shared stretch of the machine's time."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    out_root = Path(out_root)
    check_experiment_root(out_root)
    loaded = splits

    def data() -> DataSplits:  # read once, when the first run that trains needs it (reused runs read none)
        nonlocal loaded
        if loaded is None:
            loaded = load_splits(settings[0].config)
        return loaded

    done = [SettingRuns(s, []) for s in settings]
    for k in range(seeds):
        configs = [(seed_config(entry.setting.config, k), seed_folder(out_root, entry.setting.name, k)) for entry in done]
        if interleave:
            results = train_interleaved({folder: functools.partial(_epochs, cfg, data, folder, progress, reuse,
                                                                   len(configs))
                                         for cfg, folder in configs})
        else:
            results = [train_run(cfg, loaded or data, folder, progress=progress, resume=reuse, fresh=not reuse,
                                 label=folder.name) for cfg, folder in configs]
        for entry, result in zip(done, results):
            entry.runs.append(result)
    return done


def _epochs(cfg: RunConfig, data: Callable[[], DataSplits], folder: Path, progress: bool, reuse: bool, turns: int,
            stop: StopRequest) -> Epochs:
    """One run of a group of ``turns`` trained in turns, on its own view of the data (read when it
    first trains)."""
    return train_epochs(cfg, lambda: data().separate(), folder, progress=progress, resume=reuse, fresh=not reuse,
                        stop=stop, turns=turns, label=folder.name)


def finished_run(setting: Setting, out_root: str | Path, k: int) -> tuple[RunResult, list[str]] | Path:
    """Seed ``k``'s finished run of ``setting`` in ``out_root`` with the path keys its config holds
    otherwise (see :func:`~coarse2fine.training.folder.read_finished`), or its folder when the run
    has not finished there."""
    cfg, folder = seed_config(setting.config, k), seed_folder(out_root, setting.name, k)
    finished = read_finished(cfg.to_dict(), folder)
    if finished is None:
        return folder
    records, phases, diffs = finished
    return RunResult(cfg.name, folder, records, "finished", phases), diffs


def finished_first_seeds(settings: Sequence[Setting], out_root: str | Path) -> list[SettingRuns]:
    """The settings whose first seed has finished in ``out_root``, each with that run, in the order
    of ``settings``: what an experiment that is still training can already tabulate."""
    found = [(s, finished_run(s, out_root, 0)) for s in settings]
    return [SettingRuns(s, [f[0]]) for s, f in found if not isinstance(f, Path)]


def finished_settings(settings: Sequence[Setting], out_root: str | Path,
                      seeds: int) -> tuple[list[SettingRuns], list[Path], list[str]]:
    """What has finished of an experiment in ``out_root``, training nothing: its whole seeds (seed
    k counts when every setting's seed-k run has finished with that setting's config, and so do
    all seeds before it), the folders of the runs of the first ``seeds`` seeds that have not, and
    the path keys in which the finished runs' configs differ from these settings' (see
    :func:`~coarse2fine.training.folder.read_finished`). A folder that holds another config's
    finished run raises :class:`~coarse2fine.training.folder.RunFolderError`."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    done = [SettingRuns(s, []) for s in settings]
    missing: list[Path] = []
    path_diffs: dict[str, None] = {}
    for k in range(seeds):
        found = []
        for entry in done:
            finished = finished_run(entry.setting, out_root, k)
            if isinstance(finished, Path):
                missing.append(finished)
                continue
            result, diffs = finished
            path_diffs.update(dict.fromkeys(diffs))
            found.append(result)
        if not missing:
            for entry, result in zip(done, found):
                entry.runs.append(result)
    return done, missing, list(path_diffs)


def run_experiment(
    base: RunConfig,
    variants: Sequence[Variant],
    out_root: str | Path,
    splits: DataSplits | None = None,
    progress: bool = True,
    reuse: bool = True,
    interleave: bool | None = None,
) -> tuple[RunResult, dict[str, RunResult]]:
    """Train the baseline and every variant (one seed, no controls) into ``out_root/<run name>``;
    returns (baseline, {label: result}). A finished run of the same config there is reused and an
    interrupted one continues from its checkpoint (``reuse``; without it every run starts over).
    ``interleave``: in turns of one epoch each (see :func:`run_settings`); None: as
    ``base.experiment.interleave`` says (on in the demo preset). A config that asks for seeds or
    controls (``experiment.seeds`` / ``controls``) is refused, naming :func:`run_settings`, which
    trains them."""
    e = base.experiment
    if e.seeds > 1 or e.controls:
        raise ValueError(f"run_experiment trains one seed without controls; {base.name} asks for experiment.seeds "
                         f"{e.seeds} and controls {e.controls}: train them with run_settings(experiment_settings(cfg, "
                         "variants, cfg.experiment.controls), out_root, splits, cfg.experiment.seeds), as `coarse2fine "
                         "experiment` does")
    turns = base.experiment.interleave if interleave is None else interleave
    done = run_settings(experiment_settings(base, variants), out_root, splits, 1, progress, reuse, turns)
    return done[0].runs[0], {d.setting.label: d.runs[0] for d in done[1:]}


FOLD_KINDS = ("esc50", "manifest", "shards")  # the data kinds that have folds (see fold_config)


def _no_folds(kind: str) -> str:
    """Why data of ``kind`` cannot be cross-validated as configured, and what has folds instead."""
    ways = ("folds come from data.kind esc50 (ESC-50's folds 1-5, data.fold), from manifests per fold (data.kind "
            "manifest with '{fold}' in data.train and data.val, e.g. data/esc_train_data_{fold}.json) or from "
            "packs made per fold (data.kind shards with '{fold}' in data.train and data.val, e.g. "
            "packs/esc50_fold{fold}/train: pack with --set data.fold=N)")
    if kind in ("manifest", "shards"):
        return f"cross-validation of data.kind {kind} needs '{{fold}}' in data.train and data.val: {ways}"
    return f"data.kind {kind} has no folds to cross-validate: {ways}"


def _check_has_folds(base: RunConfig) -> None:
    """Refuse data that has no folds: not ESC-50 and no ``{fold}`` in data.train and data.val of
    manifests or shards."""
    if base.data.kind == "esc50":
        return
    if (base.data.kind not in FOLD_KINDS or "{fold}" not in (base.data.train or "")
            or "{fold}" not in (base.data.val or "")):
        raise ValueError(_no_folds(base.data.kind))


def fold_config(base: RunConfig, fold: int) -> RunConfig:
    """The config of cross-validation fold ``fold``: its ``data.fold``, ESC-50's validation fold
    (``data.kind: esc50``), or what fills ``{fold}`` in data.train / data.val of manifests and
    shards packed per fold (kept as written, so that the run's config says which fold it read)."""
    _check_has_folds(base)
    return base.replace({"name": f"{base.name}_fold{fold}", "data.fold": fold})


def _check_fold_data(cfg: RunConfig) -> None:
    """What can be checked of a fold's data without decoding audio: its clip lists (manifests and
    label files, ESC-50's metadata) or its packs' descriptors exist and parse."""
    if cfg.data.kind == "shards":
        for split in ("train", "val"):
            split_summary(cfg.data.split_path(split))
    else:
        manifests(cfg)  # the training and validation clip lists, read once


def fold_configs(base: RunConfig, folds: Sequence[int]) -> dict[int, RunConfig]:
    """Every fold's config (:func:`fold_config`), each checked before anything trains: the fold is
    valid for the data kind (ESC-50 has folds 1-5) and its manifests, label files or pack
    descriptors exist and parse (no audio is decoded). An error names the fold and its problem."""
    _check_has_folds(base)  # data without folds: no fold to name
    configs: dict[int, RunConfig] = {}
    for fold in folds:  # every fold's config first: a fold the data kind lacks needs no data to refuse
        try:
            configs[fold] = fold_config(base, fold)
        except ValueError as err:
            raise ValueError(f"cross-validation fold {fold}: {err} (nothing trained)") from err
    for fold, cfg in configs.items():
        try:
            _check_fold_data(cfg)
        except (ValueError, OSError) as err:
            fewer = f"; if the data stops at fold {fold - 1}, give --folds {fold - 1}" if fold > 1 else ""
            if cfg.data.kind != "esc50" and "{fold}" not in str(err):  # the paths were given with {fold}, and must keep it
                fewer += "; a PATH of each fold's own file keeps {fold} where the fold number goes"
            raise ValueError(f"cross-validation fold {fold}: {err} (nothing trained{fewer})") from err
    return configs


def cross_validate(base: RunConfig, folds: Sequence[int], out_root: str | Path, progress: bool = True, seeds: int = 1,
                   reuse: bool = True) -> dict[int, list[RunResult]]:
    """Train ``base`` (its schedule and method) once per fold and seed into ``out_root/fold<N>``
    (``fold<N>_s<k>`` for seed k > 0); finished runs are reused and an interrupted one continues
    from its checkpoint. Every fold is checked before the first trains (:func:`fold_configs`).
    Returns each fold's runs, one per seed."""
    results: dict[int, list[RunResult]] = {}
    for fold, cfg in fold_configs(base.run_only(), folds).items():
        splits = load_splits(cfg)
        folders = [seed_folder(out_root, f"fold{fold}", k) for k in range(seeds)]  # runs called by their folder
        results[fold] = [train_run(seed_config(cfg, k), splits, folder, progress=progress, resume=reuse, fresh=not reuse,
                                   label=folder.name) for k, folder in enumerate(folders)]
    return results


@dataclass
class FoldRuns:
    """One fold of a cross-validated experiment: its number, its data and its settings' runs."""

    fold: int
    splits: DataSplits
    settings: list[SettingRuns]


def cross_validate_settings(base: RunConfig, variants: Sequence[Variant], controls: Sequence[str], folds: Sequence[int],
                            out_root: str | Path, seeds: int = 1, progress: bool = True,
                            reuse: bool = True, interleave: bool = False) -> Iterator[FoldRuns]:
    """An experiment (baseline, ``controls``, ``variants``, ``seeds`` seeds each) per fold, in
    ``out_root/fold<N>/``, yielded fold by fold as each finishes (one fold's data in memory at a
    time). Every fold is checked before the first trains (:func:`fold_configs`)."""
    configs = fold_configs(base, folds)  # before the generator's first fold: a bad fold stops it at once
    return _fold_experiments(configs, variants, controls, out_root, seeds, progress, reuse, interleave)


def _fold_experiments(configs: dict[int, RunConfig], variants: Sequence[Variant], controls: Sequence[str],
                      out_root: str | Path, seeds: int, progress: bool, reuse: bool,
                      interleave: bool) -> Iterator[FoldRuns]:
    for fold, cfg in configs.items():
        splits = load_splits(cfg)
        yield FoldRuns(fold, splits, run_settings(experiment_settings(cfg, variants, controls),
                                                  Path(out_root) / f"fold{fold}", splits, seeds, progress, reuse,
                                                  interleave))


def saved_calibration(configs: Sequence[RunConfig], saved: Path) -> Calibration | None:
    """The calibration ``saved`` (``calibration.json``) when it exists and covers every phase of ``configs``."""
    if not saved.exists():
        return None
    cal = Calibration.from_dict(json.loads(saved.read_text()))
    if not {phase_key(cfg, i) for cfg in configs for i in range(len(cfg.phases()))} <= set(cal.steps):
        return None
    return cal


def calibrate_runs(configs: Sequence[RunConfig], records: Sequence[Records], num_classes: int, rounds: int,
                   source: ClipDataset | None = None, saved: Path | None = None,
                   fresh: bool = False) -> tuple[Calibration | None, list[list[EpochRecord]]]:
    """Give each run's records their calibrated time: every phase the runs used timed interleaved in
    this process (:func:`coarse2fine.report.timing.calibrate`) on batches of ``source`` (random
    audio when None). A calibration ``saved`` earlier that covers every phase is used again
    (unless ``fresh``), so reused runs keep their figures; a new one is saved there. With
    ``rounds`` 0 nothing is timed: a saved calibration that covers the runs is still used (a report
    of the same runs keeps its column), else the records stay as they are (None)."""
    cal = None if fresh or saved is None else saved_calibration(configs, saved)
    if cal is not None:
        log.info("calibrated step costs from %s (measured with load average %s)", saved, cal.load_avg)
    if cal is None and rounds <= 0:
        return None, [list(recs) for recs in records]
    if cal is None:
        cal = calibrate(configs, num_classes, source, rounds=rounds)
        log.info("calibrated step costs (%d interleaved rounds, load average %s): %s", rounds, cal.load_avg,
                 ", ".join(f"{k} {v.median * 1e3:.1f} ms" for k, v in cal.steps.items()))
        if saved is not None:
            atomic.write_json(saved, cal.to_dict())
    return cal, [calibrated_records(recs, cfg, cal) for cfg, recs in zip(configs, records)]
