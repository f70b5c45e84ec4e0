"""The training loop: one run = a schedule of phases, coarse to fine, read top to bottom.

:func:`train_run` sets the run up, restores where it stands (a fresh start, or a checkpoint left
by an interrupted run), then for each phase enters it (the model moves to the phase's input
geometry with its weights carried over; a fresh optimizer and LR schedule), and for each epoch
trains, evaluates and records (FLOPs and wall time of the epoch, the objective's metrics), then
finishes (final weights, weight averaging, logs). The records are what
:mod:`coarse2fine.report.savings` compares.

Batches are drawn from a per-epoch order that is a pure function of (seed, epoch)
(:func:`coarse2fine.training.sampling.epoch_batches`), so a resumed run replays exactly the batches an
uninterrupted run would; under torchrun each process takes its share of every global batch.
The loop knows models only through :class:`~coarse2fine.model.base.C2FModel` and objectives
only through :class:`~coarse2fine.objectives.Objective`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from coarse2fine import atomic
from coarse2fine.compression import Compression
from coarse2fine.config import RunConfig, save_config
from coarse2fine.data.datasets import ClipDataset, DataSplits
from coarse2fine.features import FeatureSpec, extract
from coarse2fine.model.base import C2FModel
from coarse2fine.model.transfer import initialise
from coarse2fine.objectives import Objective, build_objective
from coarse2fine.phases import Phase
from coarse2fine.training.augment import augment_features, mixup
from coarse2fine.training.averaging import WeightAverager
from coarse2fine.training.checkpoint import load_checkpoint, save_checkpoint
from coarse2fine.training.distributed import Dist, gather, setup
from coarse2fine.training.optim import build_optimizer, build_scheduler
from coarse2fine.training.progress import Progress, RngState
from coarse2fine.training.sampling import balanced_weights, epoch_batches, shard, stream_batches
from coarse2fine.training.switching import leave_phase
from coarse2fine.training.tensorboard import TensorBoardLog

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and phase."""


@dataclass
class RunResult:
    """What a finished run leaves behind: its per-epoch records and where its files are."""

    name: str
    out_dir: Path
    records: list[dict[str, Any]]


