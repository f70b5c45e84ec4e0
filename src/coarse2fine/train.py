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
from coarse2fine.compression import Compression
from coarse2fine.config import RunConfig, save_config
from coarse2fine.data.datasets import DataSplits
from coarse2fine.features import FbankConfig, FeatureSpec, extract
from coarse2fine.metrics import evaluate
from coarse2fine.model import AST, ast_config, ast_training_flops
from coarse2fine.optim import build_optimizer, build_scheduler
from coarse2fine.phases import build_phases

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


def base_feature_spec(cfg: RunConfig) -> FeatureSpec:
    """The full-resolution feature spec of a run."""
    f = cfg.features
    fbank = FbankConfig(
        sample_rate=f.sample_rate,
        num_mel_bins=f.num_mel_bins,
        frame_length_ms=f.frame_length_ms,
        frame_shift_ms=f.frame_shift_ms,
    )
    return FeatureSpec(fbank=fbank, target_length=f.target_length, mean=f.mean, std=f.std)


def compute_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """``ce``: cross-entropy against (possibly soft) class distributions; ``bce``: multi-label."""
    if kind == "ce":
        return F.cross_entropy(logits, targets)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, targets)
    raise ValueError(f"unknown loss {kind!r}; choose 'ce' or 'bce'")


def make_features(waves: torch.Tensor, spec: FeatureSpec, comp: Compression) -> torch.Tensor:
    """Waveforms [B, samples] -> model input [B, frames, mel bins] for one phase."""
    return comp.transform(extract(waves, spec))


def train_one_epoch(model, loader, spec, comp, optimizer, scheduler, loss_kind, device, desc: str, progress: bool) -> tuple[float, int]:
    """One pass over ``loader``; returns (mean training loss, samples seen)."""
    model.train()
    total, seen = 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True)
    for waves, targets in bar:
        waves, targets = waves.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        feats = make_features(waves, spec, comp)
        loss = compute_loss(model(feats), targets, loss_kind)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(waves)
        seen += len(waves)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return total / max(1, seen), seen


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


def write_logs(out_dir: Path, cfg: RunConfig, records: list[dict[str, Any]], done: bool) -> None:
    """Per-epoch log as JSON (with the config) and CSV, both written atomically."""
    atomic.write_json(out_dir / "log.json", {"name": cfg.name, "config": cfg.to_dict(), "done": done, "records": records})
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
    full_spec = base_feature_spec(cfg)
    full = (cfg.features.target_length, tuple(cfg.model.patch_size), tuple(cfg.model.stride))
    method = dict(method=cfg.c2f.method, patch_resize=cfg.c2f.patch_resize, scale_window=cfg.c2f.scale_window)
    log.info("run %s: schedule %s, method %s, phases %s, device %s", cfg.name, cfg.c2f.schedule, cfg.c2f.method,
             [(p.R, p.epochs) for p in phases], device)

    geo = Compression(R=phases[0].R, **method).geometry(*full)
    model = AST(ast_config(
        cfg.model.preset,
        num_classes=splits.train.num_classes,
        num_mel_bins=cfg.features.num_mel_bins,
        target_length=geo.target_length,
        patch_size=geo.patch_size,
        stride=geo.stride,
        drop_path_rate=cfg.model.drop_path_rate,
    )).to(device)

    loader_gen = torch.Generator().manual_seed(tc.seed)
    train_loader = DataLoader(splits.train, batch_size=tc.batch_size, shuffle=True, drop_last=False, generator=loader_gen)
    val_loader = DataLoader(splits.val, batch_size=max(tc.batch_size, 64), shuffle=False)

    records: list[dict[str, Any]] = []
    cum_flops, cum_time, epoch = 0, 0.0, 0
    for p, phase in enumerate(phases):
        comp = Compression(R=phase.R, **method)
        geo = comp.geometry(*full)
        if p > 0:  # carry the weights over: pos-embed interpolated, patch embedding resized
            model.set_geometry(geo.target_length, geo.patch_size, geo.stride, patch_resize=comp.patch_resize)
        spec = comp.feature_spec(full_spec)
        optimizer = build_optimizer(model.parameters(), tc.optim)  # reset at every phase
        scheduler = build_scheduler(optimizer, len(train_loader), tc.optim)
        flops_per_sample = ast_training_flops(model.config, 1)
        log.info("phase %d/%d: R=%d, %d epochs, %d tokens, %.3g training FLOPs per clip",
                 p + 1, len(phases), phase.R, phase.epochs, model.config.num_tokens, flops_per_sample)

        for phase_epoch in range(1, phase.epochs + 1):
            epoch += 1
            lr = optimizer.param_groups[0]["lr"]
            desc = f"{cfg.name} ep {epoch} (phase {p + 1}, R={phase.R})"
            t0 = time.perf_counter()
            train_loss, seen = train_one_epoch(model, train_loader, spec, comp, optimizer, scheduler, tc.loss, device, desc, progress)
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
            write_logs(out_dir, cfg, records, done=False)
            log.info("%s epoch %d (phase %d, R=%d): loss %.4f, %s %.4f, %.1fs, %.3g FLOPs",
                     cfg.name, epoch, p + 1, phase.R, train_loss, tc.metric, metrics[tc.metric], train_time, train_flops)

    atomic.save_safetensors(out_dir / "model.safetensors", model.state_dict(), metadata={"format": "pt"})
    atomic.write_json(out_dir / "model_config.json", model.config.to_dict())
    write_logs(out_dir, cfg, records, done=True)
    return RunResult(cfg.name, out_dir, records)
