"""The rules of a run folder: a run is never lost by accident.

A folder holds at most one run. :func:`claim_folder` decides, before anything trains, what a new
run may do with a folder: continue the interrupted run of the same config that left its
checkpoint there, reuse the finished run of the same config, start in an empty folder, or start
over when asked (``fresh``); anything else (another config's run, finished or not) is refused,
naming what differs. A folder where a run was set up (its ``config.yaml``) but never trained (it
failed at its start: no checkpoint, no ``log.json``, no weights) holds nothing to lose: any config
starts there, and says so, naming the earlier run's config (:func:`_replace_never_trained`).

Two configs that differ only in keys that say how a run is executed, not what it learns
(:data:`~coarse2fine.config.files.RUNTIME_KEYS`: how clips are loaded, the device, threads,
compilation, what is logged) are the same run's: an interrupted run continues with the new
settings (they are the settings in use from then on, in its config.yaml, checkpoints and log),
and a finished one is reused as it is (its files keep the settings it ran with); either way the
change is logged. The config alone decides this, so :func:`~coarse2fine.training.loop.train_run`
checks it before it reads any data (given a function that loads it); what needs the data (the
data a checkpoint was trained on) is checked once it is loaded (:func:`check_same_data`): the
clip counts, the classes and each split's clip list, so that a checkpoint continues on data moved
to other paths (:func:`moved_data_keys`) and never on other clips under the same file names.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from coarse2fine.config import DataConfig, config_from_dict
from coarse2fine.config.files import RUNTIME_KEYS, config_difference, differing_keys, path_keys
from coarse2fine.config.run import move_legacy_feature_keys
from coarse2fine.logs import RUN_LOG
from coarse2fine.run_folders import BEST_WEIGHTS, CHECKPOINT, runs_held
from coarse2fine.training.checkpoint import load_checkpoint
from coarse2fine.training.records import EpochRecord, PhaseRecord, as_records

SET_UP = "config.yaml"  # written when a run is set up in its folder, before it trains
WEIGHTS = ("model.safetensors", "model_wa.safetensors", BEST_WEIGHTS, "model_config.json")  # a run's, before its log
RUN_FILES = (CHECKPOINT, "log.json", "log.csv", "model.safetensors", "model_wa.safetensors", BEST_WEIGHTS,
             "model_config.json", RUN_LOG)
FAILURE_FOLDER = ".load_failures"  # the clips that failed to load during the run, recorded by every process
# The runtime keys that decide what the data source serves (waveforms, features or the model input), which is
# what mixup mixes.
SERVING_KEYS = ("data.cache_dir", "data.in_memory", "data.memory_limit_gb")

log = logging.getLogger(__name__)


class RunFolderError(ValueError):
    """The output folder holds another run that this one would overwrite."""


def holds_run(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a run to continue or reuse: a checkpoint or a run log."""
    return (out_dir / CHECKPOINT).exists() or (out_dir / "log.json").exists()


def claim_folder(config: dict[str, Any], out_dir: Path, resume: bool, fresh: bool,
                 clip_lists: Callable[[], Mapping[str, str]] | None = None,
                 ) -> tuple[list[EpochRecord], list[PhaseRecord]] | None:
    """Apply the run-folder rules to a run of ``config`` (a config dict): with ``resume`` a
    checkpoint of this config is continued (the loop reads it) and a finished run of this config
    is reused (its epoch and phase records are returned); without, a folder holding a run is
    refused; ``fresh`` discards what the folder holds. A run of another config is refused unless
    ``fresh``; one whose config differs only in runtime keys (:data:`RUNTIME_KEYS`) is this
    config's, and what differs is logged. A checkpoint or finished run whose config names its data
    by other paths (:func:`moved_data_keys`) is this config's when its clip lists are this data's:
    a checkpoint's are checked once the data is loaded, a finished run's here, through
    ``clip_lists`` (the data's clip-list digests per split; None: such a finished run is refused).
    A folder that holds runs below it and none of its own (an experiment's) is refused."""
    log_path, ckpt = out_dir / "log.json", out_dir / CHECKPOINT
    held = runs_held(out_dir) if not (log_path.exists() or ckpt.exists()) else ""
    if held:  # an experiment's or crossval's folder: a run there would sit beside its runs and tables
        raise RunFolderError(f"{held} (to continue or reuse it), or another --out for a run of its own")
    if fresh:
        _discard(out_dir)
        return None
    if ckpt.exists():
        _continue_checkpoint(load_checkpoint(ckpt), config, out_dir, resume)
        return None
    saved = _read_log(log_path)
    if saved is not None and saved.get("done"):
        return _reuse_finished(saved, config, out_dir, resume, clip_lists)
    if saved is not None:  # a run that stopped before its first checkpoint (a non-finite loss, a crash)
        _restart_stopped(saved, config, out_dir)
    elif (out_dir / SET_UP).is_file():  # a run set up there that stopped before it wrote a log
        _replace_never_trained(config, out_dir)
    return None


