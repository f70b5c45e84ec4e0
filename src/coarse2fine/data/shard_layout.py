"""What a packed split holds and how its files are named: WebDataset tar shards, their descriptors
(``dataset.json``, readable by ``wids`` as it is), the label index and the settings digests.

A split packed by ``coarse2fine pack`` (:mod:`coarse2fine.data.pack`) is a folder::

    dataset.json            the audio set: wids fields (wids_version, name, shardlist with url,
                            nsamples, filesize, sha256 per shard) and ours (format, config digest,
                            sample rate, clip length, classes, counts, bytes, feature sets)
    index.npz               per clip, in packed order: labels as sparse rows (indptr, indices),
                            balanced-sampling weights (float64), decoded length in samples
    report.json             clips skipped as bad at pack time (source and problem)
    parts/000000.json ...   one commit record per shard (what makes a killed pack resumable)
    audio-000000.tar ...    <key>.flac: the clip as training reads it (mono, the config's sample
                            rate, cut to data.clip_seconds), FLAC
    r4/dataset.json         one feature set per front end a phase computes: the front end's raw
    r4/feat-000000.tar ...  output, <key>.npy, float16 [frames, mel bins]

Clip ``i`` of a split has the key ``%09d % i`` in every set, and every set has the same shard
boundaries, so a phase change swaps sets without any lookup. A feature set is named after the
phase factor it serves (``r1``: the full-resolution front end, which Pool and Patch phases
compress on the device; ``r4``: Fshift's front end at R = 4) and found by the digest of its front
end (:func:`frontend_digest`), so a changed front-end setting never reads stale features.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from coarse2fine.data.labels import LabelIndex

FORMAT = "coarse2fine-shards/1"
DESCRIPTOR = "dataset.json"
INDEX = "index.npz"
REPORT = "report.json"
PARTS = "parts"
PACK_MANIFEST = "pack.json"
SETTINGS = "settings.json"
AUDIO_MEMBER = "flac"
FEATURE_MEMBER = "npy"
KEY_DIGITS = 9


class ShardError(ValueError):
    """A shard, descriptor or index that cannot be used; the message starts with its path or URL."""


def clip_key(i: int) -> str:
    """The key of packed clip ``i`` in every set (no dot: WebDataset splits member names at the first one)."""
    return f"{i:0{KEY_DIGITS}d}"


def audio_shard_name(s: int) -> str:
    return f"audio-{s:06d}.tar"


def feature_shard_name(s: int) -> str:
    return f"feat-{s:06d}.tar"


def record_name(s: int) -> str:
    return f"{PARTS}/{s:06d}.json"


def digest(obj: Any) -> str:
    """sha256 of ``obj`` as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def frontend_settings(frontend: Any, num_samples: int, pad: str) -> dict[str, Any]:
    """Everything a clip's raw features depend on: the front end (kind and settings) and the
    clip length and padding they are computed on."""
    return {"kind": frontend.kind, **dataclasses.asdict(frontend), "num_samples": int(num_samples), "pad": pad}


def frontend_digest(frontend: Any, num_samples: int, pad: str) -> str:
    return digest(frontend_settings(frontend, num_samples, pad))


@dataclass(frozen=True)
class ShardInfo:
    """One shard as a descriptor lists it: ``url`` relative to the descriptor's folder."""

    url: str
    nsamples: int
    filesize: int
    sha256: str

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> ShardInfo:
        try:
            return cls(str(d["url"]), int(d["nsamples"]), int(d["filesize"]), str(d["sha256"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ShardError(f"{where}: a shardlist entry lacks url, nsamples, filesize or sha256 ({err!r})") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ShardSet:
    """A set of shards (the audio, or one feature set) read from its descriptor at ``location``;
    ``base`` is the folder or URL its shard urls are relative to."""

    location: str
    base: str
    name: str
    member: str
    shards: tuple[ShardInfo, ...]
    meta: dict[str, Any]

    @property
    def num_clips(self) -> int:
        return sum(s.nsamples for s in self.shards)

    @property
    def bytes(self) -> int:
        return sum(s.filesize for s in self.shards)

    def url(self, s: int) -> str:
        """Where shard ``s`` is (a path or URL)."""
        return join(self.base, self.shards[s].url)

    def bounds(self) -> np.ndarray:
        """Cumulative clip counts [shards] (clip ``i`` is in the first shard whose bound exceeds it)."""
        return np.cumsum([s.nsamples for s in self.shards], dtype=np.int64)


def join(base: str, relative: str) -> str:
    """``relative`` under the folder or URL ``base``."""
    return f"{base.rstrip('/')}/{relative}"


def parent(location: str) -> str:
    """The folder or URL that holds ``location``."""
    return location.rstrip("/").rsplit("/", 1)[0]


def parse_descriptor(text: bytes, location: str) -> ShardSet:
    """A :class:`ShardSet` from a ``dataset.json`` written by ``coarse2fine pack``."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ShardError(f"{location}: not a JSON shard descriptor ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ShardError(f"{location}: not a split packed by `coarse2fine pack` (format {found!r}, expected {FORMAT!r})")
    shards = tuple(ShardInfo.from_dict(s, location) for s in doc.get("shardlist") or [])
    meta = {k: v for k, v in doc.items() if k != "shardlist"}
    return ShardSet(location, parent(location), str(doc.get("name", "")), str(doc.get("member", "")), shards, meta)


def descriptor(name: str, member: str, shards: list[ShardInfo], meta: dict[str, Any]) -> dict[str, Any]:
    """A ``dataset.json`` document: what wids needs first, then ours."""
    return {"wids_version": 1, "name": name, "format": FORMAT, "member": member, **meta,
            "bytes": sum(s.filesize for s in shards), "shardlist": [s.to_dict() for s in shards]}


@dataclass(frozen=True)
class SplitIndex:
    """What ``index.npz`` holds, per packed clip: labels, balanced-sampling weights, decoded lengths."""

    labels: LabelIndex
    weights: np.ndarray
    lengths: np.ndarray

    def save(self, target: str | Path | BinaryIO) -> None:
        """Write ``index.npz`` to a path or an open binary file."""
        np.savez(target, indptr=self.labels.indptr, indices=self.labels.indices, weights=self.weights,
                 lengths=self.lengths, num_classes=np.int64(self.labels.num_classes))

    @classmethod
    def load(cls, source: str | bytes, location: str) -> SplitIndex:
        """From a local ``index.npz`` (read array by array, never held twice) or its bytes."""
        try:
            with np.load(io.BytesIO(source) if isinstance(source, bytes) else source, allow_pickle=False) as z:
                labels = LabelIndex(z["indptr"], z["indices"], int(z["num_classes"]))
                index = cls(labels, z["weights"], z["lengths"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise ShardError(f"{location}: not a readable label index ({err})") from None
        if not len(index.weights) == len(index.lengths) == len(labels):
            raise ShardError(f"{location}: {len(labels)} label rows, {len(index.weights)} weights and "
                             f"{len(index.lengths)} lengths; they must agree")
        return index
