"""An embedded, deterministic synthetic audio-event dataset for the offline demo and tests.

Eight sound classes, each an event placed at a random onset over background noise. Several pairs
differ only in their temporal structure (up- vs down-chirp, low->high vs high->low tone pairs,
slow vs fast pulse trains), so that a model needs some time resolution to separate them: exactly
what coarse-to-fine training trades away early and recovers in the final phase. Every clip is a
pure function of (seed, split, index), so two machines build the same data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

CLASSES: tuple[str, ...] = (
    "up_chirp",
    "down_chirp",
    "slow_pulses",
    "fast_pulses",
    "low_high",
    "high_low",
    "swelling_noise",
    "harmonic_tone",
)

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and difficulty of the synthetic set."""

    num_clips: int = 800
    clip_seconds: float = 1.28
    sample_rate: int = 16000
    snr_db: tuple[float, float] = (3.0, 15.0)
    seed: int = 0


def _event(cls: int, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One event of class ``cls``, ``n`` samples long, peak-normalised."""
    t = np.arange(n) / sr
    dur = n / sr
    f_lo = rng.uniform(250.0, 700.0)
    f_hi = f_lo * rng.uniform(2.5, 5.0)
    if cls in (0, 1):  # chirps: instantaneous frequency sweeps between f_lo and f_hi
        f0, f1 = (f_lo, f_hi) if cls == 0 else (f_hi, f_lo)
        k = (f1 - f0) / dur
        phase = 2 * math.pi * (f0 * t + 0.5 * k * t**2)
        x = np.sin(phase)
    elif cls in (2, 3):  # tone-burst trains, slow (3-5 Hz) or fast (10-14 Hz)
        rate = rng.uniform(3.0, 5.0) if cls == 2 else rng.uniform(10.0, 14.0)
        gate = (np.sin(2 * math.pi * rate * t + rng.uniform(0, 2 * math.pi)) > 0.3).astype(np.float64)
        x = np.sin(2 * math.pi * rng.uniform(f_lo, f_hi) * t) * gate
    elif cls in (4, 5):  # two tones in sequence: low then high, or high then low
        first, second = (f_lo, f_hi) if cls == 4 else (f_hi, f_lo)
        half = n // 2
        x = np.concatenate(
            [np.sin(2 * math.pi * first * t[:half]), np.sin(2 * math.pi * second * t[half:])]
        )
    elif cls == 6:  # band-passed noise whose level swells in time
        spec = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / sr)
        spec[(freqs < f_lo) | (freqs > f_hi)] = 0
        x = np.fft.irfft(spec, n) * np.linspace(0.05, 1.0, n) ** 2
    else:  # stationary harmonic tone: fundamental plus decaying harmonics
        x = sum(np.sin(2 * math.pi * f_lo * h * t) / h for h in range(1, 6))
    fade = min(n // 10, int(0.01 * sr))
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade)
        x[:fade] *= ramp
        x[-fade:] *= ramp[::-1]
    return x / (np.max(np.abs(x)) + 1e-9)


def make_clip(index: int, split: str, cfg: SyntheticConfig) -> tuple[np.ndarray, int]:
    """Clip ``index`` of ``split``: (float32 waveform, class index). Deterministic."""
    rng = np.random.default_rng([cfg.seed, _SPLIT_IDS[split], index])
    n = int(round(cfg.clip_seconds * cfg.sample_rate))
    label = index % len(CLASSES)
    ev_len = int(n * rng.uniform(0.45, 0.8))
    onset = int(rng.integers(0, n - ev_len + 1))
    clip = np.zeros(n)
    clip[onset : onset + ev_len] = _event(label, ev_len, cfg.sample_rate, rng)
    snr_db = rng.uniform(*cfg.snr_db)
    noise = rng.standard_normal(n)
    noise *= math.sqrt(np.mean(clip[onset : onset + ev_len] ** 2) / 10 ** (snr_db / 10) / np.mean(noise**2))
    wave = (clip + noise) * rng.uniform(0.05, 0.5)
    return wave.astype(np.float32), label


def make_split(split: str, cfg: SyntheticConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """All clips of a split: waveforms [N, samples] float32 and integer labels [N]."""
    clips = [make_clip(i, split, cfg) for i in range(cfg.num_clips)]
    waves = torch.from_numpy(np.stack([c[0] for c in clips]))
    labels = torch.tensor([c[1] for c in clips], dtype=torch.long)
    return waves, labels
