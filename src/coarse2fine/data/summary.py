"""What ``coarse2fine check`` says of a config's data beyond its bad clips: the classes and their
clips per split, the classes a split lacks, clips listed in both splits, and the clips that are
cut or padded to ``data.clip_seconds``, and training clips of several sample rates. Pure functions
of what the splits hold and of their files' headers (durations, rates), which the caller reads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from coarse2fine.data.manifest import Entry, shown_path

NAMED = 10
"""How many classes or clips a line names before it counts the rest."""


def _named(items: Sequence[str], limit: int = NAMED) -> str:
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _label(cls: str, display: str | None) -> str:
    return cls if display in (None, "", cls) else f"{cls} ({display})"


def class_lines(classes: Sequence[str], display_names: Sequence[str] | None, train: Sequence[int],
                val: Sequence[int]) -> tuple[list[str], list[str]]:
    """(lines, warnings): the classes with their training / validation clip counts, and a warning
    for each split that leaves classes without a clip (a class with no training clip is never
    learned; one with no validation clip is not scored)."""
    display = list(display_names) if display_names else [None] * len(classes)
    counts = [f"{_label(c, d)} {t}/{v}" for c, d, t, v in zip(classes, display, train, val)]
    lines = [f"{len(classes)} classes (training/validation clips): {_named(counts)}"]
    warnings = []
    for split, n, why in (("training", train, "it is never learned"), ("validation", val, "it is not scored")):
        empty = [c for c, k in zip(classes, n) if k == 0]
        if empty:
            warnings.append(f"{len(empty)} class(es) have no usable {split} clip ({why}): {_named(empty)}")
    return lines, warnings


def shared_clips(train: Sequence[Entry], val: Sequence[Entry]) -> list[str]:
    """The clips (file and start) that both splits list, as ``path`` or ``path@start s``: the same
    file however it is named (``./``, ``..``, a link to it or to a folder above it)."""
    held = {(os.path.realpath(e.path), e.start) for e in train}
    both = dict.fromkeys((e.path, e.start) for e in val if (os.path.realpath(e.path), e.start) in held)
    return [shown_path(p) if not start else f"{shown_path(p)}@{start:g}s" for p, start in both]


def shared_warning(both: Sequence[str]) -> str:
    """What ``check`` and ``pack`` say of clips that both splits list."""
    return (f"{len(both)} clip(s) are in both the training and the validation lists (the validation metric is not "
            f"measured on held-out clips): {', '.join(both[:NAMED])}" + (" ..." if len(both) > NAMED else ""))


def rate_lines(rates: Sequence[int], sample_rate: int) -> list[str]:
    """A line when the training clips' files (their ``rates``) mix sample rates: each is resampled
    to ``sample_rate``, and a rate (a bandwidth) that goes with some classes is a cue to learn."""
    counts = {rate: rates.count(rate) for rate in sorted(set(rates))}
    if len(counts) < 2:
        return []
    mixed = ", ".join(f"{rate} Hz ({n})" for rate, n in counts.items())
    return [f"the training clips mix sample rates: {mixed}; each is resampled to {sample_rate} Hz "
            "(features.sample_rate), and a rate's bandwidth that goes with some classes is a cue the model can learn "
            "in place of the sound"]


def length_lines(durations: Sequence[tuple[Path, float]], clip_seconds: float, pad: str) -> list[str]:
    """How many clips (of ``(path, seconds from the clip's start to the file's end)``) are longer
    than ``clip_seconds`` and cut to it (what they keep: their first ``clip_seconds``), and how
    many shorter and padded (``data.pad``), with the longest and the shortest."""
    if not durations:
        return []
    longer = [(s, p) for p, s in durations if s > clip_seconds + 1e-6]
    shorter = [(s, p) for p, s in durations if s < clip_seconds - 1e-6]
    lines = []
    if longer:
        s, p = max(longer)
        lines.append(f"{len(longer)} of {len(durations)} clips are longer than data.clip_seconds ({clip_seconds:g} s) "
                     f"and are cut to it: each keeps its first {clip_seconds:g} s, in every epoch and evaluation (the "
                     f"longest: {s:.2f} s, {shown_path(p)}; a manifest's start column makes more clips of a long file)")
    if shorter:
        s, p = min(shorter)
        lines.append(f"{len(shorter)} of {len(durations)} clips are shorter than data.clip_seconds ({clip_seconds:g} s) "
                     f"and are padded (data.pad: {pad}; the shortest: {s:.2f} s, {shown_path(p)})")
    return lines
