"""One process at a time in an output folder: a lock held while a run or a pack writes there.

Two processes writing one run folder (a command started twice, a scheduler retrying while the
first attempt still runs) would each train, overwrite the other's checkpoint and logs, and both
report success. The first takes an exclusive ``fcntl.flock`` on ``LOCK_NAME`` in the folder and
holds it until it is done; the operating system drops it when the process ends, however it ends,
so a crash or a kill leaves no stale lock to clear by hand. The file names its holder (process id,
host, start time) for the error the second process gets. The file itself stays: removing it
would let a third process lock a new file while a second still holds the old one (except where
this process made the lock file for a run or pack that failed before it wrote anything: the lock
file goes, and the folder too if this process created it, so that a failed start leaves nothing
behind). A process
forked while the lock is held (a DataLoader worker) closes its copy of the lock's file descriptor
at once: the lock belongs to the writer, and a worker that outlives a killed writer by a few
seconds must not keep the folder locked against the command that resumes the run.

Holding the lock, a process is the folder's only writer, so the temporary files of atomic writes
there (:mod:`coarse2fine.atomic`) are left over from a process killed mid-write (a checkpoint's
is as large as the model and its optimizer state): they are removed when the lock is taken (not
where the folder is not locked).

Where ``fcntl`` is missing (Windows), or the file system cannot lock (some cluster mounts), the
folder is not locked (with a warning in the second case). The lock is advisory: it keeps
coarse2fine processes apart, not other programs.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from coarse2fine.atomic import remove_stale_temp_files

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".coarse2fine.lock"

log = logging.getLogger(__name__)

_HELD: set[int] = set()  # the file descriptors of the locks this process holds


def _drop_held_in_child() -> None:
    """In a forked child: close the inherited descriptors of the parent's locks (closing, unlike
    ``LOCK_UN``, leaves the parent's lock in place), so that the lock ends with the parent."""
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_held_in_child)


class FolderInUseError(ValueError):
    """Another process holds the folder's lock."""


def _holder(path: Path, what: str) -> str:
    """Who holds the lock file ``path`` and what it writes (as it wrote there; else ``what``)."""
    try:
        held = json.loads(path.read_text())
        return (f"process {held['pid']} on {held['host']}, since {held['since']}, which is writing a "
                f"{held.get('what', what)} there")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "another process, which is writing there"


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "run") -> Iterator[None]:
    """Hold ``folder``'s lock (creating the folder) for the ``with`` block; raise
    :class:`FolderInUseError` at once, naming the holder, when another process holds it. Stale
    temporary files of atomic writes in ``folder`` are removed once the lock is taken."""
    folder = Path(folder)
    created = _missing_folders(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    path = folder / LOCK_NAME
    made_lock = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by exec'd programs (PEP 446)
    _HELD.add(fd)
    locked = False
    try:
        if locked := _lock(fd, folder, path, what):
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                                     "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
            remove_stale_temp_files(folder)  # the only writer now: no write of another process is under way
        yield
    except BaseException:
        if locked and made_lock:
            _remove_if_untouched(folder, path, created)
        raise
    finally:
        _HELD.discard(fd)
        os.close(fd)  # releases the lock


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for p in (folder, *folder.absolute().parents):
        if p.exists():
            break
        missing.append(p)
    return missing


def _remove_if_untouched(folder: Path, path: Path, created: list[Path]) -> None:
    """Remove the lock file ``path`` that this process made for a run or pack that then failed
    before writing anything in ``folder`` (a bad config, a missing manifest), and the folders this
    process created for it (``folder`` and its new parents, those left empty), so that a failed
    start leaves nothing behind. Only while holding the lock, and only when the lock file is all
    the folder holds."""
    try:
        if [p.name for p in folder.iterdir()] == [path.name]:
            path.unlink()
            for made in created:
                made.rmdir()  # refused once a folder holds something else: what is above it stays too
    except OSError:
        pass  # another process's file appeared, or the file system refused: leave it


def _lock(fd: int, folder: Path, path: Path, what: str) -> bool:
    """Take the lock on ``fd``: True when taken, False on a file system that cannot lock (some
    cluster mounts: the run goes on, with a warning); :class:`FolderInUseError` when held."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        raise FolderInUseError(f"{folder} is in use by {_holder(path, what)}; wait "
                               "for it to end or use another output folder") from None
    except OSError as err:
        log.warning("%s: this file system cannot lock files (%s); a second process writing the folder would not "
                    "be stopped", folder, err.strerror or err)
        return False
