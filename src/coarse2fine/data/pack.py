"""``coarse2fine pack``: a config's training and validation clips written as WebDataset shards.

Each clip is decoded once, checked like :func:`coarse2fine.data.validate.validate` checks a file
(bad clips are skipped and listed in the split's ``report.json``), cut to ``data.clip_seconds``,
mixed to mono at the features' sample rate, and written as FLAC; with ``features`` also the raw
front-end output of every distinct front end the schedule's phases compute (R = 1, and for
Fshift each R of the schedule: a coarse set is R times smaller), float16. The layout is in
:mod:`coarse2fine.data.shard_layout`; shards are written by ``webdataset.TarWriter``.

A pack is resumable. Clip -> shard assignment is a pure function of the clip list (shard ``s``
holds clips ``[s * shard_clips, (s + 1) * shard_clips)`` of it, bad ones left out), shards are
written in order, each set's tar to a temporary file that is fsynced and renamed, and then the
shard's record (``parts/NNNNNN.json``: checksums, labels, lengths, skipped clips) is written
atomically: the commit point. A rerun keeps every shard whose record and files (size and
sha256) match, and writes the others; the descriptors, the index and the report are rebuilt
from the records, and ``pack.json`` (the manifest of what was packed) is written last. Tars are
byte-reproducible (member times are 0), so a resumed pack equals an uninterrupted one.
Settings that change what would be packed (the clip list, sample rate, clip length, shard size,
front ends) change the config digest, and a folder holding another digest is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from coarse2fine import __version__, atomic
from coarse2fine.audio import decode_audio, encode_flac, fix_length, wav_truncation
from coarse2fine.config import RunConfig
from coarse2fine.config.files import config_difference
from coarse2fine.data.labels import LabelIndex, index_dtype
from coarse2fine.data.manifest import Entry, Manifest, clip_list_digest, clip_list_digests, listing_warnings
from coarse2fine.data.shard_layout import (
    AUDIO_MEMBER,
    DESCRIPTOR,
    FEATURE_MEMBER,
    FORMAT,
    INDEX,
    PACK_MANIFEST,
    PARTS,
    REPORT,
    SETTINGS,
    ShardInfo,
    SplitIndex,
    audio_shard_name,
    clip_key,
    descriptor,
    digest,
    feature_shard_name,
    frontend_settings,
    record_name,
)
from coarse2fine.data.shard_store import file_sha256
from coarse2fine.data.sources import manifests
from coarse2fine.data.summary import shared_clips, shared_warning
from coarse2fine.data.validate import decode_problem, start_problem, wave_problem
from coarse2fine.extras import require
from coarse2fine.folder_lock import LOCK_NAME, folder_lock

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
DEFAULT_SHARD_CLIPS = 1000
BATCH = 32  # clips decoded and featurised together: a shard is never held in memory whole


class PackError(ValueError):
    """A pack that cannot be made or continued; the message names the folder and the problem."""


@dataclass(frozen=True)
class FeatureSet:
    """One feature set to pack: the front end a phase computes, named after the phase's factor."""

    name: str
    R: int
    frontend: Any
    settings: dict[str, Any]

    @property
    def digest(self) -> str:
        return digest(self.settings)


@dataclass(frozen=True)
class PackSettings:
    """What a pack writes, beside the clips themselves."""

    sample_rate: int
    clip_seconds: float
    num_samples: int
    min_seconds: float
    pad: str
    shard_clips: int
    feature_sets: tuple[FeatureSet, ...]

    @classmethod
    def from_config(cls, cfg: RunConfig, shard_clips: int, features: bool) -> PackSettings:
        if shard_clips < 1:
            raise PackError(f"--shard-clips must be >= 1, got {shard_clips}")
        d, f = cfg.data, cfg.features
        num_samples = cfg.clip_samples()
        sets: dict[str, FeatureSet] = {}
        if features:
            for p in range(len(cfg.phases())):
                phase = cfg.phase(p)
                R = phase.R if cfg.c2f.method == "fshift" else 1
                frontend = phase.features.frontend
                found = FeatureSet(f"r{R}", R, frontend, frontend_settings(frontend, num_samples, d.pad))
                sets.setdefault(found.digest, found)
        return cls(f.sample_rate, d.clip_seconds, num_samples, d.min_seconds, d.pad, shard_clips,
                   tuple(sorted(sets.values(), key=lambda s: s.R)))

    def to_dict(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "clip_seconds": self.clip_seconds, "num_samples": self.num_samples,
                "min_seconds": self.min_seconds, "shard_clips": self.shard_clips,
                "feature_sets": [{"name": s.name, "R": s.R, **s.settings} for s in self.feature_sets]}


