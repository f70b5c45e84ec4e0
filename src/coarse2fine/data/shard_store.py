"""Where shards are read from: a local folder, used in place, or an http(s) URL, downloaded once
per machine into a cache and checked before use.

Local shards are opened where they are (nothing is copied, no lock file is written beside them,
so a read-only mount works) after a check against their descriptor: size on every open, sha256
once per machine (below). A remote shard is
downloaded on its first read into ``cache_dir`` under its sha256 (content-addressed: a repacked
set never reads a stale download, an identical one reuses it), to a temporary name, checked
for size and sha256 while it streams, then renamed into place; an HTTP error page, a cut
connection or a changed file is an error naming the URL and never lands in the cache. A lock
per shard makes the DataLoader workers and processes of one machine download it once. Shards
stay in the cache; remove the folder to free the space (every process of a node reads every
shard under a global shuffle, so a node's cache ends up holding the whole split).

**A local shard's sha256** is compared with its descriptor's before training first reads it:
a shard damaged in place (same size: a flipped bit, a bad copy) would otherwise be read
silently, since a float16 feature member still loads. Hashing reads the whole file, so it is
done once per shard per machine, not per epoch or per process: the training loop makes new
DataLoader workers every epoch, and every worker of every torchrun rank opens every shard under
a global shuffle. What was verified is remembered by a marker in the same cache folder,
``cache_dir/verified/XX/<sha256 of the shard's real path>.json``, holding the key it is valid for:
the shard's real path, size, modification time (ns) and inode, and the descriptor's sha256. A
shard whose key differs (rewritten, repacked, replaced by a copy) is hashed again; one whose
bytes changed while keeping its size, modification time and inode is not noticed here
(``coarse2fine check`` always hashes, and removes the marker of a shard that fails). Markers
live in the cache folder, not beside the shard, so read-only shard folders work; a lock file per
shard there makes the first process that opens it hash it while the others wait for the marker.
Within one process a verified key is also memoized, so reopening a shard (``data.open_shards``
below the shard count) costs a ``stat``. The cost: one extra read of each set's bytes on a
machine's first run (spread over the first reads of each shard, in parallel across workers
and ranks; the read also warms the page cache for training's own reads), then nothing beyond a
``stat`` and a marker read (~200 bytes) per shard per process. Where the cache folder cannot
be written, a warning says so and each process hashes the shards it opens (memoized only in
that process).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from coarse2fine.atomic import write_json
from coarse2fine.data.shard_layout import PACK_MANIFEST, ShardError, ShardInfo

log = logging.getLogger(__name__)

REMOTE_SCHEMES = ("http://", "https://")
CHUNK = 1 << 20
TIMEOUT_S = 60
ATTEMPTS = 6  # waits of 1 + 2 + 4 + 8 + 16 s: a server restarting, or a network blip, does not stop a run
MAX_WAIT = 60.0
# HTTP statuses of a server that is busy or restarting: tried again (others, such as 404, are not)
PASSING_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
VERIFIED = "verified"  # cache_dir's folder of markers of verified local shards
T = TypeVar("T")


def is_url(location: str) -> bool:
    """Whether ``location`` is a remote shard location (http or https)."""
    return location.startswith(REMOTE_SCHEMES)


def check_location(location: str, key: str) -> None:
    """Refuse, naming the config key, a remote scheme we cannot read, a local folder that is not
    there, and a pack's top folder given for one of its splits."""
    scheme = location.split("://", 1)[0] if "://" in location else ""
    if scheme and not is_url(location):
        raise ValueError(f"{key}: {location}: {scheme}:// is not supported; serve the packed folder over http(s) "
                         "(a web server, or an object store's https endpoint) or give a local folder")
    if is_url(location):
        return
    folder, split = Path(location), key.rsplit(".", 1)[-1]
    if (folder / PACK_MANIFEST).is_file():
        raise ValueError(f"{key}: {location} is a pack's top folder (it holds {PACK_MANIFEST}); give its split "
                         f"folder: --set {key}={folder / split}")
    if folder.is_file():
        raise ValueError(f"{key}: {location} is a file; data.kind shards reads a split folder written by "
                         f"`coarse2fine pack` (PACK/{split}); for a manifest file, data.kind: manifest")
    if not folder.is_dir():
        raise ValueError(f"{key}: {location}: no such folder (a split folder written by `coarse2fine pack`, e.g. "
                         f"PACK/{split}; a moved pack: set {key} to where it is now)")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/coarse2fine/shards`` (``~/.cache/coarse2fine/shards``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "coarse2fine" / "shards"


def read_bytes(location: str) -> bytes:
    """A small file (a descriptor, an index), local or remote; errors name it."""
    if is_url(location):
        return _with_retries(location, lambda: _fetch(location))
    try:
        return Path(location).read_bytes()
    except FileNotFoundError:
        folder = Path(location).parent
        if folder.is_dir() and any(folder.iterdir()):  # shards but no descriptor yet: a pack that was stopped
            raise ShardError(f"{location}: no such file, though {folder} holds a pack's files: an unfinished "
                             "`coarse2fine pack` (run the same command again: it finishes from its finished "
                             "shards)") from None
        raise ShardError(f"{location}: no such file (is this a folder written by `coarse2fine pack`?)") from None
    except OSError as err:
        raise ShardError(f"{location}: cannot be read ({err})") from None


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def check_local_size(location: str, info: ShardInfo) -> os.stat_result:
    """The local shard at ``location``'s ``stat``, or a :class:`ShardError` naming it when it is
    missing or unreadable or its size is not the descriptor's (``info``)."""
    try:
        st = os.stat(location)
    except OSError as err:
        raise ShardError(f"{location}: cannot be read ({err.strerror or err}); run the same `coarse2fine pack` again "
                         "to write it") from None
    if st.st_size != info.filesize:
        raise ShardError(f"{location}: {st.st_size} bytes, its descriptor says {info.filesize} (truncated, or "
                         "replaced after packing); run the same `coarse2fine pack` again to rewrite it")
    return st


class ShardStore:
    """Maps a shard's location to a local file that holds it (see the module docstring)."""

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._verified: set[tuple] = set()  # keys of local shards verified by or for this process
        self._unrecorded = False  # the cache folder cannot hold markers (warned once)

    def local_path(self, location: str, info: ShardInfo, recheck: bool = False) -> str:
        """A local file holding the shard at ``location`` as ``info`` describes it: a local shard
        after its size check and, once per machine, its sha256 check (``recheck``: hash it even
        when it was verified before, as ``coarse2fine check`` does); a remote one downloaded."""
        if not is_url(location):
            st = check_local_size(location, info)
            self._verify_local(location, info, st, recheck)
            return location
        return str(self._download(location, info))

    def marker(self, location: str) -> Path:
        """Where the marker of the local shard at ``location`` is (see the module docstring)."""
        name = hashlib.sha256(os.path.realpath(location).encode()).hexdigest()
        return self.cache_dir / VERIFIED / name[:2] / f"{name}.json"

    def _verify_local(self, location: str, info: ShardInfo, st: os.stat_result, recheck: bool) -> None:
        """Compare the local shard's sha256 with ``info``'s unless this process or its machine
        already did for this key (the file as ``st`` describes it, the descriptor's sha256)."""
        key = {"path": os.path.realpath(location), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
               "inode": st.st_ino, "sha256": info.sha256}
        memo = tuple(key.values())
        if not recheck and memo in self._verified:
            return
        marker = self.marker(location)
        if not recheck and _marked(marker, key):
            self._verified.add(memo)
            return
        with self._lock(marker) as recorded:
            if not recheck and _marked(marker, key):  # another process hashed it while this one waited
                self._verified.add(memo)
                return
            start = time.perf_counter()
            found = file_sha256(location)
            if found != info.sha256:
                with contextlib.suppress(OSError):
                    os.remove(marker)
                raise ShardError(f"{location}: sha256 differs from its descriptor's ({found[:12]}... instead of "
                                 f"{info.sha256[:12]}..., at the same size: damaged, or replaced after packing); "
                                 "`coarse2fine check` lists every damaged shard, and running the same "
                                 "`coarse2fine pack` again rewrites them")
            if recorded:
                try:
                    write_json(marker, key)
                except OSError as err:
                    self._cannot_record(err)
            self._verified.add(memo)
            log.debug("verified %s (%d bytes) in %.2f s", location, st.st_size, time.perf_counter() - start)

    @contextlib.contextmanager
    def _lock(self, marker: Path) -> Iterator[bool]:
        """Hold the marker's lock file (yields True), or nothing where the cache folder cannot
        be written (yields False, after a warning)."""
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(_exclusive(marker.with_suffix(".lock")))  # one hash per machine; the others wait
            except OSError as err:
                self._cannot_record(err)
                yield False
                return
            yield True

    def _cannot_record(self, err: OSError) -> None:
        if not self._unrecorded:
            self._unrecorded = True
            log.warning("%s: cannot record which local shards were verified (%s); each process will hash "
                        "every shard it opens (set data.shard_cache to a writable folder)",
                        self.cache_dir / VERIFIED, err.strerror or err)

    def cached(self, info: ShardInfo) -> Path:
        return self.cache_dir / info.sha256[:2] / f"{info.sha256}.tar"

    def _download(self, url: str, info: ShardInfo) -> Path:
        final = self.cached(info)
        if final.exists():
            return final
        with _exclusive(final.parent / f"{final.name}.lock"):  # one download per machine; the others wait for it
            if not final.exists():
                _with_retries(url, lambda: self._fetch_to(url, info, final))
        return final

    def _fetch_to(self, url: str, info: ShardInfo, final: Path) -> None:
        tmp = final.with_name(f"{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
        start = time.perf_counter()
        try:
            h, size = hashlib.sha256(), 0
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(tmp, "wb") as out:
                for block in iter(lambda: response.read(CHUNK), b""):
                    h.update(block)
                    size += len(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if size != info.filesize or h.hexdigest() != info.sha256:
                raise ShardError(f"{url}: downloaded {size} bytes with sha256 {h.hexdigest()[:12]}..., its descriptor "
                                 f"says {info.filesize} bytes, {info.sha256[:12]}... (changed on the server, or not a shard)")
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        log.debug("downloaded %s (%d bytes) in %.2f s", url, info.filesize, time.perf_counter() - start)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (made, with its folder, when missing) for the
    block: the processes of one machine take turns, so one of them does the work once."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        yield


def _marked(marker: Path, key: dict) -> bool:
    """Whether ``marker`` records that the shard was verified as ``key`` describes it."""
    try:
        return json.loads(marker.read_text()) == key
    except (OSError, ValueError):
        return False


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        return response.read()


def _with_retries(url: str, fetch: Callable[[], T], sleep: Callable[[float], None] = time.sleep) -> T:
    """``fetch()``, tried again after a network failure or a passing HTTP error (a busy or restarting
    server: :data:`PASSING_HTTP`), :data:`ATTEMPTS` times in all, waiting :func:`retry_wait`
    between tries; another HTTP error (404: no such shard) at once."""
    attempt = 1
    while True:
        try:
            return fetch()
        except urllib.error.HTTPError as err:
            if err.code not in PASSING_HTTP or attempt >= ATTEMPTS:
                tried = f"; tried {attempt} times" if attempt > 1 else ""
                raise ShardError(f"{url}: HTTP {err.code} {err.reason}{tried}") from None
            wait = retry_wait(attempt, err.headers.get("Retry-After") if err.headers else None)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            if attempt >= ATTEMPTS:
                reason = getattr(err, "reason", err)
                raise ShardError(f"{url}: cannot be downloaded ({reason}; tried {ATTEMPTS} times over "
                                 f"{sum(retry_wait(a) for a in range(1, ATTEMPTS)):.0f} s)") from None
            wait = retry_wait(attempt)
        log.warning("%s: try %d of %d failed; trying again in %.1f s", url, attempt, ATTEMPTS, wait)
        sleep(wait)
        attempt += 1


def retry_wait(attempt: int, retry_after: str | None = None) -> float:
    """Seconds to wait after failed try ``attempt``: doubling from 1 s (1, 2, 4, ... s), or what a
    server's ``Retry-After`` asks (seconds), at most :data:`MAX_WAIT`."""
    wait = float(2 ** (attempt - 1))
    if retry_after is not None and retry_after.strip().isdigit():
        wait = max(wait, float(retry_after))
    return min(wait, MAX_WAIT)
