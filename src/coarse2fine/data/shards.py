"""Clips read from packed WebDataset shards (``data.kind: shards``), by index, through ``wids``.

``coarse2fine pack`` writes a split as tar shards (:mod:`coarse2fine.data.shard_layout`);
:class:`ShardDataset` serves clip ``i`` as the loop asks for it, in the loop's own order (a pure
function of seed and epoch, shared by every process under torchrun), so resuming, balanced
sampling and the phase change work as with audio files. Opening a split reads two small files,
``dataset.json`` and ``index.npz`` (labels as sparse rows, pack-time balanced-sampling weights,
lengths: about 35 bytes per clip); no shard is listed or opened until a clip in it is read.

Reading a shard uses wids' indexed tar reader (``IndexedTarSamples``: the tar is memory-mapped
and its headers scanned once per process, about 12 ms per 1,000 clips); which shards are open
is kept here, per process, so that each DataLoader worker maps its own (``data.open_shards``
of them, 0: every shard, the right choice for a global shuffle). A shard comes from the folder
it was packed to or from its URL (:class:`~coarse2fine.data.shard_store.ShardStore`: a local
shard's sha256 is checked before its first read on a machine, a remote one's as it downloads). A
shard that does not match its descriptor (size, sha256, sample count, keys, a member that does
not decode) raises :class:`~coarse2fine.data.shard_layout.ShardError` naming it; a clip is never
silently replaced.

What is served follows the phase (:meth:`ShardDataset.set_phase`): the phase's features when a
feature set of its front end was packed (float16, padded or cropped and normalised here with
the run's settings), otherwise the waveforms, whose features the training step computes on the
device.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from coarse2fine.audio import AudioError, decode_audio, fix_length
from coarse2fine.data.datasets import ClipDataset, DataSplits
from coarse2fine.data.shard_layout import (
    AUDIO_MEMBER,
    DESCRIPTOR,
    FEATURE_MEMBER,
    INDEX,
    REPORT,
    ShardError,
    ShardInfo,
    ShardSet,
    SplitIndex,
    clip_key,
    frontend_digest,
    join,
    parse_descriptor,
    record_name,
)
from coarse2fine.data.shard_store import ShardStore, check_local_size, check_location, is_url, read_bytes
from coarse2fine.data.validate import Problem
from coarse2fine.extras import require
from coarse2fine.features import FeatureSpec, finish

log = logging.getLogger(__name__)

MAX_DENSE_TARGETS_BYTES = 1 << 30


def tar_reader() -> Any:
    """wids' indexed tar reader class (an optional dependency: the shards extra)."""
    return require("wids.wids", "shards", "data.kind: shards").IndexedTarSamples


class OpenShards:
    """The open shards of one set in one process: at most ``capacity``, least recently used closed first."""

    def __init__(self, shard_set: ShardSet, store: ShardStore, capacity: int):
        self.set = shard_set
        self.store = store
        self.capacity = capacity or len(shard_set.shards)
        self.bounds = shard_set.bounds()
        self.open: OrderedDict[int, Any] = OrderedDict()
        raise_open_file_limit(self.capacity)

    def locate(self, i: int) -> tuple[int, int]:
        """(shard, position in it) of clip ``i``."""
        s = int(np.searchsorted(self.bounds, i, side="right"))
        return s, i - (int(self.bounds[s - 1]) if s else 0)

    def shard(self, s: int) -> Any:
        if s in self.open:
            self.open.move_to_end(s)
            return self.open[s]
        samples = open_shard(self.set.url(s), self.set.shards[s], self.store)
        self.open[s] = samples
        if len(self.open) > self.capacity:
            _, oldest = self.open.popitem(last=False)
            oldest.close()
        return samples

    def read(self, i: int) -> io.BytesIO:
        """The member of clip ``i`` (checked: its key and its kind)."""
        s, j = self.locate(i)
        url = self.set.url(s)
        try:
            sample = self.shard(s)[j]
        except ShardError:
            raise
        except Exception as err:  # noqa: BLE001 - wids' own errors do not name the shard
            raise ShardError(f"{url}: cannot read clip {j} of the shard ({type(err).__name__}: {err})") from None
        key, member = sample.get("__key__"), sample.get(f".{self.set.member}")
        if key != clip_key(i) or member is None:
            found = ", ".join(k for k in sample if not k.startswith("__"))
            raise ShardError(f"{url}: clip {j} of the shard is {key!r} with {found or 'no members'}, expected "
                             f"{clip_key(i)!r} with .{self.set.member} (the shard does not match its descriptor)")
        return member

    def close(self) -> None:
        for samples in self.open.values():
            samples.close()
        self.open.clear()


