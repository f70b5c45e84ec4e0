"""Audio decoding: any file libsndfile reads -> mono float32 waveform at the wanted rate.

The waveform is returned raw (no DC removal, no gain): AST's front end subtracts the mean itself,
and :func:`coarse2fine.features.fbank` does the same. Every failure is an :class:`AudioError`
whose message starts with the file path and says what is wrong with it.
"""

from __future__ import annotations

import io
import logging
import os
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# soundfile >= 0.11 raises SoundFileError/LibsndfileError (a RuntimeError); older ones RuntimeError.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    getattr(sf, "SoundFileError", RuntimeError),
    RuntimeError,
    OSError,
    ValueError,
    TypeError,
    EOFError,
)


class AudioError(ValueError):
    """An audio file that cannot be used; ``str(err)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # keep picklable (DataLoader workers send exceptions between processes)
        return (type(self), (self.path, self.problem))


def _check_exists(path: str) -> None:
    """Raise :class:`AudioError` unless ``path`` is an existing regular file."""
    if not os.path.exists(path):
        raise AudioError(path, "file not found")
    if not os.path.isfile(path):
        raise AudioError(path, "not a regular file")
    if os.path.getsize(path) == 0:  # as check and pack say it (libsndfile: "Format not recognised")
        raise AudioError(path, "empty: 0-byte file")


def audio_info(path: str | os.PathLike) -> tuple[int, int, int]:
    """``(sample_rate, channels, frames)`` from the file header, without decoding the samples."""
    p = os.fspath(path)
    _check_exists(p)
    try:
        info = sf.info(p)
    except _DECODE_ERRORS as e:
        raise AudioError(p, f"cannot read audio header ({e})") from e
    return int(info.samplerate), int(info.channels), int(info.frames)


def wav_truncation(fh: BinaryIO, size: int) -> str | None:
    """The problem of a WAV file (read from ``fh``, ``size`` bytes in all) whose header promises
    more audio than the file holds: a download or copy cut short, which libsndfile reads as a
    shorter clip without a word. None for any other file, and for a header written before its
    length was known (a data size of 0 or 0xFFFFFFFF, as streaming writers leave it)."""
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    rate = align = 0
    while True:
        chunk = fh.read(8)
        if len(chunk) < 8:
            return None
        kind, length = chunk[:4], int.from_bytes(chunk[4:], "little")
        if kind == b"fmt ":
            fmt = fh.read(length + length % 2)
            if len(fmt) < 14:
                return None
            rate, align = int.from_bytes(fmt[4:8], "little"), int.from_bytes(fmt[12:14], "little")
        elif kind == b"data":
            held = size - fh.tell()
            if length in (0, 0xFFFFFFFF) or length <= held or not rate or not align:
                return None
            seconds = (length // align / rate, held // align / rate)
            return (f"truncated: its header says {seconds[0]:.3f} s of audio, the file holds {seconds[1]:.3f} s "
                    "(a download or copy cut short)")
        else:
            fh.seek(length + length % 2, io.SEEK_CUR)


def truncated_wav(path: str | os.PathLike) -> str | None:
    """:func:`wav_truncation` of the file at ``path``."""
    with open(path, "rb") as fh:
        return wav_truncation(fh, os.fstat(fh.fileno()).st_size)


def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> torch.Tensor:
    """Decode ``path`` to a 1-D float32 tensor: mono (mean of channels), resampled to ``sample_rate``.

    Any format libsndfile supports is read (WAV of any integer/float subtype, FLAC, OGG, MP3, ...).
    Resampling uses soxr at "HQ" quality. No DC removal or normalisation is applied.

    Raises:
        AudioError: the file is missing, cannot be decoded, holds no samples, or holds NaN/inf.
        ValueError: ``sample_rate`` is not a positive integer.
    """
    p = os.fspath(path)
    _check_exists(p)
    return decode_audio(p, sample_rate, p)


def decode_audio(source: str | BinaryIO, sample_rate: int, name: str) -> torch.Tensor:
    """:func:`load_audio` of a path or an open binary file (audio bytes held in memory, a member
    of a shard); errors are :class:`AudioError` naming ``name``."""
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    sample_rate = int(sample_rate)
    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except _DECODE_ERRORS as e:  # libsndfile names a file object by its repr (an address): name it instead
        raise AudioError(name, f"cannot decode audio ({str(e).replace(repr(source), name)})") from e
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(name, "audio is empty (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(name, "contains NaN or infinite samples")
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
        logger.debug("resampled %s from %d Hz to %d Hz", name, rate, sample_rate)
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))


def encode_flac(wave: torch.Tensor, sample_rate: int) -> bytes:
    """A mono float waveform as FLAC bytes, losslessly where it can be: 16-bit PCM when every
    sample is a 16-bit value (audio decoded from 16-bit files at this rate reads back
    bit-identical), else 24-bit PCM (resampled or float audio; error below 6e-8). Samples
    outside [-1, 1) are clipped."""
    x = wave.detach().to("cpu", torch.float32).numpy()
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected a non-empty mono waveform [n], got shape {tuple(x.shape)}")
    scaled = x * 32768.0
    exact16 = bool(np.all(scaled == np.round(scaled))) and float(x.min()) >= -1.0 and float(x.max()) <= 32767 / 32768
    buf = io.BytesIO()  # FLAC holds integers: samples outside [-1, 1) are clipped
    sf.write(buf, np.clip(x, -1.0, 1.0 - 2.0**-23), sample_rate, format="FLAC", subtype="PCM_16" if exact16 else "PCM_24")
    return buf.getvalue()


def remove_dc(wave: torch.Tensor) -> torch.Tensor:
    """Subtract the mean over the last dimension (per clip for a batch ``[B, n]``)."""
    return wave - wave.mean(dim=-1, keepdim=True)


def fix_length(wave: torch.Tensor, num_samples: int, pad: str = "zeros") -> torch.Tensor:
    """Pad or crop ``wave`` at the end of its last dimension to exactly ``num_samples``: with zeros
    (``pad="zeros"``, AST) or by repeating the clip (``pad="repeat"``, HTS-AT's ESC-50 loader).

    Cropping returns a view; padding returns a new tensor.
    """
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    n = wave.shape[-1]
    if n >= num_samples:
        return wave[..., :num_samples]
    if pad == "repeat" and n > 0:
        return wave.repeat(*([1] * (wave.ndim - 1)), -(-num_samples // n))[..., :num_samples]
    if pad not in ("zeros", "repeat"):
        raise ValueError(f"pad must be 'zeros' or 'repeat', got {pad!r}")
    return F.pad(wave, (0, num_samples - n))
