"""The training loop: one run = a schedule of phases, coarse to fine, read top to bottom.

For each phase: set the model's geometry (weights transferred from the previous phase), build a
fresh optimizer and LR schedule, then per epoch train, evaluate, count FLOPs and wall time, and
append a record to the run's log. The records are what :mod:`coarse2fine.savings` compares.

Batches are drawn from a per-epoch order that is a pure function of (seed, epoch), so a run
resumed from a checkpoint (``resume=True``) replays exactly the batches an uninterrupted run
would; under torchrun each process takes its share of every global batch.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from coarse2fine import atomic
from coarse2fine.augment import AugmentConfig, augment_features, mixup
from coarse2fine.averaging import WeightAverager
from coarse2fine.checkpoint import load_checkpoint, save_checkpoint
from coarse2fine.compression import Compression
from coarse2fine.config import RunConfig, save_config
from coarse2fine.data.datasets import DataSplits
from coarse2fine.distributed import Dist, gather, setup
from coarse2fine.features import FeatureSpec, extract
from coarse2fine.metrics import evaluate
from coarse2fine.model import AST, ast_config, ast_training_flops
from coarse2fine.optim import build_optimizer, build_scheduler
from coarse2fine.phases import build_phases
from coarse2fine.sampling import balanced_weights

log = logging.getLogger(__name__)

LOG_COLUMNS = (
    "epoch", "phase", "R", "phase_epoch", "tokens", "lr", "train_loss", "val_loss",
    "acc", "mAP", "mAUC", "d_prime", "train_flops", "cum_flops", "train_time", "cum_time", "eval_time",
)
CHECKPOINT = "checkpoint.safetensors"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and phase."""


