"""Where an epoch's time goes, measured in the real loop: waiting for data, and each step.

:class:`EpochClock` keeps, for one epoch, the wall time of the training loop, the time spent
waiting for batches and every step's time (from the end of one step to the end of the next,
the wait for its batch included). On a GPU a step's time comes from CUDA events recorded as the
step is queued, read once at the end of the epoch, so timing adds no synchronisation per step;
on a CPU it is the host clock. A checkpoint written between two steps is paused out.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch


class EpochClock:
    """Times one epoch's loop (see the module docstring); ``pause``/``resume`` around anything that
    is not training (a checkpoint)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.wall = 0.0
        self.data = 0.0
        self._segments: list[list] = []
        self._earlier: list[float] = []  # step times of the epoch's part before a resume
        self._t0 = self._mark_t = 0.0
        self._running = False

    def _event(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self) -> None:
        """Training starts (again): a new segment of steps."""
        self._t0 = self._mark_t = time.perf_counter()
        self._segments.append([self._event()])
        self._running = True

    def batch_ready(self) -> None:
        """The next batch has arrived: the wait since the last step is data time."""
        now = time.perf_counter()
        self.data += now - self._mark_t

    def step_done(self) -> None:
        """A step has been queued (on a GPU) or run (on a CPU)."""
        self._segments[-1].append(self._event())
        self._mark_t = time.perf_counter()

    def pause(self) -> None:
        """Training stops (a checkpoint follows): wait for the device, close the wall time."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.wall += time.perf_counter() - self._t0
        self._running = False

    resume = start

    def carry(self, wall: float, data: float, step_times: list[float]) -> None:
        """Continue an epoch interrupted earlier (a resume in its middle): its wall time, data wait
        and step times so far count as this clock's."""
        self.wall += wall
        self.data += data
        self._earlier = list(step_times)

    def elapsed(self) -> float:
        """Wall time so far, pauses left out (the host clock: on a GPU, steps still queued are not
        in it until ``pause``)."""
        return self.wall + (time.perf_counter() - self._t0 if self._running else 0.0)

    def step_times(self) -> list[float]:
        """Seconds of every step timed (waits for the device once)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return self._earlier + [a.elapsed_time(b) / 1000.0 for seg in self._segments for a, b in zip(seg, seg[1:])]
        return self._earlier + [b - a for seg in self._segments for a, b in zip(seg, seg[1:])]


def step_summary(step_times: list[float], data_time: float) -> dict[str, Any]:
    """An epoch's step fields for its record from its steps' seconds (each with its wait for data)
    and the epoch's data wait: ``step_time`` (in steps, data wait excluded), ``step_median`` and
    ``step_deciles`` (None where there are too few steps)."""
    return {
        "step_time": max(0.0, sum(step_times) - data_time),
        "step_median": statistics.median(step_times) if step_times else None,
        "step_deciles": statistics.quantiles(step_times, n=10) if len(step_times) > 1 else None,
    }