@dataclass
class Run:
    """What stays fixed for a whole run: config, data, phases, objective, processes."""

    cfg: RunConfig
    splits: DataSplits
    out_dir: Path
    d: Dist
    phases: list[Phase]
    objective: Objective
    show_progress: bool
    val_loader: DataLoader
    sample_weights: torch.Tensor | None
    report: dict[str, Any]
    tensorboard: TensorBoardLog | None = None

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    @property
    def steps_per_epoch(self) -> int:
        tc = self.cfg.train
        return tc.epoch_steps or math.ceil(len(self.splits.train) / tc.batch_size)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The global batches of ``epoch``: one shuffled pass, or ``train.epoch_steps`` steps of an
        endless stream of passes; weighted draws with balanced sampling."""
        tc, n = self.cfg.train, len(self.splits.train)
        if tc.epoch_steps and self.sample_weights is None:
            return stream_batches(n, tc.batch_size, tc.seed, epoch, tc.epoch_steps)
        draws = tc.epoch_steps * tc.batch_size if tc.epoch_steps else None
        return epoch_batches(n, tc.batch_size, tc.seed, epoch, self.sample_weights, draws)

    @property
    def micro_batch(self) -> int:
        return self.cfg.train.batch_size // (self.d.world * self.cfg.train.grad_accum)

    def compression(self, p: int) -> Compression:
        c = self.cfg.c2f
        return Compression(c.method, self.phases[p].R, c.patch_resize, c.scale_window)

    def geometry(self, p: int):
        f = self.cfg.features
        return self.compression(p).input_geometry(f.target_length, f.num_mel_bins)

    def log_columns(self) -> list[str]:
        metrics = [m for m in self.objective.metrics if m != "val_loss"]
        return ["epoch", "phase", "R", "phase_epoch", "tokens", "lr", "train_loss", "val_loss", *metrics,
                "train_flops", "cum_flops", "train_time", "cum_time", "eval_time"]


@dataclass
class State:
    """What training changes: the model, the weight averager, the generators and the progress.
    ``phase_restore``: optimizer and LR-schedule state of a checkpoint written mid-phase, taken
    by the phase it belongs to when the loop enters it."""

    model: C2FModel
    averager: WeightAverager | None
    rng: RngState
    progress: Progress
    phase_restore: dict[str, Any] | None = None


@dataclass
class PhaseRun:
    """One phase being trained: its compression, features, optimizer and cost per clip."""

    index: int
    phase: Phase
    comp: Compression
    spec: FeatureSpec
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    flops_per_clip: int
    batches: list[list[int]] = field(default_factory=list)


def train_run(cfg: RunConfig, splits: DataSplits, out_dir: str | Path, progress: bool = True, resume: bool = False) -> RunResult:
    """Train ``cfg`` on ``splits`` through all phases of its schedule; logs go to ``out_dir``.

    With ``resume=True`` a checkpoint left in ``out_dir`` by an interrupted run with the same
    config is continued from the step it was written at.
    """
    run = setup_run(cfg, splits, Path(out_dir), progress)
    state = restore(run, resume)
    for p in range(state.progress.phase, len(run.phases)):
        ph = enter_phase(run, state, p)
        while state.progress.phase == p:
            train_epoch(run, ph, state)
            end_epoch(run, ph, state)
    return finish(run, state, ph)


# ----------------------------------------------------------------------------- set up

def setup_run(cfg: RunConfig, splits: DataSplits, out_dir: Path, show_progress: bool) -> Run:
    """Check the config against the data and the processes, and build what the run keeps fixed."""
    cfg.check()
    tc = cfg.train
    d = setup(tc.device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if tc.amp != "none" and d.device.type != "cuda":
        raise ValueError(f"train.amp={tc.amp} needs a CUDA device (got {d.device}); use amp: none on CPU")
    if tc.batch_size % (d.world * tc.grad_accum):
        raise ValueError(f"train.batch_size {tc.batch_size} must be a multiple of processes ({d.world}) x grad_accum ({tc.grad_accum})")
    phases = cfg.phases()
    for p in range(len(phases)):  # every phase's geometry, with the real number of classes, before anything trains
        cfg.phase(p, splits.train.num_classes)
    val_share = [i for i in range(len(splits.val)) if i % d.world == d.rank]
    val_loader = DataLoader(Subset(splits.val, val_share), batch_size=max(tc.batch_size, 64), **_loader_args(cfg, d))
    report = {
        "classes": splits.train.class_names,
        "display_names": splits.display_names,
        "skipped": [{"path": str(p.path), "problem": p.problem} for p in splits.skipped],
        "inputs": splits.train.serves,
    }
    run = Run(cfg, splits, out_dir, d, phases, build_objective(tc.objective, cfg), show_progress and d.main,
              val_loader, balanced_weights(splits.train.targets) if cfg.augment.balanced_sampling else None, report)
    if d.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
        if tc.tensorboard:
            run.tensorboard = TensorBoardLog(out_dir, run.objective.metrics)
        atomic.write_json(out_dir / "labels.json", {"classes": report["classes"], "display_names": report["display_names"]})
    log.info("run %s: %s %s, schedule %s, method %s, phases %s, device %s, %d process(es)", cfg.name, cfg.model.arch,
             cfg.model.preset, cfg.c2f.schedule, cfg.c2f.method, [(p.R, p.epochs) for p in phases], d.device, d.world)
    return run


def _loader_args(cfg: RunConfig, d: Dist) -> dict[str, Any]:
    """DataLoader settings; an explicit generator keeps loaders off torch's global RNG, which only
    the model's own randomness (dropout, stochastic depth) may draw from."""
    workers = cfg.data.num_workers
    return dict(num_workers=0 if workers == "auto" else workers, pin_memory=d.device.type == "cuda", generator=torch.Generator())


def restore(run: Run, resume: bool) -> State:
    """The state to start from: a fresh model (or ``model.init_from``), or, with ``resume`` and a
    checkpoint of this config in the run folder, everything the checkpoint holds."""
    cfg, d = run.cfg, run.d
    ckpt = load_checkpoint(run.checkpoint_path) if resume and run.checkpoint_path.exists() else None
    if ckpt is not None and ckpt["config"] != cfg.to_dict():
        raise ValueError(f"{run.checkpoint_path} was written by a run with another config; use another --out or delete it")
    progress = Progress()
    if ckpt is not None:
        progress.load_state_dict(ckpt["progress"])
    torch.manual_seed(cfg.train.seed)
    model = cfg.phase(progress.model_phase, run.splits.train.num_classes).build_model()
    model = model.to(d.device)
    if d.world > 1 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        if d.device.type == "cuda":  # batch statistics over the global batch, as HTS-AT trains
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            log.warning("BatchNorm statistics are per process on %s (SyncBatchNorm needs GPUs)", d.device)
    rng = RngState(torch.Generator(device=d.device).manual_seed(cfg.train.seed + 1 + d.rank), d.device)
    ac = cfg.augment
    averager = WeightAverager(ac.wa_start, ac.wa_end or None, device="cpu") if ac.wa_start > 0 else None
    if ckpt is None:
        if cfg.model.init_from:
            initialise(model, cfg.model.init_from)
        return State(model, averager, rng, progress)
    model.load_state_dict(ckpt["model"])
    rng.load_state_dict(ckpt["rng"])
    if averager is not None and ckpt["averager"] is not None:
        averager.load_state_dict(ckpt["averager"])
    log.info("resuming %s at phase %d, epoch %d, step %d", run.out_dir, progress.phase + 1, progress.epoch, progress.step)
    phase_state = None if progress.fresh_phase else {"optimizer": ckpt["optimizer"], "scheduler": ckpt["scheduler"]}
    return State(model, averager, rng, progress, phase_state)


