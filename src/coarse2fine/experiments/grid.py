"""Experiments: a baseline plus coarse-to-fine variants on one dataset, and their comparison.

A variant is a method string (``fshift``, ``avgpool``, ``maxpool``, ``patch-bl``, ``patch-pi``)
with a schedule (``4-1``, ``2-1``, ``4-2-1``...). Each run lives in ``out_root/<run name>``; a run
whose log says it finished with the same config is reused instead of trained again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from coarse2fine import atomic
from coarse2fine.compression import Compression
from coarse2fine.config import RunConfig
from coarse2fine.data.datasets import ClipDataset, DataSplits
from coarse2fine.data.sources import load_splits
from coarse2fine.report.savings import Records
from coarse2fine.report.timing import Calibration, calibrate, calibrated_records, phase_key
from coarse2fine.training.loop import RunResult, train_run
from coarse2fine.training.records import EpochRecord

log = logging.getLogger(__name__)

VARIANTS: dict[str, tuple[str, str]] = {
    "fshift": ("fshift", "pi"),
    "avgpool": ("avgpool", "pi"),
    "maxpool": ("maxpool", "pi"),
    "patch-bl": ("patch", "bilinear"),
    "patch-pi": ("patch", "pi"),
}



@dataclass(frozen=True)
class Variant:
    """One coarse-to-fine setting: method string and schedule."""

    method: str
    schedule: str

    @property
    def name(self) -> str:
        return f"{self.method}_{self.schedule.replace('-', '')}"

    @property
    def label(self) -> str:
        """Paper-style label, e.g. ``Fshift 41``."""
        method, resize = VARIANTS[self.method]
        return f"{Compression(method, patch_resize=resize).label} {self.schedule.replace('-', '')}"


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``"fshift,patch-pi"`` -> validated list of method strings (``all`` = every method)."""
    items = [m.strip() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    if items == ["all"]:
        return list(VARIANTS)
    unknown = [m for m in items if m not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)} or 'all'")
    return items


def variant_config(base: RunConfig, variant: Variant | None) -> RunConfig:
    """The config of the baseline (``variant=None``) or of one coarse-to-fine variant."""
    if variant is None:
        return base.baseline()
    method, resize = VARIANTS[variant.method]
    return base.replace({"name": variant.name, "c2f.schedule": variant.schedule, "c2f.method": method,
                         "c2f.patch_resize": resize})


def run_experiment(
    base: RunConfig,
    variants: Sequence[Variant],
    out_root: str | Path,
    splits: DataSplits | None = None,
    progress: bool = True,
    reuse: bool = True,
) -> tuple[RunResult, dict[str, RunResult]]:
    """Train the baseline and every variant into ``out_root/<run name>``; returns (baseline,
    {label: result}). A finished run of the same config there is reused and an interrupted one
    continues from its checkpoint (``reuse``; without it every run starts over)."""
    out_root = Path(out_root)
    splits = splits if splits is not None else load_splits(base)
    results: dict[str, RunResult] = {}
    baseline: RunResult | None = None
    for variant in [None, *variants]:
        cfg = variant_config(base, variant)
        result = train_run(cfg, splits, out_root / cfg.name, progress=progress, resume=reuse, fresh=not reuse)
        if variant is None:
            baseline = result
        else:
            results[variant.label] = result
    assert baseline is not None
    return baseline, results


def fold_config(base: RunConfig, fold: int) -> RunConfig:
    """The config of cross-validation fold ``fold``: ``data.fold`` for ESC-50 (``data.kind: esc50``),
    otherwise ``{fold}`` in data.train / data.val replaced."""
    name = f"{base.name}_fold{fold}"
    if base.data.kind == "esc50":
        return base.replace({"name": name, "data.fold": fold})
    if "{fold}" not in (base.data.train or "") or "{fold}" not in (base.data.val or ""):
        raise ValueError("cross-validation needs '{fold}' in data.train and data.val, e.g. data/esc_train_data_{fold}.json")
    return base.replace({"name": name, "data.train": base.data.train.replace("{fold}", str(fold)),
                         "data.val": base.data.val.replace("{fold}", str(fold))})


def cross_validate(base: RunConfig, folds: Sequence[int], out_root: str | Path, progress: bool = True) -> dict[int, RunResult]:
    """Train ``base`` (its schedule and method) once per fold into ``out_root/fold<N>``; finished
    folds are reused and an interrupted fold continues from its checkpoint."""
    results = {}
    for fold in folds:
        cfg = fold_config(base, fold)
        results[fold] = train_run(cfg, load_splits(cfg), Path(out_root) / f"fold{fold}", progress=progress)
    return results


def calibrate_runs(configs: Sequence[RunConfig], records: Sequence[Records], num_classes: int, rounds: int,
                   source: ClipDataset | None = None, saved: Path | None = None,
                   fresh: bool = False) -> tuple[Calibration, list[list[EpochRecord]]]:
    """Give each run's records their calibrated time: every phase the runs used timed interleaved in
    this process (:func:`coarse2fine.report.timing.calibrate`) on batches of ``source`` (random
    audio when None). A calibration ``saved`` earlier that covers every phase is used again
    (unless ``fresh``), so reused runs keep their figures; a new one is saved there."""
    keys = {phase_key(cfg, p.R) for cfg in configs for p in cfg.phases()}
    cal = None
    if saved is not None and saved.exists() and not fresh:
        old = Calibration.from_dict(json.loads(saved.read_text()))
        if keys <= set(old.steps):
            cal = old
            log.info("calibrated step costs from %s (measured with load average %s)", saved, cal.load_avg)
    if cal is None:
        cal = calibrate(configs, num_classes, source, rounds=rounds)
        log.info("calibrated step costs (%d interleaved rounds, load average %s): %s", rounds, cal.load_avg,
                 ", ".join(f"{k} {v.median * 1e3:.1f} ms" for k, v in cal.steps.items()))
        if saved is not None:
            atomic.write_json(saved, cal.to_dict())
    return cal, [calibrated_records(recs, cfg, cal) for cfg, recs in zip(configs, records)]
