"""The Kaldi front end (AST, SSAST): log-mel filter banks in pure torch, batched, on the input's device.

:func:`fbank` computes what ``torchaudio.compliance.kaldi.fbank`` computes with AST's settings
(reference.md section 1), in this order: optional whole-clip mean removal (AST's loader does
``waveform - waveform.mean()``), framing (``snip_edges``), optional dither, per-frame DC
removal, pre-emphasis with Kaldi's first-sample convention, window (Kaldi "hanning" is the
symmetric Hann window), zero padding to a power of two, one batched real FFT, power spectrum,
one matmul with the mel filters (HTK mel scale, triangles in the mel domain), a float-epsilon
floor and the natural log.

:class:`FbankConfig` is a front end (see :mod:`coarse2fine.features`): ``compute`` runs
:func:`fbank`, ``scaled`` gives the Fshift settings at factor R.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from coarse2fine.features.windows import cosine_window

logger = logging.getLogger(__name__)

EPS: float = torch.finfo(torch.float32).eps
"""Kaldi's floor for mel energies (and log energy): float32 machine epsilon."""

WINDOWS: tuple[str, ...] = ("hanning", "povey", "hamming")


def _ms_to_samples(sample_rate: int, ms: float) -> int:
    """Samples in ``ms`` milliseconds, truncated as Kaldi does (with a guard for float round-off)."""
    return int(math.floor(sample_rate * ms * 0.001 + 1e-6))