def _discard(out_dir: Path) -> None:
    """``--fresh``: remove what a run left in ``out_dir``."""
    for name in RUN_FILES:
        (out_dir / name).unlink(missing_ok=True)
    for folder in ("tensorboard", FAILURE_FOLDER):
        shutil.rmtree(out_dir / folder, ignore_errors=True)


def _moved_paths(theirs: dict[str, Any], ours: dict[str, Any], moved: frozenset[str]) -> list[tuple[str, Any, Any]]:
    """The data path keys (of ``moved``) whose values differ, with both values."""
    return [(key, u, v) for key, u, v in differing_keys(theirs, ours) if key in moved]


def _continue_checkpoint(held: dict[str, Any], config: dict[str, Any], out_dir: Path, resume: bool) -> None:
    """The checkpoint ``held`` in ``out_dir`` is continued by a run of ``config`` (with ``resume``),
    or refused; what it continues with other than before is logged."""
    ckpt_config, moved = saved_config(held["config"]), moved_data_keys(held.get("data"))
    other = config_difference(ckpt_config, config, ignore=ignored_keys(config) | moved)
    if other:
        raise RunFolderError(f"{out_dir} holds an unfinished run of another config "
                             f"({other}); continue it with its own config, "
                             "use another --out, or --fresh to discard it")
    if not resume:
        raise RunFolderError(f"{out_dir} holds an unfinished run of this config; continue it with --resume, "
                             "or --fresh to start over")
    paths = _moved_paths(ckpt_config, config, moved)
    if paths:
        log.info("%s: the data is named by other paths than the run so far used (%s); it continues if they "
                 "hold the same clips and labels, checked when they are read", out_dir,
                 ", ".join(f"{key}: {v!r} (was {u!r})" for key, u, v in paths))
    changed = runtime_changes(ckpt_config, config)
    if changed:
        log.info("%s: continuing with %s; settings that do not change what the run learns", out_dir,
                 ", ".join(f"{key}: {_shown(key, v)} (the run so far used {_shown(key, u)})" for key, u, v in changed))
        if (config.get("augment") or {}).get("mixup") and any(c[0] in SERVING_KEYS for c in changed):
            log.warning("%s: %s decide whether the data source serves waveforms, features or the model input, "
                        "which is what mixup mixes: the rest of the run may mix another kind of input than it "
                        "did so far", out_dir, " / ".join(SERVING_KEYS))


def _reuse_finished(saved: dict[str, Any], config: dict[str, Any], out_dir: Path, resume: bool,
                    clip_lists: Callable[[], Mapping[str, str]] | None,
                    ) -> tuple[list[EpochRecord], list[PhaseRecord]]:
    """The records of the finished run ``saved`` (its ``log.json``) in ``out_dir``, reused by a run
    of ``config`` (with ``resume``), or a refusal."""
    theirs = saved_config(saved.get("config") or {})
    moved = moved_data_keys(saved.get("data")) if clip_lists is not None else frozenset()
    other = config_difference(theirs, config, ignore=ignored_keys(config) | moved)
    if other:
        raise RunFolderError(f"{out_dir} holds a finished run of another config "
                             f"({other}); use another --out, or --fresh to overwrite it")
    if not resume:
        raise RunFolderError(f"{out_dir} holds this finished run already; --fresh trains it again")
    paths = _moved_paths(theirs, config, moved)
    if clip_lists is not None and moved:  # its log holds its clip lists: the data must list the same clips
        try:
            lists = clip_lists()
        except (OSError, ValueError) as err:
            if paths:  # named by other paths: only its clips can say it is this run
                raise
            log.warning("%s: the finished run is reused without comparing its clips with the data, which cannot be "
                        "read here (%s)", out_dir, err)
        else:
            _check_same_clips(saved.get("data") or {}, lists, out_dir, paths)
    _log_finished_with(out_dir, theirs, config)
    return _finished_records(saved)


