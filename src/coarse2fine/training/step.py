"""The one training step: what the loop runs, what ``bench`` and calibration time.

:class:`TrainStep` is an optimizer step on one process's share of a global batch, as the paper's
recipes run it: the batch to the device, mixup, then per micro-batch (gradient accumulation) the
phase's features and compression (as far as the data source has not done them), SpecAugment and
noise, forward and backward under autocast with the gradient scaler, then gradient clipping, the
update and the LR schedule. :func:`build_step` makes it for a phase; the training loop
(:mod:`coarse2fine.training.loop`), ``coarse2fine bench`` and calibration
(:mod:`coarse2fine.report.timing`) all call it, so what is timed is what is trained.

The step does not wait for the device: it returns the loss as a tensor, and a non-finite loss is
either raised before the update (``check_finite``, the CPU default, where reading the loss costs
nothing) or noted on the device (:class:`LossTally`) and read at the loop's logging points.
A :class:`StepProfile` passed in times each stage with a synchronisation at its end, for
``bench --breakdown``.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from coarse2fine.compression import Compression, phase_input
from coarse2fine.config import AugmentConfig, PhaseSetup, RunConfig
from coarse2fine.features import FeatureSpec
from coarse2fine.objectives import Objective
from coarse2fine.training.augment import augment_features, mixup
from coarse2fine.training.distributed import Dist, gather_tensor
from coarse2fine.training.optim import build_optimizer, build_scheduler

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
STAGES = ("data", "features", "forward_backward", "optimizer")


class NonFiniteLoss(RuntimeError):
    """The loss of a step was NaN or infinite (``loss``: its value)."""

    def __init__(self, loss: float):
        super().__init__(f"loss is {loss}")
        self.loss = loss


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class StepProfile:
    """Seconds spent in each stage of the steps it profiled (:data:`STAGES`); each stage ends with
    a device synchronisation, so the stages do not overlap."""

    device: torch.device
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    _last: float = 0.0

    def start(self) -> None:
        synchronize(self.device)
        self._last = time.perf_counter()

    def mark(self, stage: str) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        self.seconds[stage] += now - self._last
        self._last = now


@dataclass
class LossTally:
    """The loss of an epoch's steps summed on the device (each step's loss times the clips this
    process trained on), and the first step whose loss was not finite (-1: none), so that the loop
    reads them only at its logging points; under torchrun a read sums over every process."""

    device: torch.device
    total: torch.Tensor = field(init=False)
    first_bad: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64, device=self.device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.device)

    def add(self, loss: torch.Tensor, clips: int, step: int) -> None:
        self.total += loss * clips
        bad = ~torch.isfinite(loss) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, step), self.first_bad)

    def read(self, d: Dist | None = None) -> tuple[float, int]:
        """(summed loss x clips, first bad step or -1), and a fresh start (waits for the device).
        With several processes ``d`` (a collective: every process reads at the same step), the
        sum over every process's clips and the first bad step of any of them, the same numbers in
        each process."""
        pair = torch.stack([self.total, self.first_bad.double()])
        every = gather_tensor(pair, d) if d is not None else pair.unsqueeze(0)
        self.total.zero_()
        self.first_bad.fill_(-1)
        bad = [int(b) for b in every[:, 1].tolist() if b >= 0]
        return float(every[:, 0].sum()), min(bad, default=-1)


@dataclass
class TrainStep:
    """One optimizer step of a phase (see the module docstring). ``net`` is what is called (the
    model, or its DDP / compiled wrapper), ``model`` the model itself."""

    net: torch.nn.Module
    model: torch.nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    compression: Compression
    features: FeatureSpec
    augment: AugmentConfig
    serves: str
    micro_batch: int
    amp: str
    clip_grad_norm: float
    generator: torch.Generator
    device: torch.device
    check_finite: bool = True
    profile: StepProfile | None = None

    def _mark(self, stage: str) -> None:
        if self.profile is not None:
            self.profile.mark(stage)

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch on the device, mixed up (mixup acts on what the source serves)."""
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        self._mark("data")
        a = self.augment
        if a.mixup > 0:
            x, y = mixup(x, y, a.mixup, a.mixup_alpha, self.generator, a.mixup_targets)
        return x, y

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        """Features, compression and augmentation of one (micro-)batch."""
        feats = phase_input(x, self.serves, self.features, self.compression)
        return augment_features(feats, self.augment, self.compression.time_factor, self.generator)

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gradients of the batch's loss, micro-batch by micro-batch (DDP synchronises on the
        last); returns the loss (a detached device tensor)."""
        dtype = AMP_DTYPES[self.amp]
        chunks = list(zip(x.split(self.micro_batch), y.split(self.micro_batch)))
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for i, (xc, yc) in enumerate(chunks):
            last = i == len(chunks) - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.net, "no_sync") else self.net.no_sync()
            with sync, torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                feats = self.model_input(xc)
                self._mark("features")
                loss = self.objective.training_loss(self.net, feats, yc, self.generator) * len(xc) / len(x)
                self.scaler.scale(loss).backward()
            self._mark("forward_backward")
            total = total + loss.detach().double()
        return total

    def update(self) -> None:
        """Clip, step the optimizer (through the scaler) and the LR schedule."""
        if self.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self._mark("optimizer")

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step on the batch ``(x, y)``; returns the loss (a device tensor). With
        ``check_finite``, a non-finite loss raises :class:`NonFiniteLoss` before the update."""
        if self.profile is not None:
            self.profile.start()
        x, y = self.prepare(x, y)
        loss = self.forward_backward(x, y)
        if self.check_finite and not math.isfinite(float(loss)):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLoss(float(loss))
        self.update()
        return loss


def compile_net(net: torch.nn.Module, mode: str) -> torch.nn.Module:
    """``net`` compiled by ``torch.compile`` for one geometry (``dynamic=False``: a phase change
    compiles again); ``mode`` is ``train.compile_mode`` ("default" is torch's own default)."""
    return torch.compile(net, mode=None if mode == "default" else mode, dynamic=False)


def build_step(cfg: RunConfig, setup: PhaseSetup, model: torch.nn.Module, net: torch.nn.Module, objective: Objective,
               steps_per_epoch: int, serves: str, generator: torch.Generator, device: torch.device,
               world: int = 1, check_finite: bool | None = None) -> TrainStep:
    """The training step of phase ``setup`` for ``model`` (called through ``net``), with a fresh
    optimizer and LR schedule (the paper resets both at each phase change). ``check_finite``
    defaults to True on the CPU in one process, else False (the loop reads the loss at logging
    points, summed over every process, so a non-finite loss stops every process together)."""
    t = cfg.train
    optimizer = build_optimizer(model.parameters(), setup.optim)
    return TrainStep(
        net=net, model=model, objective=objective, optimizer=optimizer,
        scheduler=build_scheduler(optimizer, steps_per_epoch, setup.optim),
        scaler=torch.amp.GradScaler("cuda", enabled=t.amp == "fp16"), compression=setup.compression,
        features=setup.features, augment=cfg.augment, serves=serves,
        micro_batch=max(1, setup.batch_size // (world * t.grad_accum)), amp=t.amp,
        clip_grad_norm=setup.optim.clip_grad_norm, generator=generator, device=device,
        check_finite=device.type == "cpu" and world == 1 if check_finite is None else check_finite,
    )
