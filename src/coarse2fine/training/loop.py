"""The training loop: one run = a schedule of phases, coarse to fine, read top to bottom.

:func:`train_run` (through :func:`train_epochs`) sets the run up, restores where it stands (a
fresh start, a checkpoint left by an interrupted run, or a run that already finished), then for
each phase enters it (the model moves to the phase's input geometry with its weights carried
over; a fresh optimizer and LR schedule; one untimed warm-up step; after a phase change, with
``c2f.eval_on_entry``, one evaluation of the carried-over model before it trains), and for each
epoch trains, evaluates and records (an :class:`~coarse2fine.training.records.EpochRecord`:
metrics, FLOPs, wall time, data wait and per-step time), then finishes (final weights, weight
averaging, logs). :func:`train_epochs` pauses after each epoch but the last, its checkpoint
written, so that several runs can take turns (:mod:`coarse2fine.training.interleave`).

Batches are drawn from a per-epoch order that is a pure function of (seed, epoch)
(:func:`coarse2fine.training.sampling.epoch_batches`), so a resumed run replays exactly the
batches an uninterrupted run would; under torchrun each process takes its share of every global
batch. A step is :class:`~coarse2fine.training.step.TrainStep`, the same code ``bench`` times.
The loop knows models only through :class:`~coarse2fine.model.base.C2FModel` and objectives only
through :class:`~coarse2fine.objectives.Objective`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Iterator, Mapping

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from coarse2fine import atomic
from coarse2fine.compression import phase_input
from coarse2fine.config import PhaseSetup, RunConfig, config_yaml
from coarse2fine.data.datasets import DataSplits
from coarse2fine.data.loading import iterate_batches, resolve_workers, workers_reason
from coarse2fine.data.sources import clip_lists
from coarse2fine.folder_lock import folder_lock
from coarse2fine.logs import claimed, quiet_loggers
from coarse2fine.model.base import C2FModel
from coarse2fine.model.phase_change import carry, step_flops
from coarse2fine.model.transfer import initialise
from coarse2fine.objectives import Objective, build_objective
from coarse2fine.objectives.metrics import metric_text
from coarse2fine.run_folders import BEST_WEIGHTS
from coarse2fine.runtime import machine_fields, peak_tflops
from coarse2fine.training.averaging import WeightAverager
from coarse2fine.training.checkpoint import load_checkpoint, save_checkpoint
from coarse2fine.training.clock import EpochClock, step_summary
from coarse2fine.training.distributed import Dist, barrier, gather, main_process, setup
from coarse2fine.training.folder import CHECKPOINT, FAILURE_FOLDER, check_same_data, claim_folder
from coarse2fine.training.interrupt import StopRequest, stop_on_signals
from coarse2fine.training.optim import long_warmups
from coarse2fine.training.progress import Progress, RngState
from coarse2fine.training.records import EpochRecord, PhaseRecord, best_of, phase_records
from coarse2fine.training.sampling import (
    batch_count,
    epoch_batches,
    micro_batch_sizes,
    shard,
    steps_per_epoch,
    stream_batches,
)
from coarse2fine.training.step import LossTally, NonFiniteLoss, TrainStep, build_step, compile_net
from coarse2fine.training.switching import agreed_leave_phase
from coarse2fine.training.tensorboard import TensorBoardLog

log = logging.getLogger(__name__)

class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and phase."""


@dataclass
class RunResult:
    """What a run leaves behind: its per-epoch records and per-phase records (``phases``, with
    what the carried-over model scored on entering each phase), where its files are, and what
    this call did (``status``: trained, resumed, or finished: the folder held this finished run
    already)."""

    name: str
    out_dir: Path
    records: list[EpochRecord]
    status: str = "trained"
    phases: list[PhaseRecord] = dataclasses.field(default_factory=list)


