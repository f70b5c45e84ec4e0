"""Build a run's train/validation datasets from its config: synthetic, manifests, folders, FSDD.

File-based data is checked clip by clip before training (:mod:`coarse2fine.data.validate`): a bad
file stops the run with a message naming every bad file and its problem, or, with
``data.on_error: skip``, is dropped and listed in :attr:`DataSplits.skipped` (the run's report).
"""

from __future__ import annotations

import logging

from coarse2fine.cache import FeatureCache
from coarse2fine.config import RunConfig
from coarse2fine.data.cached import CachedFeatureDataset
from coarse2fine.data.datasets import DataSplits, synthetic_splits
from coarse2fine.data.files import FileDataset
from coarse2fine.data.manifest import (
    Manifest,
    ManifestError,
    fsdd_manifest,
    read_manifest,
)
from coarse2fine.data.validate import validate

log = logging.getLogger(__name__)

def _manifests(cfg: RunConfig) -> tuple[Manifest, Manifest]:
    d = cfg.data
    if d.kind == "fsdd":
        if not d.root:
            raise ValueError("data.kind 'fsdd' needs data.root: the FSDD folder (with recordings/)")
        return fsdd_manifest(d.root, d.task, "train"), fsdd_manifest(d.root, d.task, "test")
    if d.kind == "manifest":
        if not d.train or not d.val:
            raise ValueError("data.kind 'manifest' needs data.train and data.val (AST JSON, CSV or a class folder)")
        train = read_manifest(d.train, d.label_csv, d.multilabel)
        val = read_manifest(d.val, d.label_csv, d.multilabel)
        if val.classes != train.classes:
            missing = sorted(set(val.classes) - set(train.classes))
            raise ManifestError(
                f"{val.source}: its classes differ from {train.source}'s"
                + (f" (not in training: {', '.join(missing[:10])})" if missing else "")
                + "; give both the same label_csv"
            )
        return train, val
    raise ValueError(f"data.kind {d.kind!r} is not supported; choose synthetic, manifest or fsdd")


def load_splits(cfg: RunConfig) -> DataSplits:
    """The datasets a config names, checked, optionally preloaded or served from the fbank cache."""
    d, f = cfg.data, cfg.features
    if d.kind == "synthetic":
        return synthetic_splits(d.train_clips, d.val_clips, d.clip_seconds, f.sample_rate, d.seed)
    num_samples = int(round(d.clip_seconds * f.sample_rate))
    splits, skipped = [], []
    for manifest in _manifests(cfg):
        report = validate(manifest, f.sample_rate, d.min_seconds, d.on_error)
        skipped += report.problems
        files = FileDataset.from_manifest(report.filtered(manifest), num_samples, f.sample_rate)
        if d.cache_dir:
            splits.append(CachedFeatureDataset(files, FeatureCache(d.cache_dir), f.spec()))
        elif d.preload:
            splits.append(files.load_all())
        else:
            splits.append(files)
    if skipped:
        log.warning("%d bad clip(s) skipped; they are listed in the run's report", len(skipped))
    return DataSplits(train=splits[0], val=splits[1], skipped=skipped, display_names=manifest.display_names)