# ----------------------------------------------------------------------------- phases and epochs

def enter_phase(run: Run, state: State, p: int) -> PhaseRun:
    """Move the model to phase ``p``'s geometry (weights carried over), serve its features, and
    build a fresh optimizer and LR schedule (or those of a checkpoint written inside this phase)."""
    cfg, d, model = run.cfg, run.d, state.model
    comp = run.compression(p)
    model.set_geometry(run.geometry(p))
    spec = comp.feature_spec(cfg.features.spec())
    for ds in (run.splits.train, run.splits.val):
        ds.set_phase(spec, comp)
    net = DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None) if d.world > 1 else model
    optimizer = build_optimizer(model.parameters(), cfg.train.optim)
    scheduler = build_scheduler(optimizer, run.steps_per_epoch, cfg.train.optim)
    if state.phase_restore is not None:
        optimizer.load_state_dict(state.phase_restore["optimizer"])
        scheduler.load_state_dict(state.phase_restore["scheduler"])
        state.phase_restore = None
    state.progress.model_phase, state.progress.fresh_phase = p, False
    ph = PhaseRun(p, run.phases[p], comp, spec, net, optimizer, scheduler,
                  torch.amp.GradScaler("cuda", enabled=cfg.train.amp == "fp16"),
                  run.objective.training_flops(model, 1))
    warm_up(run, ph, state)
    log.info("phase %d/%d: R=%d, %d epochs, %d tokens, %.3g training FLOPs per clip",
             p + 1, len(run.phases), ph.phase.R, ph.phase.epochs, model.num_tokens, ph.flops_per_clip)
    return ph


def featurize(x: torch.Tensor, ds: ClipDataset, spec: FeatureSpec, comp: Compression) -> torch.Tensor:
    """Model input [B, frames, mel bins] for one phase: features computed here, batched, on the
    training device, from waveforms (or taken from a source that serves them), then compressed
    (unless the source serves compressed features already)."""
    if ds.serves == "model_input":
        return x
    return comp.transform(x if ds.serves == "features" else extract(x, spec))


def warm_up(run: Run, ph: PhaseRun, state: State) -> None:
    """One untimed forward + backward on a real batch, in eval mode, with every state untouched
    (weights, normalisation statistics, optimizer, generators), so one-time costs (thread pools,
    kernel selection, FFT plans) stay out of the measured epoch time."""
    model, dev = state.model, run.d.device
    x, y = next(iter(run.val_loader))
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        feats = featurize(x.to(dev), run.splits.val, ph.spec, ph.comp)
        run.objective.training_loss(model, feats, y.to(dev), torch.Generator(device=dev).manual_seed(0)).backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)


def train_epoch(run: Run, ph: PhaseRun, state: State) -> None:
    """Train the rest of the current epoch (all of it, unless resumed mid-epoch), checkpointing
    every ``train.checkpoint_every`` steps; the epoch's sums accumulate in ``state.progress``."""
    pr, tc = state.progress, run.cfg.train
    if pr.step == 0:
        pr.start_epoch(ph.optimizer.param_groups[0]["lr"])
    ph.batches = run.epoch_batches(pr.epoch)
    mine = [shard(b, run.d.world, run.d.rank) for b in ph.batches]
    loader = DataLoader(run.splits.train, batch_sampler=mine[pr.step:], **_loader_args(run.cfg, run.d))
    bar = tqdm(loader, desc=f"{run.cfg.name} ep {pr.epoch} (phase {ph.index + 1}, R={ph.phase.R})", leave=False,
               disable=not run.show_progress, dynamic_ncols=True, initial=pr.step, total=len(mine))
    ph.net.train()
    t0 = time.perf_counter()
    for x, y in bar:
        loss = train_step(run, ph, state, x, y)
        pr.loss_sum += loss * len(ph.batches[pr.step])
        pr.seen += len(ph.batches[pr.step])
        pr.step += 1
        bar.set_postfix(loss=f"{loss:.4f}")
        if tc.checkpoint_every and pr.step % tc.checkpoint_every == 0 and pr.step < len(mine):
            pr.epoch_time += time.perf_counter() - t0
            save(run, ph, state)
            t0 = time.perf_counter()
    if run.d.device.type == "cuda":
        torch.cuda.synchronize(run.d.device)
    pr.epoch_time += time.perf_counter() - t0


