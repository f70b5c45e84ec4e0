"""Coarse-to-fine training with the Hugging Face ``Trainer``: :class:`CoarseToFineTrainer`.

A ``Trainer`` subclass, since a ``TrainerCallback`` can change neither the batches nor the model's
geometry. For audio classification with ``ASTForAudioClassification`` and ``ASTFeatureExtractor``::

    schedule = Schedule.build("4-1", epochs=4, phase_epochs=[1, 3], frames=model.config.max_length,
                              mel_bins=model.config.num_mel_bins, method="avgpool")
    trainer = CoarseToFineTrainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                                  processing_class=feature_extractor, schedule=schedule)
    trainer.train()
    trainer.save_model("out")    # at full resolution again: pipeline("audio-classification", model="out")

What it does, through the functional core (:mod:`coarse2fine.core`):

* at the first epoch of each phase it moves the model to the phase's geometry
  (:func:`~coarse2fine.core.carry`: positional embedding interpolated, patch conv resized) and
  builds the optimizer and LR schedule anew, the schedule spanning the phase's steps (the paper's
  reset; warm-up included);
* it compresses ``inputs["input_values"]`` of every training and evaluation batch
  (:func:`~coarse2fine.core.compress`): full-resolution ``features`` from ``ASTFeatureExtractor``
  for Avg/Max pooling and Patch, or ``waveforms`` with coarse2fine's Kaldi fbank for every method
  (Fshift needs them: ``ASTFeatureExtractor`` has a fixed 10 ms shift);
* it counts each step's analytic FLOPs (``floating_point_ops``, so ``state.total_flos`` is ours
  too), records every epoch as :class:`~coarse2fine.training.records.EpochRecord` (``c2f_records``:
  1-based integer epochs; the global batch, per-device batch x devices x gradient accumulation;
  the learning rate of the epoch's first optimizer step, 0 in a warm-up that starts from 0 as the
  ``Trainer``'s do; optimizer steps; the wait for batches and every optimizer step's time, timed as
  ``coarse2fine train`` times them with :class:`~coarse2fine.training.clock.EpochClock`, evaluation
  and checkpoints left out of the training time; the evaluation's seconds and metrics), logs
  ``c2f_R`` / ``c2f_train_flops`` / ``c2f_train_time`` per epoch, and writes
  ``coarse2fine_state.json`` with every saved model and checkpoint;
* ``train(resume_from_checkpoint=...)`` resumes in the phase the checkpoint was written in.

Single device only (a wrapped model would have to be wrapped again after each geometry change).
Requires ``pip install "coarse2fine[hf]"`` (transformers and accelerate).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from typing import Any

import torch
from safetensors.torch import load_file

from coarse2fine import atomic
from coarse2fine.compression import Compression
from coarse2fine.core import INPUT_KINDS, InputKind, Schedule, carry, compress, step_flops
from coarse2fine.extras import require
from coarse2fine.features import FeatureSpec
from coarse2fine.model.ast.hf import hf_ast_config, hf_state_dict_for, is_hf_ast
from coarse2fine.runtime import machine_fields
from coarse2fine.training.clock import EpochClock, step_summary
from coarse2fine.training.records import EpochRecord, as_records

require("transformers", "hf", "coarse2fine.integrations.hf")
require("accelerate", "hf", "the Hugging Face Trainer")

from transformers import Trainer, TrainerCallback  # noqa: E402
from transformers.trainer_utils import get_last_checkpoint  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ["STATE_FILE", "CoarseToFineTrainer", "ast_feature_spec"]

STATE_FILE = "coarse2fine_state.json"
RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(EpochRecord))
SPEED_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")  # the Trainer's speed_metrics


class _Phases(TrainerCallback):
    """The epoch boundaries of the ``Trainer``'s loop, handed to the trainer. ``on_epoch_end`` runs
    before the epoch's evaluation and checkpoint, so the checkpoint holds the epoch's record."""

    def __init__(self, trainer: CoarseToFineTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # state.epoch: the epochs done, fractional when a run resumes in an epoch's middle
        self.trainer._begin_epoch(math.floor((state.epoch or 0.0) + 1e-6), state.max_steps, args.num_train_epochs)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer._end_epoch()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer._step_begin()  # the step's batches are fetched: the wait since the last step is data time

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer._step_end()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer._resume_clock()  # the checkpoint is written

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer._c2f_training = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer._c2f_training = False

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        self.trainer._add_metrics(metrics or {})


class CoarseToFineTrainer(Trainer):
    """A ``Trainer`` that trains coarse to fine (see the module docstring).

    ``schedule``: phases and compression, its full-resolution input equal to the model's
    ``config.max_length`` x ``config.num_mel_bins`` and its epochs to ``args.num_train_epochs``.
    ``inputs``: what ``inputs[input_key]`` holds: ``features`` (``ASTFeatureExtractor`` output,
    full resolution) or ``waveforms`` (fixed-length audio; ``features`` is then the
    full-resolution :class:`~coarse2fine.features.FeatureSpec` to compute, e.g.
    :func:`ast_feature_spec` of the extractor). Every other argument is the ``Trainer``'s.
    """

    def __init__(self, *args: Any, schedule: Schedule, inputs: InputKind = "features", features: FeatureSpec | None = None,
                 input_key: str = "input_values", **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not is_hf_ast(self.model):
            raise ValueError(f"CoarseToFineTrainer trains transformers' ASTForAudioClassification, not {type(self.model).__name__}")
        cfg = self.model.config
        if (schedule.frames, schedule.mel_bins) != (cfg.max_length, cfg.num_mel_bins):
            raise ValueError(f"the schedule is for {schedule.frames} frames x {schedule.mel_bins} mel bins, the model takes "
                             f"{cfg.max_length} x {cfg.num_mel_bins} (config.max_length, config.num_mel_bins)")
        if inputs not in INPUT_KINDS:
            raise ValueError(f"inputs must be one of {', '.join(INPUT_KINDS)}, got {inputs!r}")
        if inputs == "waveforms" and features is None:
            raise ValueError("inputs='waveforms' needs features=FeatureSpec(...) (e.g. ast_feature_spec(feature_extractor))")
        if inputs == "features" and schedule.method == "fshift" and any(p.R > 1 for p in schedule.phases):
            raise ValueError("Fshift computes features with a longer frame shift, which ASTFeatureExtractor cannot: give "
                             "waveforms (inputs='waveforms', features=ast_feature_spec(feature_extractor))")
        if self.args.max_steps > 0 or float(self.args.num_train_epochs) != schedule.epochs:
            raise ValueError(f"the schedule has {schedule.epochs} epochs: set TrainingArguments(num_train_epochs="
                             f"{schedule.epochs}) and no max_steps (got {self.args.num_train_epochs} and {self.args.max_steps})")
        if self.args.world_size > 1 or self.args.n_gpu > 1:
            raise ValueError("CoarseToFineTrainer trains on a single device (a wrapped model would have to be wrapped "
                             "again at each phase change)")
        self.c2f_schedule, self.c2f_inputs, self.c2f_features, self.c2f_key = schedule, inputs, features, input_key
        self.c2f_phase = -1
        self.c2f_records: list[EpochRecord] = []
        self._c2f_epoch: dict[str, Any] = {}
        self._c2f_partial: dict[str, Any] | None = None
        self._c2f_eval_seconds = 0.0
        self._c2f_clock: EpochClock | None = None  # the epoch's wall time, data wait and step times
        self._c2f_paused = False  # the clock is paused (an evaluation or a checkpoint in the epoch)
        self._c2f_training = False  # inside train(): evaluations join the records
        self._move(0)
        self.add_callback(_Phases(self))

    # --- phases ---------------------------------------------------------------------------------
    @property
    def c2f_compression(self) -> Compression:
        """The current phase's compression."""
        return self.c2f_schedule.compression(max(self.c2f_phase, 0))

    def _move(self, phase: int) -> None:
        carry(self.model, self.c2f_schedule.geometry(phase))
        self.c2f_phase = phase

    def _phase_steps(self, steps_per_epoch: int) -> int:
        return self.c2f_schedule.phases[self.c2f_phase].epochs * steps_per_epoch

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        """The LR schedule of the current phase: the ``Trainer`` asks for the whole run's steps,
        the paper's schedule restarts with every phase and spans its steps."""
        per_epoch = max(1, num_training_steps // self.c2f_schedule.epochs)
        return super().create_scheduler(self._phase_steps(per_epoch), optimizer)

    def _reset_optimizer(self, steps_per_epoch: int) -> None:
        """A fresh optimizer over the model's parameters now, and a fresh LR schedule for the phase."""
        accelerator = self.accelerator
        old_optimizer, old_scheduler = self.optimizer, self.lr_scheduler
        # accelerate keeps every prepared optimizer and scheduler: drop the old ones, or their
        # state (Adam's moments of the old parameters) stays alive for the rest of the run.
        for attr, old in (("_optimizers", old_optimizer), ("_schedulers", old_scheduler)):
            kept = getattr(accelerator, attr, None)
            if isinstance(kept, list):
                kept[:] = [o for o in kept if o is not old]
        self.optimizer, self.lr_scheduler = None, None
        self.create_optimizer()
        self.optimizer = accelerator.prepare_optimizer(self.optimizer)
        Trainer.create_scheduler(self, self._phase_steps(steps_per_epoch), self.optimizer)
        for attr in ("model", "optimizer", "lr_scheduler"):  # what TrainerCallbacks are handed
            setattr(self.callback_handler, attr, getattr(self, attr))

    @property
    def c2f_batch_size(self) -> int:
        """Clips per optimizer step: per-device batch x devices x gradient accumulation."""
        a = self.args
        return int(a.train_batch_size * max(1, a.world_size) * max(1, a.gradient_accumulation_steps))

    def _new_clock(self, partial: dict[str, Any] | None = None) -> EpochClock:
        """A started clock for an epoch, continuing ``partial``'s (a checkpoint's) time, data wait and steps."""
        clock = EpochClock(self.args.device)
        clock.start()
        if partial is not None:
            clock.carry(float(partial["time"]), float(partial.get("data", 0.0)), list(partial.get("step_times", [])))
        self._c2f_paused = False
        return clock

    def _pause_clock(self) -> None:
        if self._c2f_clock is not None and self._c2f_epoch and not self._c2f_paused:
            self._c2f_clock.pause()
            self._c2f_paused = True

    def _resume_clock(self) -> None:
        if self._c2f_clock is not None and self._c2f_paused:
            self._c2f_clock.resume()
            self._c2f_paused = False

    def _step_begin(self) -> None:
        self._resume_clock()
        if self._c2f_clock is not None and self._c2f_epoch:
            self._c2f_clock.batch_ready()

    def _step_end(self) -> None:
        if self._c2f_clock is not None and self._c2f_epoch:
            self._c2f_clock.step_done()
            self._c2f_epoch["steps"] += 1

    def _begin_epoch(self, epoch: int, max_steps: int, num_epochs: float) -> None:
        partial, self._c2f_partial = self._c2f_partial, None
        if partial is not None and partial["epoch"] < epoch:  # a checkpoint of an epoch's last step, before its end
            self._c2f_epoch = {k: partial[k] for k in ("epoch", "flops", "clips", "steps", "lr")}
            self._c2f_epoch["loss"] = float(partial.get("loss", 0.0))
            self._c2f_clock = self._new_clock(partial)
            self._c2f_eval_seconds = 0.0
            self._end_epoch()
        phase = self.c2f_schedule.at_epoch(epoch).index
        if phase != self.c2f_phase:
            if self.model_wrapped is not self.model:
                raise RuntimeError("the model is wrapped (DataParallel, DDP, ...): CoarseToFineTrainer trains on one device")
            self._move(phase)
            self._reset_optimizer(max(1, max_steps // max(1, round(num_epochs))))
            log.info("coarse-to-fine: phase %d/%d, R=%d, input %s", phase + 1, len(self.c2f_schedule.phases),
                     self.c2f_schedule.phases[phase].R, self.c2f_schedule.geometry(phase))
        # The optimizer's LR now is the one of the epoch's first step (the schedule steps after it).
        lr = self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else 0.0
        self._c2f_epoch = {"epoch": int(epoch), "flops": 0, "clips": 0, "steps": 0, "lr": float(lr), "loss": 0.0}
        self._c2f_eval_seconds = 0.0
        resumed = partial is not None and partial["epoch"] == epoch  # resumed in this epoch's middle
        if resumed:
            self._c2f_epoch.update({k: partial[k] for k in ("flops", "clips", "steps", "lr")})
            self._c2f_epoch["loss"] = float(partial.get("loss", 0.0))
        self._c2f_clock = self._new_clock(partial if resumed else None)

    def _end_epoch(self) -> None:
        e, clock = self._c2f_epoch, self._c2f_clock
        if clock is None:
            raise RuntimeError("no training epoch is under way")
        self._resume_clock()
        seconds, data_time, step_times = clock.elapsed(), clock.data, clock.step_times()
        prev = self.c2f_records[-1] if self.c2f_records else None
        tokens = hf_ast_config(self.model).num_tokens
        phase_epoch = e["epoch"] + 1 - self.c2f_schedule.start_epoch(self.c2f_phase)
        record = EpochRecord(
            epoch=int(e["epoch"]) + 1, phase=self.c2f_phase, R=self.c2f_schedule.phases[self.c2f_phase].R,
            phase_epoch=phase_epoch, tokens=tokens, train_tokens=tokens, batch_size=self.c2f_batch_size,
            lr=float(e["lr"]), clips=e["clips"], steps=e["steps"], train_flops=float(e["flops"]),
            train_loss=float(e["loss"]) / e["steps"] if e["steps"] else None,
            cum_flops=(prev.cum_flops if prev else 0.0) + e["flops"], train_time=seconds,
            cum_time=(prev.cum_time if prev else 0.0) + seconds, data_time=data_time,
            **step_summary(step_times, data_time), eval_time=self._c2f_eval_seconds,
            **machine_fields(self.args.device, self.args.world_size),
        )
        self.c2f_records.append(record)
        self._c2f_epoch, self._c2f_clock = {}, None
        self.log({"c2f_phase": float(record.phase), "c2f_R": float(record.R), "c2f_train_flops": record.train_flops,
                  "c2f_cum_flops": record.cum_flops, "c2f_train_time": record.train_time, "c2f_cum_time": record.cum_time})

    def _add_metrics(self, metrics: dict[str, float]) -> None:
        """Evaluation metrics of the epoch just closed join its record (in training only)."""
        if self.c2f_records and not self._c2f_epoch and self._c2f_training:
            last = self.c2f_records[-1]
            self.c2f_records[-1] = dataclasses.replace(last, metrics={**last.metrics, **eval_metrics(metrics)})

    # --- batches -------------------------------------------------------------------------------
    def _compress(self, inputs: dict[str, Any]) -> dict[str, Any]:
        if self.c2f_key not in inputs:
            raise ValueError(f"the batch has no {self.c2f_key!r} (keys: {', '.join(inputs)}); input_key= names the input")
        inputs[self.c2f_key] = compress(inputs[self.c2f_key], self.c2f_compression, self.c2f_inputs, self.c2f_features)
        return inputs

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        inputs = self._compress(inputs)
        n = len(inputs[self.c2f_key])
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self._c2f_epoch:  # every micro-batch (the steps are counted at each optimizer step's end)
            self._c2f_epoch["flops"] += step_flops(self.model, n)
            self._c2f_epoch["clips"] += n
            # the Trainer's own sum: each micro-batch's loss scaled for accumulation, so that the
            # epoch's sum over its optimizer steps is the mean step loss the Trainer logs (a device
            # tensor, read at the epoch's end)
            self._c2f_epoch["loss"] = self._c2f_epoch["loss"] + loss.detach()
        return loss

    def prediction_step(self, model: torch.nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> Any:
        return super().prediction_step(model, self._compress(inputs), prediction_loss_only, ignore_keys)

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """The analytic FLOPs of the step (instead of 6 x parameters x tokens)."""
        return step_flops(self.model, len(inputs[self.c2f_key]))

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """The ``Trainer``'s ``evaluate``, its seconds left out of the training time: in an epoch
        they are the epoch's ``eval_time``; after the epoch (``eval_strategy="epoch"``) they join
        its record in training."""
        start = time.perf_counter()
        in_epoch = bool(self._c2f_epoch)
        self._pause_clock()
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            seconds = time.perf_counter() - start
            if in_epoch:
                self._c2f_eval_seconds += seconds
                self._resume_clock()
            elif self.c2f_records and self._c2f_training:
                last = self.c2f_records[-1]
                self.c2f_records[-1] = dataclasses.replace(last, eval_time=last.eval_time + seconds)

    # --- saving and resuming --------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The ``Trainer``'s ``save_model`` (also called for every checkpoint), plus
        ``coarse2fine_state.json``: the phase, the records, the sums of an epoch in progress."""
        if _internal_call:
            self._pause_clock()  # a checkpoint in the middle of an epoch: not training time (on_save resumes)
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            out = output_dir or self.args.output_dir
            partial = None
            if self._c2f_epoch and self._c2f_clock is not None:
                clock = self._c2f_clock
                partial = {k: self._c2f_epoch[k] for k in ("epoch", "flops", "clips", "steps", "lr")}
                partial["loss"] = float(self._c2f_epoch["loss"])
                partial.update(time=clock.elapsed(), data=clock.data, step_times=clock.step_times())
            atomic.write_json(os.path.join(out, STATE_FILE), {
                "phase": self.c2f_phase, "R": self.c2f_schedule.phases[self.c2f_phase].R,
                "records": [r.to_dict() for r in self.c2f_records], "partial": partial})

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """The ``Trainer``'s ``train``; a run resumed from a checkpoint continues in the checkpoint's
        phase: the model moves to its geometry and takes its weights (renamed to the model's own
        keys: transformers 5.x saves AST in the Hub layout, which its own reload does not map)."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"no checkpoint in {self.args.output_dir} to resume from")
        if resume_from_checkpoint:
            state_path = os.path.join(resume_from_checkpoint, STATE_FILE)
            if not os.path.isfile(state_path):
                raise ValueError(f"{resume_from_checkpoint} has no {STATE_FILE}: not a checkpoint of a CoarseToFineTrainer")
            with open(state_path) as f:
                state = json.load(f)
            self._move(int(state["phase"]))
            self.c2f_records = as_records(state["records"])
            self._c2f_partial = state.get("partial")
            weights = os.path.join(resume_from_checkpoint, "model.safetensors")
            if os.path.isfile(weights):
                self.model.load_state_dict(hf_state_dict_for(self.model, load_file(weights)), strict=True)
        return super().train(resume_from_checkpoint, *args, **kwargs)


def ast_feature_spec(feature_extractor: Any) -> FeatureSpec:
    """The :class:`~coarse2fine.features.FeatureSpec` that computes what an ``ASTFeatureExtractor``
    computes (25 ms / 10 ms Kaldi fbank, its mel bins, frames, mean and std), for waveform inputs."""
    from coarse2fine.features import FbankConfig

    fe = feature_extractor
    if not getattr(fe, "do_normalize", True):
        raise ValueError("the feature extractor does not normalise; coarse2fine's features always do (mean, std)")
    return FeatureSpec(FbankConfig(sample_rate=int(fe.sampling_rate), num_mel_bins=int(fe.num_mel_bins)),
                       target_length=int(fe.max_length), mean=float(fe.mean), std=float(fe.std))


def eval_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The quality metrics of an evaluation's ``metrics`` (``eval_loss``, ``eval_accuracy``, ...):
    numbers only, without the ``Trainer``'s ``epoch`` (a float, which would stand in for the
    record's own) and its speed metrics (``eval_runtime``, ``eval_samples_per_second``, ...;
    the record's ``eval_time`` has the seconds)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in RECORD_FIELDS
            and not k.endswith(SPEED_SUFFIXES)}
