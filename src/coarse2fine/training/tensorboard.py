"""TensorBoard scalars of a run (``train.tensorboard: true``; needs the optional ``tensorboard``
package): every per-epoch value against the epoch, and the validation metrics against the
cumulative training FLOPs (step = GFLOPs) and time (step = milliseconds), so that a coarse-to-fine
run and its baseline can be compared on TensorBoard's own axes."""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Iterable

from coarse2fine.training.records import EpochRecord


class TensorBoardLog:
    """Writes a run's records to ``out_dir/tensorboard`` as they come."""

    def __init__(self, out_dir: Path, metrics: Iterable[str]):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))
        self.metrics = list(metrics)

    def epoch(self, record: EpochRecord) -> None:
        """Add one epoch's record."""
        epoch, values = record.epoch, record.to_dict()
        for key, value in values.items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool) and key != "epoch":
                self.writer.add_scalar(f"epoch/{key}", float(value), epoch)
        flops_step, time_step = int(round(record.cum_flops / 1e9)), int(round(1000 * record.cum_time))
        for metric in self.metrics:
            if metric in record.metrics:
                self.writer.add_scalar(f"vs_gflops/{metric}", record.metric(metric), flops_step)
                self.writer.add_scalar(f"vs_time_ms/{metric}", record.metric(metric), time_step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
