"""Quieter logging for a stretch of code: :func:`quiet_loggers` raises some loggers' levels and
puts them back, for messages that would mislead or drown the command's own output there."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Mapping


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
