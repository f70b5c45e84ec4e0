"""Where a run stands, and the random-number state it needs to go on exactly.

:class:`Progress` is the typed record a checkpoint's ``progress`` section holds: the phase and
epoch being trained, the optimizer steps done in that epoch, the partial sums of that epoch, and
the per-epoch records so far. :class:`RngState` saves and restores torch's global generator (and
CUDA's) with the augmentation generator. Both follow the ``state_dict`` / ``load_state_dict``
convention of every checkpoint section. :func:`show_bars` decides whether progress bars are drawn.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import IO, Any, Mapping

import torch

from coarse2fine.training.records import EpochRecord, as_records


def show_bars(quiet: bool = False, stream: IO[str] | None = None) -> bool:
    """Whether to draw progress bars on ``stream`` (default: ``sys.stderr``, where tqdm draws):
    not when ``quiet``, and not when the stream is no terminal (a pipe, a file, a CI log), which
    would collect every update of every bar; tqdm's ``disable=None`` rule. The per-epoch log
    lines are logging's and come either way."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not quiet and callable(isatty) and bool(isatty())


@dataclass
class Progress:
    """The position of a run: it is about to train optimizer step ``step`` (0-based) of epoch
    ``phase_epoch`` (1-based) of phase ``phase`` (0-based), global epoch ``epoch`` (1-based).

    ``model_phase``: the phase whose geometry the model weights have (the previous phase at a
    phase boundary). ``fresh_phase``: the run stands at the start of a phase that has not begun,
    so its optimizer and LR schedule start fresh rather than from the checkpoint. ``epoch_time`` /
    ``data_time`` / ``loss_sum`` / ``seen`` / ``lr`` / ``step_times``: the partial sums of the current
    epoch (``loss_sum`` and ``seen`` over the global batches: every process's clips under torchrun).
    ``records``: one :class:`~coarse2fine.training.records.EpochRecord` per finished epoch;
    ``warmups``: seconds of each entered phase's warm-up (kernel selection, compilation);
    ``entries``: per phase entered after the first, the carried-over model's metrics evaluated at
    the phase's resolution before it trained (``c2f.eval_on_entry``), and ``entry_times`` the
    seconds that evaluation took (evaluation time of the phase's first epoch).
    """

    phase: int = 0
    phase_epoch: int = 1
    epoch: int = 1
    step: int = 0
    model_phase: int = 0
    fresh_phase: bool = True
    epoch_time: float = 0.0
    data_time: float = 0.0
    loss_sum: float = 0.0
    seen: int = 0
    lr: float = 0.0
    step_times: list[float] = field(default_factory=list)
    records: list[EpochRecord] = field(default_factory=list)
    warmups: dict[int, float] = field(default_factory=dict)
    entries: dict[int, dict[str, float]] = field(default_factory=dict)
    entry_times: dict[int, float] = field(default_factory=dict)

    @property
    def cum_flops(self) -> float:
        return self.records[-1].cum_flops if self.records else 0

    @property
    def cum_time(self) -> float:
        return self.records[-1].cum_time if self.records else 0.0

    def start_epoch(self, lr: float) -> None:
        """Reset the epoch's partial sums; ``lr`` is the learning rate it starts at."""
        self.step, self.epoch_time, self.data_time, self.loss_sum, self.seen, self.lr = 0, 0.0, 0.0, 0.0, 0, lr
        self.step_times = []

    def advance(self, leave_phase: bool) -> None:
        """Move past a finished epoch; to the next phase if ``leave_phase``."""
        self.model_phase = self.phase
        if not leave_phase:
            self.phase_epoch += 1
            self.fresh_phase = False
        else:
            self.phase, self.phase_epoch, self.fresh_phase = self.phase + 1, 1, True
        self.epoch += 1
        self.step = 0

    def state_dict(self) -> dict[str, Any]:
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        state["records"] = [r.to_dict() for r in self.records]
        state["step_times"] = torch.tensor(self.step_times, dtype=torch.float64)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` (``entries`` and ``entry_times`` empty when a checkpoint
        written before they existed lacks them)."""
        for f in dataclasses.fields(self):
            if f.name in ("entries", "entry_times") and f.name not in state:
                setattr(self, f.name, {})
                continue
            setattr(self, f.name, state[f.name])
        self.records = as_records(state["records"])
        self.step_times = [float(s) for s in state["step_times"]]
        self.warmups = {int(k): float(v) for k, v in state["warmups"].items()}
        self.entries = {int(k): {m: float(v) for m, v in metrics.items()} for k, metrics in self.entries.items()}
        self.entry_times = {int(k): float(v) for k, v in self.entry_times.items()}


class RngState:
    """The generators training draws from in this process: torch's global one (dropout,
    stochastic depth), CUDA's on a GPU, and the augmentation generator (SpecAugment, mixup,
    masking). Under torchrun each process has its own; a checkpoint keeps every process's."""

    def __init__(self, aug: torch.Generator, device: torch.device):
        self.aug = aug
        self.device = device

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"torch": torch.get_rng_state(), "aug": self.aug.get_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        torch.set_rng_state(state["torch"])
        self.aug.set_state(state["aug"])
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)
