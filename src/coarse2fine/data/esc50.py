"""ESC-50 from its official metadata: ``esc50.csv`` (filename, fold, target, category, ...) and
``audio/``. Five folds; one is the validation fold, the other four train (the protocol of AST,
SSAST and HTS-AT, which report the mean over the five folds: ``coarse2fine crossval``)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

from coarse2fine.data.manifest import RELATIVE_FROM_HERE, Entry, Manifest, ManifestError

FOLDS = (1, 2, 3, 4, 5)
_COLUMNS = ("filename", "fold", "target", "category")


def _read_rows(csv_path: Path) -> list[dict[str, str]]:
    try:
        with open(csv_path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ManifestError(f"{csv_path}: missing column(s) {', '.join(missing)} (ESC-50's esc50.csv expected)")
            return list(reader)
    except OSError as err:
        raise ManifestError(f"{csv_path}: cannot read ({err})") from None


def esc50_manifest(root: str | Path, fold: int, split: Literal["train", "val"]) -> Manifest:
    """The ``train`` clips (every fold but ``fold``) or the ``val`` clips (fold ``fold``) of the
    ESC-50 folder ``root`` (with ``esc50.csv`` and ``audio/``, or ``meta/esc50.csv`` as in the
    GitHub release). Classes are ESC-50's 50 targets in order, named by their categories."""
    if fold not in FOLDS:
        raise ValueError(f"data.fold: ESC-50 has folds 1-5, got {fold}")
    folder = Path(root)
    csv_path = next((p for p in (folder / "esc50.csv", folder / "meta" / "esc50.csv") if p.is_file()), None)
    if csv_path is None:
        raise ManifestError(f"{folder}: no esc50.csv (or meta/esc50.csv); point data.root at the ESC-50 folder; "
                            f"{RELATIVE_FROM_HERE}")
    rows = _read_rows(csv_path)
    names: dict[int, str] = {}
    entries = []
    for i, row in enumerate(rows, start=2):
        try:
            target, row_fold = int(row["target"]), int(row["fold"])
        except ValueError:
            raise ManifestError(f"{csv_path}:{i}: fold and target must be integers, got {row['fold']!r}, {row['target']!r}") from None
        names[target] = row["category"]
        if (row_fold == fold) == (split == "val"):
            entries.append(Entry((folder / "audio" / row["filename"]).absolute(), (str(target),)))
    if sorted(names) != list(range(len(names))):
        raise ManifestError(f"{csv_path}: targets must be 0..{len(names) - 1}")
    if not entries:
        raise ManifestError(f"{csv_path}: no clips for {split} with fold {fold}")
    classes = [str(t) for t in range(len(names))]
    return Manifest(entries, classes, [names[t] for t in range(len(names))], False, f"ESC-50 {split}, fold {fold} ({csv_path})")
