"""Unlabeled audio for self-supervised pretraining, from several sources mixed.

``data.kind: unlabeled`` with ``data.sources``: any mix of folders (every audio file below them),
CSV files (a ``path``, ``filename``, ``file`` or ``wav`` column, or the first column; labels
ignored) and AST JSON manifests (``{"data": [{"wav": ...}]}``; labels ignored). SSAST pretrains on
AudioSet + LibriSpeech this way. A source may end in filters: ``?COLUMN=a,b`` keeps the CSV rows
whose column is one of the values (``esc50.csv?fold=2,3,4,5``), ``?exclude=GLOB`` drops files
whose name matches (``recordings?exclude=*_[0-4].wav``: FSDD without its test takes).

Clips longer than the window (``data.clip_seconds``) are cut into consecutive windows; the last
one is kept when it holds at least ``data.min_seconds`` of audio, and padded like a short clip.
A held-out share of the *files* (``data.val_fraction``, chosen by a hash of each path, so it does
not move when sources are added) scores the pretext task each epoch. Every file still goes
through the checks, the cache and the bad-input rules of labeled data.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Sequence

from coarse2fine.audio import AudioError, audio_info
from coarse2fine.data.manifest import RELATIVE_FROM_HERE, Entry, Manifest, ManifestError, audio_in_folder

log = logging.getLogger(__name__)

_PATH_COLUMNS = ("path", "filename", "file", "wav")


def _resolve(raw: str, base: Path) -> Path:
    p = Path(raw).expanduser()
    if p.is_absolute():
        return p
    return p.absolute() if p.exists() else (base / p).absolute()


def _csv_files(path: Path, filters: dict[str, list[str]]) -> list[Path]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        if not fields:
            raise ManifestError(f"{path}: empty CSV")
        unknown = [k for k in filters if k not in fields]
        if unknown:
            raise ManifestError(f"data.sources: {path} has no column(s) {', '.join(unknown)} to filter on")
        column = next((c for c in _PATH_COLUMNS if c in fields), fields[0])
        rows = [row[column] for row in reader if row.get(column)
                and all(row[k] in values for k, values in filters.items())]
    if path.parent.name == "meta" and (path.parent.parent / "audio").is_dir():  # ESC-50's GitHub layout
        base = path.parent.parent / "audio"
    else:
        base = path.parent / "audio" if (path.parent / "audio").is_dir() else path.parent
    return [_resolve(r, base) for r in rows]


def _json_files(path: Path) -> list[Path]:
    try:
        data = json.loads(path.read_text())
        items = data["data"]
        return [_resolve(item["wav"], path.parent) for item in items]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ManifestError(f"{path}: not an AST JSON manifest ({{'data': [{{'wav': ...}}]}}): {err}") from None


def _parse_source(source: str) -> tuple[Path, dict[str, list[str]]]:
    """``PATH?key=a,b&key2=c`` -> (PATH, {key: [a, b], key2: [c]})."""
    text, _, query = str(source).partition("?")
    filters: dict[str, list[str]] = {}
    for part in filter(None, query.split("&")):
        key, eq, values = part.partition("=")
        if not eq or not key:
            raise ManifestError(f"data.sources: {source}: filter {part!r} is not KEY=VALUE[,VALUE]")
        filters[key] = values.split(",")
    return Path(text).expanduser(), filters


def source_files(source: str | Path) -> list[Path]:
    """The audio files one source names (folder, CSV or AST JSON manifest, with filters)."""
    path, filters = _parse_source(str(source))
    exclude = filters.pop("exclude", [])
    if filters and path.suffix.lower() != ".csv":
        raise ManifestError(f"data.sources: {source}: column filters ({', '.join(filters)}) need a CSV source")
    if not path.exists():
        raise ManifestError(f"data.sources: {path} does not exist; {RELATIVE_FROM_HERE}")
    if path.is_dir():
        files = [p.absolute() for p in audio_in_folder(path)]
    elif path.suffix.lower() == ".csv":
        files = _csv_files(path, filters)
    elif path.suffix.lower() == ".json":
        files = _json_files(path)
    else:
        raise ManifestError(f"data.sources: {path} is neither a folder, a .csv nor an AST .json manifest")
    files = [Path(os.path.normpath(f)) for f in files if not any(fnmatch.fnmatch(f.name, g) for g in exclude)]
    if not files:
        raise ManifestError(f"data.sources: {source} names no audio files")
    return files


def is_validation(path: Path, fraction: float) -> bool:
    """Whether ``path`` is held out: a stable hash of its folder's name and its own, not of the
    order of the sources nor of where the data lies (a moved copy is split the same way)."""
    digest = hashlib.sha256(f"{path.parent.name}/{path.name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def windows(path: Path, window_s: float, min_s: float) -> list[Entry]:
    """``path`` cut into consecutive windows of ``window_s`` seconds (start offsets in seconds);
    a file that cannot be read gives one entry, so that the checks report it."""
    try:
        rate, _, frames = audio_info(path)
    except AudioError:
        return [Entry(path, ())]
    duration = frames / rate
    count = max(1, math.ceil(duration / window_s))
    if count > 1 and duration - (count - 1) * window_s < min_s:
        count -= 1
    return [Entry(path, (), start=i * window_s) for i in range(count)]


def _every_source_file(sources: Sequence[str]) -> list[Path]:
    """Every source's files (:func:`source_files`), or one error naming every source that fails."""
    files: list[Path] = []
    problems: list[str] = []
    for source in sources:
        try:
            files.extend(source_files(source))
        except ManifestError as err:
            problems.append(str(err).removeprefix("data.sources: "))
    if not problems:
        return files
    hint = f"; {RELATIVE_FROM_HERE}"
    said = [p.removesuffix(hint) for p in problems]
    tail = hint if any(p.endswith(hint) for p in problems) else ""
    raise ManifestError(f"data.sources: {'; '.join(said)}{tail}")


def unlabeled_manifests(sources: Sequence[str], window_s: float, min_s: float, val_fraction: float) -> tuple[Manifest, Manifest]:
    """Training and held-out validation windows of every file the sources name."""
    if not sources:
        raise ValueError("data.kind 'unlabeled' needs data.sources: folders, CSV files or AST JSON manifests")
    files = list(dict.fromkeys(_every_source_file(sources)))
    held = [f for f in files if is_validation(f, val_fraction)]
    if not held and files:
        held = files[-1:]  # a tiny set: hold out one file rather than nothing
    kept = [f for f in files if f not in set(held)]
    if not kept and len(held) > 1:  # a tiny set all held out: train on one file rather than none
        kept, held = held[:1], held[1:]
    if not kept:
        raise ManifestError(f"data.sources: {len(files)} file(s), all held out for validation; lower data.val_fraction")
    name = ", ".join(str(s) for s in sources)
    train = Manifest([w for f in kept for w in windows(f, window_s, min_s)], [], [], False, f"unlabeled train ({name})")
    val = Manifest([w for f in held for w in windows(f, window_s, min_s)], [], [], False, f"unlabeled validation ({name})")
    log.info("unlabeled audio: %d files (%d held out), %d training and %d validation windows of %.2f s",
             len(files), len(held), len(train.entries), len(val.entries), window_s)
    return train, val
