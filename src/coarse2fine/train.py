"""The training loop: one run = a schedule of phases, coarse to fine, read top to bottom.

For each phase: set the model's geometry (weights transferred from the previous phase), build a
fresh optimizer and LR schedule, then per epoch train, evaluate, count FLOPs and wall time, and
append a record to the run's log. The records are what :mod:`coarse2fine.savings` compares.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from coarse2fine import atomic
from coarse2fine.augment import AugmentConfig, augment_features, mixup
from coarse2fine.averaging import WeightAverager
from coarse2fine.compression import Compression
from coarse2fine.config import RunConfig, save_config
from coarse2fine.data.datasets import DataSplits
from coarse2fine.features import FeatureSpec, extract
from coarse2fine.metrics import evaluate
from coarse2fine.model import AST, ast_config, ast_training_flops
from coarse2fine.optim import build_optimizer, build_scheduler
from coarse2fine.phases import build_phases
from coarse2fine.sampling import balanced_sampler

log = logging.getLogger(__name__)

LOG_COLUMNS = (
    "epoch", "phase", "R", "phase_epoch", "tokens", "lr", "train_loss", "val_loss",
    "acc", "mAP", "mAUC", "d_prime", "train_flops", "cum_flops", "train_time", "cum_time", "eval_time",
)


@dataclass
class RunResult:
    """What a finished run leaves behind: its per-epoch records and where its files are."""

    name: str
    out_dir: Path
    records: list[dict[str, Any]]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def compute_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """``ce``: cross-entropy against (possibly soft) class distributions; ``bce``: multi-label."""
    if kind == "ce":
        return F.cross_entropy(logits, targets)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, targets)
    raise ValueError(f"unknown loss {kind!r}; choose 'ce' or 'bce'")


def make_features(x: torch.Tensor, spec: FeatureSpec, comp: Compression) -> torch.Tensor:
    """Model input [B, frames, mel bins] for one phase from waveforms [B, samples] (features are
    computed here, batched, on the training device) or from cached features [B, frames, bins]."""
    return comp.transform(x if x.ndim == 3 else extract(x, spec))


def train_one_epoch(model, loader, spec, comp, optimizer, scheduler, loss_kind, device, desc: str, progress: bool,
                    aug: AugmentConfig | None = None, gen: torch.Generator | None = None) -> tuple[float, int]:
    """One pass over ``loader``; returns (mean training loss, samples seen).

    Augmentation, when configured: mixup on the waveforms (on cached features when the dataset
    serves features), then SpecAugment (and noise) on the compressed features, the time-mask
    width divided by the phase's time compression.
    """
    model.train()
    total, seen = 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True)
    for x, targets in bar:
        x, targets = x.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if aug is not None and aug.mixup > 0:
            x, targets = mixup(x, targets, aug.mixup, aug.mixup_alpha, gen)
        feats = make_features(x, spec, comp)
        if aug is not None:
            feats = augment_features(feats, aug, comp.time_factor, gen)
        loss = compute_loss(model(feats), targets, loss_kind)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(x)
        seen += len(x)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return total / max(1, seen), seen


def warm_up(model, loader, spec, comp, loss_kind, device) -> None:
    """One untimed forward + backward on a real batch (weights, optimizer and RNG untouched), so
    one-time costs (thread pools, kernel selection, FFT plans) stay out of the measured epoch time."""
    x, y = next(iter(loader))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        loss = compute_loss(model(make_features(x.to(device), spec, comp)), y.to(device), loss_kind)
        loss.backward()
    model.zero_grad(set_to_none=True)


@torch.no_grad()
def evaluate_model(model, loader, spec, comp, loss_kind, device) -> dict[str, float]:
    """Validation loss and metrics (acc, mAP, mAUC, d-prime) at the current phase's resolution."""
    model.eval()
    scores, targets, loss_sum, n = [], [], 0.0, 0
    for waves, y in loader:
        waves, y = waves.to(device), y.to(device)
        logits = model(make_features(waves, spec, comp))
        loss_sum += compute_loss(logits, y, loss_kind).item() * len(waves)
        n += len(waves)
        probs = logits.softmax(-1) if loss_kind == "ce" else logits.sigmoid()
        scores.append(probs.float().cpu().numpy())
        targets.append(y.cpu().numpy())
    metrics = evaluate(np.concatenate(scores), np.concatenate(targets))
    return {"val_loss": loss_sum / max(1, n), **metrics}


def write_logs(out_dir: Path, cfg: RunConfig, records: list[dict[str, Any]], done: bool, extra: dict[str, Any] | None = None) -> None:
    """Per-epoch log as JSON (with the config and ``extra`` report fields) and CSV, written atomically."""
    atomic.write_json(out_dir / "log.json", {"name": cfg.name, "config": cfg.to_dict(), "done": done, "records": records, **(extra or {})})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    atomic.write_text(out_dir / "log.csv", buf.getvalue())


