"""Run folders on disk: what makes a folder a coarse2fine run's, and the runs below a folder (an
experiment's), named in the errors of commands given an experiment folder for a run folder."""

from __future__ import annotations

import os
from pathlib import Path

CHECKPOINT = "checkpoint.safetensors"
BEST_WEIGHTS = "model_best.safetensors"  # the final phase's best epoch (train.save_best), beside the last one's
RUN_MARKERS = ("model_config.json", "config.yaml", CHECKPOINT)  # a run folder holds one of these
SHOWN_RUNS = 4  # runs named when an experiment folder is given for a run folder
_MAX_SCANNED = 2000  # folders looked into when listing the runs below a folder (a home folder is not walked)
UNFINISHED = " (unfinished)"  # how runs_below marks a run without its final weights


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a coarse2fine run folder, finished or not (:data:`RUN_MARKERS`)."""
    return any((Path(path) / name).is_file() for name in RUN_MARKERS)


def runs_below(folder: str | os.PathLike, depth: int = 3) -> list[str]:
    """The run folders below ``folder`` (an experiment's: ``baseline``, ``pretrain/base``), at most
    ``depth`` levels down, as paths relative to it, sorted; an unfinished one (no
    ``model_config.json`` yet) is marked. Hidden folders and those inside a run are skipped."""
    root, found, scanned = Path(folder), [], 0
    level = [root]
    for _ in range(depth):
        below = []
        for parent in level:
            try:
                children = sorted(c for c in parent.iterdir() if c.is_dir() and not c.name.startswith("."))
            except OSError:
                continue
            for child in children:
                scanned += 1
                if scanned > _MAX_SCANNED:
                    return sorted(found)
                if is_run_folder(child):
                    done = (child / "model_config.json").is_file()
                    found.append(child.relative_to(root).as_posix() + ("" if done else UNFINISHED))
                else:
                    below.append(child)
        level = below
    return sorted(found)


def runs_held(folder: str | os.PathLike) -> str:
    """``FOLDER holds runs: a, b, ...: give one of them, e.g. FOLDER/a`` for a folder with run
    folders below it (a finished one as the example), or "" when it holds none."""
    path, runs = Path(folder), runs_below(folder)
    if not runs:
        return ""
    shown = ", ".join(runs[:SHOWN_RUNS]) + (f", ... ({len(runs)} in all)" if len(runs) > SHOWN_RUNS else "")
    example = next((r for r in runs if not r.endswith(UNFINISHED)), runs[0].removesuffix(UNFINISHED))
    return f"{path} holds runs: {shown}: give one of them, e.g. {path / example}"
