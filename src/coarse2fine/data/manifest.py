"""The clip lists users already have, all resolved to one :class:`Manifest`.

Supported inputs:

* AST's JSON manifest ``{"data": [{"wav": "a.wav", "labels": "/m/068hy,/m/07q6cd_"}]}`` plus
  ``class_labels_indices.csv`` (header ``index,mid,display_name``) -- :func:`read_ast_json`;
* a CSV with a ``path`` column and a ``label`` (one per clip) or ``labels`` column (several,
  separated by ``,`` or ``;`` inside the field) -- :func:`read_csv`;
* a folder with one sub-folder of audio files per class -- :func:`read_folder`;
* the Free Spoken Digit Dataset's file names -- :func:`fsdd_manifest`.

JSON entries and CSV rows may give a clip's ``start`` in seconds (a window of a long recording;
a file listed with several starts is several clips); a clip is ``data.clip_seconds`` long from
there.

Relative clip paths (JSON and CSV) are taken from the folder of the manifest file when the file
exists there, otherwise from the current working directory when it exists there (AST's own
manifests are written that way), so a file that happens to exist under the working directory
never stands in for the manifest's own. Paths are stored absolute, so a later change
of the working directory does not matter. Paths are not checked here; a missing file is
reported by :func:`coarse2fine.data.validate.validate`, together with every other bad clip.

A manifest that is malformed as a whole (unreadable, not JSON, wrong top-level shape, a bad
label CSV, no clips) raises :class:`ManifestError`, whose message names the file and the problem.
A bad entry (unknown label, no ``wav``/``path``, empty labels, a ``start`` that is not a number >= 0) does not stop the reading: every
one is set aside in :attr:`Manifest.problems` (naming the file, the entry -- JSON: 0-based index
in ``data``; CSV: line number -- its clip and the problem) and left out of its entries, and
:func:`coarse2fine.data.validate.validate` reports them with the bad audio files: one error
listing all of them, or, with ``on_error="skip"``, dropped and listed with the skipped clips. A
manifest whose every entry is bad raises :class:`ManifestError` listing them.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import itertools
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import torch

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
LABEL_CSV_NAME = "class_labels_indices.csv"
_LABEL_CSV_COLUMNS = ("index", "mid", "display_name")
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
_FSDD_TEST_TAKES = range(0, 5)
LIST_LIMIT = 50
"""How many bad clips or entries an error message lists (the rest are counted)."""
JSON_KEYS = ("wav", "labels", "start", "video_id")  # what a JSON entry holds that is read (AST's video_id: names the clip)


class ManifestError(ValueError):
    """A clip list or label file that cannot be used; the message names the file and the problem."""


# Said when a configured path is missing: the presets' relative paths are read from where the command runs
RELATIVE_FROM_HERE = "a relative path in a shipped preset or --set is taken from the current folder"


@dataclass(frozen=True)
class Entry:
    """One clip: its audio file, its labels (class ids, as in :attr:`Manifest.classes`), where in
    the file it starts (seconds; windows of long unlabeled recordings), and where its manifest
    names it (``train.csv line 31``, ``m.json entry 5``; for messages, not part of the clip)."""

    path: Path
    labels: tuple[str, ...]
    start: float = 0.0
    where: str = field(default="", compare=False)
    # where a relative path was looked for, when it is in none of those places (the manifest's folder,
    # then the current folder: :func:`_resolve`), for the message that says so; not part of the clip
    looked_in: tuple[Path, ...] = field(default=(), compare=False)


@dataclass
class Problem:
    """A clip that cannot be used, and why: its audio file, or its entry in a manifest."""

    path: Path
    problem: str


def shown_path(path: str | os.PathLike) -> str:
    """A clip's path as a message names it: normalised (``data/../audio/a.wav`` as ``audio/a.wav``),
    links not followed (the clip keeps the path its list gives, by which runs compare their data)."""
    return os.path.normpath(os.fspath(path))


def not_found_text(entry: Entry) -> str:
    """``file not found``, with the places a relative path was looked for (:attr:`Entry.looked_in`)."""
    if len(entry.looked_in) < 2:
        return "file not found"
    beside, here = entry.looked_in[:2]
    return (f"file not found under the manifest's folder ({shown_path(beside)}) nor under the current folder "
            f"({shown_path(here)})")


def format_problems(problems: Sequence[Problem], limit: int = LIST_LIMIT) -> str:
    """One indented line per problem, the first ``limit`` of them, then how many more there are."""
    lines = [f"  {shown_path(p.path)}: {p.problem}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


@dataclass
class Manifest:
    """Clips and their classes.

    ``classes`` are the label ids in target-column order (AST: the ``mid`` column of the label
    CSV, sorted by ``index``); ``display_names`` are the readable names in the same order.
    ``source`` says where the list came from (for messages and run reports). ``problems`` are the
    entries set aside as bad when the list was read (not in ``entries``);
    :func:`coarse2fine.data.validate.validate` reports them with the bad audio files.
    ``min_seconds`` is the shortest clip the entries were checked to hold (set by validation);
    :class:`coarse2fine.data.files.FileDataset` applies it again when it reads a clip.
    ``unread``: the columns (CSV) or keys (JSON) of the list that no reader takes, for a warning.
    """

    entries: list[Entry]
    classes: list[str]
    display_names: list[str]
    multilabel: bool
    source: str
    problems: list[Problem] = field(default_factory=list)
    min_seconds: float = 0.0
    unread: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_index(self) -> dict[str, int]:
        """Label id -> target column."""
        return {c: i for i, c in enumerate(self.classes)}

    def labels_used(self) -> set[str]:
        """The label ids its clips carry (a class may have none)."""
        return {label for e in self.entries for label in e.labels}


def clip_list_digests(entries: Sequence[Entry]) -> tuple[str, str]:
    """What identifies a clip list wherever its files lie: the sha256 of its clips, each as its
    path relative to the folder all of them are in, its labels and its start, in sorted order; and
    the same in the list's order (which decides a run's batches). A copy of the data moved
    elsewhere, or a manifest of the same clips under another name, has the same digests; a manifest
    of the same length and name listing other clips or labels has others."""
    paths = [os.path.abspath(e.path) for e in entries]
    try:
        root = os.path.commonpath(list({os.path.dirname(p) for p in paths})) if paths else ""
    except ValueError:  # paths on several drives: no common folder
        root = ""
    cut = len(root.rstrip(os.sep)) + 1 if root else 0
    lines = [f"{p[cut:].replace(os.sep, '/')}\t{','.join(sorted(e.labels))}\t{e.start!r}" for p, e in zip(paths, entries)]
    return tuple(hashlib.sha256("\n".join(x).encode()).hexdigest() for x in (sorted(lines), lines))  # type: ignore[return-value]


def clip_list_digest(entries: Sequence[Entry], ordered: bool = False) -> str:
    """One of :func:`clip_list_digests`: in sorted order, or (``ordered``) in the list's."""
    return clip_list_digests(entries)[int(ordered)]