@dataclass(frozen=True)
class FbankConfig:
    """Kaldi fbank settings; the defaults are AST's (``torchaudio.compliance.kaldi.fbank`` with
    ``htk_compat=True, use_energy=False, window_type='hanning', num_mel_bins=128, dither=0``).

    ``high_freq <= 0`` means an offset from the Nyquist frequency, as in Kaldi.
    """

    kind: ClassVar[str] = "fbank"
    sample_rate: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    preemphasis: float = 0.97
    low_freq: float = 20.0
    high_freq: float = 0.0
    window: str = "hanning"
    remove_dc_offset: bool = True
    round_to_power_of_two: bool = True
    snip_edges: bool = True
    use_log_fbank: bool = True
    use_power: bool = True
    htk_compat: bool = True
    use_energy: bool = False
    dither: float = 0.0

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.window not in WINDOWS:
            raise ValueError(f"unknown window {self.window!r}; choose one of {', '.join(WINDOWS)}")
        if self.window_size < 2:
            raise ValueError(
                f"frame_length_ms={self.frame_length_ms} gives a window of {self.window_size} samples (< 2)"
            )
        if self.window_shift < 1:
            raise ValueError(f"frame_shift_ms={self.frame_shift_ms} gives a shift of {self.window_shift} samples (< 1)")
        if self.num_mel_bins < 1:
            raise ValueError(f"num_mel_bins must be >= 1, got {self.num_mel_bins}")
        if not 0.0 <= self.preemphasis <= 1.0:
            raise ValueError(f"preemphasis must be in [0, 1], got {self.preemphasis}")
        if self.dither < 0:
            raise ValueError(f"dither must be >= 0, got {self.dither}")
        nyquist = 0.5 * self.sample_rate
        if not (0.0 <= self.low_freq < self.high_freq_hz <= nyquist):
            raise ValueError(
                f"mel range must satisfy 0 <= low_freq < high_freq <= Nyquist ({nyquist:g} Hz), "
                f"got low_freq={self.low_freq:g}, high_freq={self.high_freq_hz:g} Hz"
            )

    @property
    def window_size(self) -> int:
        """Frame length in samples (400 at 16 kHz, 25 ms)."""
        return _ms_to_samples(self.sample_rate, self.frame_length_ms)

    @property
    def window_shift(self) -> int:
        """Frame shift in samples (160 at 16 kHz, 10 ms)."""
        return _ms_to_samples(self.sample_rate, self.frame_shift_ms)

    @property
    def padded_window_size(self) -> int:
        """FFT size: the window rounded up to a power of two (512 for 400), or the window itself."""
        w = self.window_size
        return 1 << (w - 1).bit_length() if self.round_to_power_of_two else w

    @property
    def high_freq_hz(self) -> float:
        """Upper edge of the mel filters in Hz (``high_freq <= 0`` counts down from Nyquist)."""
        return self.high_freq if self.high_freq > 0 else 0.5 * self.sample_rate + self.high_freq

    @property
    def num_features(self) -> int:
        """Columns of :func:`fbank`'s output: mel bins, plus one with ``use_energy``."""
        return self.num_mel_bins + int(self.use_energy)

    def with_frame_shift(self, ms: float) -> FbankConfig:
        """The same settings with another frame shift (milliseconds)."""
        return dataclasses.replace(self, frame_shift_ms=float(ms))

    def scaled(self, R: int, scale_window: bool = False) -> FbankConfig:
        """Frame shift multiplied by ``R`` (Fshift at factor R); the window too if ``scale_window``."""
        if R < 1:
            raise ValueError(f"R must be >= 1, got {R}")
        length = self.frame_length_ms * R if scale_window else self.frame_length_ms
        return dataclasses.replace(self, frame_shift_ms=self.frame_shift_ms * R, frame_length_ms=length)

    def num_frames(self, num_samples: int) -> int:
        """Frames made from ``num_samples`` samples (see :func:`num_frames`)."""
        return num_frames(num_samples, self)

    def compute(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Log-mel features [B, frames, bins] of waveforms [B, samples] (:func:`fbank`)."""
        return fbank(waveforms, self)


def num_frames(num_samples: int, cfg: FbankConfig) -> int:
    """Frames Kaldi makes from ``num_samples`` samples.

    With ``snip_edges``: ``1 + (n - window) // shift``, 0 if the clip is shorter than one window
    (160000 samples give 998 frames at 10 ms, 250 at 40 ms). Without: ``(n + shift // 2) // shift``.
    """
    if cfg.snip_edges:
        if num_samples < cfg.window_size:
            return 0
        return 1 + (num_samples - cfg.window_size) // cfg.window_shift
    return (num_samples + cfg.window_shift // 2) // cfg.window_shift


def _mel_scale(freq: torch.Tensor | float) -> torch.Tensor | float:
    """HTK mel scale as Kaldi writes it: ``1127 ln(1 + f / 700)``."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * torch.log1p(freq / 700.0)
    return 1127.0 * math.log1p(freq / 700.0)


@functools.lru_cache(maxsize=64)
def _mel_banks(
    sample_rate: int,
    n_fft: int,
    num_bins: int,
    low_freq: float,
    high_freq: float,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Kaldi mel filters [num_bins, n_fft // 2 + 1], computed in float64 then cast (cached)."""
    num_fft_bins = n_fft // 2
    bin_width = sample_rate / n_fft
    mel_low, mel_high = _mel_scale(low_freq), _mel_scale(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float64).unsqueeze(1)
    left = mel_low + b * delta
    centre = mel_low + (b + 1.0) * delta
    right = mel_low + (b + 2.0) * delta
    mel = _mel_scale(bin_width * torch.arange(num_fft_bins, dtype=torch.float64)).unsqueeze(0)
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    empty = int((banks.sum(dim=1) == 0).sum())
    if empty:
        # Expected for narrow low-frequency filters (1 of 128 from 20 Hz at 16 kHz); Kaldi and
        # AST keep them, and their output is the constant log(eps).
        logger.debug("%d of %d mel filters cover no FFT bin (kept; output is log(eps))", empty, num_bins)
    # Kaldi's filters stop below the Nyquist bin: one zero column makes them match the rfft.
    banks = F.pad(banks, (0, 1))
    return banks.to(device=device, dtype=dtype)


def mel_filterbank(
    cfg: FbankConfig, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Kaldi mel filter banks [num_mel_bins, padded_window_size // 2 + 1] on ``device``.

    Triangles in the mel domain evaluated at FFT bin centres; the Nyquist column is zero. Filters
    that cover no bin are kept as all-zero rows (no error). Cached per relevant setting, device
    and dtype: do not modify the result in place.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return _mel_banks(
        cfg.sample_rate, cfg.padded_window_size, cfg.num_mel_bins, float(cfg.low_freq), cfg.high_freq_hz, dev, dtype
    )


def window_function(
    cfg: FbankConfig, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The analysis window of ``cfg`` [window_size] (cached; do not modify in place)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return cosine_window(cfg.window, cfg.window_size, False, dev, dtype)


def _frames(x: torch.Tensor, cfg: FbankConfig, n_frames: int) -> torch.Tensor:
    """Cut ``x`` [B, n] into frames [B, T, window_size] (a view with ``snip_edges``)."""
    win, shift, n = cfg.window_size, cfg.window_shift, x.shape[-1]
    if cfg.snip_edges:
        return x.unfold(-1, win, shift)[:, :n_frames]
    # Kaldi without snip_edges: frame t is centred at t * shift + shift / 2; samples outside the
    # clip are mirrored (index -1 -> 0, n -> n - 1).
    start = torch.arange(n_frames) * shift + shift // 2 - win // 2
    idx = start.unsqueeze(1) + torch.arange(win)
    while bool(((idx < 0) | (idx >= n)).any()):  # repeated mirroring, as Kaldi's loop does
        idx = torch.where(idx < 0, -idx - 1, idx)
        idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)
    return x[:, idx.to(x.device)]


def _shape_frames(x: torch.Tensor, frames: torch.Tensor, cfg: FbankConfig, from_wave: bool) -> torch.Tensor:
    """Per-frame DC removal, pre-emphasis and window, written into a zero-padded FFT buffer.

    Frame ``f`` with mean ``m`` becomes ``y[0] = (1 - a)(f[0] - m)`` and
    ``y[i] = f[i] - a f[i-1] - (1 - a) m`` (the same as removing ``m`` first, then Kaldi's
    pre-emphasis with ``f[-1] := f[0]``), times the window; samples past the window are zero.
    With ``from_wave`` (``frames`` are plain snip_edges windows of ``x``, no dither), the
    differences ``f[i] - a f[i-1]`` come from one pre-emphasised copy of the waveform instead of
    being computed per (overlapping) frame.
    """
    batch, n_frames, win = frames.shape
    a = float(cfg.preemphasis)
    buf = frames.new_empty(batch, n_frames, cfg.padded_window_size)
    buf[..., win:].zero_()
    body = buf[..., 1:win]
    if from_wave:
        emphasised = torch.sub(x[:, 1:], x[:, :-1], alpha=a)  # e[j - 1] = x[j] - a x[j - 1]
        body.copy_(emphasised.unfold(-1, win - 1, cfg.window_shift)[:, :n_frames])
    else:
        body.copy_(frames[..., 1:]).sub_(frames[..., :-1], alpha=a)
    first = frames[..., 0]
    if cfg.remove_dc_offset:
        mean = frames.mean(dim=-1)
        body.sub_(((1.0 - a) * mean).unsqueeze(-1))
        first = first - mean
    buf[..., 0].copy_(first).mul_(1.0 - a)
    buf[..., :win].mul_(window_function(cfg, x.device, x.dtype))
    return buf


def fbank(waveforms: torch.Tensor, cfg: FbankConfig = FbankConfig(), subtract_mean: bool = True) -> torch.Tensor:
    """Kaldi log-mel filter banks of ``waveforms`` [n] or [B, n] -> [T, F] or [B, T, F].

    Waveforms must already be at ``cfg.sample_rate`` and, in a batch, of one length (pad them
    first). ``subtract_mean`` removes each clip's mean before anything else, as AST's loader does
    (with per-frame DC removal on, this changes the result only by float round-off).
    Computation runs on the input's device in float32 (float64 for float64 input). A clip shorter
    than one window gives zero frames (an empty ``T`` dimension), like torchaudio.
    With ``use_energy`` the log energy column is last (``htk_compat``) or first.
    """
    if waveforms.ndim not in (1, 2):
        raise ValueError(f"waveforms must be [n] or [B, n], got shape {tuple(waveforms.shape)}")
    if not waveforms.is_floating_point():
        raise TypeError(f"waveforms must be floating point, got {waveforms.dtype} (scale integer PCM first)")
    squeeze = waveforms.ndim == 1
    x = waveforms.unsqueeze(0) if squeeze else waveforms
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(dtype)
    if subtract_mean:
        x = x - x.mean(dim=-1, keepdim=True)

    n_frames = num_frames(x.shape[-1], cfg)
    if n_frames <= 0:
        logger.debug("waveform of %d samples is shorter than one window: 0 frames", x.shape[-1])
        out = x.new_zeros(x.shape[0], 0, cfg.num_features)
        return out[0] if squeeze else out

    frames = _frames(x, cfg, n_frames)  # [B, T, W]; a view of x with snip_edges
    if cfg.dither > 0:
        frames = frames + cfg.dither * torch.randn_like(frames)
    from_wave = cfg.snip_edges and cfg.dither == 0
    shaped = _shape_frames(x, frames, cfg, from_wave)  # [B, T, padded_window_size]
    log_energy = None
    if cfg.use_energy:  # Kaldi's raw energy: after DC removal, before pre-emphasis and window
        centred = frames - frames.mean(dim=-1, keepdim=True) if cfg.remove_dc_offset else frames
        log_energy = centred.pow(2).sum(dim=-1).clamp_min(EPS).log()

    spec = torch.view_as_real(torch.fft.rfft(shaped))  # [B, T, n_fft/2 + 1, 2]
    re, im = spec[..., 0], spec[..., 1]
    power = torch.addcmul(re * re, im, im)  # |X|^2 without a sqrt
    if not cfg.use_power:
        power = power.sqrt_()
    mel = torch.matmul(power, mel_filterbank(cfg, x.device, dtype).T)  # [B, T, num_mel_bins]
    if cfg.use_log_fbank:
        mel = mel.clamp_min_(EPS).log_()
    if log_energy is not None:
        parts = (mel, log_energy.unsqueeze(-1)) if cfg.htk_compat else (log_energy.unsqueeze(-1), mel)
        mel = torch.cat(parts, dim=-1)
    return mel[0] if squeeze else mel