def _restart_stopped(saved: dict[str, Any], config: dict[str, Any], out_dir: Path) -> None:
    """A run of ``config`` starts again where ``saved`` (the log of a run that stopped with no
    checkpoint) is, unless that run was another config's."""
    other = config_difference(saved_config(saved.get("config") or {}), config, ignore=ignored_keys(config))
    if other:
        raise RunFolderError(f"{out_dir} holds the log of a run of another config that stopped with no checkpoint "
                             f"({other}); use another --out, or --fresh to discard it")
    log.info("%s: the run of this config there stopped with no checkpoint to continue from; it starts again",
             out_dir)


def _replace_never_trained(config: dict[str, Any], out_dir: Path) -> None:
    """A run of ``config`` starts in ``out_dir``, whose run was set up (its ``config.yaml``) but
    stopped before it wrote a log (an error at its start: out of memory at the first step, a clip
    that fails to decode in the first epoch), saying so, and naming the earlier run's config when it is another one; a
    folder that holds that run's weights without a log (a run stopped as it finished) is refused
    to another config, as a finished run is."""
    values, err = _read_set_up_config(out_dir / SET_UP)
    theirs = saved_config(values) if values is not None else None
    other = (f"its {SET_UP} does not read as a run's config: {err}" if theirs is None
             else config_difference(theirs, config, ignore=ignored_keys(config)))
    name = repr(values.get("name")) if values is not None and values.get("name") else "(unnamed)"
    weights = [w for w in WEIGHTS if (out_dir / w).exists()]
    if weights and other:
        raise RunFolderError(f"{out_dir} holds the weights ({', '.join(weights)}) of a run of another config "
                             f"({name}: {other}) with no log.json; use another --out, or --fresh to discard them")
    if not other:
        what = ("stopped before it wrote its log.json" if weights
                else "was set up but never trained (no checkpoint, no log.json)")
        log.info("%s: the run of this config there %s; it starts again", out_dir, what)
        return
    log.warning("%s: the run there (config %s) was set up but never trained (no checkpoint, no log.json: it failed "
                "at its start); this run (config %r, which differs: %s) starts in its place; in %s, that start's "
                "lines are above this one's separator line", out_dir, name, config.get("name"), other, RUN_LOG)
    for folder in ("tensorboard", FAILURE_FOLDER):  # that start's, not this run's
        shutil.rmtree(out_dir / folder, ignore_errors=True)