@dataclass
class Run:
    """What stays fixed for a whole run: config, data, phases, objective, processes."""

    cfg: RunConfig
    splits: DataSplits
    out_dir: Path
    d: Dist
    setups: list[PhaseSetup]
    objective: Objective
    show_progress: bool
    val_batches: list[list[int]]
    sample_weights: torch.Tensor | None
    report: dict[str, Any]
    workers: int
    peak_tflops: float | None
    tensorboard: TensorBoardLog | None = None
    stop: StopRequest = dataclasses.field(default_factory=StopRequest)  # what SIGINT / SIGTERM set
    turns: int | None = None  # runs taking turns of one epoch in this process (None: this one alone)
    label: str = ""  # what logs and messages call the run (its config's name, or its folder's in an experiment)

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    @property
    def data_signature(self) -> dict[str, Any]:
        """The data's signature (:meth:`DataSplits.signature`, taken once into the run's report and
        log): checked on resume and kept in each checkpoint."""
        return self.report["data"]

    def steps_per_epoch(self, p: int) -> int:
        """Optimizer steps of an epoch of phase ``p`` (fewer with ``c2f.coarse_batch: scale``)."""
        t = self.cfg.train
        return steps_per_epoch(len(self.splits.train), self.setups[p].batch_size, self.d.world, t.epoch_steps,
                               t.batch_size)

    def epoch_batches(self, epoch: int, p: int) -> list[list[int]]:
        """The global batches of ``epoch`` (in phase ``p``): one shuffled pass, or
        ``train.epoch_steps`` steps of an endless stream of passes; weighted draws with balanced
        sampling. Under torchrun a last batch of fewer clips than processes is left out (some
        process would get none of it)."""
        t, n, batch = self.cfg.train, len(self.splits.train), self.setups[p].batch_size
        if t.epoch_steps and self.sample_weights is None:
            return stream_batches(n, batch, t.seed, epoch, self.steps_per_epoch(p))
        draws = t.epoch_steps * t.batch_size if t.epoch_steps else None
        batches = epoch_batches(n, batch, t.seed, epoch, self.sample_weights, draws)
        return batches[:batch_count(draws or n, batch, self.d.world)]

    def log_columns(self) -> list[str]:
        metrics = [m for m in self.objective.metrics if m != "val_loss"]
        return ["epoch", "phase", "R", "phase_epoch", "tokens", "batch_size", "lr", "train_loss", "val_loss", *metrics,
                "train_flops", "cum_flops", "train_time", "cum_time", "data_time", "step_time", "step_median", "eval_time",
                "load_avg", "machine", "mfu", "turns"]


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
    resumed: bool = False


@dataclass
class PhaseRun:
    """One phase being trained: its setup, its training step and cost per clip."""

    index: int
    setup: PhaseSetup
    step: TrainStep
    flops_per_clip: int
    tally: LossTally
    batches: list[list[int]] = dataclasses.field(default_factory=list)


def train_run(cfg: RunConfig, splits: DataSplits | Callable[[], DataSplits], out_dir: str | Path, progress: bool = True,
              resume: bool = True, fresh: bool = False, label: str | None = None) -> RunResult:
    """Train ``cfg`` on ``splits`` through all phases of its schedule; logs go to ``out_dir``.

    A folder is never overwritten by accident: with ``resume`` a checkpoint left there by an
    interrupted run of this config is continued, and a finished run of this config is returned
    as it is; without ``resume`` a folder holding a run is refused. A folder holding a run of
    another config is refused either way, unless ``fresh``, which starts over. Configs that differ
    only in how the run is executed (:data:`~coarse2fine.config.files.RUNTIME_KEYS`: loading,
    device, logging) are the same run's (:mod:`coarse2fine.training.folder`). A folder another
    process is writing is refused at once (:func:`~coarse2fine.folder_lock.folder_lock`), and
    temporary files that a killed write left there are removed. ``splits`` may be a function
    that loads them: it is called only once the folder is claimed, so that a refused folder, or
    a finished run reused, reads no data. SIGINT or SIGTERM stops the run after the current step
    with a checkpoint there (:class:`~coarse2fine.training.interrupt.RunInterrupted`; see that
    module). ``label``: what the logs and messages call the run (default: its config's name).
    """
    return run_to_end(train_epochs(cfg, splits, out_dir, progress, resume, fresh, label=label))


def run_to_end(epochs: Generator[None, None, RunResult]) -> RunResult:
    """Drive :func:`train_epochs` to the end of its run; returns the run's result."""
    while True:
        try:
            next(epochs)
        except StopIteration as done:
            return done.value


