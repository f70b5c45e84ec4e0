"""Build a run's train/validation datasets from its config: synthetic, manifests, folders, FSDD,
packed shards (:mod:`coarse2fine.data.shards`).

File-based data is checked clip by clip before training (:mod:`coarse2fine.data.validate`): a bad
file stops the run with a message naming every bad file and its problem, or, with
``data.on_error: skip``, is dropped and listed in :attr:`DataSplits.skipped` (the run's report).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from coarse2fine.config import RunConfig
from coarse2fine.config.files import placeholder_of
from coarse2fine.data.cache import FeatureCache
from coarse2fine.data.cached import CachedFeatureDataset
from coarse2fine.data.datasets import ClipDataset, DataSplits, synthetic_splits
from coarse2fine.data.esc50 import esc50_manifest
from coarse2fine.data.files import FileDataset
from coarse2fine.data.manifest import (
    Manifest,
    ManifestError,
    align_classes,
    clip_list_digest,
    clip_list_digests,
    fsdd_manifest,
    listing_warnings,
    read_manifest,
)
from coarse2fine.data.memory import FeatureStore, feature_bytes, store_device
from coarse2fine.data.shards import packed_clip_lists, shard_splits, split_summary
from coarse2fine.data.synthetic import CLASSES
from coarse2fine.data.unlabeled import unlabeled_manifests
from coarse2fine.data.validate import InvalidInputError, Problem, validate
from coarse2fine.runtime import resolve_device

log = logging.getLogger(__name__)

def count_clips(cfg: RunConfig) -> int:
    """The number of training clips (windows, for unlabeled audio) of ``cfg``'s data, from its
    manifests or its shards' descriptor (no audio is decoded)."""
    if cfg.data.kind == "synthetic":
        return cfg.data.train_clips
    if cfg.data.kind == "shards":
        return split_summary(_shard_split(cfg)).num_clips
    return len(manifests(cfg)[0].entries)


def input_kind(cfg: RunConfig, num_clips: int) -> str:
    """What the training step gets from ``cfg``'s data source (``ClipDataset.serves``); for
    shards it depends on the phase (its packed features, else waveforms): ``waveforms`` here."""
    if in_memory(cfg, num_clips):
        return "model_input"
    return "features" if cfg.data.cache_dir else "waveforms"


def count_classes(cfg: RunConfig) -> int:
    """The number of classes ``cfg``'s data has, from its manifests or its shards' descriptor (no
    audio is decoded)."""
    if cfg.data.kind == "synthetic":
        return len(CLASSES)
    if cfg.data.kind == "shards":
        return len(split_summary(_shard_split(cfg)).meta.get("classes") or [])
    return len(manifests(cfg)[0].classes)


def clip_lists(cfg: RunConfig) -> dict[str, str]:
    """Each split's clip-list digest (:func:`~coarse2fine.data.manifest.clip_list_digest`) as
    :func:`load_splits` gives it in :attr:`DataSplits.clip_lists`, from the manifests or the packs'
    descriptors (no audio is decoded); none for synthetic data or packs of earlier versions."""
    if cfg.data.kind == "synthetic":
        return {}
    if cfg.data.kind == "shards":
        return packed_clip_lists({split: split_summary(cfg.data.split_path(split)) for split in ("train", "val")})
    return _listed(*manifests(cfg))[0]


def _listed(train: Manifest, val: Manifest) -> tuple[dict[str, str], str]:
    """The splits' clip-list digests and the training list's order digest."""
    clips, order = clip_list_digests(train.entries)
    return {"train": clips, "val": clip_list_digest(val.entries)}, order


def _shard_split(cfg: RunConfig) -> str:
    return cfg.data.split_path("train")


def manifests(cfg: RunConfig) -> tuple[Manifest, Manifest]:
    """The training and validation clip lists of a file-based config (no audio is decoded; the
    keys each kind needs were checked when the config was made: ``DataConfig.check_kind``)."""
    d = cfg.data
    if d.kind == "fsdd":
        return fsdd_manifest(d.root, d.task, "train"), fsdd_manifest(d.root, d.task, "test")
    if d.kind == "esc50":
        return esc50_manifest(d.root, d.fold, "train"), esc50_manifest(d.root, d.fold, "val")
    if d.kind == "unlabeled":
        return unlabeled_manifests(d.sources, d.clip_seconds, d.min_seconds, d.val_fraction)
    if d.kind == "manifest":
        check_manifest_paths(cfg)
        train = read_manifest(d.split_path("train"), d.label_csv, d.multilabel)
        check_loss_fits(cfg, train)
        return train, align_classes(train, read_manifest(d.split_path("val"), d.label_csv, d.multilabel))
    if d.kind == "shards":
        raise ValueError("data.kind 'shards' has no clip list: its clips are packed (read them with load_splits)")
    raise ValueError(f"data.kind {d.kind!r} is not supported; choose synthetic, manifest, fsdd, esc50, unlabeled or shards")


