"""Coarse-to-fine training in PyTorch Lightning: the :class:`CoarseToFine` callback.

Add the callback to a ``Trainer`` and keep your ``LightningModule``::

    schedule = Schedule.build("4-1", epochs=40, frames=1024, mel_bins=128, method="avgpool")
    trainer = Trainer(max_epochs=schedule.epochs, callbacks=[CoarseToFine(schedule, inputs="features")])
    trainer.fit(module, train_loader, val_loader)

At each phase's first epoch (or step, ``switch="step"``) the callback moves the model to the
phase's input geometry with its weights carried over (:func:`coarse2fine.core.carry`) and has
Lightning build the optimizer and LR scheduler anew (``configure_optimizers`` is called again, as
the paper resets both); before every batch of training, validation, test and prediction it
compresses the batch's input in place (:func:`coarse2fine.core.compress`). It records each epoch
(phase, R, training FLOPs, training seconds with validation left out; the metrics of the epoch:
what the module logged in training with ``on_epoch=True``, reduced over the epoch (``train_loss``
into the record's ``train_loss``), and what the epoch's last validation logged; the wait for
batches and every step's time, measured as ``coarse2fine train`` measures them, with
:class:`~coarse2fine.training.clock.EpochClock`) as
:class:`~coarse2fine.training.records.EpochRecord`, logs them to every logger of the
trainer as ``c2f/*`` (float64, unlike ``self.log``), optionally writes them as a run log that
``coarse2fine compare`` reads (``log_path=``: the records, the schedule, whether the run finished,
each metric's direction, the metric to compare by default, the classes when given, and the config
of :meth:`CoarseToFine.from_config`), and keeps them and the phase in Lightning's checkpoints: a
run killed in a coarse phase resumes in it.

What the ``LightningModule`` must do: keep the model in an attribute (``model`` by default,
``model_attr=``; a coarse2fine model family, your own registered one included, or a transformers
AST: :func:`~coarse2fine.core.carry` moves no other model), build its optimizer over the
parameters *at call time* in ``configure_optimizers`` (a phase change replaces the positional
embedding and patch conv), and return a per-step scheduler as ``{"scheduler": s, "interval":
"step"}`` when it has one.

:class:`ConfigModule` and :func:`config_loaders` train a coarse2fine config in Lightning the way
``coarse2fine train`` does (same model initialisation, data order, augmentation, optimizer and
schedule), which is how the two are compared.

Requires ``pip install "coarse2fine[lightning]"``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader

from coarse2fine import atomic
from coarse2fine.compression import Compression, InputGeometry
from coarse2fine.config import RunConfig
from coarse2fine.core import INPUT_KINDS, InputKind, Schedule, carry, compress, step_flops
from coarse2fine.data.datasets import DataSplits
from coarse2fine.data.loading import resolve_workers
from coarse2fine.extras import require
from coarse2fine.features import FeatureSpec
from coarse2fine.model.ast.hf import hf_ast_config, is_hf_ast
from coarse2fine.model.transfer import initialise
from coarse2fine.objectives import build_objective
from coarse2fine.phases import schedule_name
from coarse2fine.report.savings import metric_higher_is_better
from coarse2fine.runtime import machine_fields
from coarse2fine.training.augment import augment_features, mixup
from coarse2fine.training.clock import EpochClock, step_summary
from coarse2fine.training.optim import build_optimizer, build_scheduler
from coarse2fine.training.records import EpochRecord, as_records

require("lightning", "lightning", "coarse2fine.integrations.lightning")

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.plugins.io import CheckpointIO  # noqa: E402
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ["CoarseToFine", "ConfigModule", "config_loaders"]

SWITCHES = ("epoch", "step")
_Sums = dict[str, dict[str, Any]]  # Lightning's sums of what training logged (_logged_sums)
MODES = ("max", "min")


class CoarseToFine(pl.Callback):
    """Coarse-to-fine training of a ``LightningModule``'s model (see the module docstring).

    ``schedule``: the phases and compression (:class:`~coarse2fine.core.Schedule`). ``inputs``:
    what the batches carry at ``batch_key`` (``0`` for ``(x, y)`` batches, a name for dict
    batches): ``waveforms`` (features are computed here with ``features``, the full-resolution
    :class:`~coarse2fine.features.FeatureSpec`; every method, Fshift included), full-resolution
    ``features`` (Avg/Max pooling and Patch) or ``model_input`` (left as is). ``model_attr``: the
    module's attribute holding the model (a coarse2fine model or a transformers AST).
    ``switch``: change phase at epoch boundaries (``epoch``) or after
    ``start_epoch(i) * steps_per_epoch`` optimizer steps (``step``; ``steps_per_epoch`` defaults to
    the trainer's). ``log_path``: a JSON run log of the records, written after every epoch, that
    ``coarse2fine compare`` reads (put each run's in a folder of its own: ``out/4-1/log.json``).
    ``metric``: the logged metric ``compare`` tabulates by default (e.g. ``"val_acc"``; without
    it, ``compare`` takes ``--metric`` or the records' one validation metric); ``mode``: its
    direction, ``"max"`` or ``"min"`` (default: by its name, losses ``min``); ``classes``: the
    class ids in target order, which ``compare`` checks against the other runs'.
    """

    def __init__(self, schedule: Schedule, *, inputs: InputKind = "waveforms", features: FeatureSpec | None = None,
                 batch_key: int | str = 0, model_attr: str = "model", switch: str = "epoch",
                 steps_per_epoch: int | None = None, log_path: str | Path | None = None, metric: str | None = None,
                 mode: str | None = None, classes: Sequence[str] | None = None):
        if inputs not in INPUT_KINDS:
            raise ValueError(f"inputs must be one of {', '.join(INPUT_KINDS)}, got {inputs!r}")
        if inputs == "waveforms" and features is None:
            raise ValueError("inputs='waveforms' needs features=FeatureSpec(...) (the full-resolution features)")
        if inputs == "features" and schedule.method == "fshift" and any(p.R > 1 for p in schedule.phases):
            raise ValueError("Fshift computes features with a longer frame shift: it needs inputs='waveforms'")
        if switch not in SWITCHES:
            raise ValueError(f"switch must be one of {', '.join(SWITCHES)}, got {switch!r}")
        if mode is not None and (mode not in MODES or metric is None):
            raise ValueError(f"mode must be one of {', '.join(MODES)} and come with metric=, got mode={mode!r}, "
                             f"metric={metric!r}")
        self.schedule, self.inputs, self.features = schedule, inputs, features
        self.metric, self.mode = metric, mode
        self.classes = [str(c) for c in classes] if classes is not None else None
        self.config: RunConfig | None = None  # the config of from_config, written into the run log
        self.batch_key, self.model_attr, self.switch = batch_key, model_attr, switch
        self.steps_per_epoch, self.log_path = steps_per_epoch, Path(log_path) if log_path else None
        self.phase = -1  # the phase the model is set to (-1: not yet)
        self.records: list[EpochRecord] = []
        self._module: pl.LightningModule | None = None
        self._epoch: dict[str, Any] = {}  # sums of the epoch (segment) in progress
        self._resumed: dict[str, Any] | None = None  # those sums, from a checkpoint written mid-epoch
        self._clock: EpochClock | None = None  # the epoch's data wait and step times
        self._val_start = 0.0
        self._val_metrics: dict[str, float] = {}  # what the epoch's (segment's) last validation logged
        # Per metric the module logged in training with on_epoch=True (Lightning's key): what to
        # fold into Lightning's running sums for the epoch (segment) in progress: the part trained
        # before a resume (``carried``), or minus the sums at a step switch (see _segment_sums).
        self._offsets: dict[str, dict[str, Any]] = {}
        self._trainer: pl.Trainer | None = None

    @classmethod
    def from_config(cls, cfg: RunConfig, **kwargs: Any) -> CoarseToFine:
        """The callback for a coarse2fine config: its schedule, and waveforms in, with its features;
        its run log holds the config and compares by ``train.metric`` (pass ``classes=`` too, e.g.
        ``splits.train.class_names``, and ``coarse2fine compare`` checks every run's data, features,
        model and metric against a ``coarse2fine train`` run's)."""
        c2f = cfg.c2f
        if c2f.switch != "fixed" or c2f.final_stop != "epochs":
            raise ValueError(f"c2f.switch {c2f.switch!r} / c2f.final_stop {c2f.final_stop!r}: the Lightning callback "
                             "switches at fixed epochs or steps only (c2f.switch: fixed, c2f.final_stop: epochs)")
        kwargs.setdefault("inputs", "waveforms")
        kwargs.setdefault("features", cfg.features.spec())
        kwargs.setdefault("metric", cfg.train.metric)
        callback = cls(cfg.schedule(), **kwargs)
        callback.config = cfg
        return callback

    @staticmethod
    def of(trainer: pl.Trainer) -> CoarseToFine:
        """The trainer's :class:`CoarseToFine` callback (``ValueError`` when it has none)."""
        found = [cb for cb in trainer.callbacks if isinstance(cb, CoarseToFine)]  # type: ignore[attr-defined]
        if len(found) != 1:
            raise ValueError(f"the trainer has {len(found)} CoarseToFine callbacks; expected one")
        return found[0]

    # --- what the phase is ------------------------------------------------------------------
    @property
    def compression(self) -> Compression:
        """The compression of the current phase (phase 0 before training starts)."""
        return self.schedule.compression(max(self.phase, 0))

    @property
    def geometry(self) -> InputGeometry:
        return self.schedule.geometry(max(self.phase, 0))

    def model_of(self, pl_module: pl.LightningModule) -> torch.nn.Module:
        model = getattr(pl_module, self.model_attr, None)
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"{type(pl_module).__name__} has no model in attribute {self.model_attr!r} "
                             "(CoarseToFine(model_attr=...) names it)")
        return model

    def move(self, pl_module: pl.LightningModule, phase: int) -> None:
        """Move the module's model to ``phase``'s geometry (weights carried over)."""
        carry(self.model_of(pl_module), self.schedule.geometry(phase))
        self.phase = phase

    def _switch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, phase: int) -> None:
        """Enter ``phase``: move the model, wrap it again under DDP (its reducer holds the old
        parameters), and build the optimizers and LR schedulers anew (``configure_optimizers``)."""
        self.move(pl_module, phase)
        strategy = trainer.strategy
        if isinstance(strategy, DDPStrategy):
            strategy.model = strategy.lightning_module
            strategy.configure_ddp()
        strategy.setup_optimizers(trainer)
        log.info("coarse-to-fine: phase %d/%d, R=%d, input %s", phase + 1, len(self.schedule.phases),
                 self.schedule.phases[phase].R, self.geometry)

    def _compress(self, batch: Any) -> int:
        """Compress the batch's input in place; returns the batch size."""
        if isinstance(batch, tuple):
            raise ValueError("the batch is a tuple, which cannot be changed in place: return lists or dicts from the "
                             "DataLoader (default_collate makes (x, y) samples a list)")
        try:
            x = batch[self.batch_key]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"cannot read the input of a {type(batch).__name__} batch at {self.batch_key!r} "
                             "(CoarseToFine(batch_key=...) names it)") from None
        batch[self.batch_key] = compress(x, self.compression, self.inputs, self.features)
        return len(x)

    # --- set up and resume --------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        strategy = trainer.strategy
        if not isinstance(strategy, (SingleDeviceStrategy, DDPStrategy)) or strategy.restore_checkpoint_after_setup:
            raise ValueError(f"CoarseToFine supports single-device and DDP training, not {type(trainer.strategy).__name__} "
                             "(it loads weights after wrapping the model, when their shapes no longer fit)")
        self._module, self._trainer = pl_module, trainer
        if not _keeps_results(trainer):
            log.warning("this Lightning (%s) keeps what a module logs elsewhere than 2.6 did: each epoch's record takes "
                        "trainer.callback_metrics at the epoch's end (an epoch resumed in its middle, or split by "
                        "switch='step', records the values Lightning reports, and one that does not validate the last "
                        "validation's)", pl.__version__)
        if self.phase < 0:
            self.move(pl_module, 0)
        if not isinstance(trainer.strategy.checkpoint_io, _PhaseCheckpointIO):
            trainer.strategy.checkpoint_io = _PhaseCheckpointIO(trainer.strategy.checkpoint_io, self)
        if stage == "fit" and self.switch == "epoch" and trainer.max_epochs not in (None, -1, self.schedule.epochs):
            log.warning("Trainer(max_epochs=%s) differs from the schedule's %d epochs", trainer.max_epochs,
                        self.schedule.epochs)

    def _checkpoint_loaded(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint was read, before its weights load: move the model to its phase's geometry."""
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is not None and self._module is not None:
            self.move(self._module, int(state["phase"]))

    def state_dict(self) -> dict[str, Any]:
        # Plain types only: Lightning reads checkpoints with torch.load(weights_only=True).
        partial = None
        if self._epoch:  # a checkpoint in the middle of an epoch: its sums so far
            partial = {k: self._epoch[k] for k in ("epoch", "flops", "clips", "steps", "lr", "batch")}
            clock = self._epoch_clock()
            partial.update(time=clock.elapsed(), data=clock.data, step_times=clock.step_times(),
                           val_metrics=dict(self._val_metrics), logged=self._logged_so_far())
        return {"phase": self.phase, "records": [r.to_dict() for r in self.records], "partial": partial}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.phase = int(state_dict["phase"])
        self.records = as_records(state_dict["records"])
        self._resumed = state_dict.get("partial")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning calls no on_train_epoch_start for an epoch resumed in its middle: continue its
        # sums here, and skip the batches it trained (Lightning restarts the loader's pass).
        loop = trainer.fit_loop
        if loop.restarted_mid_epoch:
            self._start(trainer)
            if self._resumed is not None:
                self._epoch.update({k: v for k, v in self._resumed.items()
                                    if k not in ("time", "data", "step_times", "val_metrics", "logged")})
                self._epoch_clock().carry(float(self._resumed["time"]), float(self._resumed.get("data", 0.0)),
                                          list(self._resumed.get("step_times", [])))
                self._val_metrics = dict(self._resumed.get("val_metrics") or {})
                self._offsets = {k: {**v, "carried": True} for k, v in (self._resumed.get("logged") or {}).items()}
            done = loop.epoch_loop.batch_progress.current.processed
            loader = trainer.train_dataloader
            sampler = getattr(loader, "sampler", None)
            if done >= trainer.num_training_batches:
                pass  # written after the epoch's last batch (at its validation): no batch of it is read again
            elif hasattr(sampler, "skip") and getattr(loader, "batch_size", None):
                sampler.skip = done * loader.batch_size  # type: ignore[union-attr]
            else:
                log.warning("resumed in the middle of an epoch with a sampler that cannot skip the %d batches already "
                            "trained (coarse2fine.training.sampling.EpochSampler can): the epoch's data order differs",
                            done)
        self._resumed = None

    # --- phases and epochs --------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.switch == "epoch":
            p = self.schedule.at_epoch(trainer.current_epoch).index
            if p != self.phase:
                self._switch(trainer, pl_module, p)
        self._start(trainer)

    def _start(self, trainer: pl.Trainer) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else 0.0
        self._epoch = {"epoch": trainer.current_epoch, "flops": 0, "clips": 0, "steps": 0, "lr": lr, "batch": 0,
                       "val": 0.0}
        self._val_metrics, self._offsets = {}, {}
        self._clock = EpochClock(trainer.strategy.root_device)
        self._clock.start()

    def _steps_per_epoch(self, trainer: pl.Trainer) -> int:
        if self.steps_per_epoch:
            return self.steps_per_epoch
        batches = trainer.num_training_batches
        if not math.isfinite(batches):
            raise ValueError("switch='step' needs steps_per_epoch= for an iterable of unknown length")
        return max(1, int(batches) // max(1, trainer.accumulate_grad_batches))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._clock is not None:
            self._clock.batch_ready()
        if self.switch == "step":
            p = self.schedule.at_step(trainer.global_step, self._steps_per_epoch(trainer)).index
            if p != self.phase:
                if self._epoch.get("clips"):
                    sums = _logged_sums(trainer)  # Lightning's sums of the whole epoch so far
                    self._close(trainer, pl_module, sums)  # the epoch's part in the old phase is its own record
                    self._start(trainer)
                    self._offsets = {k: _negated(v) for k, v in sums.items() if v["reduce"] in ("mean", "sum")}
                self._switch(trainer, pl_module, p)
                self._epoch["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        n = self._compress(batch)
        world = trainer.world_size
        self._epoch["flops"] += step_flops(self.model_of(pl_module), n) * world  # every process's share
        self._epoch["clips"] += n * world
        self._epoch["steps"] += 1
        self._epoch["batch"] = max(self._epoch["batch"], n * world)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._clock is not None:
            self._clock.step_done()

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        self._compress(batch)

    def on_test_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
                            dataloader_idx: int = 0) -> None:
        self._compress(batch)

    def on_predict_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
                               dataloader_idx: int = 0) -> None:
        self._compress(batch)

    # Lightning validates inside the training epoch (before on_train_epoch_end): its time is not
    # training time, and what training logs with on_epoch=True is reduced only after it (Lightning
    # 2.6: _TrainingEpochLoop.on_advance_end runs the validation after the epoch's last batch;
    # _FitLoop.on_advance_end then calls _LoggerConnector.epoch_end_reached, after which
    # trainer.callback_metrics holds the epoch's reduced values, and on_train_epoch_end).
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_start = time.perf_counter()
        if self._clock is not None and self._epoch:
            self._clock.pause()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self._epoch:
            return
        self._epoch["val"] += time.perf_counter() - self._val_start
        if self._clock is not None:
            self._clock.resume()
        # What this validation logged, not trainer.callback_metrics: that keeps every value logged
        # since fit started (the training metrics of the previous epoch among them).
        metrics = trainer.callback_metrics
        names = _logged_names(trainer.fit_loop.epoch_loop.val_loop) if _keeps_results(trainer) else list(metrics)
        self._val_metrics = _scalars({k: metrics[k] for k in names if k in metrics})

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(trainer, pl_module)

    def _epoch_clock(self) -> EpochClock:
        """The clock of the epoch under way: its training wall time (validation paused out; a
        checkpoint Lightning writes between two steps falls in the next step), data wait and step
        times, the part trained before a resume included."""
        if self._clock is None:
            raise RuntimeError("no training epoch is under way")
        return self._clock

    def _segment_sums(self, trainer: pl.Trainer, sums: _Sums | None = None) -> _Sums:
        """Lightning's sums of what training logged with on_epoch=True (``sums``, else read now) for
        the epoch (segment) in progress: the part trained before a resume added, the sums at a step
        switch taken off (a max or min then covers the whole epoch)."""
        out = dict(_logged_sums(trainer) if sums is None else sums)
        for key, off in self._offsets.items():
            if key in out:
                out[key] = _folded(out[key], off)
            elif off.get("carried"):  # logged before the resume only (a checkpoint after the epoch's last batch)
                out[key] = {k: v for k, v in off.items() if k != "carried"}
        return out

    def _logged_so_far(self) -> _Sums:
        """For a checkpoint written in the middle of an epoch: the sums of what training logged
        with on_epoch=True in it so far (Lightning's checkpoints keep none)."""
        return self._segment_sums(self._trainer) if self._trainer is not None else {}

    def _train_metrics(self, trainer: pl.Trainer, sums: _Sums | None = None) -> dict[str, float]:
        """What training logged with on_epoch=True, reduced over the epoch (segment) in progress as
        Lightning reduces it at the epoch's end (by default the mean weighted by batch size);
        logged torchmetrics objects: their ``compute()``. A Lightning that keeps them elsewhere:
        ``trainer.callback_metrics`` as it stands (its public view of the epoch's values)."""
        if not _keeps_results(trainer):  # every value reported so far, this epoch's the newest
            return _scalars(dict(trainer.callback_metrics))
        out: dict[str, Any] = {}
        for s in self._segment_sums(trainer, sums).values():
            value = torch.tensor(s["value"], dtype=_logged_dtype())
            if s["count"] is not None:
                value = value / torch.tensor(s["count"])  # as Lightning's _ResultMetric.compute
            out.update(dict.fromkeys(s["names"], value))
        results = _training_results(trainer)
        for _, metric in results.valid_items() if results is not None else ():
            if metric.meta.on_epoch and not metric.is_tensor:
                out.update(dict.fromkeys(results._forked_name(metric, False), metric.compute()))
        return _scalars(out)

    def _close(self, trainer: pl.Trainer, pl_module: pl.LightningModule, sums: _Sums | None = None) -> None:
        """Record the epoch (or its part in one phase) and log it."""
        metrics = {**self._val_metrics, **self._train_metrics(trainer, sums)}
        train_loss = metrics.pop("train_loss", None)  # a field of the record, as coarse2fine train records it
        clock = self._epoch_clock()
        e, seconds = self._epoch, clock.elapsed()
        data_time, step_times = clock.data, clock.step_times()
        prev = self.records[-1] if self.records else None
        model = self.model_of(pl_module)
        tokens = int(getattr(model, "num_tokens", 0) or _hf_tokens(model))
        phase_epoch = len({r.epoch for r in self.records if r.phase == self.phase} | {e["epoch"] + 1})
        record = EpochRecord(
            epoch=e["epoch"] + 1, phase=self.phase, R=self.schedule.phases[self.phase].R, phase_epoch=phase_epoch,
            tokens=tokens, train_tokens=int(getattr(model, "train_tokens", tokens)), batch_size=e["batch"],
            lr=float(e["lr"]), train_loss=train_loss, clips=e["clips"], steps=e["steps"], metrics=metrics,
            train_flops=float(e["flops"]), cum_flops=(prev.cum_flops if prev else 0.0) + e["flops"], train_time=seconds,
            cum_time=(prev.cum_time if prev else 0.0) + seconds, data_time=data_time,
            **step_summary(step_times, data_time), eval_time=e["val"],
            **machine_fields(pl_module.device, trainer.world_size),
        )
        self.records.append(record)
        self._epoch, self._clock, self._val_metrics, self._offsets = {}, None, {}, {}
        phase_recs = [r for r in self.records if r.phase == self.phase]
        values = {"c2f/phase": float(record.phase), "c2f/R": float(record.R), "c2f/train_flops": record.train_flops,
                  "c2f/cum_flops": record.cum_flops, "c2f/train_time": record.train_time, "c2f/cum_time": record.cum_time,
                  "c2f/phase_flops": sum(r.train_flops for r in phase_recs),
                  "c2f/phase_time": sum(r.train_time for r in phase_recs)}
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)
        if self.log_path is not None and trainer.is_global_zero:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_json(self.log_path, self.run_log())

    def run_log(self) -> dict[str, Any]:
        """The run log ``log_path`` holds: what ``coarse2fine compare`` reads of a run (``name``,
        ``source``, ``done``, each recorded metric's direction in ``metrics``, the default
        ``metric``, the ``schedule``, ``classes`` and ``config`` when known, the ``records``)."""
        s = self.schedule
        last = self.records[-1] if self.records else None
        done = last is not None and last.phase == len(s.phases) - 1 and last.epoch >= s.epochs
        log_data: dict[str, Any] = {
            "name": self.log_path.parent.name if self.log_path is not None else "lightning", "source": "lightning",
            "done": done, "metrics": self._directions(), "metric": self.metric,
            "schedule": {"name": schedule_name([p.R for p in s.phases]), "phases": [[p.R, p.epochs] for p in s.phases],
                         "epochs": s.epochs, "method": s.method, "patch_resize": s.patch_resize,
                         "frames": s.frames, "mel_bins": s.mel_bins},
        }
        if self.classes is not None:
            log_data["classes"] = self.classes
        if self.config is not None:
            log_data["config"] = self.config.to_dict()
        return {**log_data, "records": [r.to_dict() for r in self.records]}

    def _directions(self) -> dict[str, str]:
        """``max`` or ``min`` for every metric the records carry (``mode`` for ``metric``; the
        others by their objective or name: losses ``min``)."""
        names = dict.fromkeys(name for r in self.records for name in r.metrics)
        if self.metric is not None:
            names[self.metric] = None
        out = {name: "max" if metric_higher_is_better(name) else "min" for name in names}
        if self.metric is not None and self.mode is not None:
            out[self.metric] = self.mode
        return out


def _hf_tokens(model: torch.nn.Module) -> int:
    return hf_ast_config(model).num_tokens if is_hf_ast(model) else 0


# What the module logs, as Lightning 2.6 keeps it: each loop's _ResultCollection (a dict of
# _ResultMetric: the running sums of one self.log name) holds what was logged since its last reset
# (the training loop's after on_train_epoch_end, the validation loop's after on_validation_end).

def _keeps_results(trainer: pl.Trainer) -> bool:
    """Whether this Lightning keeps what a module logs as 2.6 does (the loops' ``_results``)."""
    loop = trainer.fit_loop.epoch_loop
    return hasattr(loop, "_results") and hasattr(getattr(loop, "val_loop", None), "_results")


def _training_results(trainer: pl.Trainer) -> Any:
    return getattr(trainer.fit_loop.epoch_loop, "_results", None)


def _logged_names(loop: Any) -> list[str]:
    """The names in ``trainer.callback_metrics`` of the epoch-level values logged in ``loop``
    since its results were last reset (every dataloader's)."""
    results = getattr(loop, "_results", None)
    if results is None:
        return []
    return list(dict.fromkeys(name for metric in results.values() if not metric.has_reset and metric.meta.on_epoch
                              for name in results._forked_name(metric, False)))


def _scalars(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if not k.startswith("c2f/") and getattr(v, "numel", lambda: 1)() == 1}


def _logged_dtype() -> torch.dtype:
    """The dtype Lightning sums logged values in (float32 or float64)."""
    dtype = torch.get_default_dtype()
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _reduction(meta: Any) -> str | None:
    for name in ("mean", "sum", "max", "min"):
        if getattr(meta, f"is_{name}_reduction"):
            return name
    return None


def _logged_sums(trainer: pl.Trainer) -> _Sums:
    """Lightning's running sums of what training logged with ``on_epoch=True`` this epoch (tensor
    values; plain types), synchronised across processes as Lightning synchronises them to reduce
    them (``sync_dist=True``): per metric its ``names`` in ``trainer.callback_metrics``, its
    ``reduce``, its ``value`` (the batch-size-weighted sum of a mean) and the ``count`` a mean
    divides by."""
    results = _training_results(trainer)
    out: _Sums = {}
    for key, metric in results.valid_items() if results is not None else ():
        meta = metric.meta
        reduce = _reduction(meta)
        if not meta.on_epoch or not metric.is_tensor or reduce is None:
            continue
        count = float(meta.sync(metric.cumulated_batch_size.clone())) if reduce == "mean" else None
        out[key] = {"names": list(dict.fromkeys(results._forked_name(metric, False))), "reduce": reduce,
                    "value": float(meta.sync(metric.value.clone())), "count": count}
    return out


def _negated(s: dict[str, Any]) -> dict[str, Any]:
    """The offset that takes the sums ``s`` (of a mean or sum) off."""
    return {**s, "value": -s["value"], "count": None if s["count"] is None else -s["count"]}


def _folded(s: dict[str, Any], off: dict[str, Any]) -> dict[str, Any]:
    """Sums ``s`` with the offset ``off`` folded in."""
    if s["reduce"] in ("max", "min"):
        pick = max if s["reduce"] == "max" else min
        return {**s, "value": pick(s["value"], off["value"])}
    value = float(torch.tensor(s["value"], dtype=_logged_dtype()) + off["value"])
    count = None if s["count"] is None else s["count"] + (off["count"] or 0.0)
    return {**s, "value": value, "count": count}


class _PhaseCheckpointIO(CheckpointIO):
    """The strategy's checkpoint IO, unchanged, except that a checkpoint read for resuming moves the
    model to the phase it was written in before Lightning loads its weights (no hook of a callback
    runs that early; the weights of a coarse phase have that phase's shapes)."""

    def __init__(self, inner: CheckpointIO, callback: CoarseToFine):
        self.inner, self.callback = inner, callback

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        self.inner.save_checkpoint(checkpoint, path, storage_options)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        checkpoint = self.inner.load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        self.callback._checkpoint_loaded(checkpoint)
        return checkpoint

    def remove_checkpoint(self, path: Any) -> None:
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        self.inner.teardown()


# ============================================================================ a coarse2fine config in Lightning

UNSUPPORTED = {
    "train.objective": lambda c: c.train.objective != "classification",
    "train.grad_accum": lambda c: c.train.grad_accum != 1,
    "train.amp": lambda c: c.train.amp != "none",
    "train.epoch_steps": lambda c: bool(c.train.epoch_steps),
    "c2f.coarse_batch": lambda c: c.c2f.coarse_batch == "scale",
    "augment.wa_start": lambda c: c.augment.wa_start > 0,
    "augment.balanced_sampling": lambda c: bool(c.augment.balanced_sampling),
}


class ConfigModule(pl.LightningModule):
    """A coarse2fine classification config trained in Lightning as ``coarse2fine train`` trains it:
    the model built at phase 0's geometry after ``torch.manual_seed(train.seed)`` (and
    ``model.init_from``), mixup on the batch before features, SpecAugment and noise after the
    phase's compression (one augmentation generator seeded with ``train.seed + 1 + rank``), the
    objective's loss, ``train.optim``'s optimizer and per-step LR schedule (built for the current
    phase), gradient clipping, and validation metrics (``acc``, ``mAP``, ... and ``val_loss``)
    computed over the whole validation set. Use it with :meth:`CoarseToFine.from_config` and
    :func:`config_loaders`. ``train_clips``: the number of training clips (steps per epoch).
    ``classes``: the task's class ids and display names (``(splits.train.class_names,
    splits.display_names)``), which ``model.init_from``'s head is matched to as the CLI matches it
    (rows reordered, or a new head for other classes). Settings the Lightning run does not
    reproduce are refused with their names."""

    def __init__(self, cfg: RunConfig, num_classes: int, train_clips: int,
                 classes: Sequence[Sequence[str] | None] = ()):
        super().__init__()
        bad = [key for key, unsupported in UNSUPPORTED.items() if unsupported(cfg)]
        if bad:
            raise ValueError(f"ConfigModule does not reproduce {', '.join(bad)} of the config; train it with "
                             "`coarse2fine train`, or change them")
        self.cfg, self.num_classes = cfg, num_classes
        self.steps_per_epoch = math.ceil(train_clips / cfg.train.batch_size)
        self.setups = [cfg.phase(i, num_classes) for i in range(len(cfg.phases()))]
        torch.manual_seed(cfg.train.seed)  # as the CLI: the model is drawn at phase 0's geometry
        self.model = self.setups[0].build_model()
        if cfg.model.init_from:
            if not classes:
                log.warning("ConfigModule: model.init_from without classes=(class ids, display names): a head of as "
                            "many classes as the task's is taken by position, whatever its classes; pass "
                            "classes=(splits.train.class_names, splits.display_names) to match it as train does")
            initialise(self.model, cfg.model.init_from, classes)
        self.objective = build_objective(cfg.train.objective, cfg)
        self.generator = torch.Generator().manual_seed(cfg.train.seed + 1)
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _setup(self) -> Any:
        """The current phase's :class:`~coarse2fine.config.PhaseSetup` (phase 0 before training)."""
        return self.setups[max(CoarseToFine.of(self.trainer).phase, 0)]

    def setup(self, stage: str) -> None:
        self.generator = torch.Generator(device=self.device).manual_seed(self.cfg.train.seed + 1 + self.global_rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        a = self.cfg.augment
        if self.trainer.training and a.mixup > 0:  # on what the source serves, before the features
            batch[0], batch[1] = mixup(batch[0], batch[1], a.mixup, a.mixup_alpha, self.generator, a.mixup_targets)
        return batch

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch  # the phase's model input: CoarseToFine compressed it
        time_factor = self._setup().compression.time_factor
        feats = augment_features(x, self.cfg.augment, time_factor, self.generator)
        loss = self.objective.training_loss(self.model, feats, y, self.generator)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=self.trainer.world_size > 1)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self._val.append((self.model(x).float(), y))

    def on_validation_epoch_end(self) -> None:
        world = self.trainer.world_size

        def gather(obj: Any) -> list[Any]:
            if world == 1:
                return [obj]
            out: list[Any] = [None] * world
            torch.distributed.all_gather_object(out, obj)
            return out

        logits_model: Callable[[torch.Tensor], torch.Tensor] = lambda logits: logits  # noqa: E731
        metrics = self.objective.evaluate(logits_model, self._val, gather)  # type: ignore[arg-type]
        self._val = []
        for name, value in metrics.items():  # the same on every process (gathered): averaging keeps it
            self.log(name, float(value), sync_dist=world > 1)

    def configure_optimizers(self) -> Any:
        optim = self._setup().optim
        optimizer = build_optimizer(self.model.parameters(), optim)  # the parameters now: a phase change replaces some
        scheduler = build_scheduler(optimizer, self.steps_per_epoch, optim)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: Any = None,
                                    gradient_clip_algorithm: Any = None) -> None:
        clip = self._setup().optim.clip_grad_norm
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["coarse2fine_rng"] = {"torch": torch.get_rng_state(), "aug": self.generator.get_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("coarse2fine_rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            self.generator.set_state(rng["aug"])


def config_loaders(cfg: RunConfig, splits: DataSplits, device: str | torch.device = "cpu") -> tuple[DataLoader, DataLoader]:
    """Training and validation loaders of a config's data in the CLI's order: the training clips
    shuffled by :class:`~coarse2fine.training.sampling.EpochSampler` (a function of seed and
    epoch), batches of ``train.batch_size``; the validation clips in order, batches of
    ``max(train.batch_size, 64)``. The data must serve waveforms (``data.in_memory: off``, no
    ``data.cache_dir``): the callback computes each phase's features."""
    from coarse2fine.training.sampling import EpochSampler

    for name, ds in (("train", splits.train), ("val", splits.val)):
        if ds.serves != "waveforms":
            raise ValueError(f"the {name} data serves {ds.serves}, not waveforms: load it with data.in_memory=off and "
                             "without data.cache_dir")
    workers = resolve_workers(cfg.data.num_workers, splits.train, torch.device(device))
    t = cfg.train
    # Explicit generators: a loader without one draws its seed from torch's global generator,
    # which only the model's own randomness may use.
    train = DataLoader(splits.train, batch_size=t.batch_size, sampler=EpochSampler(len(splits.train), t.seed),
                       num_workers=workers, generator=torch.Generator())
    val = DataLoader(splits.val, batch_size=max(t.batch_size, 64), shuffle=False, num_workers=workers,
                     generator=torch.Generator())
    return train, val