def train_epochs(cfg: RunConfig, splits: DataSplits | Callable[[], DataSplits], out_dir: str | Path,
                 progress: bool = True, resume: bool = True, fresh: bool = False,
                 stop: StopRequest | None = None, turns: int | None = None,
                 label: str | None = None) -> Generator[None, None, RunResult]:
    """:func:`train_run` one epoch at a time: the run pauses (yields) after each epoch that is
    not its last, its checkpoint written, and returns its :class:`RunResult` at the end (see
    :mod:`coarse2fine.training.interleave`, which takes turns between runs this way). ``stop``:
    a stop request shared by several runs, whose signal handlers the caller installs (None: this
    run installs its own); ``turns``: how many runs take turns with this one included, recorded
    in each epoch's record (None: it trains alone); ``label``: what the logs and messages call the
    run (default: its config's name; an experiment's seeds say which seed)."""
    out_dir = Path(out_dir)
    lock = folder_lock(out_dir) if main_process() else contextlib.nullcontext()  # one writer per folder
    with lock:
        # the config decides, before the data is read; a finished run's clip lists are checked against the data's
        finished = claim_folder(cfg.to_dict(), out_dir, resume, fresh,
                                clip_lists=lambda: splits.clip_lists if isinstance(splits, DataSplits) else clip_lists(cfg))
        claimed(out_dir)  # a log file kept for this folder (coarse2fine train's train.log) may write now
        if finished is not None:
            log.info("%s: finished run of this config found in %s; nothing to train", label or cfg.name, out_dir)
            records, phases = finished
            return RunResult(cfg.name, out_dir, records, "finished", phases)
        if callable(splits):
            if cfg.model.init_from and not (out_dir / CHECKPOINT).exists():
                init_from_fits(cfg)  # weights that do not fit stop the run before its data is read
            splits = splits()  # before the signal handlers: Ctrl-C stops a long load at once
        with stop_on_signals() if stop is None else contextlib.nullcontext(stop) as stop:
            run = setup_run(cfg, splits, out_dir, progress, stop, turns, label or cfg.name)
            state = restore(run)
            for p in range(state.progress.phase, len(run.setups)):
                ph = enter_phase(run, state, p)
                while state.progress.phase == p:
                    train_epoch(run, ph, state)
                    end_epoch(run, ph, state)
                    if state.progress.phase < len(run.setups):
                        if run.stop.agreed(run.d):
                            interrupted(run, state)
                        yield  # the checkpoint of this epoch's end is written
            result = finish(run, state, ph)
            barrier(run.d)  # return together: a process that exits while another still writes can abort in gloo
            return result


# ----------------------------------------------------------------------------- set up

def init_from_fits(cfg: RunConfig) -> None:
    """Raise the error the run would stop on at its start when ``model.init_from`` does not fit
    the config's model (another size, other mel bins), before any data is read. The task's classes
    are not known yet: the head is matched to them when the run starts from the weights."""
    with quiet_loggers({"coarse2fine.model": logging.ERROR}):
        initialise(cfg.phase(0, 2).build_model(), cfg.model.init_from)


def setup_run(cfg: RunConfig, splits: DataSplits, out_dir: Path, show_progress: bool, stop: StopRequest,
              turns: int | None = None, label: str | None = None) -> Run:
    """Check the config against the data and the processes, and build what the run keeps fixed
    (``turns``, ``label``: see :func:`train_epochs`)."""
    t = cfg.train
    d = setup(t.device)
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.amp != "none" and d.device.type != "cuda":
        raise ValueError(f"train.amp={t.amp} needs a CUDA device (got {d.device}); use amp: none on CPU")
    setups = [cfg.phase(p, splits.train.num_classes) for p in range(len(cfg.phases()))]  # with the real classes
    for s in setups:
        if s.batch_size % (d.world * t.grad_accum):
            raise ValueError(f"train.batch_size {s.batch_size} (phase {s.index + 1}) must be a multiple of processes "
                             f"({d.world}) x grad_accum ({t.grad_accum})")
    val_share = [i for i in range(len(splits.val)) if i % d.world == d.rank]
    val_batch = max(t.batch_size, 64)
    report = {
        "classes": splits.train.class_names,
        "display_names": splits.display_names,
        "skipped": [{"path": str(p.path), "problem": p.problem} for p in splits.skipped],
        "inputs": [splits.train.serves_for(s.features, s.compression) for s in setups],  # per phase
        "device": str(d.device),
        "data": splits.signature(),  # what compare checks runs' data by (the clip lists: wherever the files lie)
    }
    for split, ds in (("train", splits.train), ("val", splits.val)):  # from every process, loader workers too
        ds.record_failures_in(out_dir / FAILURE_FOLDER / split)
        ds.check_phases([s.features for s in setups])  # a damaged shard of a later phase stops the run now
    run = Run(cfg, splits, out_dir, d, setups, build_objective(t.objective, cfg), show_progress and d.main,
              [val_share[i:i + val_batch] for i in range(0, len(val_share), val_batch)],
              splits.train.sampling_weights() if cfg.augment.balanced_sampling else None, report,
              resolve_workers(cfg.data.num_workers, splits.train, d.device), peak_tflops(d.device, t.amp, t.peak_tflops),
              stop=stop, turns=turns, label=label or cfg.name)
    if d.world > 1:
        every = f"{t.log_every} step" + ("s" if t.log_every != 1 else "")
        also = f", or train.checkpoint_every: {t.checkpoint_every}" if t.checkpoint_every else ""
        stop.when = f"at the next step where the {d.world} processes meet (every {every}: train.log_every{also})"
    if d.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out_dir / "config.yaml", config_yaml(cfg))
        if t.tensorboard:
            run.tensorboard = TensorBoardLog(out_dir, run.objective.metrics)
        atomic.write_json(out_dir / "labels.json", {"classes": report["classes"], "display_names": report["display_names"]})
    sampling = (", balanced sampling (augment.balanced_sampling: clips drawn by their labels' weights)"
                if cfg.augment.balanced_sampling else "")
    log.info("run %s: %s %s, schedule %s, method %s, phases %s%s, device %s, %d process(es), %d loader worker(s) (%s)",
             run.label, cfg.model.arch, cfg.model.preset, cfg.c2f.schedule, cfg.c2f.method,
             [(s.R, s.epochs) for s in setups], sampling, d.device, d.world, run.workers,
             workers_reason(cfg.data.num_workers, splits.train, d.device))
    warn_long_warmups(run)
    return run