def check_manifest_paths(cfg: RunConfig) -> None:
    """That ``data.train``, ``data.val`` and ``data.label_csv`` (when given) name something on this
    disk, or one :class:`ManifestError` naming each that does not: the key, its value (with the
    fold filled in) and, for a value left at a shipped preset's placeholder, that preset; then how
    to set them."""
    d, missing, keys, per_fold = cfg.data, [], [], False
    for key in ("train", "val", "label_csv"):
        value = d.split_path(key) if key in ("train", "val") else getattr(d, key)
        if value is None or Path(value).exists():
            continue
        written, where = getattr(d, key), str(Path(value).absolute())
        fold = f" with data.fold {d.fold}" if written != value else ""
        at = f" ({where})" if where != written else ""
        preset = placeholder_of(f"data.{key}", written)
        note = f" (preset {preset}'s placeholder)" if preset else ""
        missing.append(f"data.{key}: {written}{fold}: no such file or folder{at}{note}")
        keys.append(key)
        per_fold = per_fold or bool(fold)
    if not missing:
        return
    how = f"set {'it' if len(keys) == 1 else 'them'} to your files: " + ", ".join(f"--set data.{k}=PATH" for k in keys)
    how += f" (or {', '.join(f'`{k}: PATH`' for k in keys)} under `data:` in your config)"
    if per_fold:
        how += "; a PATH of each fold's own file keeps {fold} where the fold number goes (data.fold fills it in)"
    if "label_csv" in keys:
        how += ("; data.label_csv may be null: CSV manifests name their classes, and a JSON one finds "
                "class_labels_indices.csv beside it")
    raise ManifestError("; ".join(missing) + f"; {how}")


def check_loss_fits(cfg: RunConfig, train: Manifest | ClipDataset) -> None:
    """Refuse multi-label training data (a clip with several labels) for a single-label loss:
    ``train.loss: ce`` would train a softmax over classes and score it by accuracy."""
    if not train.multilabel or cfg.train.objective != "classification" or cfg.train.loss != "ce":
        return
    if isinstance(train, Manifest):
        example = next((e for e in train.entries if len(e.labels) > 1), None)
        where, clip = train.source, f" ({example.path.name}: {', '.join(example.labels)})" if example else ""
    else:
        where, clip = "data.train", ""
    raise ValueError(f"{where}: multi-label data, clips with several labels{clip}, but train.loss is ce (one class "
                     "per clip, softmax); set train.loss: bce and train.metric: mAP")


def load_splits(cfg: RunConfig) -> DataSplits:
    """The datasets a config names, checked, optionally preloaded, served from the feature cache,
    or held in memory as each phase's model input (:func:`in_memory`)."""
    if cfg.data.kind == "synthetic":
        splits = synthetic_splits(cfg.data.train_clips, cfg.data.val_clips, cfg.data.clip_seconds,
                                  cfg.features.sample_rate, cfg.data.seed)
    elif cfg.data.kind == "shards":
        splits = shard_splits(cfg)
        check_loss_fits(cfg, splits.train)
    else:
        splits = _file_splits(cfg)
    if not in_memory(cfg, len(splits.train) + len(splits.val)):
        return splits
    dtype = getattr(torch, cfg.data.in_memory_dtype)
    device = resolve_device(cfg.train.device)
    size = feature_bytes(len(splits.train) + len(splits.val), cfg.features.target_length, cfg.features.num_mel_bins, dtype)
    store = store_device(device, size, cfg.data.in_memory_device)
    return dataclasses.replace(splits, train=FeatureStore(splits.train, device, dtype, store_device=store),
                               val=FeatureStore(splits.val, device, dtype, store_device=store))


def in_memory(cfg: RunConfig, num_clips: int) -> bool:
    """Whether to hold the features in memory: ``data.in_memory`` on, or auto and the
    full-resolution features of every clip take at most ``data.memory_limit_gb`` (never with the
    on-disk cache, which serves features itself; shards, which serve packed features and are
    for sets that do not fit, only with ``on``)."""
    d = cfg.data
    if d.in_memory == "off" or d.cache_dir or (d.kind == "shards" and d.in_memory == "auto"):
        return False
    size = feature_bytes(num_clips, cfg.features.target_length, cfg.features.num_mel_bins, getattr(torch, d.in_memory_dtype))
    if d.in_memory == "on":
        return True
    return size <= d.memory_limit_gb * 2**30