# ----------------------------------------------------------------------------- label CSV


def read_label_csv(label_csv: str | Path) -> tuple[list[str], list[str]]:
    """AST's ``class_labels_indices.csv`` -> (class ids in index order, display names).

    The header must contain ``index``, ``mid`` and ``display_name`` (extra columns are ignored);
    indices must be the integers ``0..C-1``, each once, and ids must be unique.
    """
    path = Path(label_csv)
    fields, header, records = _read_csv_rows(path)
    missing = [c for c in _LABEL_CSV_COLUMNS if c not in fields]
    if missing:
        raise ManifestError(
            f"{path}: label CSV is missing column(s) {', '.join(missing)}; "
            f"expected a header 'index,mid,display_name', found {_shown_line(header)}"
            + (" (a first line of classes: add the header line above it)" if fields and fields[0].isdigit() else "")
        )
    by_index: dict[int, tuple[str, str]] = {}
    line_of_id: dict[str, int] = {}
    for line, row in records:
        raw_index, mid, name = (row.get(c) for c in _LABEL_CSV_COLUMNS)
        if raw_index is None or mid is None or name is None:
            raise ManifestError(f"{path}: line {line}: expected 3 fields (index,mid,display_name), got {_count_fields(row)}")
        try:
            index = int(raw_index.strip())
        except ValueError:
            raise ManifestError(f"{path}: line {line}: index {raw_index!r} is not an integer") from None
        mid = mid.strip()
        if not mid:
            raise ManifestError(f"{path}: line {line}: empty mid (class id)")
        if index in by_index:
            raise ManifestError(f"{path}: line {line}: duplicate class index {index} (also used by {by_index[index][0]!r})")
        if mid in line_of_id:
            raise ManifestError(f"{path}: line {line}: duplicate class id {mid!r} (first on line {line_of_id[mid]})")
        by_index[index] = (mid, name.strip())
        line_of_id[mid] = line
    if not by_index:
        raise ManifestError(f"{path}: label CSV has no classes")
    expected = set(range(len(by_index)))
    if set(by_index) != expected:
        gaps = sorted(expected - set(by_index))[:5]
        raise ManifestError(
            f"{path}: class indices must be 0..{len(by_index) - 1} with no gaps "
            f"(target columns follow them); missing {gaps}, found {sorted(set(by_index) - expected)[:5]}"
        )
    ordered = [by_index[i] for i in range(len(by_index))]
    return [mid for mid, _ in ordered], [name for _, name in ordered]