def warn_long_warmups(run: Run) -> None:
    """Warn, before training, of every phase whose LR warm-up lasts more than half of it
    (:func:`~coarse2fine.training.optim.long_warmups`)."""
    for line in long_warmups(run.cfg, run.setups, len(run.splits.train), run.d.world):
        log.warning("%s, %s", run.label, line)


def restore(run: Run) -> State:
    """The state to start from: a fresh model (or ``model.init_from``), or everything a checkpoint
    of this config in the run folder holds."""
    cfg, d = run.cfg, run.d
    ckpt = load_checkpoint(run.checkpoint_path) if run.checkpoint_path.exists() else None
    progress = Progress()
    if ckpt is not None:
        check_same_data(ckpt.get("data"), run.data_signature, run.out_dir)
        progress.load_state_dict(ckpt["progress"])
    torch.manual_seed(cfg.train.seed)
    model = run.setups[progress.model_phase].build_model().to(d.device)
    if d.world > 1 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        if d.device.type == "cuda":  # batch statistics over the global batch, as HTS-AT trains
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            log.warning("BatchNorm statistics are per process on %s (SyncBatchNorm needs GPUs)", d.device)
    rng = RngState(torch.Generator(device=d.device).manual_seed(cfg.train.seed + 1 + d.rank), d.device)
    ac = cfg.augment
    averager = WeightAverager(ac.wa_start, ac.wa_end or None, device="cpu") if ac.wa_start > 0 else None
    run.report["flops_source"] = model.flops_source
    if ckpt is None:
        if cfg.model.init_from:
            classes = (run.report["classes"], run.report["display_names"])
            run.report["init_from"] = initialise(model, cfg.model.init_from, classes).to_dict()
        return State(model, averager, rng, progress)
    if ckpt.get("init_from"):
        run.report["init_from"] = ckpt["init_from"]
    model.load_state_dict(ckpt["model"])
    restore_rng(rng, ckpt["rng"], d)
    if averager is not None and ckpt["averager"] is not None:
        averager.load_state_dict(ckpt["averager"])
    log.info("resuming %s at phase %d, epoch %d, step %d", run.out_dir, progress.phase + 1, progress.epoch, progress.step)
    phase_state = None if progress.fresh_phase else {"optimizer": ckpt["optimizer"], "scheduler": ckpt["scheduler"]}
    return State(model, averager, rng, progress, phase_state, resumed=True)