@dataclass
class SplitResult:
    """What packing one split did."""

    name: str
    clips: int = 0
    skipped: int = 0
    shards: int = 0
    written: int = 0
    kept: int = 0
    bytes: dict[str, int] = field(default_factory=dict)


def clip_source(entry: Entry) -> str:
    """How a pack names the clip of ``entry`` in its records: its path, and its start when not 0."""
    return str(entry.path) + (f"@{entry.start:g}s" if entry.start else "")


@dataclass
class Clip:
    """One clip ready to write, or the reason it is skipped."""

    source: str
    labels: list[int]
    flac: bytes = b""
    wave: torch.Tensor | None = None
    problem: str | None = None


def pack(cfg: RunConfig, out: str | Path, *, features: bool = False, shard_clips: int = DEFAULT_SHARD_CLIPS,
         device: str | torch.device = "cpu", workers: int = 2, progress: bool = True, fresh: bool = False,
         ) -> list[SplitResult]:
    """Write the training and validation clips of ``cfg`` as shards under ``out/train`` and
    ``out/val`` (see the module docstring); returns what was done per split."""
    if cfg.data.kind in ("synthetic", "shards"):
        raise PackError(f"data.kind {cfg.data.kind!r}: pack reads audio files (manifest, esc50, fsdd or unlabeled data)")
    tar_writer()  # the optional dependency, before any work
    out = Path(out)
    settings = PackSettings.from_config(cfg, shard_clips, features)
    lists = dict(zip(SPLITS, manifests(cfg), strict=True))
    for text in [*listing_warnings(lists["train"]), *listing_warnings(lists["val"], classes=False)]:
        log.warning("%s", text)  # as a run of the files warns: what the lists hold that is probably not meant
    both = shared_clips(lists["train"].entries, lists["val"].entries)
    if both:
        log.warning("%s", shared_warning(both))
    described = {"format": FORMAT, **settings.to_dict(),
                 "splits": {name: source_summary(m) for name, m in lists.items()}}
    config_digest = digest(described)
    with folder_lock(out, "pack"):
        claim_folder(out, config_digest, described, fresh)
        results = []
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for name, manifest in lists.items():
                writer = SplitWriter(out / name, name, manifest, settings, config_digest, torch.device(device), pool)
                results.append(writer.run(progress))
        _write_pack_manifest(out, cfg, config_digest, described, results)
    return results


def _write_pack_manifest(out: Path, cfg: RunConfig, config_digest: str, described: dict[str, Any],
                         results: list[SplitResult]) -> None:
    atomic.write_json(out / PACK_MANIFEST, {
        "format": FORMAT, "config_digest": config_digest, "created_by": f"coarse2fine {__version__}",
        "config": cfg.name, "settings": described,
        "splits": {r.name: {"clips": r.clips, "skipped": r.skipped, "shards": r.shards, "bytes": r.bytes,
                            "descriptor": f"{r.name}/{DESCRIPTOR}", "report": f"{r.name}/{REPORT}"} for r in results},
    })


def tar_writer() -> Any:
    """webdataset's tar writer class (an optional dependency: the shards extra)."""
    return require("webdataset", "shards", "coarse2fine pack").TarWriter


def source_summary(manifest: Manifest) -> dict[str, Any]:
    """What identifies a split's clip list: where it came from, a digest of its entries and classes."""
    h = hashlib.sha256()
    for e in manifest.entries:
        h.update(f"{e.path}\t{','.join(e.labels)}\t{e.start!r}\n".encode())
    return {"source": manifest.source, "clips": len(manifest.entries), "entries_sha256": h.hexdigest(),
            "classes_sha256": digest(manifest.classes), "multilabel": manifest.multilabel}


def claim_folder(out: Path, config_digest: str, described: dict[str, Any], fresh: bool) -> None:
    """Start or continue a pack in ``out``: refuse a folder holding something else, or another
    pack's settings (unless ``fresh``, which removes that pack)."""
    marker = out / SETTINGS
    if marker.exists():
        try:
            held = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise PackError(f"{marker}: unreadable ({err}); remove {out} to pack again") from None
        if fresh:
            for name in (*SPLITS, PACK_MANIFEST, SETTINGS):
                target = out / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        elif held.get("config_digest") != config_digest:
            raise PackError(f"{out} holds a pack of other settings ({_pack_difference(held.get('settings') or {}, described)}); "
                            "use another --out, or --fresh to replace it")
    elif out.exists() and any(p.name != LOCK_NAME for p in out.iterdir()):
        raise PackError(f"{out} is not empty and holds no pack; choose an empty or new folder for --out")
    atomic.write_json(marker, {"config_digest": config_digest, "settings": described})


