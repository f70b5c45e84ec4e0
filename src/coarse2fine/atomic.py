"""Atomic file writes: a reader (or a crash) never sees a half-written log or checkpoint.

Each writer writes a temporary file in the destination's directory, flushes and fsyncs it, then
renames it over the destination with ``os.replace`` (atomic on POSIX and Windows). A write killed
outright (SIGKILL, a power cut) leaves its temporary file behind: ``.NAME.XXXXXXXX.tmp``
(:data:`TEMP_NAME`), as large as what was being written (a checkpoint). :func:`remove_stale_temp_files`
removes those of a folder, for a process that knows no other one writes there (it holds the
folder's lock: :func:`coarse2fine.folder_lock.folder_lock`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import save_file

log = logging.getLogger(__name__)

# The name of atomic_path's temporary files (its mkstemp call): "." + the destination's name + "."
# + tempfile's 8 random characters (lower-case letters, digits, "_") + ".tmp".
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


def new_file_mode() -> int:
    """The permissions a plain ``open(path, "w")`` gives a new file: 0o666 less the umask
    (read from /proc where there is one; setting the umask to read it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is fsynced and renamed onto ``path``
    with the permissions a plain write would give it (``mkstemp`` makes it private: 0o600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically save ``tensors`` (contiguous CPU copies) as a safetensors file."""
    plain = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(plain, str(tmp), metadata=metadata)


def stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """The temporary files of :func:`atomic_path` directly in ``folder`` (not in its subfolders),
    sorted: every one is stale unless a write into ``folder`` is under way."""
    try:
        entries = list(os.scandir(folder))
    except OSError:  # no such folder (yet): nothing left there
        return []
    return sorted(Path(e.path) for e in entries if TEMP_NAME.fullmatch(e.name) and e.is_file(follow_symlinks=False))


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that writes killed mid-way left directly in ``folder`` (see
    :func:`stale_temp_files`), saying so at INFO; returns them. Only for a process that knows no
    other one is writing into ``folder`` (it holds the folder's lock)."""
    removed = []
    for path in stale_temp_files(folder):
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
        log.info("%s: removed %s (%.1f MB), left by a write that was killed before it finished", folder, path.name,
                 size / 1e6)
    return removed