def restore_rng(rng: RngState, saved: Any, d: Dist) -> None:
    """Give this process the random-number state it had when the checkpoint was written: its own
    entry of ``saved`` (one per rank; a single state in checkpoints written before there was one
    per rank, which held the main process's only). Resumed with another number of processes, the
    processes that have a saved state take it, the others keep the fresh one, and the main
    process warns that the run is no longer the one an uninterrupted run would give. Resumed on
    another kind of device (``train.device`` cpu / cuda / mps: their generators' states do not
    fit each other), the augmentation generator is seeded from the saved state instead, with a
    warning: the run goes on with new draws, not those of an uninterrupted run."""
    states = [saved] if isinstance(saved, Mapping) else list(saved)
    if d.rank < len(states):
        state = states[d.rank]
        aug = state["aug"]
        if aug.numel() != rng.aug.get_state().numel():  # written by a generator of another device type
            rng.aug.manual_seed(int.from_bytes(hashlib.sha256(aug.numpy().tobytes()).digest()[:8], "little") >> 1)
            state = {**state, "aug": rng.aug.get_state()}
            if d.main:
                log.warning("the checkpoint was written on another kind of device than %s: the augmentation draws "
                            "go on from a new seed, so the resume is not bit-exact", d.device)
        rng.load_state_dict(state)
    if len(states) != d.world and d.main:
        log.warning("the checkpoint holds the random-number state of %d process(es) and the run resumes with %d: "
                    "the resume is not bit-exact (the processes' random draws for augmentation and dropout are "
                    "not those of an uninterrupted run)", len(states), d.world)


# ----------------------------------------------------------------------------- phases and epochs

def enter_phase(run: Run, state: State, p: int) -> PhaseRun:
    """Move the model to phase ``p``'s geometry (weights carried over), serve its features, build
    its training step with a fresh optimizer and LR schedule (or those of a checkpoint written
    inside this phase), run one untimed warm-up step and, after a phase change, evaluate the
    carried-over model once (:func:`evaluate_on_entry`)."""
    cfg, d, model, s = run.cfg, run.d, state.model, run.setups[p]
    carry(model, s.geometry)
    for ds in (run.splits.train, run.splits.val):  # before the step: what a source serves may change with the phase
        ds.set_phase(s.features, s.compression)
    net: torch.nn.Module = model
    if d.world > 1:
        net = DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    if cfg.train.compile:
        net = compile_net(net, cfg.train.compile_mode)
    step = build_step(cfg, s, model, net, run.objective, run.steps_per_epoch(p), run.splits.train.serves,
                      state.rng.aug, d.device, d.world)
    if state.phase_restore is not None:
        step.optimizer.load_state_dict(state.phase_restore["optimizer"])
        step.scheduler.load_state_dict(state.phase_restore["scheduler"])
        state.phase_restore = None
    state.progress.model_phase, state.progress.fresh_phase = p, False
    ph = PhaseRun(p, s, step, step_flops(model, 1, run.objective), LossTally(d.device))
    seconds, passes = warm_up(run, ph, state)
    state.progress.warmups.setdefault(p, seconds)
    log.info("phase %d/%d: R=%d, %d epoch%s, %d tokens, batch %d, %.3g training FLOPs per clip, kernel warm-up "
             "%.1f s (%s, not trained)",
             p + 1, len(run.setups), s.R, s.epochs, "" if s.epochs == 1 else "s", model.num_tokens, s.batch_size,
             ph.flops_per_clip, seconds,
             "a step" if len(passes) == 1 else f"steps of micro-batches of {', '.join(map(str, passes))} clips")
    if p > 0 and cfg.c2f.eval_on_entry and p not in state.progress.entries:
        evaluate_on_entry(run, ph, state)
    return ph


def evaluate_on_entry(run: Run, ph: PhaseRun, state: State) -> None:
    """Evaluate the model carried over from the previous phase at this phase's resolution, before
    it trains: what the transfer keeps. Its random draws are forked off, so training goes on as
    without it; the metrics and seconds go to the progress (checkpointed, so a resumed run keeps
    them) and from there to the phase's record and its first epoch's evaluation time."""
    pr, model, dev = state.progress, state.model, run.d.device
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        model.eval()
        metrics = run.objective.evaluate(model, val_batches(run, ph), lambda obj: gather(obj, run.d))
    pr.entries[ph.index] = {k: float(v) for k, v in metrics.items()}
    pr.entry_times[ph.index] = time.perf_counter() - start
    metric = run.cfg.train.metric
    before = next((r.metric(metric) for r in reversed(pr.records) if r.phase == ph.index - 1), math.nan)
    log.info("%s enters phase %d (R=%d): the carried-over model scores %s %s before training (%s at the end of "
             "phase %d)", run.label, ph.index + 1, ph.setup.R, metric, metric_text(metrics[metric], metric),
             metric_text(before, metric), ph.index)