def _shown_line(line: str, limit: int = 200) -> str:
    """A file's line as a message quotes it: as written (a long one cut), or ``nothing`` for an empty one."""
    if not line.strip():
        return "nothing"
    return line if len(line) <= limit else line[:limit] + "..."


def _count_fields(row: dict[str | None, Any]) -> int:
    return sum(1 for k, v in row.items() if k is not None and v is not None) + len(row.get(None) or [])


def _read_csv_rows(path: Path) -> tuple[list[str], str, list[tuple[int, dict[str | None, Any]]]]:
    """Header (stripped, lower-case), the header line as the file writes it (for messages) and
    ``(line number, row)`` pairs of a CSV file."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            header = f.readline()
            reader = csv.DictReader(itertools.chain([header], f), skipinitialspace=True)
            fields = [(c or "").strip().lower() for c in (reader.fieldnames or [])]
            reader.fieldnames = fields
            records = []
            for row in reader:
                if not any((v or "").strip() for k, v in row.items() if k is not None and isinstance(v, str)):
                    continue  # blank line
                records.append((reader.line_num, row))
    except FileNotFoundError:
        raise ManifestError(f"{path}: file not found") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"{path}: not a readable UTF-8 CSV file ({e})") from None
    except OSError as e:
        raise ManifestError(f"{path}: cannot be read ({e})") from None
    return fields, header.rstrip("\r\n"), records


# ----------------------------------------------------------------------------- helpers


def _resolve(raw: str, base: Path) -> tuple[Path, tuple[Path, ...]]:
    """A clip path from a manifest: under ``base`` (the manifest's folder) if it exists there, else
    relative to the current folder if it exists there (AST's manifests name clips from the folder
    their scripts run in), else under ``base`` (reported missing there). The manifest's own folder
    comes first, so that a clip that happens to exist under the current folder cannot stand in.
    With it, the places it was looked for when it is in neither (:attr:`Entry.looked_in`). A
    relative path written with Windows separators (``audio\\dog 1.wav``) that is not there as
    written is taken with ``/`` where that names a file."""
    if os.sep == "/" and "\\" in raw and not Path(raw).exists() and not (base / raw).exists():
        posix, _ = _resolve(raw.replace("\\", "/"), base)
        if posix.exists():
            return posix, ()
    p = Path(os.path.expanduser(raw))
    if p.is_absolute():
        return p, ()
    beside = (base / p).absolute()
    if beside.exists():
        return beside, ()
    if p.exists():
        return p.absolute(), ()
    return beside, (beside, p.absolute())


def _split_labels(text: str) -> list[str]:
    """``"a, b;c"`` -> ``["a", "b", "c"]`` (duplicates and empty items dropped, order kept)."""
    seen: dict[str, None] = {}
    for item in re.split(r"[,;]", text):
        item = item.strip()
        if item:
            seen.setdefault(item)
    return list(seen)


class _BadEntry(Exception):
    """One entry of a manifest that cannot be used (collected, not raised to the caller)."""

    def __init__(self, message: str, clip: Path | None = None):
        super().__init__(message)
        self.message, self.clip = message, clip


def _label_problem(entry: Entry, classes: Sequence[str], display_names: Sequence[str], label_source: str) -> str | None:
    """Why ``entry``'s labels are not all classes (every unknown one named), or None."""
    known = set(classes)
    unknown = [label for label in entry.labels if label not in known]
    if not unknown:
        return None
    hints = []
    for label in unknown:
        if label in display_names:
            hints.append(f"{label!r} is the display name of {classes[list(display_names).index(label)]!r}: use the id")
        elif guess := _label_guess(label, classes):
            hints.append(f"{label!r}{guess}")
    words = "unknown label" if len(unknown) == 1 else "unknown labels"
    text = f"{words} {', '.join(repr(u) for u in unknown)} (not a class in {label_source})"
    return text + "".join(f"; {h}" for h in hints)


def _collected(entries: list[Entry], problems: list[Problem], path: Path, what: str) -> None:
    """Raise if no entry is usable; log how many were set aside otherwise."""
    if not entries and not problems:
        raise ManifestError(f"{path}: empty manifest (no clips)")
    if not entries:
        raise ManifestError(f"{path}: no usable {what}: all {len(problems)} are bad:\n{format_problems(problems)}")
    if problems:
        logger.warning("%s: %d of %d %s cannot be used (an unknown label, a malformed entry or start); they are "
                       "listed with the bad clips when the clips are checked", path, len(problems),
                       len(problems) + len(entries), what)


# ----------------------------------------------------------------------------- readers


def read_ast_json(json_path: str | Path, label_csv: str | Path, multilabel: bool = False) -> Manifest:
    """AST's JSON manifest plus its ``class_labels_indices.csv``.

    Each item of ``data`` needs ``wav`` (a path) and ``labels`` (ids separated by commas, or a
    list of ids), and may give ``start`` (seconds into the file where the clip begins; 0 when not
    given). Other keys are not read (``video_id``, AST's own, silently; the others are named in
    :attr:`Manifest.unread`). The manifest is multi-label if ``multilabel`` is set or any clip
    has more than one label.
    """
    path = Path(json_path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: cannot be read ({e})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(doc, dict) or "data" not in doc:
        found = f"keys {sorted(doc)}" if isinstance(doc, dict) else f"a JSON {type(doc).__name__}"
        raise ManifestError(f'{path}: missing "data" key; expected {{"data": [{{"wav": ..., "labels": ...}}, ...]}}, found {found}')
    data = doc["data"]
    if not isinstance(data, list):
        raise ManifestError(f'{path}: "data" must be a list of clips, found a JSON {type(data).__name__}')

    classes, display_names = read_label_csv(label_csv)
    entries: list[Entry] = []
    problems: list[Problem] = []
    for i, item in enumerate(data, 1):  # entry 1 is the first, as an editor counts lines from 1
        try:
            entry = replace(_json_entry(item, path), where=f"{path.name} entry {i}")
            problem = _label_problem(entry, classes, display_names, str(label_csv))
            if problem is not None:
                raise _BadEntry(problem, entry.path)
        except _BadEntry as bad:
            problems.append(Problem(bad.clip or path, f"{path.name} entry {i}: {bad.message}"))
            continue
        entries.append(entry)
    _collected(entries, problems, path, "entries")
    multi = multilabel or any(len(e.labels) > 1 for e in entries)
    keys = dict.fromkeys(k for item in data if isinstance(item, dict) for k in item if k not in JSON_KEYS)
    return Manifest(entries, classes, display_names, multi, str(path), problems, unread=tuple(keys))


def _json_entry(item: Any, path: Path) -> Entry:
    """One item of an AST manifest's ``data`` -> :class:`Entry`; :class:`_BadEntry` if malformed."""
    if not isinstance(item, dict):
        raise _BadEntry(f"expected an object with \"wav\" and \"labels\", found a JSON {type(item).__name__}")
    wav = item.get("wav")
    clip, looked_in = _resolve(wav.strip(), path.parent) if isinstance(wav, str) and wav.strip() else (None, ())
    for key, other in (("wav", ("path", "file", "audio")), ("labels", ("label", "class", "target"))):
        if key not in item:
            given = next((k for k in other if k in item), None)  # the key other lists use for it
            hint = f'; AST\'s manifests call "{given}" "{key}"' if given else ""
            raise _BadEntry(f'no "{key}" key (keys: {", ".join(sorted(item)) or "none"}){hint}', clip)
    if clip is None:
        raise _BadEntry(f'"wav" must be a non-empty path string, found {wav!r}')
    start = _start_field(item.get("start"), '"start"', clip)
    return Entry(clip, tuple(_labels_field(item["labels"], clip)), start=start, looked_in=looked_in)


def _start_field(value: Any, name: str, clip: Path | None) -> float:
    """A clip's start in seconds from a manifest's ``start`` (None or empty: 0); :class:`_BadEntry`
    unless a finite number >= 0."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0.0
    try:
        start = float(value.strip() if isinstance(value, str) else value)
        if isinstance(value, bool):
            raise ValueError
    except (TypeError, ValueError):
        raise _BadEntry(f"{name} must be a number of seconds, found {value!r}", clip) from None
    if not math.isfinite(start) or start < 0:
        raise _BadEntry(f"{name} must be a number of seconds >= 0, found {value!r}", clip)
    return start


def _labels_field(value: Any, clip: Path | None = None) -> list[str]:
    if isinstance(value, str):
        labels = _split_labels(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        labels = _split_labels(",".join(value))
    else:
        raise _BadEntry(f'"labels" must be a string like "/m/068hy,/m/07q6cd_", found {value!r}', clip)
    if not labels:
        raise _BadEntry('"labels" is empty', clip)
    return labels


def read_csv(csv_path: str | Path, label_csv: str | Path | None = None, multilabel: bool = False) -> Manifest:
    """A CSV with columns ``path`` and ``label`` (single) or ``labels`` (``,``/``;``-separated),
    and optionally ``start`` (seconds into the file where the clip begins; empty: 0). Other
    columns are not read (named in :attr:`Manifest.unread`).

    Classes come from ``label_csv`` (AST format) if given, else they are the sorted unique labels
    (then the display names are the labels themselves).
    """
    path = Path(csv_path)
    fields, header, records = _read_csv_rows(path)
    if "path" not in fields or not ({"label", "labels"} & set(fields)):
        raise ManifestError(
            f"{path}: CSV needs a 'path' column and a 'label' or 'labels' column; found {_shown_line(header)}"
        )
    column = "labels" if "labels" in fields else "label"
    known = read_label_csv(label_csv) if label_csv is not None else None
    entries: list[Entry] = []
    problems: list[Problem] = []
    for line, row in records:
        raw_path, raw_labels = row.get("path"), row.get(column)
        clip, looked_in = _resolve(raw_path.strip(), path.parent) if raw_path and raw_path.strip() else (None, ())
        if clip is None:
            problem = "empty path"
        elif raw_labels is None or not raw_labels.strip():
            problem = f"no {column} for {raw_path.strip()}"
        else:
            labels = _split_labels(raw_labels) if column == "labels" else [raw_labels.strip()]
            try:
                start = _start_field(row.get("start"), "start", clip)
            except _BadEntry as bad:
                start, problem = 0.0, bad.message
            else:
                problem = None
            entry = Entry(clip, tuple(labels), start=start, where=f"{path.name} line {line}", looked_in=looked_in)
            if problem is None and known is not None:
                problem = _label_problem(entry, *known, str(label_csv))
        if problem is not None:
            problems.append(Problem(clip or path, f"{path.name} line {line}: {problem}"))
            continue
        entries.append(entry)
    _collected(entries, problems, path, "rows")
    if known is not None:
        classes, display_names = known
    else:
        classes = sorted({label for e in entries for label in e.labels})
        display_names = list(classes)
    multi = multilabel or any(len(e.labels) > 1 for e in entries)
    unread = tuple(f for f in fields if f and f not in ("path", column, "start"))
    return Manifest(entries, classes, display_names, multi, str(path), problems, unread=unread)


def listing_warnings(manifest: Manifest, classes: bool = True) -> list[str]:
    """What a manifest lists that is probably not meant: columns or keys that nothing reads (an
    ``end`` column, a ``speaker`` key), a clip listed more than once (trained, or scored, as
    often as listed; with other labels, a single-label clip that is two), and (``classes``; not
    for a validation list, which takes the training list's) classes whose names differ only in
    case (two classes)."""
    rows: dict[tuple[Path, float], list[Entry]] = {}
    for e in manifest.entries:
        rows.setdefault((e.path, e.start), []).append(e)
    twice = [listed for listed in rows.values() if len(listed) > 1]
    out = []
    if manifest.unread:
        json_list = manifest.source.lower().endswith(".json")
        reads = ('"wav", "labels" and "start" (seconds into the file; 0 when not given)' if json_list else
                 "path, label or labels, and start (seconds into the file; empty or 0: its beginning)")
        out.append(f"{manifest.source}: {'key' if json_list else 'column'}(s) {', '.join(manifest.unread)} not read "
                   f"(a {'JSON' if json_list else 'CSV'} manifest reads {reads}; each clip is data.clip_seconds long)")
    if twice:
        other = [listed for listed in twice if len({e.labels for e in listed}) > 1]
        first = other[0] if other else twice[0]
        shown = ", ".join(f"{' '.join(e.labels)} at {e.where}" if other else e.where for e in first)
        what = "with other labels" if other else "the same"
        used = "trained" if classes else "scored"
        out.append(f"{manifest.source}: {len(twice)} clip(s) listed more than once, each {used} as often as listed"
                   + (f"; {len(other)} with other labels" if other else "")
                   + f" (e.g. {first[0].path.name}, {what}: {shown})")
    by_case: dict[str, list[str]] = {}
    for c in manifest.classes if classes else ():
        by_case.setdefault(c.casefold(), []).append(c)
    clash = [names for names in by_case.values() if len(names) > 1]
    if clash:
        out.append(f"{manifest.source}: classes that differ only in case are separate classes: "
                   + "; ".join(" and ".join(names) for names in clash[:5]))
    return out


def _is_audio(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")


def _audio_below(folder: Path) -> Iterator[Path]:
    """The audio files below ``folder`` at any depth, unsorted; hidden files and files in hidden
    folders left out."""
    return (p for p in folder.rglob("*") if _is_audio(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def audio_in_folder(folder: Path) -> list[Path]:
    """The audio files below ``folder`` at any depth (:data:`AUDIO_EXTENSIONS`, in any case),
    sorted; hidden files and files in hidden folders are left out."""
    return sorted(_audio_below(folder))


def read_folder(root: str | Path) -> Manifest:
    """One sub-folder per class (its name is the class), audio files anywhere below it.

    Extensions wav/flac/ogg/mp3 in any case; hidden files and folders are skipped, as are
    sub-folders without audio (with a warning). Classes and files are sorted by name, so the
    result does not depend on the file system's order.
    """
    path = Path(root)
    if not path.is_dir():
        raise ManifestError(f"{path}: not a folder")
    if (path / "dataset.json").is_file() or (path / "pack.json").is_file():
        raise ManifestError(f"{path}: a folder written by `coarse2fine pack`, not a folder of class sub-folders; "
                            "read it with data.kind: shards (data.train / data.val: its split folders)")
    loose = [p for p in path.iterdir() if _is_audio(p)]
    if loose:
        logger.warning("%s: %d audio file(s) directly in the root folder ignored; put each class in its own sub-folder", path, len(loose))
    entries: list[Entry] = []
    classes: list[str] = []
    for sub in sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name):
        files = sorted(_audio_below(sub), key=lambda p: p.relative_to(sub).as_posix())
        if not files:
            logger.warning("%s: sub-folder %s has no audio files; not used as a class", path, sub.name)
            continue
        classes.append(sub.name)
        entries.extend(Entry(p.absolute(), (sub.name,)) for p in files)
    if not entries:
        raise ManifestError(f"{path}: empty manifest: no class sub-folders with {'/'.join(e[1:] for e in AUDIO_EXTENSIONS)} files")
    return Manifest(entries, classes, list(classes), False, str(path))


def read_manifest(spec: str | Path | Manifest, label_csv: str | Path | None = None, multilabel: bool = False) -> Manifest:
    """Whatever the user has -> :class:`Manifest`.

    * a folder -> :func:`read_folder`;
    * ``*.json`` -> :func:`read_ast_json` with ``label_csv``, or, if that is not given, the
      ``class_labels_indices.csv`` next to the JSON file;
    * ``*.csv`` -> :func:`read_csv` (with ``label_csv`` if given);
    * a :class:`Manifest` is returned unchanged.
    """
    if isinstance(spec, Manifest):
        return spec
    path = Path(spec)
    if path.is_dir():
        return read_folder(path)
    if not path.exists():
        raise ManifestError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".json":
        if label_csv is None:
            guess = path.parent / LABEL_CSV_NAME
            if not guess.is_file():
                raise ManifestError(f"{path}: a JSON manifest needs its label CSV ({LABEL_CSV_NAME}); none given and none next to it")
            label_csv = guess
        return read_ast_json(path, label_csv, multilabel)
    if suffix == ".csv":
        return read_csv(path, label_csv, multilabel)
    raise ManifestError(f"{path}: unknown manifest type; expected a folder, an AST .json manifest or a .csv file")


def _label_guess(label: str, classes: Sequence[str]) -> str:
    """`` (dog?)``: the class ``label`` probably means (another case, or the closest spelling), or ``""``."""
    same = [c for c in classes if c.casefold() == label.casefold()]
    if same:
        return f" ({same[0]}? classes differ in case)"
    folded = {c.casefold(): c for c in classes}
    close = difflib.get_close_matches(label.casefold(), list(folded), n=1, cutoff=0.75)
    return f" ({folded[close[0]]}?)" if close else ""


def align_classes(train: Manifest, val: Manifest) -> Manifest:
    """``val`` with ``train``'s classes (target columns, display names), so both splits' targets
    mean the same columns. A validation set may lack some training classes (a small or imbalanced
    one often does; its metric then counts the classes it has); a validation clip with a label that
    training never saw has no column: it is set aside with the entries the manifest could not use
    (:attr:`Manifest.problems`), which the run stops on or skips (``data.on_error``) with its other
    bad clips."""
    if val.classes == train.classes:
        return val
    known = set(train.classes)
    entries, problems = [], list(val.problems)
    for e in val.entries:
        unknown = sorted(set(e.labels) - known)
        if unknown:
            named = ", ".join(label + _label_guess(label, train.classes) for label in unknown)
            problems.append(Problem(e.path, f"{e.where or Path(val.source).name}: label(s) {named} not in the "
                                            f"training set {train.source} (give both splits the same label_csv, or "
                                            "remove the clip)"))
        else:
            entries.append(e)
    used = {label for e in entries for label in e.labels}
    absent = [c for c in train.classes if c not in used]
    if absent:
        logger.info("%s: %d of the %d training classes have no validation clip: %s", val.source, len(absent),
                    len(known), ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else ""))
    return replace(val, entries=entries, problems=problems, classes=list(train.classes),
                   display_names=list(train.display_names), multilabel=train.multilabel or val.multilabel)


def fsdd_manifest(
    root: str | Path,
    task: Literal["digits", "speakers"] = "digits",
    split: Literal["train", "test"] = "train",
) -> Manifest:
    """The Free Spoken Digit Dataset from its file names ``{digit}_{speaker}_{take}.wav``.

    ``root`` is the dataset folder or its ``recordings/`` folder. Official split: takes 0-4 are
    the test set, 5-49 the training set. Classes are the digits ``"0".."9"`` or the speakers
    found (sorted), the same for both splits. Other files are skipped with a warning.
    """
    if task not in ("digits", "speakers"):
        raise ValueError(f"task must be 'digits' or 'speakers', got {task!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = Path(root)
    if (folder / "recordings").is_dir():
        folder = folder / "recordings"
    if not folder.is_dir():
        raise ManifestError(f"{folder}: not a folder; point data.root at the FSDD folder (with recordings/); "
                            f"{RELATIVE_FROM_HERE}")
    clips: list[tuple[int, str, int, Path]] = []
    skipped = 0
    for p in folder.iterdir():
        m = _FSDD_NAME.match(p.name)
        if m is None:
            if p.suffix.lower() in AUDIO_EXTENSIONS:
                skipped += 1
            continue
        clips.append((int(m.group(1)), m.group(2), int(m.group(3)), p.absolute()))
    if skipped:
        logger.warning("%s: %d audio file(s) not named {digit}_{speaker}_{take}.wav skipped", folder, skipped)
    if not clips:
        raise ManifestError(f"{folder}: empty manifest: no FSDD files named {{digit}}_{{speaker}}_{{take}}.wav")
    clips.sort(key=lambda c: c[:3])
    if task == "digits":
        classes = [str(d) for d in range(10)]
    else:
        classes = sorted({c[1] for c in clips})
    in_test = split == "test"
    entries = [
        Entry(p, (str(digit) if task == "digits" else speaker,))
        for digit, speaker, take, p in clips
        if (take in _FSDD_TEST_TAKES) == in_test
    ]
    if not entries:
        raise ManifestError(f"{folder}: empty manifest (no clips)")
    return Manifest(entries, classes, list(classes), False, f"FSDD {task}/{split} ({folder})")


def multi_hot(entries: Sequence[Entry], classes: Sequence[str]) -> torch.Tensor:
    """Targets [N, C] (float32) of ``entries`` over ``classes``; an unknown label raises."""
    index = {c: i for i, c in enumerate(classes)}
    out = torch.zeros(len(entries), len(classes), dtype=torch.float32)
    for i, entry in enumerate(entries):
        for label in entry.labels:
            if label not in index:
                raise ManifestError(f"clip {entry.path}: unknown label {label!r} (not one of the {len(classes)} classes)")
            out[i, index[label]] = 1.0
    return out


def targets(manifest: Manifest) -> torch.Tensor:
    """Multi-hot targets [N, C] (float32) in the order of ``manifest.classes``."""
    return multi_hot(manifest.entries, manifest.classes)
