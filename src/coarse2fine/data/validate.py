"""Check every clip of a manifest before training, and report all bad ones at once.

A clip is bad if its file is missing, cannot be decoded (corrupt, truncated, not audio), has no
frames, is shorter than ``min_seconds``, holds NaN or infinite samples, or is digital silence
(peak below 1e-7). Stereo, 8/16/24/32-bit integer and float WAV, FLAC and any sample rate are
fine: :func:`coarse2fine.audio.load_audio` mixes down and resamples them. Entries the manifest
reader set aside (unknown label, malformed entry: :attr:`Manifest.problems`) are reported here
with the bad files, in the same list: they stop the run or, with ``on_error="skip"``, are
dropped and listed with the skipped clips.

Clips are decoded in a small thread pool (decoding and resampling release the GIL).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from coarse2fine.audio import AudioError, audio_info, load_audio, truncated_wav
from coarse2fine.data.manifest import Entry, Manifest, Problem, format_problems, not_found_text

logger = logging.getLogger(__name__)

SILENCE_PEAK = 1e-7


class InvalidInputError(ValueError):
    """Some clips cannot be used; ``problems`` lists every one (the message too)."""

    def __init__(self, message: str, problems: list[Problem]):
        super().__init__(message)
        self.problems = problems

    def __reduce__(self):  # picklable across processes despite the extra argument
        return (type(self), (str(self), self.problems))


@dataclass
class ValidationReport:
    """Result of :func:`validate`: the usable entries and the problems of the others."""

    ok: list[Entry]
    problems: list[Problem] = field(default_factory=list)
    min_seconds: float = 0.0
    """The shortest clip accepted (``validate``'s ``min_seconds``)."""

    def to_dict(self) -> dict:
        """JSON-ready summary for a run's report."""
        return {
            "checked": len(self.ok) + len(self.problems),
            "ok": len(self.ok),
            "problems": [{"path": str(p.path), "problem": p.problem} for p in self.problems],
        }

    def format(self) -> str:
        """Human-readable summary, one line per problem."""
        head = f"{len(self.ok)} of {len(self.ok) + len(self.problems)} clips usable"
        if not self.problems:
            return head
        return "\n".join([f"{head}; {len(self.problems)} cannot be used:", *(f"  {p.path}: {p.problem}" for p in self.problems)])

    def filtered(self, manifest: Manifest) -> Manifest:
        """``manifest`` restricted to the usable entries (classes unchanged; its set-aside entries,
        reported here, dropped), with the ``min_seconds`` they were checked with, which
        :class:`coarse2fine.data.files.FileDataset` applies again when it reads them."""
        return dataclasses.replace(manifest, entries=list(self.ok), problems=[],
                                   min_seconds=self.min_seconds)


def _reason(err: Exception, path: Path) -> str:
    """An error's message, shortened: the :class:`Problem` already carries the full path."""
    problem = getattr(err, "problem", None)  # AudioError keeps the message without the path
    text = problem if isinstance(problem, str) else str(err)
    for name in (str(path.absolute()), str(path)):
        text = text.replace(name, path.name)
    if text.startswith(f"{path.name}: "):
        text = text[len(path.name) + 2 :]
    return text.strip() or type(err).__name__


_NON_FINITE = re.compile(r"\bnan\b|\binf\b|infinite|non-finite|not finite", re.IGNORECASE)
_EMPTY = re.compile(r"\bempty\b|\b0 (frames|samples)\b|\bno (frames|samples|audio)\b", re.IGNORECASE)


def _decode_problem(err: Exception, path: Path, classify: bool) -> str:
    """A read failure as a problem; with ``classify``, in the same words as the checks made here.

    ``classify`` is for :func:`load_audio` failures, which cover NaN/inf samples and empty
    audio too; a header that cannot be read (:func:`audio_info`) is always "undecodable".
    """
    reason = _reason(err, path)
    audio_error = classify and isinstance(err, AudioError)
    if audio_error and _NON_FINITE.search(reason):
        canonical = "contains NaN or infinite samples"
        return canonical if reason.lower() == canonical.lower() else f"{canonical} ({reason})"
    if audio_error and _EMPTY.search(reason):
        return f"empty: {reason}"
    prefix = "" if isinstance(err, AudioError) else f"{type(err).__name__}: "
    return f"undecodable: {prefix}{reason}"


def check_clip(path: Path, sample_rate: int = 16000, min_seconds: float = 0.1, check_silence: bool = True) -> str | None:
    """The problem with one clip, or None if it can be trained on."""
    return _check_file(path, sample_rate, min_seconds, check_silence)[0]


def _check_file(path: Path, sample_rate: int, min_seconds: float, check_silence: bool) -> tuple[str | None, int]:
    """The problem with one file (None: none) and its decoded length in samples at ``sample_rate``."""
    if not path.exists():
        return "file not found", 0
    if not path.is_file():
        return "not a file", 0
    if path.stat().st_size == 0:
        return "empty: 0-byte file", 0
    try:
        rate, _channels, frames = audio_info(path)
    except Exception as e:  # noqa: BLE001 - any failure to read is a problem of this clip
        return _decode_problem(e, path, classify=False), 0
    if cut := truncated_wav(path):  # before "0 frames": a WAV cut right after its header holds none
        return cut, 0
    if frames == 0:
        return "empty: 0 frames", 0
    if frames > 0 and rate > 0 and frames / rate < min_seconds:
        return f"too short: {frames / rate:.3f} s < {min_seconds:g} s", 0
    try:
        wave = load_audio(path, sample_rate)
    except Exception as e:  # noqa: BLE001
        return _decode_problem(e, path, classify=True), 0
    return wave_problem(wave, sample_rate, min_seconds, check_silence), wave.numel()


def start_problem(start: float, samples: int, sample_rate: int, min_seconds: float) -> str | None:
    """The problem of a clip that starts ``start`` seconds into a file of ``samples`` samples (at
    ``sample_rate``): none left after it, or less than ``min_seconds`` (with a sample of slack, as
    the loader reads it); None when it holds enough."""
    left = samples - int(round(start * sample_rate))
    if left <= 0:
        return f"starts at {start:g} s, at or after the file's end ({samples / sample_rate:.3f} s)"
    if left + 1 < min_seconds * sample_rate:
        return f"too short after its start at {start:g} s: {left / sample_rate:.3f} s < {min_seconds:g} s"
    return None


def decode_problem(err: Exception, path: Path) -> str:
    """A failure of :func:`~coarse2fine.audio.load_audio` or :func:`~coarse2fine.audio.decode_audio`
    as a problem, in the words :func:`check_clip` uses."""
    return _decode_problem(err, path, classify=True)


def wave_problem(wave: torch.Tensor, sample_rate: int, min_seconds: float = 0.1, check_silence: bool = True) -> str | None:
    """The problem with a decoded clip (empty, NaN or infinite samples, too short, digital
    silence), or None if it can be trained on."""
    if wave.numel() == 0:
        return "empty: 0 frames"
    if not bool(torch.isfinite(wave).all()):
        return "contains NaN or infinite samples"
    if wave.numel() / sample_rate < min_seconds:
        return f"too short: {wave.numel() / sample_rate:.3f} s < {min_seconds:g} s"
    if check_silence:
        peak = float(wave.abs().max())
        if peak < SILENCE_PEAK:
            return f"silent: peak amplitude {peak:.1e} < {SILENCE_PEAK:g} (digital silence)"
    return None


def _problem_text(entry: Entry, problem: str) -> str:
    """The problem :func:`check_clip` found with ``entry``'s file, after where its list names it; a
    missing file named by a relative path says where it was looked for."""
    if problem == "file not found":
        problem = not_found_text(entry)
    return f"{entry.where}: {problem}" if entry.where else problem


def validate(
    manifest: Manifest,
    sample_rate: int = 16000,
    min_seconds: float = 0.1,
    on_error: Literal["raise", "skip"] = "raise",
    check_silence: bool = True,
    workers: int = 2,
) -> ValidationReport:
    """Decode every clip of ``manifest`` and collect all problems.

    The entries the manifest reader set aside (:attr:`Manifest.problems`: unknown label,
    malformed entry) come first among the problems, then the bad files.
    ``on_error="raise"``: if any clip is bad, raise :class:`InvalidInputError` listing every bad
    entry and file and its problem (the message lists the first
    :data:`~coarse2fine.data.manifest.LIST_LIMIT` and counts the rest; the error's ``problems``
    holds all). ``on_error="skip"``: return the bad clips in the report's ``problems`` (for the
    run's report) and log a warning with their count; if no clip at all is usable,
    :class:`InvalidInputError` is raised anyway. A file listed several times is decoded once.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not math.isfinite(min_seconds) or min_seconds < 0:
        raise ValueError(f"min_seconds must be >= 0, got {min_seconds}")
    if not manifest.entries and not manifest.problems:
        raise InvalidInputError(f"{manifest.source}: empty manifest (no clips)", [])
    start = time.perf_counter()
    unique = list(dict.fromkeys(e.path for e in manifest.entries))

    def check(path: Path) -> tuple[str | None, int]:
        return _check_file(path, sample_rate, min_seconds, check_silence)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        found = dict(zip(unique, pool.map(check, unique)))

    report = ValidationReport(ok=[], problems=[], min_seconds=min_seconds)
    late = []  # entries of good files whose start leaves too little of the file
    for entry in manifest.entries:
        problem, samples = found[entry.path]
        if problem is None and entry.start and (after := start_problem(entry.start, samples, sample_rate, min_seconds)):
            late.append(Problem(entry.path, _problem_text(entry, after)))
        elif problem is None:
            report.ok.append(entry)
    first = {e.path: e for e in reversed(manifest.entries)}  # the first entry naming each file
    report.problems = [*manifest.problems, *(Problem(p, _problem_text(first[p], found[p][0]))
                                             for p in unique if found[p][0] is not None), *late]
    logger.info("validated %d clips of %s in %.1f s: %d usable", len(manifest.entries), manifest.source, time.perf_counter() - start, len(report.ok))

    if report.problems and (on_error == "raise" or not report.ok):
        why = "no clip is usable" if not report.ok else f"{len(report.problems)} clip(s) cannot be used"
        hint = "" if not report.ok else ("; set data.on_error: skip (on_error='skip' in Python) to train on the "
                                         "others and list these in the run's log.json")
        raise InvalidInputError(f"{manifest.source}: {why}{hint}:\n{format_problems(report.problems)}", report.problems)
    if report.problems:
        logger.warning("%s: skipping %d bad clip(s) of %d (data.on_error: skip)", manifest.source, len(report.problems),
                       len(manifest.entries) + len(manifest.problems))
    return report