def warm_up(run: Run, ph: PhaseRun, state: State) -> tuple[float, list[int]]:
    """Untimed forward + backward passes of the phase's real training step, with every state put
    back (weights, normalisation statistics, gradients, optimizer, generators), so that one-time
    costs (thread pools, kernel selection, ``torch.compile``) stay out of the measured epoch time;
    returns their seconds and the micro-batch sizes they ran. A compiled model takes one pass per
    micro-batch size an epoch holds (a smaller last batch, or a process's smaller share of it, is
    another shape to compile), the same passes in every process (each backward synchronises under
    torchrun); an eager one, one pass."""
    model, dev, micro = state.model, run.d.device, ph.step.micro_batch
    start = time.perf_counter()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    sizes = [micro]
    if run.cfg.train.compile:
        lengths = [len(b) for b in run.epoch_batches(state.progress.epoch, ph.index)]
        sizes = micro_batch_sizes(lengths, run.d.world, micro)
    scratch = dataclasses.replace(ph.step, generator=torch.Generator(device=dev).manual_seed(0), profile=None)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        scratch.net.train()
        for n in sizes:  # validation clips (repeated when there are fewer): the training stream stays untouched
            x, y = run.splits.val.take(torch.as_tensor(np.resize(run.val_batches[0], n)))
            scratch.forward_backward(*scratch.prepare(x, y))
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            buf.copy_(buffers[name])
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - start, sizes


def train_epoch(run: Run, ph: PhaseRun, state: State) -> None:
    """Train the rest of the current epoch (all of it, unless resumed mid-epoch), checkpointing
    every ``train.checkpoint_every`` steps; the epoch's sums accumulate in ``state.progress``."""
    pr, t, d = state.progress, run.cfg.train, run.d
    if pr.step == 0:
        pr.start_epoch(ph.step.optimizer.param_groups[0]["lr"])
    ph.batches = run.epoch_batches(pr.epoch, ph.index)
    mine = [shard(b, d.world, d.rank) for b in ph.batches]
    bar = tqdm(total=len(mine), initial=pr.step, desc=f"{run.label} ep {pr.epoch} (phase {ph.index + 1}, R={ph.setup.R})",
               leave=False, disable=None if run.show_progress else True, dynamic_ncols=True)  # None: no bars on a pipe
    read_every = 1 if ph.step.check_finite else t.log_every
    ph.step.net.train()
    clock = EpochClock(d.device)
    clock.start()
    for x, y in iterate_batches(run.splits.train, mine[pr.step:], d.device, run.workers):
        clock.batch_ready()
        try:
            loss = ph.step(x, y)
        except NonFiniteLoss as err:
            stop_non_finite(run, ph, state, err.loss, pr.step)
        ph.tally.add(loss, len(mine[pr.step]), pr.step)  # this process's clips: a read sums every process's
        pr.seen += len(ph.batches[pr.step])
        pr.step += 1
        clock.step_done()
        bar.update(1)
        if pr.step % read_every == 0:
            bar.set_postfix(loss=f"{read_loss(run, ph, state) / max(1, pr.seen):.4f}")
        if pr.step < len(mine):
            due = bool(t.checkpoint_every) and pr.step % t.checkpoint_every == 0
            stop = run.stop.agreed(d, due or pr.step % read_every == 0)  # where the processes meet anyway
            if due or stop:
                clock = checkpoint_mid_epoch(run, ph, state, clock)
            if stop:
                bar.close()
                interrupted(run, state)
    clock.pause()
    bar.close()
    read_loss(run, ph, state)
    fold_clock(pr, clock)


def fold_clock(pr: Progress, clock: EpochClock) -> None:
    """Add a (paused) clock's wall time, data wait and step times to the epoch's sums."""
    pr.epoch_time += clock.wall
    pr.data_time += clock.data
    pr.step_times += clock.step_times()


def checkpoint_mid_epoch(run: Run, ph: PhaseRun, state: State, clock: EpochClock) -> EpochClock:
    """Checkpoint between two steps, with the epoch's time so far in it (a run resumed from it
    counts that time too); returns the clock that times the rest of the epoch."""
    clock.pause()
    read_loss(run, ph, state)
    fold_clock(state.progress, clock)
    save(run, ph, state)
    clock = EpochClock(run.d.device)
    clock.start()
    return clock


def interrupted(run: Run, state: State) -> None:
    """End a run stopped by a signal, its checkpoint just written."""
    pr = state.progress
    raise run.stop.interruption(run.label, f"epoch {pr.epoch} (phase {pr.phase + 1}), step {pr.step}",
                                run.checkpoint_path)