def _pack_difference(held: dict[str, Any], described: dict[str, Any]) -> str:
    """What differs between a pack's settings and these, the clip lists in words (their digests
    say nothing to a reader)."""
    theirs, ours = (held.get("splits") or {}), described["splits"]
    lists = [f"the {name} list ({ours[name]['source']}) names other clips or labels than when it was packed"
             for name in SPLITS if (theirs.get(name) or {}).get("entries_sha256") != ours[name]["entries_sha256"]]
    rest = config_difference({k: v for k, v in held.items() if k != "splits"},
                             {k: v for k, v in described.items() if k != "splits"})
    return "; ".join([*([rest] if rest else []), *lists]) or config_difference(held, described)


class SplitWriter:
    """Packs one split (see the module docstring)."""

    def __init__(self, folder: Path, name: str, manifest: Manifest, settings: PackSettings, config_digest: str,
                 device: torch.device, pool: ThreadPoolExecutor):
        self.folder, self.name, self.manifest = folder, name, manifest
        self.settings, self.config_digest, self.device, self.pool = settings, config_digest, device, pool
        self.class_index = manifest.class_index()
        self.num_shards = -(-len(manifest.entries) // settings.shard_clips)

    def set_folder(self, set_name: str) -> Path:
        return self.folder if set_name == "audio" else self.folder / set_name

    def run(self, progress: bool) -> SplitResult:
        result = SplitResult(self.name, shards=self.num_shards)
        sets = ("audio", *(fs.name for fs in self.settings.feature_sets))
        for folder in (*(self.set_folder(n) for n in sets), self.folder / PARTS):  # every folder a pack writes in
            atomic.remove_stale_temp_files(folder)  # a killed pack's temporary files
        first = 0
        k = self.settings.shard_clips
        with tqdm(total=len(self.manifest.entries), desc=f"pack {self.name}", unit="clip",
                  disable=None if progress else True, dynamic_ncols=True) as bar:  # None: no bars on a pipe
            for s in range(self.num_shards):
                chunk = self.manifest.entries[s * k:(s + 1) * k]
                record = self.kept(s, first)
                if record is None:
                    record = self.write_shard(s, chunk, first, bar)
                    result.written += bool(record["nsamples"])  # shards that hold clips
                else:
                    bar.update(len(chunk))
                    result.kept += bool(record["nsamples"])
                first += int(record["nsamples"])
        log.info("%s: %d shards (%d kept from an earlier pack, %d written)", self.folder, result.kept + result.written,
                 result.kept, result.written)
        return self.finish(result)

    def kept(self, s: int, first: int) -> dict[str, Any] | None:
        """Shard ``s``'s record when an earlier pack committed it with these settings and its files are intact."""
        path = self.folder / record_name(s)
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        wanted = {"audio", *(fs.name for fs in self.settings.feature_sets)}
        if record.get("digest") != self.config_digest or record.get("first") != first or set(record.get("sets", {})) != wanted:
            return None
        for set_name, info in record["sets"].items() if record.get("nsamples") else ():  # an empty shard has no files
            file = self.set_folder(set_name) / info["url"]
            if not file.is_file() or file.stat().st_size != info["filesize"] or file_sha256(file) != info["sha256"]:
                log.info("%s: shard %d is incomplete or damaged; writing it again", self.folder, s)
                return None
        return record

    def write_shard(self, s: int, chunk: list[Entry], first: int, bar: tqdm) -> dict[str, Any]:
        """Write shard ``s`` of every set, then its record (the commit point)."""
        names = {"audio": audio_shard_name(s), **{fs.name: feature_shard_name(s) for fs in self.settings.feature_sets}}
        writer_cls = tar_writer()
        labels: list[list[int]] = []
        lengths: list[int] = []
        sources: list[str] = []
        skipped: list[dict[str, str]] = []
        with contextlib.ExitStack() as stack:
            writers = {}
            for set_name, file_name in names.items():
                tmp = stack.enter_context(atomic.atomic_path(self.set_folder(set_name) / file_name))
                fh = stack.enter_context(open(tmp, "wb"))
                writers[set_name] = stack.enter_context(_closing_writer(writer_cls(fh, encoder=False, mtime=0)))
            for b in range(0, len(chunk), BATCH):
                clips = list(self.pool.map(self.load, chunk[b:b + BATCH]))
                good = [c for c in clips if c.problem is None]
                skipped += [{"path": c.source, "problem": f"{e.where}: {c.problem}" if e.where else c.problem}
                            for e, c in zip(chunk[b:b + BATCH], clips) if c.problem is not None]  # named as check names it
                keys = [clip_key(first + len(labels) + j) for j in range(len(good))]
                for key, clip in zip(keys, good, strict=True):
                    writers["audio"].write({"__key__": key, AUDIO_MEMBER: clip.flac})
                for fs in self.settings.feature_sets:
                    for key, feats in zip(keys, self.features(fs, good), strict=True):
                        writers[fs.name].write({"__key__": key, FEATURE_MEMBER: feats})
                for clip in good:
                    labels.append(clip.labels)
                    lengths.append(int(clip.wave.numel()) if clip.wave is not None else 0)
                    sources.append(clip.source)
                bar.update(len(clips))
        sets = {}
        for set_name, file_name in names.items():
            file = self.set_folder(set_name) / file_name
            sets[set_name] = ShardInfo(file_name, len(labels), file.stat().st_size, file_sha256(file)).to_dict()
        record = {"shard": s, "digest": self.config_digest, "first": first, "nsamples": len(labels), "sets": sets,
                  "labels": labels, "lengths": lengths, "sources": sources, "skipped": skipped}
        atomic.write_json(self.folder / record_name(s), record)
        if not labels:  # every clip bad: the record says so, and no empty tar is left in the pack
            for set_name, file_name in names.items():
                (self.set_folder(set_name) / file_name).unlink(missing_ok=True)
        return record

    def load(self, entry: Entry) -> Clip:
        """Decode and check one clip (bad clips come back with their problem)."""
        st = self.settings
        source = clip_source(entry)
        labels = sorted(self.class_index[label] for label in entry.labels)
        try:
            data = Path(entry.path).read_bytes()
        except FileNotFoundError:
            return Clip(source, labels, problem="file not found")
        except OSError as err:
            return Clip(source, labels, problem=f"cannot be read ({err.strerror or err})")
        if not data:
            return Clip(source, labels, problem="empty: 0-byte file")
        if cut := wav_truncation(io.BytesIO(data), len(data)):
            return Clip(source, labels, problem=cut)
        try:
            wave = decode_audio(io.BytesIO(data), st.sample_rate, str(entry.path))
        except Exception as err:  # noqa: BLE001 - any failure to decode is this clip's problem
            return Clip(source, labels, problem=decode_problem(err, Path(entry.path)))
        problem = wave_problem(wave, st.sample_rate, st.min_seconds)
        if problem is None and entry.start:
            problem = start_problem(entry.start, wave.numel(), st.sample_rate, st.min_seconds)
            wave = wave[int(round(entry.start * st.sample_rate)):]
        if problem is not None:
            return Clip(source, labels, problem=problem)
        wave = wave[:st.num_samples].contiguous()
        return Clip(source, labels, encode_flac(wave, st.sample_rate), wave)

    @torch.no_grad()
    def features(self, fs: FeatureSet, clips: list[Clip]) -> Iterator[bytes]:
        """Raw front-end output of ``clips`` for feature set ``fs``, float16, as .npy bytes."""
        if not clips:
            return
        waves = torch.stack([fix_length(c.wave, self.settings.num_samples, self.settings.pad) for c in clips])
        raw = fs.frontend.compute(waves.to(self.device)).to("cpu", torch.float16).numpy()
        for feats in raw:
            buf = io.BytesIO()
            np.save(buf, feats, allow_pickle=False)
            yield buf.getvalue()

    def finish(self, result: SplitResult) -> SplitResult:
        """Index, report and descriptors from the shard records (the descriptor last)."""
        records = (json.loads((self.folder / record_name(s)).read_text()) for s in range(self.num_shards))
        built = index_from_records(records, len(self.manifest.classes), ["audio", *(fs.name for fs in self.settings.feature_sets)])
        index, shardlists, skipped = built.index, built.shardlists, built.skipped
        labels = index.labels
        if len(labels) == 0:
            raise PackError(f"{self.folder}: no clip of {self.manifest.source} could be packed "
                            f"({len(skipped)} skipped; see {self.folder / REPORT})")
        # entries the manifest could not use (unknown labels, no path) first, then the clips that failed to load
        entries = [{"path": str(p.path), "problem": p.problem} for p in self.manifest.problems]
        skipped = [*entries, *skipped]
        atomic.write_json(self.folder / REPORT, {"split": self.name, "source": self.manifest.source, "skipped": skipped})
        with atomic.atomic_path(self.folder / INDEX) as tmp, open(tmp, "wb") as fh:
            index.save(fh)
        st = self.settings
        clips, order = clip_list_digests(self.manifest.entries)
        bad = {s["path"] for s in built.skipped}
        used = clip_list_digest([e for e in self.manifest.entries if clip_source(e) not in bad])
        common = {"config_digest": self.config_digest, "created_by": f"coarse2fine {__version__}", "split": self.name,
                  "sample_rate": st.sample_rate, "clip_seconds": st.clip_seconds, "num_samples": st.num_samples,
                  "classes": list(self.manifest.classes), "display_names": list(self.manifest.display_names),
                  "multilabel": self.manifest.multilabel, "num_clips": len(labels), "num_skipped": len(skipped),
                  # a run of these clips from files has the same digests
                  "clip_list_sha256": clips, "clip_order_sha256": order, "used_list_sha256": used}
        entries = []
        for fs in st.feature_sets:
            meta = {**common, "R": fs.R, "dtype": "float16", "frontend": fs.settings, "frontend_digest": fs.digest}
            doc = descriptor(f"features-{fs.name}", FEATURE_MEMBER, shardlists[fs.name], meta)
            atomic.write_json(self.folder / fs.name / DESCRIPTOR, doc)
            entries.append({"name": fs.name, "R": fs.R, "descriptor": f"{fs.name}/{DESCRIPTOR}",
                            "frontend_digest": fs.digest, "bytes": doc["bytes"]})
        doc = descriptor("audio", AUDIO_MEMBER, shardlists["audio"],
                         {**common, "index": INDEX, "report": REPORT, "parts": PARTS, "feature_sets": entries})
        atomic.write_json(self.folder / DESCRIPTOR, doc)
        result.clips, result.skipped = len(labels), len(skipped)
        result.shards = len(shardlists["audio"])  # a shard whose clips were all bad holds nothing
        result.bytes = {"audio": doc["bytes"], **{e["name"]: e["bytes"] for e in entries}}
        return result


@dataclass
class BuiltIndex:
    """What the shard records of a split add up to."""

    index: SplitIndex
    shardlists: dict[str, list[ShardInfo]]
    skipped: list[dict[str, str]]


def index_from_records(records: Iterable[dict[str, Any]], num_classes: int, set_names: list[str]) -> BuiltIndex:
    """The split's index (labels as sparse rows, balanced weights, lengths), each set's shardlist
    and the skipped clips, from its shard records in order, one record in memory at a time."""
    counts, flat, lengths, skipped = [], [], [], []
    shardlists: dict[str, list[ShardInfo]] = {name: [] for name in set_names}
    dtype = index_dtype(num_classes)
    for record in records:
        counts.append(np.fromiter((len(row) for row in record["labels"]), dtype=np.int64, count=record["nsamples"]))
        flat.append(np.fromiter((c for row in record["labels"] for c in row), dtype=dtype))
        lengths.append(np.asarray(record["lengths"], dtype=np.int32))
        skipped += record["skipped"]
        if record["nsamples"]:  # a shard whose clips were all bad is left out of the descriptors
            for set_name in set_names:
                shardlists[set_name].append(ShardInfo(**record["sets"][set_name]))
    indptr = np.zeros(sum(len(c) for c in counts) + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts) if counts else np.zeros(0, np.int64), out=indptr[1:])
    labels = LabelIndex(indptr, np.concatenate(flat) if flat else np.zeros(0, dtype), num_classes)
    index = SplitIndex(labels, labels.balanced_weights().numpy(), np.concatenate(lengths) if lengths else np.zeros(0, np.int32))
    return BuiltIndex(index, shardlists, skipped)


@contextlib.contextmanager
def _closing_writer(writer: Any) -> Iterator[Any]:
    """Close a TarWriter (it writes the tar's end blocks; the file stays open for its owner)."""
    try:
        yield writer
    finally:
        writer.close()