def open_shard(url: str, info: ShardInfo, store: ShardStore) -> Any:
    """wids' index of the shard at ``url``, checked against ``info`` (size and sha256 before, sample
    count after; the sha256 once per machine, see :class:`~coarse2fine.data.shard_store.ShardStore`)."""
    path = store.local_path(url, info)
    reader = tar_reader()
    try:
        samples = reader(path=path)
    except Exception as err:  # noqa: BLE001 - any failure to index the tar is this shard's problem
        raise ShardError(f"{url}: not a readable tar shard ({type(err).__name__}: {err})") from None
    if len(samples) != info.nsamples:
        samples.close()
        raise ShardError(f"{url}: holds {len(samples)} clips, its descriptor says {info.nsamples} (a damaged shard)")
    return samples


def raise_open_file_limit(shards: int) -> None:
    """Each open shard holds a file descriptor: raise this process's soft limit up to the hard
    one when ``shards`` (plus a margin) would not fit."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * shards + 256  # an audio and a feature set may be open at once
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if new > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            log.warning("%d shards may be open per process but the open-file limit is %d; set data.open_shards "
                        "lower or raise the limit (ulimit -n)", shards, new)


class ShardDataset(ClipDataset):
    """Yields ``(waveform [num_samples] or features [frames, mel bins], target [C])`` of the split
    packed at ``root`` (a folder or an http(s) URL), see the module docstring.

    ``sample_rate`` must be the one the split was packed at; ``num_samples`` (the run's clip
    length) at most the packed one. ``open_shards``: shards each process keeps open (0: all).
    """

    in_memory = False

    def __init__(self, root: str, sample_rate: int, num_samples: int, pad: str = "zeros",
                 store: ShardStore | None = None, open_shards: int = 0):
        self.root = str(root).rstrip("/")
        self.store = store or ShardStore()
        self.audio = parse_descriptor(read_bytes(join(self.root, DESCRIPTOR)), join(self.root, DESCRIPTOR))
        meta = self.audio.meta
        if int(meta.get("sample_rate", -1)) != sample_rate:
            raise ShardError(f"{self.audio.location}: packed at {meta.get('sample_rate')} Hz but the run's features "
                             f"use {sample_rate} Hz; pack again with this config's features.sample_rate")
        if num_samples > int(meta["num_samples"]):
            raise ShardError(f"{self.audio.location}: clips were packed cut to {meta['clip_seconds']} s "
                             f"({meta['num_samples']} samples); data.clip_seconds asks for {num_samples} samples; "
                             "pack again with this clip length")
        index_at = join(self.root, str(meta.get("index", INDEX)))
        self.index = SplitIndex.load(read_bytes(index_at) if is_url(index_at) else index_at, index_at)
        if len(self.index.labels) != self.audio.num_clips:
            raise ShardError(f"{index_at}: {len(self.index.labels)} clips, but the shards of "
                             f"{self.audio.location} hold {self.audio.num_clips}")
        self.class_names = list(meta.get("classes") or [])
        self.display_names = list(meta.get("display_names") or self.class_names)
        self.multilabel = bool(meta.get("multilabel", False))
        if self.index.labels.num_classes != len(self.class_names):
            raise ShardError(f"{index_at}: labels over {self.index.labels.num_classes} classes, "
                             f"{self.audio.location} names {len(self.class_names)}")
        self.sample_rate, self.num_samples, self.pad = sample_rate, int(num_samples), pad
        self.open_shards = open_shards
        self.lengths = np.minimum(self.index.lengths, self.num_samples)
        self.serves = "waveforms"
        self.current = self.audio
        self.spec: FeatureSpec | None = None
        self.feature_sets: dict[str, ShardSet] = {}
        self._open: dict[str, OpenShards] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.index.labels)

    def __getstate__(self) -> dict[str, Any]:  # open shards are per process (mmaps, descriptors)
        return {**self.__dict__, "_open": {}, "_pid": None}

    # --------------------------------------------------------------------- labels

    @property
    def targets(self) -> torch.Tensor:  # type: ignore[override]
        """Dense targets [N, C]: only for sets small enough (a batch's are made with :meth:`target_rows`)."""
        size = len(self) * len(self.class_names) * 4
        if size > MAX_DENSE_TARGETS_BYTES:
            raise ValueError(f"{self.root}: dense targets of {len(self)} clips x {len(self.class_names)} classes would "
                             f"take {size / 2**30:.1f} GiB; use target_rows(indices) or sampling_weights()")
        return self.index.labels.dense(np.arange(len(self)))

    def target_rows(self, indices: torch.Tensor | np.ndarray | list[int]) -> torch.Tensor:
        """Multi-hot targets [len(indices), C] of some clips."""
        return self.index.labels.dense(indices)

    def class_counts(self) -> list[int]:
        """Clips per class, from the label index (no dense targets)."""
        return self.index.labels.counts().tolist()

    def sampling_weights(self) -> torch.Tensor:
        """The balanced-sampling weights computed when the split was packed."""
        return torch.from_numpy(np.array(self.index.weights, dtype=np.float64))

    def skipped(self) -> list[Problem]:
        """The clips the pack skipped as bad (its report)."""
        location = join(self.root, str(self.audio.meta.get("report", REPORT)))
        try:
            report = json.loads(read_bytes(location))
        except ShardError:
            return []
        except ValueError as err:
            raise ShardError(f"{location}: not a JSON pack report ({err})") from None
        return [Problem(Path(p["path"]), p["problem"]) for p in report.get("skipped", [])]

    # --------------------------------------------------------------------- phases

    def feature_set(self, spec: FeatureSpec) -> ShardSet | None:
        """The packed feature set of ``spec``'s front end at this clip length and padding, if any."""
        wanted = frontend_digest(spec.frontend, self.num_samples, self.pad)
        for entry in self.audio.meta.get("feature_sets") or []:
            if entry.get("frontend_digest") != wanted:
                continue
            name = str(entry["name"])
            if name not in self.feature_sets:
                location = join(self.root, str(entry["descriptor"]))
                found = parse_descriptor(read_bytes(location), location)
                if [s.nsamples for s in found.shards] != [s.nsamples for s in self.audio.shards]:
                    raise ShardError(f"{location}: its shards do not hold the same clips as {self.audio.location}")
                self.feature_sets[name] = found
            return self.feature_sets[name]
        return None

    def serves_for(self, spec: Any, compression: Any) -> str:
        return "features" if self.feature_set(spec) is not None else "waveforms"

    def check_phases(self, specs: Sequence[FeatureSpec]) -> None:
        """Before training: that every local shard the phases of ``specs`` will read (their packed
        features, else the audio) has its descriptor's size, so that a truncated or missing shard
        of the fine phase stops the run at its start, not after the coarse phases (the sha256 is
        checked as each shard is first read; remote shards are checked when downloaded)."""
        sets = {id(x): x for x in (self.feature_set(spec) or self.audio for spec in specs)}
        for shard_set in sets.values():
            for i, info in enumerate(shard_set.shards):
                if not is_url(location := shard_set.url(i)):
                    check_local_size(location, info)  # the check every open makes, for every shard at once

    def set_phase(self, spec: Any, compression: Any) -> None:
        """Serve the phase's packed features when a set of its front end exists, else waveforms."""
        found = self.feature_set(spec)
        self.current = found or self.audio
        self.serves = "features" if found is not None else "waveforms"
        self.spec = spec
        log.info("%s, R=%d: %s", self.root, getattr(compression, "R", 1),
                 f"features from {found.name}" if found is not None else "waveforms (features computed on the device)")

    # --------------------------------------------------------------------- reading

    def _reader(self, shard_set: ShardSet) -> OpenShards:
        if self._pid != os.getpid():  # a DataLoader worker: map the shards in this process
            self._open, self._pid = {}, os.getpid()
        if shard_set.name not in self._open:
            self._open[shard_set.name] = OpenShards(shard_set, self.store, self.open_shards)
        return self._open[shard_set.name]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"clip {i} of {len(self)}")
        shard_set = self.current
        member = self._reader(shard_set).read(i)
        if shard_set is self.audio:
            x = self._waveform(member, i)
        else:
            x = self._features(member, i, shard_set)
        return x, self.index.labels.dense([i])[0]

    def _waveform(self, member: io.BytesIO, i: int) -> torch.Tensor:
        try:
            wave = decode_audio(member, self.sample_rate, f"{self._where(self.audio, i)}.{AUDIO_MEMBER}")
        except AudioError as err:
            raise ShardError(str(err)) from None
        return fix_length(wave, self.num_samples, self.pad).contiguous()

    def _features(self, member: io.BytesIO, i: int, shard_set: ShardSet) -> torch.Tensor:
        try:
            raw = np.load(member, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ShardError(f"{self._where(shard_set, i)}.{FEATURE_MEMBER}: not a readable array ({err})") from None
        if self.spec is None:
            raise RuntimeError("ShardDataset serves features only after set_phase")
        return finish(torch.from_numpy(raw.astype(np.float32)), self.spec)

    def _where(self, shard_set: ShardSet, i: int) -> str:
        s, _ = self._reader(shard_set).locate(i)
        return f"{shard_set.url(s)}:{clip_key(i)}"

    def close(self) -> None:
        for reader in self._open.values():
            reader.close()
        self._open.clear()


def shard_splits(cfg: Any) -> DataSplits:
    """The training and validation splits ``data.train`` / ``data.val`` of ``cfg`` (packed folders or URLs)."""
    d, f = cfg.data, cfg.features  # both splits given, no feature cache: checked when the config was made
    roots = d.split_path("train"), d.split_path("val")
    check_location(roots[0], "data.train")
    check_location(roots[1], "data.val")
    tar_reader()  # the optional dependency, before any work
    store = ShardStore(d.shard_cache)
    num_samples = cfg.clip_samples()
    train, val = (ShardDataset(root, f.sample_rate, num_samples, d.pad, store, d.open_shards) for root in roots)
    if val.class_names != train.class_names:
        raise ShardError(f"{val.audio.location}: its classes differ from {train.audio.location}'s; pack both splits "
                         "from one config")
    order = train.audio.meta.get("clip_order_sha256")
    return DataSplits(train=train, val=val, skipped=train.skipped() + val.skipped(), display_names=train.display_names,
                      clip_lists=packed_clip_lists({"train": train.audio, "val": val.audio}),
                      train_order=str(order) if order else None,
                      used_lists=packed_clip_lists({"train": train.audio, "val": val.audio}, "used_list_sha256"))


def packed_clip_lists(sets: dict[str, ShardSet], key: str = "clip_list_sha256") -> dict[str, str]:
    """The clip-list digest each split's audio set was packed with (``used_list_sha256``: that of
    the clips it holds, the bad ones left out); packs of earlier versions: none."""
    lists = {split: audio.meta.get(key) or (audio.meta.get("clip_list_sha256") if key == "used_list_sha256" and
                                            audio.meta.get("num_skipped") == 0 else None)  # nothing left out: the same
             for split, audio in sets.items()}
    return {split: str(v) for split, v in lists.items() if v}


def split_summary(root: str) -> ShardSet:
    """The audio set of the split at ``root`` (its descriptor only: counts, classes; no shard is read)."""
    location = join(str(root).rstrip("/"), DESCRIPTOR)
    return parse_descriptor(read_bytes(location), location)


def split_sources(root: str, audio: ShardSet) -> list[str] | None:
    """The source of every clip packed in the split at ``root`` (``path`` or ``path@start s``, as
    ``pack`` read it), from the shards' commit records; None when the pack has none to read."""
    sources: list[str] = []
    for s in range(len(audio.shards)):
        location = join(str(root).rstrip("/"), record_name(s))
        try:
            record = json.loads(read_bytes(location))
        except (OSError, ShardError, ValueError):
            return None
        if not isinstance(record, dict) or not isinstance(record.get("sources"), list):
            return None
        sources += [str(x) for x in record["sources"]]
    return sources


def verify_split(root: str, store: ShardStore) -> tuple[ShardSet, list[str], list[str]]:
    """Check every shard of the split at ``root`` against its descriptors: size and sha256 (a remote
    shard is downloaded into the cache, which checks both; a local one is hashed even when training
    verified it before, and its marker is renewed or, when it fails, removed), clip count and keys.
    Returns the audio set, the names of the sets checked and one line per bad shard."""
    audio = split_summary(root)
    sets = [audio]
    problems: list[str] = []
    for entry in audio.meta.get("feature_sets") or []:
        location = join(str(root).rstrip("/"), str(entry["descriptor"]))
        try:
            sets.append(parse_descriptor(read_bytes(location), location))
        except ShardError as err:
            problems.append(str(err))
    for shard_set in sets:
        first = 0
        for s, info in enumerate(shard_set.shards):
            url = shard_set.url(s)
            try:
                _verify_shard(url, info, store, first, shard_set.member)
            except ShardError as err:
                problems.append(str(err))
            first += info.nsamples
    return audio, [s.name for s in sets], problems


def _verify_shard(url: str, info: ShardInfo, store: ShardStore, first: int, member: str) -> None:
    store.local_path(url, info, recheck=True)
    samples = open_shard(url, info, store)  # verified just now: not hashed again
    try:
        for j in range(len(samples)):
            sample = samples[j]
            if sample.get("__key__") != clip_key(first + j) or f".{member}" not in sample:
                raise ShardError(f"{url}: clip {j} of the shard is {sample.get('__key__')!r}, expected "
                                 f"{clip_key(first + j)!r} with .{member}")
    finally:
        samples.close()