def read_loss(run: Run, ph: PhaseRun, state: State) -> float:
    """Fold the steps' loss into the epoch's sum (the one read of the device's loss); stop the run
    if a step's loss was not finite. Under torchrun every process reads at the same steps and the
    sum is over all of them (the global batch's), so the epoch's ``train_loss`` and a checkpoint's
    partial sum are the same in every process. Returns the epoch's loss sum so far."""
    total, bad = ph.tally.read(run.d)
    state.progress.loss_sum += total
    if bad >= 0:
        stop_non_finite(run, ph, state, math.nan, bad, noticed=state.progress.step)
    return state.progress.loss_sum


def stop_non_finite(run: Run, ph: PhaseRun, state: State, loss: float, step: int, noticed: int | None = None) -> None:
    """Record why the run stopped and raise :class:`NonFiniteLossError`; the last checkpoint stays."""
    pr = state.progress
    where = f"step {step + 1} of epoch {pr.epoch} (phase {ph.index + 1}, R={ph.setup.R})"
    if noticed is not None:
        where += f", read at step {noticed} (train.log_every)"
    if run.d.main:
        write_logs(run, pr, done=False, extra={"stopped": f"non-finite loss at epoch {pr.epoch}, step {step + 1}"})
    kept = f"last good checkpoint: {run.checkpoint_path}" if run.checkpoint_path.exists() else "no checkpoint written yet"
    raise NonFiniteLossError(f"{run.label}: loss is {loss} at {where}; stopping. {kept}")


def val_batches(run: Run, ph: PhaseRun) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The validation set as (model input, targets) batches at this phase's resolution."""
    s, val = ph.setup, run.splits.val
    for x, y in iterate_batches(val, run.val_batches, run.d.device, run.workers):
        yield phase_input(x.to(run.d.device), val.serves, s.features, s.compression), y.to(run.d.device)


def end_epoch(run: Run, ph: PhaseRun, state: State) -> None:
    """Evaluate, record the epoch (metrics, FLOPs, time), feed the weight averager, write the logs
    and a checkpoint at the start of the next epoch, and move the progress on."""
    pr, model = state.progress, state.model
    t1 = time.perf_counter()
    model.eval()
    metrics = run.objective.evaluate(model, val_batches(run, ph), lambda obj: gather(obj, run.d))
    eval_time = time.perf_counter() - t1
    if pr.phase_epoch == 1:  # the phase's entry evaluation is evaluation time too
        eval_time += pr.entry_times.get(ph.index, 0.0)
    train_flops = ph.flops_per_clip * pr.seen
    record = EpochRecord(
        epoch=pr.epoch, phase=ph.index, R=ph.setup.R, phase_epoch=pr.phase_epoch, tokens=model.num_tokens,
        train_tokens=model.train_tokens, batch_size=ph.setup.batch_size, lr=pr.lr,
        train_loss=pr.loss_sum / max(1, pr.seen), clips=pr.seen, steps=pr.step, metrics=metrics,
        train_flops=train_flops, cum_flops=pr.cum_flops + train_flops, train_time=pr.epoch_time,
        cum_time=pr.cum_time + pr.epoch_time, data_time=pr.data_time, **step_summary(pr.step_times, pr.data_time),
        eval_time=eval_time, **machine_fields(run.d.device, run.d.world),
        mfu=train_flops / pr.epoch_time / (run.peak_tflops * 1e12) if run.peak_tflops and pr.epoch_time > 0 else None,
        turns=run.turns,
    )
    if state.averager is not None and ph.index == len(run.setups) - 1:
        state.averager.update(model.state_dict(), epoch=pr.phase_epoch)
    metric = run.cfg.train.metric
    log.info("%s epoch %d (phase %d, R=%d): loss %.4f, %s %s, %.1fs (data %.1fs, median step %.1f ms), %.3g FLOPs",
             run.label, pr.epoch, ph.index + 1, ph.setup.R, record.train_loss, metric,
             metric_text(metrics[metric], metric), pr.epoch_time, pr.data_time, 1e3 * (record.step_median or 0.0),
             train_flops)
    reason = agreed_leave_phase(run.cfg, [s.epochs for s in run.setups], [*pr.records, record],
                                run.objective.metrics[metric], run.d)
    if reason is not None and (ph.index < len(run.setups) - 1 or not reason.startswith("epochs")):
        record = dataclasses.replace(record, switch=reason)
        log.info("%s leaves phase %d (R=%d) after epoch %d: %s", run.label, ph.index + 1, ph.setup.R, pr.epoch, reason)
    pr.records.append(record)
    if run.d.main and run.cfg.train.save_best and ph.index == len(run.setups) - 1 and best_so_far(
            pr.records, metric, run.objective.metrics[metric]):
        atomic.save_safetensors(run.out_dir / BEST_WEIGHTS, model.state_dict(),
                                metadata={"format": "pt", "epoch": str(pr.epoch), metric: repr(metrics[metric])})
    if run.tensorboard is not None:
        run.tensorboard.epoch(record)
    pr.advance(reason is not None)
    if run.d.main:
        write_logs(run, pr, done=False)
    if pr.phase < len(run.setups):
        save(run, ph, state)


