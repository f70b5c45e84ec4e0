"""The rules of a run folder: a run is never lost by accident.

A folder holds at most one run. :func:`claim_folder` decides, before anything trains, what a new
run may do with a folder: continue the interrupted run of the same config that left its
checkpoint there, reuse the finished run of the same config, start in an empty folder, or start
over when asked (``fresh``); anything else (another config's run, finished or not) is refused,
naming what differs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from coarse2fine.config.files import config_difference, differing_keys, path_keys
from coarse2fine.training.checkpoint import load_checkpoint
from coarse2fine.training.records import EpochRecord, PhaseRecord, as_records

CHECKPOINT = "checkpoint.safetensors"
RUN_FILES = (CHECKPOINT, "log.json", "log.csv", "model.safetensors", "model_wa.safetensors", "model_config.json")


class RunFolderError(ValueError):
    """The output folder holds another run that this one would overwrite."""


def claim_folder(config: dict[str, Any], out_dir: Path, resume: bool,
                 fresh: bool) -> tuple[list[EpochRecord], list[PhaseRecord]] | None:
    """Apply the run-folder rules to a run of ``config`` (a config dict): with ``resume`` a
    checkpoint of this config is continued (the loop reads it) and a finished run of this config
    is reused (its epoch and phase records are returned); without, a folder holding a run is
    refused; ``fresh`` discards what the folder holds. A run of another config is refused unless
    ``fresh``."""
    log_path, ckpt = out_dir / "log.json", out_dir / CHECKPOINT
    if fresh:
        for name in RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(out_dir / "tensorboard", ignore_errors=True)
        return None
    saved = _read_log(log_path)
    if ckpt.exists():
        ckpt_config = load_checkpoint(ckpt)["config"]
        if ckpt_config != config:
            raise RunFolderError(f"{out_dir} holds an unfinished run of another config "
                                 f"({config_difference(ckpt_config, config)}); continue it with its own config, "
                                 "use another --out, or --fresh to discard it")
        if not resume:
            raise RunFolderError(f"{out_dir} holds an unfinished run of this config; continue it with --resume, "
                                 "or --fresh to start over")
        return None
    if saved is not None and saved.get("done"):
        if saved.get("config") != config:
            raise RunFolderError(f"{out_dir} holds a finished run of another config "
                                 f"({config_difference(saved.get('config') or {}, config)}); "
                                 "use another --out, or --fresh to overwrite it")
        if not resume:
            raise RunFolderError(f"{out_dir} holds this finished run already; --fresh trains it again")
        return _finished_records(saved)
    return None


def check_same_data(saved: dict[str, Any] | None, current: dict[str, Any], out_dir: Path) -> None:
    """Refuse to continue a checkpoint on other data than it was trained on (clips added or
    removed, a bad clip fixed or broken, other classes: the epoch order and the targets would
    change under it). ``saved`` is None for a checkpoint written before signatures: not checked."""
    if saved is None or saved == current:
        return
    changed = {key: (u, v) for key, u, v in differing_keys(saved, current)}
    ids = changed.pop("classes_sha256", None)
    notes = [f"{key} {u} -> {v}" for key, (u, v) in changed.items()]
    if ids is not None and "classes" not in changed:  # as many classes, other ids
        notes.append("class ids differ")
    raise RunFolderError(f"{out_dir} holds an unfinished run trained on other data ({', '.join(notes)}); continue it "
                         "on the data it started with, use another --out, or --fresh to start over")


def read_finished(config: dict[str, Any], out_dir: Path) -> tuple[list[EpochRecord], list[PhaseRecord], list[str]] | None:
    """The epoch and phase records of the finished run of ``config`` in ``out_dir``, read for a
    report without claiming the folder; None when it holds no finished run (empty, or a checkpoint
    of a run still going). Configs that differ only in path keys (a relative path resolved from
    another working folder, logs copied elsewhere) match; those differences are returned as
    ``key: theirs vs ours``. A finished run of another config raises :class:`RunFolderError`."""
    saved = _read_log(out_dir / "log.json")
    if (out_dir / CHECKPOINT).exists() or saved is None or not saved.get("done"):
        return None
    theirs, paths = saved.get("config") or {}, path_keys()
    other = config_difference(theirs, config, ignore=paths)
    if other:
        raise RunFolderError(f"{out_dir} holds a finished run of another config ({other})")
    return (*_finished_records(saved), [f"{key}: {u!r} vs {v!r}" for key, u, v in differing_keys(theirs, config)])


def _finished_records(saved: dict[str, Any]) -> tuple[list[EpochRecord], list[PhaseRecord]]:
    """The epoch and phase records of a finished run's ``log.json`` (read as ``saved``)."""
    return as_records(saved["records"]), [PhaseRecord.from_dict(p) for p in saved.get("phases") or []]


def _read_log(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None

