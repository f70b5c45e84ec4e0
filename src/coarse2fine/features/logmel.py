"""The HTS-AT front end: STFT log-mel spectrograms in pure torch, batched, on the input's device.

:func:`logmel` computes what HTS-AT computes inside its model with torchlibrosa
(``Spectrogram(n_fft=1024, hop_length=320, win_length=1024, window='hann', center=True,
pad_mode='reflect', power=2)`` then ``LogmelFilterBank(sr=32000, n_fft=1024, n_mels=64, fmin=50,
fmax=14000, ref=1.0, amin=1e-10, top_db=None)``), in this order:

1. with ``center=True``, pad ``n_fft // 2`` samples on both sides of the clip (``pad_mode``,
   reflect by default: the edge sample is not repeated), so frame ``t`` is centred on sample
   ``t * hop_length``;
2. cut frames of ``n_fft`` samples every ``hop_length`` samples and multiply them by a periodic
   ("fftbins=True", the librosa / ``scipy.signal.get_window`` default) Hann window of
   ``win_length`` samples, zero-padded on both sides to ``n_fft`` when shorter;
3. one batched real FFT (``torch.stft``), power spectrum ``|X|^2`` (``|X|^power`` in general);
4. one matmul with the mel filters of librosa's default ``librosa.filters.mel`` (Slaney mel
   scale, ``htk=False``; triangles in Hz between mel-spaced edges; ``norm='slaney'``: each
   triangle scaled by ``2 / (f_upper - f_lower)``, constant area), built here in float64;
5. ``10 * log10(max(mel_power, amin))`` (decibels with ``ref=1``, no ``top_db`` clipping).

There is no mean/std normalisation: HTS-AT normalises with a learned BatchNorm over mel bins
inside the model. A 10-s clip at 32 kHz gives ``1 + 320000 // 320 = 1001`` frames of 64 bins.

Fshift (:meth:`LogMelConfig.scaled`) multiplies the hop by R. At R = 4 the hop (1280 samples)
is longer than the window (1024), so 256 of every 1280 samples fall between windows and never
reach the features; ``scaled(R, scale_window=True)`` widens the window (and ``n_fft``) by R too.

:class:`LogMelConfig` is a front end (see :mod:`coarse2fine.features`): ``compute`` runs
:func:`logmel`, ``scaled`` gives the Fshift settings at factor R.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import numbers
from dataclasses import dataclass
from typing import ClassVar

import torch

from coarse2fine.features.windows import cosine_window

logger = logging.getLogger(__name__)

WINDOWS: tuple[str, ...] = ("hann", "hamming")
"""Periodic analysis windows (as ``scipy.signal.get_window(name, N, fftbins=True)``)."""

PAD_MODES: tuple[str, ...] = ("reflect", "constant", "replicate", "circular")
"""Padding modes for ``center=True`` (those of ``torch.stft``)."""

# Slaney's mel scale (Auditory Toolbox; librosa's ``hz_to_mel(htk=False)``): linear below 1 kHz
# with 3 mels per 200 Hz, logarithmic above with 27 mels per factor 6.4 in frequency.
_F_SP: float = 200.0 / 3.0
_MIN_LOG_HZ: float = 1000.0
_MIN_LOG_MEL: float = _MIN_LOG_HZ / _F_SP  # 15
_LOGSTEP: float = math.log(6.4) / 27.0


def _check_int(name: str, value: object, minimum: int) -> None:
    """Raise unless ``value`` is an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


