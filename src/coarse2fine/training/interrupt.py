"""Stopping a run cleanly on SIGINT (Ctrl-C) or SIGTERM (a cluster's preemption, ``kill``).

The first signal asks the run to stop: the loop ends the step it is in, writes a checkpoint there
and raises :class:`RunInterrupted`, and the command exits with 128 + the signal's number (130 for
Ctrl-C, 143 for SIGTERM). The same command then continues from that step, so an hour-long
AudioSet epoch is not trained again from its start. A second Ctrl-C stops at once (Python's
``KeyboardInterrupt``), keeping the last checkpoint written before it.

Several processes (torchrun) stop together: each is sent the signal, and they agree at the points
where they already wait for each other (every ``train.log_every`` steps, where the loss is read
across them, every ``train.checkpoint_every`` steps and each epoch's end), so no process leaves a
collective the others are in, and write a checkpoint there. torchrun kills its processes 30 s
after it passes a signal on: a meeting point further away than that keeps the checkpoint before.
Handlers are installed only in the main thread (Python allows no other) and the previous ones are
restored when the run ends.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from coarse2fine.training.distributed import Dist, agree_any

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(Exception):
    """The run stopped on a signal after writing a checkpoint; ``exit_code`` is 128 + its number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclass
class StopRequest:
    """Which signal asked the run to stop (None: none yet)."""

    signum: int | None = None
    when: str = "after this step"  # where the run stops, as the signal's warning says it

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None

    def agreed(self, d: Dist, sync_point: bool = True) -> bool:
        """Whether the run stops here: in one process at any step; with several, only at
        ``sync_point`` steps and when any of them was signalled (all of them then stop there)."""
        if d.world == 1:
            return self.requested
        return sync_point and agree_any(self.requested, d)

    def interruption(self, run: str, where: str, checkpoint: Path) -> RunInterrupted:
        """The error that ends run ``run`` at ``where``, once its checkpoint is written."""
        cause = self.name if self.requested else "another process's signal"
        return RunInterrupted(f"{run}: stopped on {cause} at {where}; checkpoint {checkpoint}: run the same command "
                              "to continue", self.signum or signal.SIGTERM)


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """A :class:`StopRequest` that SIGINT and SIGTERM set while the ``with`` block runs (see the
    module docstring); outside the main thread, one that nothing sets."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: object) -> None:
        if request.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        request.signum = signum
        now = "Ctrl-C again" if signum == signal.SIGINT else "a SIGINT (Ctrl-C)"
        log.warning("%s: stopping %s to write a checkpoint; the same command continues the run "
                    "(%s stops at once, from the last checkpoint)", request.name, request.when, now)

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield request
    finally:
        restore_handlers(previous)


def restore_handlers(previous: dict[int, Any]) -> None:
    """Put back the signal handlers ``previous`` held (``signal.getsignal``'s None, a handler set
    outside Python, becomes the default)."""
    for s, h in previous.items():
        signal.signal(s, h if h is not None else signal.SIG_DFL)