def _read_set_up_config(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The config dict a run wrote to ``path`` (its ``config.yaml``) when it was set up, or None and
    why it does not read as one."""
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        return None, str(err).splitlines()[0] if str(err) else type(err).__name__
    if not isinstance(values, dict):
        return None, f"a YAML {type(values).__name__}, not a mapping"
    return values, ""


@functools.cache
def _defaults() -> dict[str, Any]:
    return config_from_dict({}).to_dict()


def _filled(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for key, default in defaults.items():
        if key not in out:
            out[key] = default
        elif isinstance(out[key], Mapping) and isinstance(default, Mapping):
            out[key] = _filled(out[key], default)
    return out


def saved_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """A config dict a run saved (its log, its checkpoint), as this version writes one: the keys
    added since it was saved at their defaults (a key is added with the default that keeps the
    earlier behaviour: ``experiment.interleave: false``) and the flat feature keys of earlier
    versions under ``features.fbank``, so that a run of an earlier version compares with a config
    of this one by what it trained, not by what its version wrote."""
    return _filled(move_legacy_feature_keys(values), _defaults())


# What an experiment trains around a run (its seeds, controls, turns), which each run's own config
# holds at the defaults (RunConfig.run_only): a run saved with others by an earlier version is the same run.
EXPERIMENT_KEYS = frozenset({"experiment.controls", "experiment.seeds", "experiment.interleave"})


NAME_KEYS = frozenset({"name"})


def ignored_keys(config: dict[str, Any]) -> frozenset[str]:
    """The keys whose values do not decide whether a folder's run is a run of ``config``: its
    ``name`` (a label: an experiment names a run by its setting, ``avgpool_41``, where your file
    names it after itself), the runtime keys (:data:`RUNTIME_KEYS`), the experiment's (:data:`EXPERIMENT_KEYS`), the data keys
    its data kind does not read (:meth:`~coarse2fine.config.DataConfig.unread_keys`; the same kind
    is checked as ``data.kind``) and the settings nothing in it reads
    (:meth:`~coarse2fine.config.RunConfig.unread_settings`: the switch or objective that would read
    them is compared)."""
    return (NAME_KEYS | RUNTIME_KEYS | EXPERIMENT_KEYS | DataConfig.unread_keys((config.get("data") or {}).get("kind", ""))
            | _unread_settings(config))


def _unread_settings(config: dict[str, Any]) -> frozenset[str]:
    try:
        return config_from_dict(config).unread_settings()
    except (TypeError, ValueError):  # not a config of this version: every key counts
        return frozenset()


def moved_data_keys(signature: Mapping[str, Any] | None) -> frozenset[str]:
    """The data keys naming where the clips lie (paths), which a run may change when it continues
    from a checkpoint holding its clip lists' digests (data moved to another disk, a manifest copied
    under another name): :func:`check_same_data` then checks the clips themselves. None without
    the digests (a checkpoint of an earlier version, a source that does not list its clips)."""
    if not signature or "train_list_sha256" not in signature:
        return frozenset()
    return frozenset(key for key in path_keys() if key.startswith("data.")) - RUNTIME_KEYS


def differing_lists(saved: Mapping[str, Any], lists: Mapping[str, str]) -> list[str]:
    """The splits whose clip-list digests in a run's data signature ``saved`` (its log's ``data``)
    differ from ``lists`` (the data's, per split) and from the digest of the clips the run used (a
    manifest cleaned of the bad rows the run skipped lists those); a split ``saved`` has none for
    is not compared."""
    return [split for split, digest in lists.items()
            if f"{split}_list_sha256" in saved and digest not in (saved[f"{split}_list_sha256"],
                                                                  saved.get(f"{split}_used_sha256"))]


def run_clip_lists_differ(out_dir: Path, lists: Mapping[str, str]) -> list[str]:
    """:func:`differing_lists` of the run whose log is in ``out_dir``."""
    return differing_lists((_read_log(out_dir / "log.json") or {}).get("data") or {}, lists)


def _check_same_clips(saved: Mapping[str, Any], lists: Mapping[str, str], out_dir: Path,
                      paths: list[tuple[str, Any, Any]]) -> None:
    """Refuse to reuse a finished run whose clip lists are not this data's: a manifest edited since
    it trained, or data named by other ``paths`` (then a source with no clip lists is refused too);
    say so when moved data holds the same clips."""
    other = differing_lists(saved, lists)
    if not paths:
        if other:
            raise RunFolderError(f"{out_dir} holds a finished run of this config trained on other clips than its data "
                                 f"lists now (the {' and '.join(other)} split{'s list' if len(other) > 1 else ' lists'} "
                                 "other clips or labels); --fresh trains it again on these, or use another --out")
        return
    if other or not lists:
        raise RunFolderError(f"{out_dir} holds a finished run of another config (its data: "
                             f"{', '.join(f'{key}: {u!r} vs {v!r}' for key, u, v in paths)}, and "
                             f"{'the ' + ' and '.join(other) + ' clips differ' if other else 'no clip lists to compare'}"
                             "); use another --out, or --fresh to overwrite it")
    log.info("%s: the finished run there trained on the same clips, named by other paths (%s)", out_dir,
             ", ".join(f"{key}: {u!r}" for key, u, _ in paths))


def check_same_data(saved: dict[str, Any] | None, current: dict[str, Any], out_dir: Path) -> None:
    """Refuse to continue a checkpoint on other data than it was trained on (clips added or
    removed, a bad clip fixed or broken, other classes: the epoch order and the targets would
    change under it; as many clips, but others: the clip lists' digests differ). ``saved`` is None
    for a checkpoint written before signatures: not checked; one written before clip-list digests
    is checked by what it holds."""
    if saved is None:
        return
    current = {key: value for key, value in current.items() if key in saved}
    if saved == current:
        return
    changed = {key: (u, v) for key, u, v in differing_keys(saved, current)}
    ids = changed.pop("classes_sha256", None)
    lists = [key.removesuffix("_list_sha256") for key in list(changed) if key.endswith("_list_sha256")]
    for split in lists:
        del changed[f"{split}_list_sha256"]
    used = [key.removesuffix("_used_sha256") for key in list(changed) if key.endswith("_used_sha256")]
    for split in used:
        del changed[f"{split}_used_sha256"]
    order = changed.pop("train_order_sha256", None)
    notes = [f"{key} {u} -> {v}" for key, (u, v) in changed.items()]
    if ids is not None and "classes" not in changed:  # as many classes, other ids
        notes.append("class ids differ")
    notes += [f"the {split} split lists other clips or labels" for split in lists if f"{split}_clips" not in changed]
    notes += [f"other clips of the {split} split are usable (a bad clip fixed, another broken, since)" for split in used
              if split not in lists and f"{split}_clips" not in changed]
    if order is not None and not lists and not used and not changed:
        notes.append("the training clips are the same but listed in another order, which changes the run's batches: "
                     "list them in the order the run started with")
    raise RunFolderError(f"{out_dir} holds an unfinished run trained on other data ({', '.join(notes)}); continue it "
                         "on the data it started with, use another --out, or --fresh to start over")


def read_finished(config: dict[str, Any], out_dir: Path) -> tuple[list[EpochRecord], list[PhaseRecord], list[str]] | None:
    """The epoch and phase records of the finished run of ``config`` in ``out_dir``, read for a
    report without claiming the folder; None when it holds no finished run (empty, or a checkpoint
    of a run still going). Configs that differ only in path keys (a relative path resolved from
    another working folder, logs copied elsewhere) match; those differences are returned as
    ``key: theirs vs ours``. Configs that differ only in runtime keys (:data:`RUNTIME_KEYS`) match
    too, as for :func:`claim_folder` (logged). A finished run of another config raises
    :class:`RunFolderError`."""
    saved = _read_log(out_dir / "log.json")
    if (out_dir / CHECKPOINT).exists() or saved is None or not saved.get("done"):
        return None
    theirs, ignored = saved_config(saved.get("config") or {}), ignored_keys(config)
    paths = path_keys() - ignored  # those that count
    other = config_difference(theirs, config, ignore=paths | ignored)
    if other:
        raise RunFolderError(f"{out_dir} holds a finished run of another config ({other}); a report of it needs the "
                             "options and --set values it was trained with")
    _log_finished_with(out_dir, theirs, config)
    return (*_finished_records(saved),
            [f"{key}: {u!r} vs {v!r}" for key, u, v in differing_keys(theirs, config) if key in paths])


def runtime_changes(theirs: dict[str, Any], ours: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The runtime keys (:data:`RUNTIME_KEYS`) whose values differ between a run's config
    (``theirs``) and this one (``ours``), with both values."""
    return [(key, u, v) for key, u, v in differing_keys(theirs, ours) if key in RUNTIME_KEYS]


def _log_finished_with(out_dir: Path, theirs: dict[str, Any], ours: dict[str, Any]) -> None:
    """Say which runtime settings the finished run in ``out_dir`` ran with other than this config's."""
    changed = runtime_changes(theirs, ours)
    if changed:
        log.info("%s: the finished run of this config there ran with %s; settings that do not change what a run "
                 "learns, so it is reused as it is", out_dir,
                 ", ".join(f"{key}: {_shown(key, u)} (this config: {_shown(key, v)})" for key, u, v in changed))


# Runtime values whose meaning the number does not say
SHOWN = {("train.threads", 0): "0 (torch's default)"}


def _shown(key: str, value: Any) -> str:
    """A runtime setting's value as the log says it (``train.threads: 0`` is torch's default)."""
    return SHOWN.get((key, value), repr(value)) if isinstance(value, int) else repr(value)


def _finished_records(saved: dict[str, Any]) -> tuple[list[EpochRecord], list[PhaseRecord]]:
    """The epoch and phase records of a finished run's ``log.json`` (read as ``saved``)."""
    return as_records(saved["records"]), [PhaseRecord.from_dict(p) for p in saved.get("phases") or []]


def _read_log(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None

