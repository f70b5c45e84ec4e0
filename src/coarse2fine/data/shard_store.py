"""Where shards are read from: a local folder, used in place, or an http(s) URL, downloaded once
per machine into a cache and checked before use.

Local shards are opened where they are (nothing is copied, no lock file is written beside them,
so a read-only mount works) after a size check against their descriptor. A remote shard is
downloaded on its first read into ``cache_dir`` under its sha256 (content-addressed: a repacked
set never reads a stale download, an identical one reuses it), to a temporary name, checked
for size and sha256 while it streams, then renamed into place; an HTTP error page, a cut
connection or a changed file is an error naming the URL and never lands in the cache. A lock
per shard makes the DataLoader workers and processes of one machine download it once. Shards
stay in the cache; remove the folder to free the space (every process of a node reads every
shard under a global shuffle, so a node's cache ends up holding the whole split).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, TypeVar

from coarse2fine.data.shard_layout import ShardError, ShardInfo

log = logging.getLogger(__name__)

REMOTE_SCHEMES = ("http://", "https://")
CHUNK = 1 << 20
TIMEOUT_S = 60
ATTEMPTS = 3
T = TypeVar("T")


def is_url(location: str) -> bool:
    """Whether ``location`` is a remote shard location (http or https)."""
    return location.startswith(REMOTE_SCHEMES)


def check_location(location: str, key: str) -> None:
    """Refuse remote schemes we cannot read, naming the config key."""
    scheme = location.split("://", 1)[0] if "://" in location else ""
    if scheme and not is_url(location):
        raise ValueError(f"{key}: {location}: {scheme}:// is not supported; serve the packed folder over http(s) "
                         "(a web server, or an object store's https endpoint) or give a local folder")


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
        raise ShardError(f"{location}: no such file (is this a folder written by `coarse2fine pack`?)") from None
    except OSError as err:
        raise ShardError(f"{location}: cannot be read ({err})") from None


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


class ShardStore:
    """Maps a shard's location to a local file that holds it (see the module docstring)."""

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()

    def local_path(self, location: str, info: ShardInfo) -> str:
        """A local file holding the shard at ``location`` as ``info`` describes it."""
        if not is_url(location):
            try:
                size = os.path.getsize(location)
            except OSError as err:
                raise ShardError(f"{location}: cannot be read ({err.strerror or err})") from None
            if size != info.filesize:
                raise ShardError(f"{location}: {size} bytes, its descriptor says {info.filesize} "
                                 "(truncated, or replaced after packing)")
            return location
        return str(self._download(location, info))

    def cached(self, info: ShardInfo) -> Path:
        return self.cache_dir / info.sha256[:2] / f"{info.sha256}.tar"

    def _download(self, url: str, info: ShardInfo) -> Path:
        final = self.cached(info)
        if final.exists():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(final.parent / f"{final.name}.lock", "w") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # one download per machine; the others wait for it
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


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        return response.read()


def _with_retries(url: str, fetch: Callable[[], T]) -> T:
    """``fetch()``, tried again after a network failure (not after an HTTP error such as 404)."""
    attempt = 1
    while True:
        try:
            return fetch()
        except urllib.error.HTTPError as err:
            raise ShardError(f"{url}: HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            if attempt >= ATTEMPTS:
                reason = getattr(err, "reason", err)
                raise ShardError(f"{url}: cannot be downloaded ({reason}; tried {ATTEMPTS} times)") from None
            time.sleep(0.5 * attempt)
            attempt += 1
