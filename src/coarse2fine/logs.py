"""Logging for a stretch of code: :func:`quiet_loggers` raises some loggers' levels and puts them
back, for messages that would mislead or drown the command's own output there; :func:`run_log_file`
keeps a run's log lines in its folder (``train.log``), and an experiment's in its folder
(``experiment.log``: ``demo``, ``experiment``, ``crossval``, ``pretrain-experiment``)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Iterator, Mapping

RUN_LOG = "train.log"
EXPERIMENT_LOG = "experiment.log"


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
    """``folder/train.log``, appended to (a resumed run continues it). Records come in before the
    run has claimed the folder (:func:`claimed`) and made it its own (``config.yaml``): they are
    kept and written first once it has, so the file starts with the config's warnings; a start
    that fails before (another run's folder, a config or data error) writes nothing. A start that
    appends to lines an earlier one wrote begins with a :func:`separator` line, so that each
    start's lines (a resumed run's, or a new run's after a start that failed) read apart.

    An experiment's log (``below``: ``folder/experiment.log``) waits instead for a run below
    ``folder`` to claim its own."""

    def __init__(self, folder: Path, name: str = RUN_LOG, below: bool = False):
        super().__init__(folder / name, mode="a", encoding="utf-8", delay=True)
        self.folder = folder
        self.below = below
        self.claimed = False
        self.waiting: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))

    @property
    def writing(self) -> bool:
        """Whether this handler has written to the file (the run holds the folder)."""
        return self.stream is not None

    def emit(self, record: logging.LogRecord) -> None:
        if not self.writing:
            if not (self.claimed and (self.below or (self.folder / "config.yaml").is_file())):
                self.waiting.append(record)
                return
            waiting, self.waiting = self.waiting, []
            if _holds_lines(Path(self.baseFilename)):
                self.stream = self._open()
                self.stream.write(separator((waiting or [record])[0].created) + self.terminator)
            for earlier in waiting:
                super().emit(earlier)
        super().emit(record)


def separator(created: float) -> str:
    """The line that starts the lines of a start appended to an earlier one's in ``train.log``."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
    return f"---------- {when} another start in this folder; the lines above are earlier starts' ----------"


def _holds_lines(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


_RUN_LOGS: dict[Path, RunLogFile] = {}


def claimed(folder: str | os.PathLike) -> None:
    """Say that a run has claimed ``folder`` (the run-folder rules let it train or reuse it
    there): its :class:`RunLogFile`, and that of an experiment it is part of, if one waits, may
    write from then on."""
    key = Path(folder).absolute()
    for at, handler in _RUN_LOGS.items():
        if at == key or (handler.below and at in key.parents):
            handler.claimed = True


@contextlib.contextmanager
def run_log_file(folder: str | os.PathLike, experiment: bool = False) -> Iterator[None]:
    """Within the block, coarse2fine's log lines as the console gets them (INFO and up, warnings
    only with ``--quiet``) also go to ``folder/train.log`` (``experiment``: to
    ``folder/experiment.log``, from when the first of its runs claims its folder), with the date
    (see :class:`RunLogFile`), and so does the error that ends the block once the run has written
    there: a run under a scheduler keeps its log beside its checkpoints. Under torchrun only the
    main process (RANK 0) writes."""
    if int(os.environ.get("RANK", "0")):
        yield
        return
    key = Path(folder).absolute()
    handler = RunLogFile(key, EXPERIMENT_LOG, below=True) if experiment else RunLogFile(key)
    logger = logging.getLogger("coarse2fine")
    logger.addHandler(handler)
    _RUN_LOGS[key] = handler
    try:
        yield
    except BaseException as err:  # how the run ended, as the command says it on the console (not logged there)
        if handler.writing:
            handler.emit(logging.makeLogRecord({"name": "coarse2fine", "levelno": logging.ERROR,
                                                "levelname": "ERROR", "msg": f"stopped: {type(err).__name__}: {err}"}))
        raise
    finally:
        _RUN_LOGS.pop(key, None)
        logger.removeHandler(handler)
        handler.close()