def _warn_empty_classes(train: Manifest) -> None:
    """A training class left without a usable clip (all of its clips bad and skipped) still has its
    target column; say which, since the model can never learn it."""
    seen = train.labels_used()
    empty = [c for c in train.classes if c not in seen]
    if empty:
        log.warning("%s: %d class(es) have no usable training clip: %s", train.source, len(empty),
                    ", ".join(empty[:10]) + (" ..." if len(empty) > 10 else ""))


def _every_problem(failed: list[InvalidInputError], skipped: list[Problem]) -> InvalidInputError:
    """One error for splits that cannot be used, also listing the bad clips of a split that could."""
    message = "\n".join(str(err) for err in failed)
    if skipped:
        message += f"\nalso bad (skipped) in the other split: {len(skipped)} clip(s):\n"
        message += "\n".join(f"  {p.path}: {p.problem}" for p in skipped)
    return InvalidInputError(message, [p for err in failed for p in err.problems] + skipped)


def _file_dataset(cfg: RunConfig, usable: Manifest) -> ClipDataset:
    """The checked clips of one split, served as the config says (feature cache, preloaded, or read
    from their files at each step)."""
    d, f = cfg.data, cfg.features
    files = FileDataset.from_manifest(usable, cfg.clip_samples(), f.sample_rate, d.pad)
    if d.cache_dir:
        return CachedFeatureDataset(files, FeatureCache(d.cache_dir), f.spec())
    return files.load_all() if d.preload else files


def _file_splits(cfg: RunConfig) -> DataSplits:
    d, f = cfg.data, cfg.features
    splits, skipped, failed, used = [], [], [], {}
    train_list, val_list = manifests(cfg)
    lists, order = _listed(train_list, val_list)
    listing = [*listing_warnings(train_list), *listing_warnings(val_list, classes=False)]
    for text in listing:
        log.warning("%s", text)
    for i, manifest in enumerate((train_list, val_list)):
        try:
            report = validate(manifest, f.sample_rate, d.min_seconds, d.on_error)
        except InvalidInputError as err:  # check the other split too, so one message lists every bad file
            failed.append(err)
            continue
        skipped += report.problems
        usable = report.filtered(manifest)
        split = ("train", "val")[i]
        used[split] = clip_list_digest(usable.entries) if report.problems else lists[split]
        if i == 0:
            _warn_empty_classes(usable)
        splits.append(_file_dataset(cfg, usable))
    if failed:
        raise _every_problem(failed, skipped)
    if skipped:
        log.warning("%d bad clip(s) skipped; a run lists them in its log.json (skipped)", len(skipped))
    return DataSplits(train=splits[0], val=splits[1], skipped=skipped, display_names=manifest.display_names,
                      clip_lists=lists, train_order=order, listing=listing, used_lists=used)


def load_validation(cfg: RunConfig, clips: int | None = None) -> ClipDataset:
    """The validation split alone (its first ``clips`` usable clips, or all), as :func:`load_splits`
    would serve it without holding it in memory. For file-based data only those clips are decoded
    and checked, bad ones skipped: a large training set is not read."""
    if cfg.data.kind in ("synthetic", "shards"):
        return load_splits(cfg.replace({"data.in_memory": "off"})).val
    val, f = manifests(cfg)[1], cfg.features
    first = dataclasses.replace(val, entries=val.entries[:clips]) if clips else val
    report = validate(first, f.sample_rate, cfg.data.min_seconds, "skip")
    if len(report.ok) < min(clips or 0, len(val)):  # bad clips among the first: check them all
        report = validate(val, f.sample_rate, cfg.data.min_seconds, "skip")
    return _file_dataset(cfg, report.filtered(val))


def load_training(cfg: RunConfig) -> tuple[ClipDataset, list[Problem]]:
    """The training split alone, as :func:`load_splits` would serve it without holding it in
    memory, and the bad clips ``data.on_error: skip`` left out (with ``raise``, a bad clip stops
    it, as it stops training). For file-based data the validation set is neither read nor checked."""
    if cfg.data.kind in ("synthetic", "shards"):
        splits = load_splits(cfg.replace({"data.in_memory": "off"}))
        return splits.train, list(splits.skipped)
    d, f = cfg.data, cfg.features
    if d.kind == "manifest":  # the validation list is not read (a broken one is training's problem, not this)
        train = read_manifest(d.split_path("train"), d.label_csv, d.multilabel)
        check_loss_fits(cfg, train)
    else:
        train = manifests(cfg)[0]
    report = validate(train, f.sample_rate, d.min_seconds, d.on_error)
    return _file_dataset(cfg, report.filtered(train)), list(report.problems)