def best_so_far(records: list[EpochRecord], metric: str, higher: bool) -> bool:
    """Whether the last of ``records`` is the best epoch of its phase so far by ``metric``, by the
    rule the reports pick the final phase's best with (:func:`~coarse2fine.training.records.best_of`)."""
    return best_of([r for r in records if r.phase == records[-1].phase], metric, higher) is records[-1]


def save(run: Run, ph: PhaseRun, state: State) -> None:
    """Checkpoint (the main process writes; every process calls it): every section through its
    ``state_dict``, and every process's random-number state (``rng``: one per rank, gathered
    here), so that each process resumes its own draws. At a phase boundary the optimizer and
    schedule are left out: the next phase builds them fresh."""
    rngs = gather(state.rng.state_dict(), run.d)
    if not run.d.main:
        return
    fresh = state.progress.fresh_phase
    save_checkpoint(run.checkpoint_path, {
        "config": run.cfg.to_dict(),
        "data": run.data_signature,
        "progress": state.progress.state_dict(),
        "model": state.model.state_dict(),
        "optimizer": None if fresh else ph.step.optimizer.state_dict(),
        "scheduler": None if fresh else ph.step.scheduler.state_dict(),
        "rng": rngs,
        "averager": state.averager.state_dict() if state.averager is not None and state.averager.count else None,
        "init_from": run.report.get("init_from"),  # what model.init_from gave, kept for a resumed run's log
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
        last = ph.setup.epochs
        report["weight_averaged"] = {"epochs": [averager.start, min(averager.end or last, last)],
                                     **run.objective.evaluate(model, val_batches(run, ph), lambda obj: gather(obj, d))}
        if d.main:
            atomic.save_safetensors(run.out_dir / "model_wa.safetensors", model.state_dict(), metadata={"format": "pt"})
        log.info("weight-averaged model (%d checkpoints): %s %s", averager.count, cfg.train.metric,
                 metric_text(report["weight_averaged"][cfg.train.metric], cfg.train.metric))
    failures = list(dict.fromkeys(str(p) for ds in (run.splits.train, run.splits.val) for p in ds.failures))
    if failures:
        report["load_failures"] = failures
    if d.main:
        write_logs(run, state.progress, done=True, extra=report)
        run.checkpoint_path.unlink(missing_ok=True)
    for ds in (run.splits.train, run.splits.val):  # the folder goes: what it holds is in log.json and in memory
        ds.record_failures_in(None)
    if d.main:
        shutil.rmtree(run.out_dir / FAILURE_FOLDER, ignore_errors=True)
    if run.tensorboard is not None:
        run.tensorboard.close()
    pr = state.progress
    return RunResult(cfg.name, run.out_dir, pr.records, "resumed" if state.resumed else "trained",
                     phase_records(pr.records, pr.warmups, pr.entries))


def write_logs(run: Run, pr: Progress, done: bool, extra: dict[str, Any] | None = None) -> None:
    """Per-epoch log as JSON (with the config, each metric's direction, the phases and the report)
    and CSV, written atomically."""
    records = pr.records
    directions = {m: "max" if up else "min" for m, up in run.objective.metrics.items()}
    switches = [{"epoch": r.epoch, "phase": r.phase, "R": r.R, "reason": r.switch} for r in records if r.switch]
    phases = [p.to_dict() for p in phase_records(records, pr.warmups, pr.entries)] if records else []
    atomic.write_json(run.out_dir / "log.json", {
        "name": run.cfg.name, "config": run.cfg.to_dict(), "done": done, "metrics": directions,
        "switches": switches, "phases": phases, "records": [r.to_dict() for r in records], **run.report, **(extra or {}),
    })
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=run.log_columns(), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(r.to_dict() for r in records)
    atomic.write_text(run.out_dir / "log.csv", buf.getvalue())

