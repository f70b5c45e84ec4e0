"""Progress bars only on a terminal: a piped or captured stderr gets the per-epoch log lines, not
hundreds of carriage-return updates."""

from __future__ import annotations

import io
import logging
import os

from coarse2fine.cli import main
from coarse2fine.training.progress import show_bars

TINY = ["data.train_clips=16", "data.val_clips=8", "train.epochs=2", "train.batch_size=4", "train.threads=1",
        "model.preset=micro", "c2f.schedule=1"]


def test_bars_only_on_a_terminal_and_never_when_quiet():
    assert not show_bars(stream=io.StringIO())
    leader, follower = os.openpty()
    with open(leader, "w") as _, open(follower, "w") as terminal:
        assert show_bars(stream=terminal)
        assert not show_bars(quiet=True, stream=terminal)


def test_training_to_a_captured_stderr_draws_no_bars_but_logs_every_epoch(tmp_path, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="coarse2fine"):
        assert main(["train", "demo", "--out", str(tmp_path), *[a for s in TINY for a in ("--set", s)]]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "it/s" not in err  # stderr is no terminal here: no bar, no updates
    epochs = [r.getMessage() for r in caplog.records if " epoch " in r.getMessage() and "loss" in r.getMessage()]
    assert len(epochs) == 2 and epochs[0].startswith("demo epoch 1")