@dataclass(frozen=True)
class LogMelConfig:
    """STFT log-mel settings in samples; the defaults are HTS-AT's for AudioSet and ESC-50
    (32 kHz, ``n_fft = win_length = 1024``, hop 320 = 10 ms, 64 Slaney mel bins 50-14000 Hz).

    ``power`` is the exponent of the magnitude (2: power spectrum); ``amin`` the floor before
    the log. ``win_length <= n_fft``; a shorter window is centred in the FFT frame.
    """

    kind: ClassVar[str] = "logmel"
    sample_rate: int = 32000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 14000.0
    center: bool = True
    pad_mode: str = "reflect"
    amin: float = 1e-10
    window: str = "hann"
    power: float = 2.0

    def __post_init__(self) -> None:
        _check_int("sample_rate", self.sample_rate, 1)
        _check_int("n_fft", self.n_fft, 2)
        _check_int("win_length", self.win_length, 1)
        _check_int("hop_length", self.hop_length, 1)
        _check_int("n_mels", self.n_mels, 1)
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if self.window not in WINDOWS:
            raise ValueError(f"unknown window {self.window!r}; choose one of {', '.join(WINDOWS)}")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"unknown pad_mode {self.pad_mode!r}; choose one of {', '.join(PAD_MODES)}")
        nyquist = 0.5 * self.sample_rate
        if not (0.0 <= self.f_min < self.f_max <= nyquist):
            raise ValueError(
                f"mel range must satisfy 0 <= f_min < f_max <= Nyquist ({nyquist:g} Hz), "
                f"got f_min={self.f_min:g}, f_max={self.f_max:g} Hz"
            )
        if not self.amin > 0:
            raise ValueError(f"amin must be positive, got {self.amin}")
        if not self.power > 0:
            raise ValueError(f"power must be positive, got {self.power}")

    @property
    def window_size(self) -> int:
        """Analysis window length in samples (``win_length``; 1024 = 32 ms at 32 kHz)."""
        return self.win_length

    @property
    def window_shift(self) -> int:
        """Frame shift in samples (``hop_length``; 320 = 10 ms at 32 kHz)."""
        return self.hop_length

    @property
    def num_mel_bins(self) -> int:
        """Mel bins per frame (``n_mels``)."""
        return self.n_mels

    @property
    def num_features(self) -> int:
        """Columns of :func:`logmel`'s output (``n_mels``)."""
        return self.n_mels

    @property
    def num_freqs(self) -> int:
        """Rows of the one-sided spectrum: ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    @property
    def min_samples(self) -> int:
        """Shortest clip :func:`logmel` accepts: ``n_fft // 2 + 1`` samples with reflect padding
        (``torch.stft`` needs the pad to be shorter than the clip), ``n_fft`` without centring,
        1 otherwise."""
        if not self.center:
            return self.n_fft
        return self.n_fft // 2 + 1 if self.pad_mode == "reflect" else 1

    def scaled(self, R: int, scale_window: bool = False) -> LogMelConfig:
        """Hop multiplied by ``R`` (Fshift at factor R); with ``scale_window`` the window too,
        and ``n_fft`` grown to at least the new window (kept when already larger).

        Without ``scale_window``, R >= 4 gives a hop longer than the window (1280 > 1024).
        """
        _check_int("R", R, 1)
        hop = self.hop_length * R
        if not scale_window:
            return dataclasses.replace(self, hop_length=hop)
        win = self.win_length * R
        return dataclasses.replace(self, hop_length=hop, win_length=win, n_fft=max(self.n_fft, win))

    def num_frames(self, num_samples: int) -> int:
        """Frames made from ``num_samples`` samples (see :func:`logmel_num_frames`)."""
        return logmel_num_frames(num_samples, self)

    def compute(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Log-mel features [B, frames, n_mels] of waveforms [B, samples] (:func:`logmel`)."""
        return logmel(waveforms, self)