def train_step(run: Run, ph: PhaseRun, state: State, x: torch.Tensor, y: torch.Tensor) -> float:
    """One optimizer step on a global batch's share: mixup, then features, augmentation, forward
    and backward per micro-batch (gradient accumulation), then the update. Returns the loss;
    a non-finite loss stops the run before the update."""
    cfg, d, gen = run.cfg, run.d, state.rng.aug
    dev, amp_dtype = d.device, AMP_DTYPES[cfg.train.amp]
    x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
    if cfg.augment.mixup > 0:
        x, y = mixup(x, y, cfg.augment.mixup, cfg.augment.mixup_alpha, gen, cfg.augment.mixup_targets)
    chunks = list(zip(x.split(run.micro_batch), y.split(run.micro_batch)))
    step_loss = 0.0
    for i, (xc, yc) in enumerate(chunks):
        sync = contextlib.nullcontext() if i == len(chunks) - 1 or d.world == 1 else ph.net.no_sync()
        with sync, torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            feats = augment_features(featurize(xc, run.splits.train, ph.spec, ph.comp), cfg.augment, ph.comp.time_factor, gen)
            loss = run.objective.training_loss(ph.net, feats, yc, gen) * len(xc) / len(x)
            ph.scaler.scale(loss).backward()
        step_loss += loss.item()
    if not math.isfinite(step_loss):
        stop_non_finite(run, ph, state, step_loss)
    if cfg.train.optim.clip_grad_norm > 0:
        ph.scaler.unscale_(ph.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.train.optim.clip_grad_norm)
    ph.scaler.step(ph.optimizer)
    ph.scaler.update()
    ph.optimizer.zero_grad(set_to_none=True)
    ph.scheduler.step()
    return step_loss


def stop_non_finite(run: Run, ph: PhaseRun, state: State, loss: float) -> None:
    """Record why the run stopped and raise :class:`NonFiniteLossError`; the last checkpoint stays."""
    pr = state.progress
    where = f"step {pr.step + 1} of epoch {pr.epoch} (phase {ph.index + 1}, R={ph.phase.R})"
    if run.d.main:
        write_logs(run, pr.records, done=False, extra={"stopped": f"non-finite loss at epoch {pr.epoch}, step {pr.step + 1}"})
    kept = f"last good checkpoint: {run.checkpoint_path}" if run.checkpoint_path.exists() else "no checkpoint written yet"
    raise NonFiniteLossError(f"{run.cfg.name}: loss is {loss} at {where}; stopping. {kept}")


def val_batches(run: Run, ph: PhaseRun) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The validation set as (model input, targets) batches at this phase's resolution."""
    for x, y in run.val_loader:
        yield featurize(x.to(run.d.device), run.splits.val, ph.spec, ph.comp), y.to(run.d.device)


