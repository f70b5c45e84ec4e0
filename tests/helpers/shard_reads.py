"""Train a config with every clip the training set serves logged, one file per process.

Run by tests/test_shards_training.py under torchrun: ``shard_reads.py CONFIG OUT [SECTION.KEY=VALUE ...]``
writes OUT/reads-<rank>.txt (one clip index a line, in the order read) and trains into OUT/run.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import torch

from coarse2fine.config import load_config
from coarse2fine.data.datasets import ClipDataset
from coarse2fine.data.sources import load_splits
from coarse2fine.training.distributed import leave
from coarse2fine.training.loop import train_run


class ReadLog(ClipDataset):
    """``inner`` as it is, with each index read appended to ``path``."""

    def __init__(self, inner: ClipDataset, path: Path):
        self.inner, self.path = inner, path
        self.class_names, self.multilabel, self.lengths = inner.class_names, inner.multilabel, inner.lengths

    @property
    def serves(self) -> str:  # type: ignore[override]
        return self.inner.serves

    @property
    def targets(self) -> torch.Tensor:  # type: ignore[override]
        return self.inner.targets

    def set_phase(self, spec: Any, compression: Any) -> None:
        self.inner.set_phase(spec, compression)

    def serves_for(self, spec: Any, compression: Any) -> str:
        return self.inner.serves_for(spec, compression)

    def sampling_weights(self) -> torch.Tensor:
        return self.inner.sampling_weights()

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int):
        with open(self.path, "a") as fh:
            fh.write(f"{i}\n")
        return self.inner[i]


def main() -> None:
    config, out, *overrides = sys.argv[1:]
    cfg = load_config(config, overrides)
    splits = load_splits(cfg)
    rank = int(os.environ.get("RANK", "0"))
    logged = dataclasses.replace(splits, train=ReadLog(splits.train, Path(out) / f"reads-{rank}.txt"))
    train_run(cfg, logged, Path(out) / "run", progress=False)
    leave(wait=True)  # as the command line does: no process tears the group down while another still uses it


if __name__ == "__main__":
    main()
