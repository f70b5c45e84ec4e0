"""Whether finished runs can be tabulated against a baseline run: the same data, model and metric.

A savings table is only meaningful between runs that differ in how they train (``c2f.*``: the
schedule, the method; the epochs, the seed, the name, the experiment section...), not in what
they learn from or what they are. :func:`differences` names what differs between a run and the
baseline, by kind:

* **data**: the clips an epoch trains on (``train clips``, from the run's records), the classes
  (from its ``log.json`` or ``labels.json``), each split's clip list (the digests its log's
  ``data`` holds: :func:`~coarse2fine.data.manifest.clip_list_digest`, the same wherever the files
  lie) and the ``data`` keys that make the clips. Keys that only say how the clips are loaded
  (caching, workers, memory) do not count. Where both logs hold the clip lists, the keys that only
  name the clips (:data:`CLIP_NAMING_KEYS`: paths, the data kind, the fold) do not count either:
  a manifest of the same clips under another name, data moved to another disk, or a pack of the
  same clips compares, and a manifest of the same name listing other clips does not. The lists
  compared are of the clips each run used (a manifest cleaned of the bad rows that another run
  skipped compares with it) where both logs say, else of the clips each listed. Logs of
  earlier versions have no clip lists: their path keys are compared by their last component, so
  that runs whose relative paths were resolved from another working folder match, as
  ``experiment --report-only`` takes them for the same settings;
* **features**: the ``features`` section (frontend, bins, frames, normalisation);
* **model**: the family and size (``model.arch``, ``model.preset``) and the other keys that change
  the network (patch size, stride, overrides); not its initialisation or regularisation;
* **metric**: the objective (``train.objective``) and, unless the metric is given explicitly, the
  metric the runs report by default (``train.metric``).

A run log without a config (the Lightning callback's, for a ``LightningModule`` of your own) is
compared by what it does hold: its train clips, its classes (when known) and its full-resolution
input (``frames`` x ``mel_bins`` of its ``schedule``); :func:`unchecked` names what could not be
compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

from coarse2fine.config import DataConfig, files
from coarse2fine.config.files import differing_keys, path_keys

# The data keys that do not make other data: how clips are read (files.LOADING_KEYS, which do not
# make another run either), and, for a comparison, float16 storage of the same clips and skipping
# bad clips (whose effect shows in the train clips).
LOADING_KEYS = files.LOADING_KEYS | {"data.in_memory_dtype", "data.on_error"}
MODEL_KEYS = ("model.patch_size", "model.stride", "model.overrides")
# The data keys that only say where the clips are and which of a set they are: between two runs whose
# logs hold their clip lists' digests, the digests compare the clips instead.
CLIP_NAMING_KEYS = frozenset({"data.kind", "data.fold", "data.task", "data.val_fraction"}) | {
    key for key in path_keys() if key.startswith("data.")}
SPLITS = ("train", "val")
DETAIL_LIMIT = 4


@dataclass(frozen=True)
class RunFacts:
    """What decides whether a run compares with another: its ``folder`` (as named to the user),
    its ``config`` (a config dict), the clips one training epoch saw (``train_clips``; None when
    unknown or when ``train.epoch_steps`` sets an epoch's length) and its class ids in target
    order (``classes``; None when unknown); whether its log holds a config (``has_config``; without
    one ``config`` is empty), its full-resolution input, frames x mel bins (``input_size``;
    from the log's ``schedule``, None when it has none) and the digests of its train and val clip
    lists (``clip_lists``; None when its log has none), and of the clips it used, those
    ``data.on_error: skip`` left out taken off (``used_lists``; logs of earlier versions have none)."""

    folder: str
    config: Mapping[str, Any]
    train_clips: int | None
    classes: tuple[str, ...] | None
    has_config: bool = True
    input_size: tuple[int, int] | None = None
    clip_lists: tuple[str, str] | None = None  # the train and val clip lists' digests (None: not in its log)
    used_lists: tuple[str, str] | None = None  # the same of the clips it trained and validated on (bad ones left out)


def _classes(saved: Mapping[str, Any], folder: Path) -> tuple[str, ...] | None:
    """The run's class ids: from its log, else from the ``labels.json`` beside it."""
    classes = saved.get("classes")
    if not classes:
        try:
            classes = json.loads((folder / "labels.json").read_text()).get("classes")
        except (OSError, ValueError, AttributeError):
            return None
    return tuple(str(c) for c in classes) if isinstance(classes, list) and classes else None


def run_facts(folder: str | Path, saved: Mapping[str, Any]) -> RunFacts:
    """The :class:`RunFacts` of the run in ``folder`` whose log (see
    :func:`~coarse2fine.report.savings.read_log`) is ``saved``."""
    config = saved.get("config")
    has_config = isinstance(config, Mapping) and bool(config)
    config = config if has_config else {}
    records = saved.get("records") or []
    whole_epochs = not (config.get("train") or {}).get("epoch_steps")
    last = records[-1] if records else None
    clips = int((last.get("clips") if isinstance(last, Mapping) else getattr(last, "clips", 0)) or 0)
    lists, used = _clip_lists(saved.get("data")), _clip_lists(saved.get("data"), "used")
    if used is None and lists is not None and saved.get("skipped") == []:  # an earlier version's log: none left out
        used = lists
    return RunFacts(str(folder), config, clips if whole_epochs and clips > 0 else None, _classes(saved, Path(folder)),
                    has_config, _input_size(saved.get("schedule")), lists, used)


def _clip_lists(signature: Any, kind: str = "list") -> tuple[str, str] | None:
    """The train and val clip-list digests of a run log's ``data`` section (None without both);
    ``kind`` ``used``: those of the clips the run used."""
    if not isinstance(signature, Mapping):
        return None
    found = tuple(signature.get(f"{split}_{kind}_sha256") for split in SPLITS)
    return found if all(isinstance(v, str) for v in found) else None  # type: ignore[return-value]


def _input_size(schedule: Any) -> tuple[int, int] | None:
    """Frames x mel bins of a run log's ``schedule`` section (None without one)."""
    if not isinstance(schedule, Mapping):
        return None
    try:
        return int(schedule["frames"]), int(schedule["mel_bins"])
    except (KeyError, TypeError, ValueError):
        return None


def _short(value: Any) -> str:
    """A value as a difference shows it (long ones shortened)."""
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _last_names(value: Any) -> Any:
    """A path value reduced to its last component (each of a list's)."""
    if isinstance(value, list):
        return [_last_names(v) for v in value]
    return PurePosixPath(str(value).replace("\\", "/").rstrip("/")).name if value is not None else None


def _key_changes(a: Mapping[str, Any], b: Mapping[str, Any], section: str, lists_known: bool = False) -> list[str]:
    """``key old -> new`` for every key of ``section`` that differs between two config dicts,
    leaving out the loading keys, the data keys neither run's data kind reads and paths that
    differ only in their folders; with ``lists_known`` (both runs' clip lists are compared), the
    keys that only name the clips and those either kind does not read."""
    paths, kinds = path_keys(), {(c.get("data") or {}).get("kind", "") for c in (a, b)}
    if lists_known:
        unread = frozenset().union(*(DataConfig.unread_keys(k) for k in kinds)) | CLIP_NAMING_KEYS
    else:
        unread = DataConfig.unread_keys(kinds.pop()) if len(kinds) == 1 else frozenset()
    changes = []
    for key, u, v in differing_keys(a.get(section) or {}, b.get(section) or {}, f"{section}."):
        if key in LOADING_KEYS or key in unread or (key in paths and _last_names(u) == _last_names(v)):
            continue
        changes.append(f"{key} {_short(u)} -> {_short(v)}")
    return changes


def data_changes(base: RunFacts, run: RunFacts) -> list[str]:
    """How ``run``'s data differs from ``base``'s: clip counts, classes, clip lists (when both logs
    hold them), then data keys (when both logs hold a config)."""
    changes = []
    if base.train_clips is not None and run.train_clips is not None and base.train_clips != run.train_clips:
        changes.append(f"train clips {base.train_clips} -> {run.train_clips}")
    if base.classes is not None and run.classes is not None and base.classes != run.classes:
        same_count = len(base.classes) == len(run.classes)
        changes.append("class ids differ" if same_count else f"classes {len(base.classes)} -> {len(run.classes)}")
    lists_known = False
    # the clips each run used where both logs say (a manifest cleaned of the bad rows another run skipped
    # lists the same clips), else the clips each listed
    both_used = bool(base.used_lists and run.used_lists)
    pair = (base.used_lists, run.used_lists) if both_used else (base.clip_lists, run.clip_lists)
    if pair[0] is not None and pair[1] is not None:
        lists_known = True
        # an earlier version's log holds the clips it listed, not those it used: said, since bad rows skipped
        # there and cleaned from a manifest here list otherwise
        listed_only = "" if both_used else (" (the log of " + " and ".join(
            f.folder for f in (base, run) if not f.used_lists) + ", of an earlier version that skipped bad clips, holds "
            "the clips it listed, not those it used: --allow-different tabulates them)")
        changes += [f"the {split} split lists other clips or labels{listed_only}"
                    for split, u, v in zip(SPLITS, *pair) if u != v]
    configured = base.has_config and run.has_config
    return changes + (_key_changes(base.config, run.config, "data", lists_known) if configured else [])


def input_changes(base: RunFacts, run: RunFacts) -> list[str]:
    """How the full-resolution input differs (when both logs give it)."""
    a, b = base.input_size, run.input_size
    if a is None or b is None or a == b:
        return []
    return [f"input {a[0]} x {a[1]} -> {b[0]} x {b[1]}"]


def model_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """How model ``b`` differs from model ``a`` (config dicts): family and size, then the keys
    that change the network."""
    ma, mb = a.get("model") or {}, b.get("model") or {}
    changes = []
    if (ma.get("arch"), ma.get("preset")) != (mb.get("arch"), mb.get("preset")):
        changes.append(f"{ma.get('arch')} {ma.get('preset')} -> {mb.get('arch')} {mb.get('preset')}")
    for key in MODEL_KEYS:
        name = key.split(".", 1)[1]
        if ma.get(name) != mb.get(name):
            changes.append(f"{key} {_short(ma.get(name))} -> {_short(mb.get(name))}")
    return changes


def metric_changes(a: Mapping[str, Any], b: Mapping[str, Any], metric_given: bool = False) -> list[str]:
    """How the objective and (unless ``metric_given``) the default metric differ (config dicts)."""
    ta, tb = a.get("train") or {}, b.get("train") or {}
    keys = ("objective",) if metric_given else ("objective", "metric")
    return [f"train.{k} {_short(ta.get(k))} -> {_short(tb.get(k))}" for k in keys if ta.get(k) != tb.get(k)]


def differences(base: RunFacts, run: RunFacts, metric_given: bool = False) -> dict[str, list[str]]:
    """What of ``run`` differs from ``base`` by kind (data, features, model, metric; only the kinds
    that differ), each with its changes, old -> new."""
    configured = base.has_config and run.has_config
    kinds = {
        "data": data_changes(base, run),
        "features": (_key_changes(base.config, run.config, "features") if configured else []) + input_changes(base, run),
        "model": model_changes(base.config, run.config) if configured else [],
        "metric": metric_changes(base.config, run.config, metric_given) if configured else [],
    }
    return {kind: changes for kind, changes in kinds.items() if changes}


def describe(base: RunFacts, run: RunFacts, found: Mapping[str, Sequence[str]]) -> str:
    """One line: ``runs/x: data differs from the baseline runs/b (train clips 2700 -> 144)``."""

    def listed(changes: Sequence[str]) -> str:
        return ", ".join(changes[:DETAIL_LIMIT]) + (", ..." if len(changes) > DETAIL_LIMIT else "")

    kinds = list(found)
    if len(kinds) == 1:
        return f"{run.folder}: {kinds[0]} differs from the baseline {base.folder} ({listed(found[kinds[0]])})"
    named = ", ".join(kinds[:-1]) + f" and {kinds[-1]}"
    details = "; ".join(f"{kind}: {listed(changes)}" for kind, changes in found.items())
    return f"{run.folder}: {named} differ from the baseline {base.folder} ({details})"


def incomparable(runs: Sequence[RunFacts], metric_given: bool = False) -> list[str]:
    """One line per run (after the baseline, ``runs[0]``) that differs from the baseline in data,
    features, model or metric (see :func:`differences`); empty when all compare."""
    base = runs[0]
    lines = []
    for run in runs[1:]:
        found = differences(base, run, metric_given)
        if found:
            lines.append(describe(base, run, found))
    return lines


def unchecked(base: RunFacts, run: RunFacts, metric_given: bool = False) -> list[str]:
    """What :func:`differences` could not compare between ``base`` and ``run`` for want of it in
    either log: train clips, classes, the clip lists of data read from lists of files (logs of
    earlier versions have none), the input size, and without a config in both logs the data
    settings, features, model and objective (and the default metric unless ``metric_given``)."""
    missing = []
    if base.train_clips is None or run.train_clips is None:
        missing.append("train clips")
    if base.classes is None or run.classes is None:
        missing.append("classes")
    listed = all((f.config.get("data") or {}).get("kind", "synthetic") != "synthetic" for f in (base, run))
    if base.has_config and run.has_config and listed and (base.clip_lists is None or run.clip_lists is None):
        missing.append("clip lists")
    if not (base.has_config and run.has_config):
        if base.input_size is None or run.input_size is None:
            missing.append("input size")
        missing += ["data settings", "features", "model", "objective" if metric_given else "objective and metric"]
    return missing


def unchecked_lines(runs: Sequence[RunFacts], metric_given: bool = False) -> list[str]:
    """One line per run (after the baseline, ``runs[0]``) whose comparison with the baseline left
    something unchecked (see :func:`unchecked`): what was not compared and why, and without a
    config in both logs what was."""
    base = runs[0]
    lines = []
    for run in runs[1:]:
        missing = unchecked(base, run, metric_given)
        if not missing:
            continue
        if base.has_config and run.has_config:
            lines.append(f"{run.folder}: {' and '.join(missing)} not compared with the baseline {base.folder} "
                         "(not in both run logs)")
            continue
        known = {"train clips": (base.train_clips, run.train_clips), "classes": (base.classes, run.classes),
                 "input size": (base.input_size, run.input_size)}
        checked = [what for what, (a, b) in known.items() if a is not None and b is not None]
        lacking = " and ".join(dict.fromkeys(f.folder for f in (base, run) if not f.has_config))
        lines.append(f"{run.folder}: compared with the baseline {base.folder} by "
                     f"{', '.join(checked) + ' only' if checked else 'nothing'}; not checked: {', '.join(missing)} "
                     f"(no config in the run log of {lacking})")
    return lines


# Runtime keys that change how long a step takes, not what it learns (the rest of RUNTIME_KEYS:
# logging, checkpoints, the planner's prediction, where shards are kept, change neither).
TIMING_KEYS = ("train.device", "train.threads", "train.compile", "train.compile_mode", "data.preload",
               "data.cache_dir", "data.in_memory", "data.in_memory_device", "data.num_workers")


def timing_lines(runs: Sequence[RunFacts]) -> list[str]:
    """One line per run (after the baseline, ``runs[0]``) that ran with other settings than the
    baseline that change its step time but not its results (:data:`TIMING_KEYS`), naming them:
    its wall and step time saves measure those settings too; and one per run that read the same
    clips from another kind of source (a pack against files)."""
    base = runs[0]
    lines = []
    for run in runs[1:]:
        if not (base.has_config and run.has_config):
            continue
        diffs = [f"{key}: {_yaml(ours)} vs {_yaml(theirs)}" for key, ours, theirs
                 in differing_keys(run.config, base.config) if key in TIMING_KEYS]
        if diffs:
            lines.append(f"{run.folder} ran with other settings than the baseline {base.folder} that change how long "
                         f"a step takes, not what it learns ({'; '.join(diffs)}): its wall and step time saves measure "
                         "them too; the calibrated column (--calibrate-rounds) times every run's steps alike")
        kinds = [(f.config.get("data") or {}).get("kind") for f in (run, base)]
        if kinds[0] != kinds[1]:  # the same clips (else differences() refused it) read another way
            lines.append(f"{run.folder} read its clips as data.kind {kinds[0]}, the baseline {base.folder} as "
                         f"{kinds[1]}: its wall and step time saves measure that too, and a pack's features, where "
                         "it has them, were rounded to float16 when packed")
    return lines


def _yaml(value: Any) -> str:
    """A setting as a config file writes it (``true``, ``null``, ``auto``)."""
    return json.dumps(value) if value is None or isinstance(value, bool) else _short(value)
