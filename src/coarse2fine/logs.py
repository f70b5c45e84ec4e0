"""Logging for a stretch of code: :func:`quiet_loggers` raises some loggers' levels and puts them
back, for messages that would mislead or drown the command's own output there; :func:`run_log_file`
keeps a run's log lines in its folder (``train.log``)."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator, Mapping

RUN_LOG = "train.log"


@contextlib.contextmanager
def quiet_loggers(levels: Mapping[str, int]) -> Iterator[None]:
    """Within the block, each named logger (and its children) passes only records at or above its
    level in ``levels``; the loggers' own levels are restored afterwards."""
    loggers = {logging.getLogger(name): level for name, level in levels.items()}
    before = {lg: lg.level for lg in loggers}
    for lg, level in loggers.items():
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, level in before.items():
            lg.setLevel(level)


class RunLogFile(logging.FileHandler):
    """``folder/train.log``, appended to (a resumed run continues it); nothing is written before the
    folder holds a run (its ``config.yaml``, written when the run starts), so a start that fails
    (a refused folder, bad data) leaves the folder as it was."""

    def __init__(self, folder: Path):
        super().__init__(folder / RUN_LOG, mode="a", encoding="utf-8", delay=True)
        self.folder = folder
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None and not (self.folder / "config.yaml").is_file():
            return
        super().emit(record)


@contextlib.contextmanager
def run_log_file(folder: str | os.PathLike, not_ours: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Within the block, coarse2fine's log lines as the console gets them (INFO and up, warnings
    only with ``--quiet``) also go to ``folder/train.log``, with the date, and so does the error
    that ends the block, unless it is one of ``not_ours`` (the folder was refused: it holds another
    run, whose log it is): a run under a scheduler keeps its log beside its checkpoints. Under
    torchrun only the main process (RANK 0) writes."""
    if int(os.environ.get("RANK", "0")):
        yield
        return
    logger, handler = logging.getLogger("coarse2fine"), RunLogFile(Path(folder))
    logger.addHandler(handler)
    try:
        yield
    except BaseException as err:  # how the run ended, as the command says it on the console (not logged there)
        if not isinstance(err, not_ours):
            handler.emit(logging.makeLogRecord({"name": "coarse2fine", "levelno": logging.ERROR,
                                                "levelname": "ERROR", "msg": f"stopped: {type(err).__name__}: {err}"}))
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()