def train_run(cfg: RunConfig, splits: DataSplits, out_dir: str | Path, progress: bool = True) -> RunResult:
    """Train ``cfg`` on ``splits`` through all phases of its schedule; logs go to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "config.yaml")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    tc = cfg.train

    phases = build_phases(cfg.c2f.schedule, tc.epochs, cfg.c2f.phase_epochs, cfg.c2f.initial_fraction)
    full_spec = cfg.features.spec()
    full = (cfg.features.target_length, tuple(cfg.model.patch_size), tuple(cfg.model.stride))
    method = dict(method=cfg.c2f.method, patch_resize=cfg.c2f.patch_resize, scale_window=cfg.c2f.scale_window)
    log.info("run %s: schedule %s, method %s, phases %s, device %s", cfg.name, cfg.c2f.schedule, cfg.c2f.method,
             [(p.R, p.epochs) for p in phases], device)

    def model_config(R: int):
        geo = Compression(R=R, **method).geometry(*full)
        try:
            return ast_config(
                cfg.model.preset, num_classes=splits.train.num_classes, num_mel_bins=cfg.features.num_mel_bins,
                target_length=geo.target_length, patch_size=geo.patch_size, stride=geo.stride,
                drop_path_rate=cfg.model.drop_path_rate,
            )
        except ValueError as err:
            raise ValueError(f"schedule {cfg.c2f.schedule} with {cfg.c2f.method} at R={R}: {err}") from None

    configs = [model_config(ph.R) for ph in phases]  # every phase's geometry is checked before training
    model = AST(configs[0]).to(device)

    ac = cfg.augment
    aug = AugmentConfig(freqm=ac.freqm, timem=ac.timem, mixup=ac.mixup, mixup_alpha=ac.mixup_alpha, noise=ac.noise)
    aug_gen = torch.Generator(device=device).manual_seed(tc.seed + 1)
    loader_gen = torch.Generator().manual_seed(tc.seed)
    sampler = balanced_sampler(splits.train.targets, generator=loader_gen) if ac.balanced_sampling else None
    workers = dict(num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda")
    train_loader = DataLoader(splits.train, batch_size=tc.batch_size, shuffle=sampler is None, sampler=sampler,
                              generator=loader_gen, **workers)
    val_loader = DataLoader(splits.val, batch_size=max(tc.batch_size, 64), shuffle=False, **workers)
    report = {
        "classes": splits.train.class_names,
        "display_names": splits.display_names,
        "skipped": [{"path": str(p.path), "problem": p.problem} for p in splits.skipped],
    }
    atomic.write_json(out_dir / "labels.json", {"classes": report["classes"], "display_names": report["display_names"]})
    averager = WeightAverager(ac.wa_start, ac.wa_end, device="cpu") if ac.wa_start > 0 else None

    records: list[dict[str, Any]] = []
    cum_flops, cum_time, epoch = 0, 0.0, 0
    for p, phase in enumerate(phases):
        comp = Compression(R=phase.R, **method)
        geo = comp.geometry(*full)
        if p > 0:  # carry the weights over: pos-embed interpolated, patch embedding resized
            model.set_geometry(geo.target_length, geo.patch_size, geo.stride, patch_resize=comp.patch_resize)
        spec = comp.feature_spec(full_spec)
        for ds in (splits.train, splits.val):
            if hasattr(ds, "set_spec"):  # cached features: serve this phase's frame shift
                ds.set_spec(spec)
        optimizer = build_optimizer(model.parameters(), tc.optim)  # reset at every phase
        scheduler = build_scheduler(optimizer, len(train_loader), tc.optim)
        flops_per_sample = ast_training_flops(model.config, 1)
        warm_up(model, val_loader, spec, comp, tc.loss, device)
        log.info("phase %d/%d: R=%d, %d epochs, %d tokens, %.3g training FLOPs per clip",
                 p + 1, len(phases), phase.R, phase.epochs, model.config.num_tokens, flops_per_sample)

        for phase_epoch in range(1, phase.epochs + 1):
            epoch += 1
            lr = optimizer.param_groups[0]["lr"]
            desc = f"{cfg.name} ep {epoch} (phase {p + 1}, R={phase.R})"
            t0 = time.perf_counter()
            train_loss, seen = train_one_epoch(model, train_loader, spec, comp, optimizer, scheduler, tc.loss, device,
                                               desc, progress, aug, aug_gen)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_time = time.perf_counter() - t0
            t1 = time.perf_counter()
            metrics = evaluate_model(model, val_loader, spec, comp, tc.loss, device)
            eval_time = time.perf_counter() - t1
            train_flops = flops_per_sample * seen
            cum_flops += train_flops
            cum_time += train_time
            records.append({
                "epoch": epoch, "phase": p, "R": phase.R, "phase_epoch": phase_epoch,
                "tokens": model.config.num_tokens, "lr": lr, "train_loss": train_loss, **metrics,
                "train_flops": train_flops, "cum_flops": cum_flops,
                "train_time": train_time, "cum_time": cum_time, "eval_time": eval_time,
            })
            write_logs(out_dir, cfg, records, done=False, extra=report)
            if averager is not None and p == len(phases) - 1:
                averager.update(model.state_dict(), epoch=phase_epoch)
            log.info("%s epoch %d (phase %d, R=%d): loss %.4f, %s %.4f, %.1fs, %.3g FLOPs",
                     cfg.name, epoch, p + 1, phase.R, train_loss, tc.metric, metrics[tc.metric], train_time, train_flops)

    atomic.save_safetensors(out_dir / "model.safetensors", model.state_dict(), metadata={"format": "pt"})
    atomic.write_json(out_dir / "model_config.json", model.config.to_dict())
    if averager is not None and averager.count:
        model.load_state_dict(averager.average())
        report["weight_averaged"] = {"epochs": [averager.start, min(averager.end or phase.epochs, phase.epochs)],
                                     **evaluate_model(model, val_loader, spec, comp, tc.loss, device)}
        atomic.save_safetensors(out_dir / "model_wa.safetensors", model.state_dict(), metadata={"format": "pt"})
        log.info("weight-averaged model (%d checkpoints): %s %.4f", averager.count, tc.metric, report["weight_averaged"][tc.metric])
    failures = [str(p) for ds in (splits.train, splits.val) for p in getattr(ds, "failures", [])]
    if failures:
        report["load_failures"] = failures
    write_logs(out_dir, cfg, records, done=True, extra=report)
    return RunResult(cfg.name, out_dir, records)