@dataclass
class RunResult:
    """What a finished run leaves behind: its per-epoch records and where its files are."""

    name: str
    out_dir: Path
    records: list[dict[str, Any]]


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


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, weights: torch.Tensor | None = None) -> list[list[int]]:
    """The global batches of ``epoch``: a shuffled order (or a weighted draw with replacement for
    balanced sampling) that depends only on (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.multinomial(weights, n, replacement=True, generator=g) if weights is not None else torch.randperm(n, generator=g)
    order = order.tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def shard(batch: list[int], parts: int, index: int) -> list[int]:
    """Contiguous share ``index`` of ``parts`` of a batch (sizes differ by at most one)."""
    bounds = np.linspace(0, len(batch), parts + 1).round().astype(int)
    return batch[bounds[index] : bounds[index + 1]]


def warm_up(model, loader, spec, comp, loss_kind, device) -> None:
    """One untimed forward + backward on a real batch (weights, optimizer and RNG untouched), so
    one-time costs (thread pools, kernel selection, FFT plans) stay out of the measured epoch time."""
    x, y = next(iter(loader))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        loss = compute_loss(model(make_features(x.to(device), spec, comp)), y.to(device), loss_kind)
        loss.backward()
    model.zero_grad(set_to_none=True)


@torch.no_grad()
def evaluate_model(model, loader, spec, comp, loss_kind, d: Dist) -> dict[str, float]:
    """Validation loss and metrics (acc, mAP, mAUC, d-prime) at the current phase's resolution;
    under torchrun each process scores its share and the scores are gathered."""
    model.eval()
    scores, targets, loss_sum = [], [], 0.0
    for x, y in loader:
        x, y = x.to(d.device), y.to(d.device)
        logits = model(make_features(x, spec, comp)).float()
        loss_sum += compute_loss(logits, y, loss_kind).item() * len(x)
        probs = logits.softmax(-1) if loss_kind == "ce" else logits.sigmoid()
        scores.append(probs.cpu().numpy())
        targets.append(y.cpu().numpy())
    parts = gather((scores, targets, loss_sum), d)
    all_scores = np.concatenate([s for p in parts for s in p[0]])
    all_targets = np.concatenate([t for p in parts for t in p[1]])
    return {"val_loss": sum(p[2] for p in parts) / max(1, len(all_scores)), **evaluate(all_scores, all_targets)}


def write_logs(out_dir: Path, cfg: RunConfig, records: list[dict[str, Any]], done: bool, extra: dict[str, Any] | None = None) -> None:
    """Per-epoch log as JSON (with the config and ``extra`` report fields) and CSV, written atomically."""
    atomic.write_json(out_dir / "log.json", {"name": cfg.name, "config": cfg.to_dict(), "done": done, "records": records, **(extra or {})})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    atomic.write_text(out_dir / "log.csv", buf.getvalue())


def _rng_state(aug_gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    rng = {"torch": torch.get_rng_state(), "aug": aug_gen.get_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def _set_rng_state(rng: dict[str, torch.Tensor], aug_gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    aug_gen.set_state(rng["aug"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)


def train_run(cfg: RunConfig, splits: DataSplits, out_dir: str | Path, progress: bool = True, resume: bool = False) -> RunResult:
    """Train ``cfg`` on ``splits`` through all phases of its schedule; logs go to ``out_dir``.

    With ``resume=True`` a checkpoint left in ``out_dir`` by an interrupted run with the same
    config is continued from the step it was written at.
    """
    out_dir = Path(out_dir)
    tc, ac = cfg.train, cfg.augment
    d = setup(tc.device)
    if d.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    device = d.device
    progress = progress and d.main
    if tc.amp != "none" and device.type != "cuda":
        raise ValueError(f"train.amp={tc.amp} needs a CUDA device (got {device}); use amp: none on CPU")
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[tc.amp]
    micro = tc.batch_size // (d.world * tc.grad_accum)
    if micro < 1 or tc.batch_size % (d.world * tc.grad_accum):
        raise ValueError(f"train.batch_size {tc.batch_size} must be a multiple of processes ({d.world}) x grad_accum ({tc.grad_accum})")

    phases = build_phases(cfg.c2f.schedule, tc.epochs, cfg.c2f.phase_epochs, cfg.c2f.initial_fraction)
    full_spec = cfg.features.spec()
    full = (cfg.features.target_length, tuple(cfg.model.patch_size), tuple(cfg.model.stride))
    method = dict(method=cfg.c2f.method, patch_resize=cfg.c2f.patch_resize, scale_window=cfg.c2f.scale_window)
    log.info("run %s: schedule %s, method %s, phases %s, device %s, %d process(es)", cfg.name, cfg.c2f.schedule,
             cfg.c2f.method, [(p.R, p.epochs) for p in phases], device, d.world)

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

    # --- resume point: phase, epoch within phase, batches already done in that epoch ---
    ckpt_path = out_dir / CHECKPOINT
    ckpt = load_checkpoint(ckpt_path) if resume and ckpt_path.exists() else None
    if ckpt is not None and ckpt.state["config"] != cfg.to_dict():
        raise ValueError(f"{ckpt_path} was written by a run with another config; use another --out or delete it")
    start = ckpt.state if ckpt is not None else {"phase": 0, "phase_epoch": 1, "step": 0}
    model = AST(configs[start.get("model_phase", start["phase"])]).to(device)
    if ckpt is not None:
        model.load_state_dict(ckpt.model)
        log.info("resuming %s at phase %d, epoch %d, step %d", out_dir, start["phase"] + 1, start["epoch"], start["step"])
    if cfg.model.init_from and ckpt is None:
        _initialise(model, cfg.model.init_from)

    aug = AugmentConfig(freqm=ac.freqm, timem=ac.timem, mixup=ac.mixup, mixup_alpha=ac.mixup_alpha, noise=ac.noise)
    aug_gen = torch.Generator(device=device).manual_seed(tc.seed + 1 + d.rank)
    weights = balanced_weights(splits.train.targets) if ac.balanced_sampling else None
    workers = dict(num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda")
    val_share = [i for i in range(len(splits.val)) if i % d.world == d.rank]
    val_loader = DataLoader(torch.utils.data.Subset(splits.val, val_share), batch_size=max(tc.batch_size, 64), **workers)
    report = {
        "classes": splits.train.class_names,
        "display_names": splits.display_names,
        "skipped": [{"path": str(p.path), "problem": p.problem} for p in splits.skipped],
    }
    if d.main:
        atomic.write_json(out_dir / "labels.json", {"classes": report["classes"], "display_names": report["display_names"]})
    averager = WeightAverager(ac.wa_start, ac.wa_end, device="cpu") if ac.wa_start > 0 else None
    if averager is not None and ckpt is not None and "wa_info" in ckpt.state:
        averager.restore({k[3:]: v for k, v in ckpt.rng.items() if k.startswith("wa.")}, ckpt.state["wa_info"], model.state_dict())

    records: list[dict[str, Any]] = ckpt.state["records"] if ckpt else []
    cum_flops = records[-1]["cum_flops"] if records else 0
    cum_time = records[-1]["cum_time"] if records else 0.0
    epoch = sum(ph.epochs for ph in phases[: start["phase"]]) + start["phase_epoch"] - 1
    steps_per_epoch = math.ceil(len(splits.train) / tc.batch_size)

    for p, phase in enumerate(phases):
        if p < start["phase"]:
            continue
        comp = Compression(R=phase.R, **method)
        geo = comp.geometry(*full)
        if model.config != configs[p]:  # carry the weights over: pos-embed interpolated, patch embedding resized
            model.set_geometry(geo.target_length, geo.patch_size, geo.stride, patch_resize=comp.patch_resize)
        spec = comp.feature_spec(full_spec)
        for ds in (splits.train, splits.val):
            if hasattr(ds, "set_spec"):  # cached features: serve this phase's frame shift
                ds.set_spec(spec)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if d.world > 1 else model
        optimizer = build_optimizer(model.parameters(), tc.optim)  # reset at every phase
        scheduler = build_scheduler(optimizer, steps_per_epoch, tc.optim)
        scaler = torch.amp.GradScaler("cuda", enabled=tc.amp == "fp16")
        if ckpt is not None and p == start["phase"] and not start.get("fresh_phase"):
            optimizer.load_state_dict(ckpt.optimizer)
            scheduler.load_state_dict({**scheduler.state_dict(), **ckpt.scheduler})
        flops_per_sample = ast_training_flops(model.config, 1)
        warm_up(model, val_loader, spec, comp, tc.loss, device)
        log.info("phase %d/%d: R=%d, %d epochs, %d tokens, %.3g training FLOPs per clip",
                 p + 1, len(phases), phase.R, phase.epochs, model.config.num_tokens, flops_per_sample)

        for phase_epoch in range(1, phase.epochs + 1):
            resuming = ckpt is not None and (p, phase_epoch) == (start["phase"], start["phase_epoch"])
            if ckpt is not None and (p, phase_epoch) < (start["phase"], start["phase_epoch"]):
                continue
            epoch += 1
            first_step = start["step"] if resuming else 0
            partial = ckpt.state["partial"] if resuming else {"time": 0.0, "loss_sum": 0.0, "seen": 0, "lr": optimizer.param_groups[0]["lr"]}
            if resuming:
                _set_rng_state(ckpt.rng, aug_gen, device)
            batches = epoch_batches(len(splits.train), tc.batch_size, tc.seed, epoch, weights)
            mine = [shard(b, d.world, d.rank) for b in batches]
            loader = DataLoader(splits.train, batch_sampler=mine[first_step:], **workers)
            net.train()
            bar = tqdm(loader, desc=f"{cfg.name} ep {epoch} (phase {p + 1}, R={phase.R})", leave=False,
                       disable=not progress, dynamic_ncols=True, initial=first_step, total=len(mine))
            t0 = time.perf_counter()
            for step, (x, y) in enumerate(bar, start=first_step):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if aug.mixup > 0:
                    x, y = mixup(x, y, aug.mixup, aug.mixup_alpha, aug_gen)
                chunks = list(zip(x.split(micro), y.split(micro)))
                step_loss = 0.0
                for i, (xc, yc) in enumerate(chunks):  # gradient accumulation over micro-batches
                    sync = contextlib.nullcontext() if i == len(chunks) - 1 or d.world == 1 else net.no_sync()
                    with sync, torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                        feats = augment_features(make_features(xc, spec, comp), aug, comp.time_factor, aug_gen)
                        loss = compute_loss(net(feats).float(), yc, tc.loss) * len(xc) / len(x)
                        scaler.scale(loss).backward()
                    step_loss += loss.item()
                if not math.isfinite(step_loss):
                    if d.main:
                        write_logs(out_dir, cfg, records, done=False, extra={**report, "stopped": f"non-finite loss at epoch {epoch}, step {step + 1}"})
                    done_note = f"last good checkpoint: {ckpt_path}" if ckpt_path.exists() else "no checkpoint written yet"
                    raise NonFiniteLossError(
                        f"{cfg.name}: loss is {step_loss} at step {step + 1} of epoch {epoch} "
                        f"(phase {p + 1}, R={phase.R}); stopping. {done_note}")
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                partial["loss_sum"] += step_loss * len(batches[step])
                partial["seen"] += len(batches[step])
                bar.set_postfix(loss=f"{step_loss:.4f}")
                if tc.checkpoint_every and (step + 1) % tc.checkpoint_every == 0 and step + 1 < len(mine):
                    partial["time"] += time.perf_counter() - t0
                    _save(ckpt_path, d, model, optimizer, scheduler, aug_gen, averager, cfg, records,
                          dict(phase=p, model_phase=p, phase_epoch=phase_epoch, epoch=epoch, step=step + 1, partial=partial))
                    t0 = time.perf_counter()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_time = partial["time"] + time.perf_counter() - t0
            t1 = time.perf_counter()
            metrics = evaluate_model(model, val_loader, spec, comp, tc.loss, d)
            eval_time = time.perf_counter() - t1
            train_flops = flops_per_sample * partial["seen"]
            cum_flops += train_flops
            cum_time += train_time
            records.append({
                "epoch": epoch, "phase": p, "R": phase.R, "phase_epoch": phase_epoch,
                "tokens": model.config.num_tokens, "lr": partial["lr"], "train_loss": partial["loss_sum"] / max(1, partial["seen"]),
                **metrics, "train_flops": train_flops, "cum_flops": cum_flops,
                "train_time": train_time, "cum_time": cum_time, "eval_time": eval_time,
            })
            if averager is not None and p == len(phases) - 1:
                averager.update(model.state_dict(), epoch=phase_epoch)
            nxt = (p, phase_epoch + 1) if phase_epoch < phase.epochs else (p + 1, 1)
            if d.main:
                write_logs(out_dir, cfg, records, done=False, extra=report)
            if nxt[0] < len(phases):  # the checkpoint sits at the start of the next epoch
                _save(ckpt_path, d, model, optimizer, scheduler, aug_gen, averager, cfg, records,
                      dict(phase=nxt[0], model_phase=p, fresh_phase=nxt[0] != p, phase_epoch=nxt[1], epoch=epoch + 1,
                           step=0, partial={"time": 0.0, "loss_sum": 0.0, "seen": 0, "lr": optimizer.param_groups[0]["lr"]}))
            log.info("%s epoch %d (phase %d, R=%d): loss %.4f, %s %.4f, %.1fs, %.3g FLOPs", cfg.name, epoch, p + 1,
                     phase.R, records[-1]["train_loss"], tc.metric, metrics[tc.metric], train_time, train_flops)
        ckpt = None  # resumed: the phases after this one start as usual

    if d.main:
        atomic.save_safetensors(out_dir / "model.safetensors", model.state_dict(), metadata={"format": "pt"})
        atomic.write_json(out_dir / "model_config.json", model.config.to_dict())
    if averager is not None and averager.count:
        model.load_state_dict(averager.average())
        report["weight_averaged"] = {"epochs": [averager.start, min(averager.end or phase.epochs, phase.epochs)],
                                     **evaluate_model(model, val_loader, spec, comp, tc.loss, d)}
        if d.main:
            atomic.save_safetensors(out_dir / "model_wa.safetensors", model.state_dict(), metadata={"format": "pt"})
        log.info("weight-averaged model (%d checkpoints): %s %.4f", averager.count, tc.metric, report["weight_averaged"][tc.metric])
    failures = [str(p) for ds in (splits.train, splits.val) for p in getattr(ds, "failures", [])]
    if failures:
        report["load_failures"] = failures
    if d.main:
        write_logs(out_dir, cfg, records, done=True, extra=report)
        ckpt_path.unlink(missing_ok=True)  # finished: the final weights and logs replace it
    return RunResult(cfg.name, out_dir, records)


def _save(path, d: Dist, model, optimizer, scheduler, aug_gen, averager, cfg, records, where: dict[str, Any]) -> None:
    """Checkpoint the main process's state and where it stands (``where``). At a phase boundary
    (``fresh_phase``) the optimizer and schedule are rebuilt on resume, as in a run that goes on."""
    if not d.main:
        return
    rng = _rng_state(aug_gen, d.device)
    state = {**where, "records": records, "config": cfg.to_dict()}
    if averager is not None and averager.count:
        sums, info = averager.export()
        rng.update({f"wa.{k}": v for k, v in sums.items()})
        state["wa_info"] = info
    save_checkpoint(path, model, optimizer, scheduler, rng, state)


def _initialise(model: AST, source: str) -> None:
    """Start from pretrained weights: a Hugging Face AST folder, an original AST release
    checkpoint (``.pth``), or ImageNet ViT/DeiT weights (``imagenet:PATH``)."""
    from coarse2fine.model import hf, pretrained

    if source.startswith("imagenet:"):
        pretrained.init_from_imagenet(model, source[len("imagenet:"):])
        return
    path = Path(source)
    if path.is_dir():
        other, _ = hf.load_hf_checkpoint(path)
    else:
        other = pretrained.load_original_ast_checkpoint(path)
    if other.config.grid != model.config.grid or other.config.patch_size != model.config.patch_size:
        other.set_geometry(model.config.target_length, model.config.patch_size, model.config.stride)
    sd = {k: v for k, v in other.state_dict().items() if not k.startswith("head.fc")}  # classes differ
    missing, _ = model.load_state_dict(sd, strict=False)
    log.info("initialised from %s (new: %s)", source, ", ".join(missing) or "none")