def end_epoch(run: Run, ph: PhaseRun, state: State) -> None:
    """Evaluate, record the epoch (metrics, FLOPs, time), feed the weight averager, write the logs
    and a checkpoint at the start of the next epoch, and move the progress on."""
    pr, model = state.progress, state.model
    t1 = time.perf_counter()
    model.eval()
    metrics = run.objective.evaluate(model, val_batches(run, ph), lambda obj: gather(obj, run.d))
    eval_time = time.perf_counter() - t1
    train_flops = ph.flops_per_clip * pr.seen
    pr.records.append({
        "epoch": pr.epoch, "phase": ph.index, "R": ph.phase.R, "phase_epoch": pr.phase_epoch,
        "tokens": model.num_tokens, "lr": pr.lr, "train_loss": pr.loss_sum / max(1, pr.seen),
        "train_tokens": model.train_tokens, "clips": pr.seen, "steps": pr.step,
        **metrics, "train_flops": train_flops, "cum_flops": pr.cum_flops + train_flops,
        "train_time": pr.epoch_time, "cum_time": pr.cum_time + pr.epoch_time, "eval_time": eval_time,
    })
    if state.averager is not None and ph.index == len(run.phases) - 1:
        state.averager.update(model.state_dict(), epoch=pr.phase_epoch)
    metric = run.cfg.train.metric
    log.info("%s epoch %d (phase %d, R=%d): loss %.4f, %s %.4f, %.1fs, %.3g FLOPs", run.cfg.name, pr.epoch, ph.index + 1,
             ph.phase.R, pr.records[-1]["train_loss"], metric, metrics[metric], pr.epoch_time, train_flops)
    reason = leave_phase(run.cfg, [p.epochs for p in run.phases], pr.records, run.objective.metrics[metric])
    if reason is not None and (ph.index < len(run.phases) - 1 or not reason.startswith("epochs")):
        pr.records[-1]["switch"] = reason
        log.info("%s leaves phase %d (R=%d) after epoch %d: %s", run.cfg.name, ph.index + 1, ph.phase.R, pr.epoch, reason)
    if run.tensorboard is not None:
        run.tensorboard.epoch(pr.records[-1])
    pr.advance(reason is not None)
    if run.d.main:
        write_logs(run, pr.records, done=False)
    if pr.phase < len(run.phases):
        save(run, ph, state)


def save(run: Run, ph: PhaseRun, state: State) -> None:
    """Checkpoint (main process): every section through its ``state_dict``. At a phase boundary
    the optimizer and schedule are left out: the next phase builds them fresh."""
    if not run.d.main:
        return
    fresh = state.progress.fresh_phase
    save_checkpoint(run.checkpoint_path, {
        "config": run.cfg.to_dict(),
        "progress": state.progress.state_dict(),
        "model": state.model.state_dict(),
        "optimizer": None if fresh else ph.optimizer.state_dict(),
        "scheduler": None if fresh else ph.scheduler.state_dict(),
        "rng": state.rng.state_dict(),
        "averager": state.averager.state_dict() if state.averager is not None and state.averager.count else None,
    })


# ----------------------------------------------------------------------------- finish

def finish(run: Run, state: State, ph: PhaseRun) -> RunResult:
    """Write the final weights and config, evaluate the weight-averaged model, write the final
    logs and remove the checkpoint (the final files replace it)."""
    cfg, d, model = run.cfg, run.d, state.model
    if d.main:
        atomic.save_safetensors(run.out_dir / "model.safetensors", model.state_dict(), metadata={"format": "pt"})
        atomic.write_json(run.out_dir / "model_config.json", model.config_dict())
    averager, report = state.averager, dict(run.report)
    if averager is not None and averager.count:
        model.load_state_dict(averager.average())
        model.eval()
        last = ph.phase.epochs
        report["weight_averaged"] = {"epochs": [averager.start, min(averager.end or last, last)],
                                     **run.objective.evaluate(model, val_batches(run, ph), lambda obj: gather(obj, d))}
        if d.main:
            atomic.save_safetensors(run.out_dir / "model_wa.safetensors", model.state_dict(), metadata={"format": "pt"})
        log.info("weight-averaged model (%d checkpoints): %s %.4f", averager.count, cfg.train.metric,
                 report["weight_averaged"][cfg.train.metric])
    failures = [str(p) for ds in (run.splits.train, run.splits.val) for p in ds.failures]
    if failures:
        report["load_failures"] = failures
    if d.main:
        write_logs(run, state.progress.records, done=True, extra=report)
        run.checkpoint_path.unlink(missing_ok=True)
    if run.tensorboard is not None:
        run.tensorboard.close()
    return RunResult(cfg.name, run.out_dir, state.progress.records)


def write_logs(run: Run, records: list[dict[str, Any]], done: bool, extra: dict[str, Any] | None = None) -> None:
    """Per-epoch log as JSON (with the config, each metric's direction and the report) and CSV,
    written atomically."""
    directions = {m: "max" if up else "min" for m, up in run.objective.metrics.items()}
    switches = [{"epoch": r["epoch"], "phase": r["phase"] + 1, "R": r["R"], "reason": r["switch"]} for r in records if "switch" in r]
    atomic.write_json(run.out_dir / "log.json", {
        "name": run.cfg.name, "config": run.cfg.to_dict(), "done": done, "metrics": directions,
        "switches": switches, "records": records, **run.report, **(extra or {}),
    })
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=run.log_columns(), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    atomic.write_text(run.out_dir / "log.csv", buf.getvalue())
