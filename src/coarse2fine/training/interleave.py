"""Several runs trained in turns, an epoch each, in one process: time that is fair between them.

A machine's speed drifts: a shared VM ran the same step up to 1.4x slower for minutes at a time
(docs/RESULTS.md), so runs trained one after the other are charged for the minutes each happened
to meet, and a baseline trained in a fast stretch makes every coarse-to-fine run look slower.
Taking turns (baseline epoch 1, variant A epoch 1, variant B epoch 1, baseline epoch 2, ...)
puts a run's epoch k in the same stretch of time as every other run's, so a slow stretch longer
than a round slows them all and the ratios of their times stay what the steps cost (a shorter one
still falls on some runs' epochs only; the calibrated column, timed step by step, removes that).
Each run keeps its own epoch clock, so its time columns count only its own epochs.

Each run trains exactly what it would alone: it has its own copy of the data's per-phase state
(:meth:`~coarse2fine.data.datasets.DataSplits.separate`) and its own share of torch's global
random-number state (the model's dropout and initialisation draw from it), kept while the others
take their turns. Runs pause only after an epoch whose checkpoint is written, so an interrupted
group resumes with the same command as sequential runs do. Memory holds every run's model and
optimizer at once, and each run's per-phase features when the data is held in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Mapping

import torch

from coarse2fine.training.interrupt import RunInterrupted, StopRequest, stop_on_signals
from coarse2fine.training.loop import RunResult

log = logging.getLogger(__name__)

Epochs = Generator[None, None, RunResult]


@dataclass
class Turn:
    """One run of the group: its folder, its epochs (paused between turns) and its random-number
    state."""

    folder: Path
    epochs: Epochs
    rng: dict[str, Any] | None = None  # None: not started (the run seeds torch itself)
    result: RunResult | None = None


def global_rng() -> dict[str, Any]:
    """Torch's global random-number state (CPU, and every CUDA device once CUDA is in use)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng(state: dict[str, Any]) -> None:
    """Give torch's global generators ``state`` (from :func:`global_rng`)."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def take_turn(turn: Turn) -> bool:
    """Train ``turn``'s run for one epoch under its own random-number state; False once it has
    finished (its result kept)."""
    if turn.rng is not None:
        set_global_rng(turn.rng)
    try:
        next(turn.epochs)
    except StopIteration as done:
        turn.result = done.value
        return False
    turn.rng = global_rng()
    return True


def train_interleaved(start: Mapping[Path, Callable[[StopRequest], Epochs]]) -> list[RunResult]:
    """Train the runs ``start`` begins in their folders (each called with the group's stop
    request, returning :func:`~coarse2fine.training.loop.train_epochs` of one run) in turns of one
    epoch each, in the order given, until all have finished; returns their results in that order.
    SIGINT or SIGTERM stops the run whose turn it is after its step, with a checkpoint, and ends
    the others at the checkpoint of their last epoch: the
    :class:`~coarse2fine.training.interrupt.RunInterrupted` raised names them all. Any error ends
    them the same way."""
    outer = global_rng()
    with stop_on_signals() as stop:
        turns = [Turn(folder, begin(stop)) for folder, begin in start.items()]
        try:
            active = list(turns)
            while active:
                kept = []
                for turn in active:
                    try:
                        if take_turn(turn):
                            kept.append(turn)
                    except RunInterrupted as stopped:
                        raise _group_stopped(stopped, [t for t in turns if t is not turn]) from None
                active = kept
        finally:
            for t in turns:
                t.epochs.close()  # a run paused between epochs releases its folder; its checkpoint stays
            set_global_rng(outer)
    trained = [t.result for t in turns if t.result is not None and t.result.status != "finished"]
    if trained:
        others = "" if len(trained) == len(turns) else " (the others had finished before)"
        log.info("%d of %d runs trained in turns of one epoch%s", len(trained), len(turns), others)
    return [t.result for t in turns]  # type: ignore[misc]  # every run has finished here


def _group_stopped(stopped: RunInterrupted, others: list[Turn]) -> RunInterrupted:
    """``stopped``, with the runs of the group that it left paused between two epochs."""
    paused = [str(t.folder) for t in others if t.rng is not None and t.result is None]
    if not paused:
        return stopped
    return RunInterrupted(f"{stopped}; the runs trained in turns with it stopped at the end of their last epoch, each "
                          f"with its checkpoint: {', '.join(paused)}", stopped.signum)
