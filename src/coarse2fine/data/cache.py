"""On-disk feature cache: front-end output computed once per (file, front-end settings, frame shift).

A clip's entry is keyed by a hash of the file's absolute path, size and modification time and
of every front-end setting (its kind, frame shift included), so a changed file or a changed setting misses the
cache instead of reading stale features. Entries are written atomically (temporary file, then
rename), so two runs sharing one cache directory never see a half-written entry; if both compute
the same clip, the second rename replaces the first with identical content. A corrupt entry is
recomputed. The unpadded, unnormalised log-mel matrix is stored, so normalisation and target
length can change without invalidating anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from coarse2fine.atomic import atomic_path

log = logging.getLogger(__name__)

CACHE_VERSION = 2


def cache_key(path: str | os.PathLike, frontend: Any, extra: dict | None = None) -> str:
    """Hex digest identifying the features of ``path`` under the front-end settings ``frontend``
    (file identity + settings).

    ``extra`` holds anything else the features depend on (e.g. the clip length they were cut to).
    """
    p = Path(path).resolve()
    st = p.stat()
    ident = {
        "v": CACHE_VERSION,
        "path": str(p),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "frontend": {"kind": frontend.kind, **dataclasses.asdict(frontend)},
        "extra": extra or {},
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """A directory of ``.npy`` fbank matrices [frames, mel bins], float32 by default."""

    def __init__(self, root: str | os.PathLike, dtype: np.dtype = np.float32):
        self.root = Path(root)
        self.dtype = np.dtype(dtype)
        self.hits = 0
        self.misses = 0

    def _file(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, path: str | os.PathLike, frontend: Any, compute: Callable[[], torch.Tensor], extra: dict | None = None) -> torch.Tensor:
        """The cached features of ``path``, computing and storing them with ``compute()`` on a miss."""
        file = self._file(cache_key(path, frontend, extra))
        if file.exists():
            try:
                feats = torch.from_numpy(np.load(file, allow_pickle=False).astype(np.float32, copy=False))
                self.hits += 1
                return feats
            except (OSError, ValueError) as err:
                log.warning("feature cache entry %s for %s is unreadable (%s); recomputing", file, path, err)
        feats = compute().detach().to("cpu", torch.float32)
        with atomic_path(file) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, feats.numpy().astype(self.dtype), allow_pickle=False)
        self.misses += 1
        return feats