def logmel_num_frames(num_samples: int, cfg: LogMelConfig) -> int:
    """Frames ``torch.stft`` makes from ``num_samples`` samples.

    With ``center``: ``1 + (n + 2 * (n_fft // 2) - n_fft) // hop``, which is ``1 + n // hop`` for
    an even ``n_fft`` (320000 samples give 1001 frames at hop 320, 501 at 640, 251 at 1280).
    Without: ``1 + (n - n_fft) // hop``, 0 if the clip is shorter than ``n_fft``. This counts
    frames only; :func:`logmel` still rejects clips shorter than ``cfg.min_samples``.
    """
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    padded = num_samples + 2 * (cfg.n_fft // 2) if cfg.center else num_samples
    if padded < cfg.n_fft:
        return 0
    return 1 + (padded - cfg.n_fft) // cfg.hop_length


def hz_to_mel_slaney(freq: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale: ``f / (200/3)`` below 1 kHz, ``15 + ln(f / 1000) / (ln(6.4) / 27)`` above."""
    log_part = _MIN_LOG_MEL + torch.log(torch.clamp(freq, min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return torch.where(freq >= _MIN_LOG_HZ, log_part, freq / _F_SP)


def mel_to_hz_slaney(mel: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel_slaney`."""
    log_part = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (torch.clamp(mel, min=_MIN_LOG_MEL) - _MIN_LOG_MEL))
    return torch.where(mel >= _MIN_LOG_MEL, log_part, mel * _F_SP)


@functools.lru_cache(maxsize=64)
def _mel_banks(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float,
    f_max: float,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Slaney-normalised Slaney-scale mel filters [n_mels, n_fft // 2 + 1], float64 then cast."""
    f64 = torch.float64
    fft_hz = torch.linspace(0.0, 0.5 * sample_rate, n_fft // 2 + 1, dtype=f64)
    lo, hi = hz_to_mel_slaney(torch.tensor([f_min, f_max], dtype=f64))
    edges_hz = mel_to_hz_slaney(torch.linspace(float(lo), float(hi), n_mels + 2, dtype=f64))
    left, centre, right = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    up = (fft_hz - left) / (centre - left)
    down = (right - fft_hz) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    banks = banks * (2.0 / (right - left))  # norm="slaney": equal area per filter
    empty = int((banks.amax(dim=1) == 0).sum())
    if empty:
        # Narrow low filters at a small n_fft; librosa warns and keeps them (output: 10 log10 amin).
        logger.debug("%d of %d mel filters cover no FFT bin (kept as zero rows)", empty, n_mels)
    return banks.to(device=device, dtype=dtype)


def slaney_mel_filterbank(
    cfg: LogMelConfig, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Mel filters of ``cfg`` [n_mels, n_fft // 2 + 1] on ``device``, as ``librosa.filters.mel``
    with its defaults (``htk=False, norm='slaney'``).

    Triangles between Slaney-mel-spaced edges, evaluated at the FFT bin frequencies
    ``k * sample_rate / n_fft`` and scaled to equal area. Cached per setting, device and dtype:
    do not modify the result in place.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return _mel_banks(cfg.sample_rate, cfg.n_fft, cfg.n_mels, float(cfg.f_min), float(cfg.f_max), dev, dtype)


def stft_window(
    cfg: LogMelConfig, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The periodic analysis window of ``cfg`` [win_length] (cached; do not modify in place)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return cosine_window(cfg.window, cfg.win_length, True, dev, dtype)


def logmel(waveforms: torch.Tensor, cfg: LogMelConfig = LogMelConfig()) -> torch.Tensor:
    """Log-mel spectrogram in dB of ``waveforms`` [n] or [B, n] -> [T, n_mels] or [B, T, n_mels].

    Waveforms must already be at ``cfg.sample_rate`` and, in a batch, of one length. Runs on the
    input's device in float32 (float64 for float64 input). ``T`` is :func:`logmel_num_frames`.
    Clips shorter than ``cfg.min_samples`` raise ``ValueError`` (no silent fallback to another
    padding: pad the clip, or choose ``pad_mode='constant'``).
    """
    if waveforms.ndim not in (1, 2):
        raise ValueError(f"waveforms must be [n] or [B, n], got shape {tuple(waveforms.shape)}")
    if not waveforms.is_floating_point():
        raise TypeError(f"waveforms must be floating point, got {waveforms.dtype} (scale integer PCM first)")
    n = waveforms.shape[-1]
    if n < cfg.min_samples:
        how = f"{cfg.pad_mode} padding of n_fft // 2 = {cfg.n_fft // 2}" if cfg.center else "center=False"
        raise ValueError(
            f"clip of {n} samples is too short for n_fft={cfg.n_fft} with {how}: "
            f"need at least {cfg.min_samples} samples"
        )
    squeeze = waveforms.ndim == 1
    dtype = torch.float64 if waveforms.dtype == torch.float64 else torch.float32
    x = (waveforms.unsqueeze(0) if squeeze else waveforms).to(dtype)
    spec = torch.stft(
        x,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window=stft_window(cfg, x.device, dtype),
        center=cfg.center,
        pad_mode=cfg.pad_mode,
        normalized=False,
        onesided=True,
        return_complex=True,
    )  # [B, n_fft // 2 + 1, T]
    ri = torch.view_as_real(spec)
    power = ri[..., 0].square() + ri[..., 1].square()  # |X|^2 without a sqrt
    if cfg.power != 2.0:
        power = power.pow_(0.5 * cfg.power)
    mel = torch.matmul(power.transpose(-1, -2), slaney_mel_filterbank(cfg, x.device, dtype).T)  # [B, T, n_mels]
    mel = mel.clamp_min_(cfg.amin).log10_().mul_(10.0)
    return mel[0] if squeeze else mel


__all__ = [
    "PAD_MODES",
    "WINDOWS",
    "LogMelConfig",
    "hz_to_mel_slaney",
    "logmel",
    "logmel_num_frames",
    "mel_to_hz_slaney",
    "slaney_mel_filterbank",
    "stft_window",
]
