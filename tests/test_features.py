"""Kaldi fbank front end: agreement with Hugging Face's ASTFeatureExtractor and a plain Kaldi
reference, frame counts at coarser shifts, batching, the empty mel filter, AST pad/normalise."""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from coarse2fine.audio import load_audio
from coarse2fine.features import (
    EPS,
    FbankConfig,
    FeatureSpec,
    extract,
    fbank,
    finish,
    mel_filterbank,
    normalize,
    num_frames,
    pad_or_crop,
    target_frames_for_shift,
    window_function,
)

FSDD_DIR = Path(os.environ.get("C2F_FSDD_DIR", "/work/shared/data/fsdd/recordings"))  # 8 kHz WAVs
AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974
AST_TOLERANCE = 5e-3


def _chirp_noise(seconds: float = 11.0, sr: int = 16000, seed: int = 0) -> torch.Tensor:
    """Linear chirp 100 Hz -> 7 kHz plus white noise and a DC offset (float32)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    sweep = 100.0 * t + 0.5 * (6900.0 / seconds) * t**2
    x = 0.5 * np.sin(2 * np.pi * sweep) + 0.05 * rng.standard_normal(t.size) + 0.1
    return torch.from_numpy(x.astype(np.float32))


def _tone_noise(seconds: float, sr: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 1000.0 * t) + 0.1 * rng.standard_normal(t.size) + 0.05).astype(np.float32)


@pytest.fixture(scope="module")
def ast_extractor():
    transformers = pytest.importorskip("transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "At least one mel filter has all zero values": expected
        return transformers.ASTFeatureExtractor(
            sampling_rate=16000, num_mel_bins=128, max_length=1024, mean=AUDIOSET_MEAN, std=AUDIOSET_STD
        )


def _fsdd_params() -> list:
    reason = f"FSDD recordings not found at {FSDD_DIR} (shared data missing)"
    files = sorted(FSDD_DIR.glob("*.wav"))[:2] if FSDD_DIR.is_dir() else []
    if not files:
        return [pytest.param(None, id="fsdd", marks=pytest.mark.skip(reason=reason))]
    return [pytest.param(f, id=f"fsdd-{f.stem}") for f in files]


@pytest.mark.parametrize("source", [pytest.param("synthetic", id="chirp-noise"), *_fsdd_params()])
def test_extract_matches_ast_feature_extractor(source, ast_extractor) -> None:
    """Same waveform in, AST's normalised [1024, 128] features out, within 5e-3."""
    wave = _chirp_noise() if source == "synthetic" else load_audio(source, 16000)
    spec = FeatureSpec(FbankConfig(frame_shift_ms=10.0), target_length=1024, mean=AUDIOSET_MEAN, std=AUDIOSET_STD)
    ref = ast_extractor(wave.numpy(), sampling_rate=16000, return_tensors="np")["input_values"][0]
    # The extractor does not subtract the clip mean (only the per-frame DC removal of Kaldi);
    # AST's own loader does. Per-frame DC removal makes the two equal up to round-off: check both.
    for subtract_mean in (True, False):
        ours = finish(fbank(wave, spec.frontend, subtract_mean=subtract_mean), spec).numpy()
        assert ours.shape == ref.shape == (1024, 128)
        diff = float(np.abs(ours - ref).max())
        assert diff <= AST_TOLERANCE, f"max abs diff {diff:.2e} vs ASTFeatureExtractor"


def test_mel_filterbank_matches_transformers_kaldi_banks() -> None:
    audio_utils = pytest.importorskip("transformers.audio_utils")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = audio_utils.mel_filter_bank(
            num_frequency_bins=257,
            num_mel_filters=128,
            min_frequency=20,
            max_frequency=8000,
            sampling_rate=16000,
            norm=None,
            mel_scale="kaldi",
            triangularize_in_mel_space=True,
        )
    ours = mel_filterbank(FbankConfig(), dtype=torch.float64).numpy()
    assert ours.shape == (128, 257)
    np.testing.assert_allclose(ours, ref.T, atol=1e-6)


# --- a plain float64 Kaldi reference, written from Kaldi's definitions (one frame at a time) ---


def _kaldi_banks(cfg: FbankConfig) -> np.ndarray:
    n_fft = cfg.padded_window_size
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    low, high = mel(cfg.low_freq), mel(cfg.high_freq_hz)
    delta = (high - low) / (cfg.num_mel_bins + 1)
    banks = np.zeros((cfg.num_mel_bins, n_fft // 2 + 1))
    for m in range(cfg.num_mel_bins):
        left, centre, right = low + m * delta, low + (m + 1) * delta, low + (m + 2) * delta
        for i in range(n_fft // 2):
            f = mel(i * cfg.sample_rate / n_fft)
            if left < f < right:
                banks[m, i] = (f - left) / (centre - left) if f <= centre else (right - f) / (right - centre)
    return banks


def _kaldi_window(cfg: FbankConfig) -> np.ndarray:
    n = cfg.window_size
    if cfg.window == "hanning":
        return np.hanning(n)
    if cfg.window == "hamming":
        return np.hamming(n)
    return np.hanning(n) ** 0.85


def _kaldi_reference(wave: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    x = wave.astype(np.float64)
    n, win, shift = x.size, cfg.window_size, cfg.window_shift
    banks, window = _kaldi_banks(cfg), _kaldi_window(cfg)
    rows = []
    for t in range(num_frames(n, cfg)):
        start = t * shift if cfg.snip_edges else t * shift + shift // 2 - win // 2
        frame = np.empty(win)
        for k in range(win):
            s = start + k
            while s < 0 or s >= n:
                s = -s - 1 if s < 0 else 2 * n - 1 - s
            frame[k] = x[s]
        if cfg.remove_dc_offset:
            frame -= frame.mean()
        energy = math.log(max(float(np.sum(frame**2)), EPS))
        if cfg.preemphasis:
            frame = frame - cfg.preemphasis * np.concatenate([frame[:1], frame[:-1]])
        padded = np.zeros(cfg.padded_window_size)
        padded[:win] = frame * window
        spectrum = np.abs(np.fft.rfft(padded))
        spectrum = spectrum**2 if cfg.use_power else spectrum
        mel = banks @ spectrum
        if cfg.use_log_fbank:
            mel = np.log(np.maximum(mel, EPS))
        if cfg.use_energy:
            mel = np.append(mel, energy) if cfg.htk_compat else np.insert(mel, 0, energy)
        rows.append(mel)
    return np.stack(rows)


KALDI_OPTIONS = {
    "default": FbankConfig(),
    "povey": FbankConfig(window="povey"),
    "hamming": FbankConfig(window="hamming"),
    "no-snip-edges": FbankConfig(snip_edges=False),
    "energy-last": FbankConfig(use_energy=True),
    "energy-first": FbankConfig(use_energy=True, htk_compat=False),
    "magnitude-linear": FbankConfig(use_power=False, use_log_fbank=False),
    "no-pow2-fft": FbankConfig(round_to_power_of_two=False),
    "no-preemph-no-dc": FbankConfig(preemphasis=0.0, remove_dc_offset=False),
    "8k-40-bins": FbankConfig(sample_rate=8000, num_mel_bins=40, low_freq=64.0, high_freq=-200.0, frame_shift_ms=20.0),
    "long-window": FbankConfig(frame_length_ms=100.0, frame_shift_ms=40.0),
}


@pytest.mark.parametrize("cfg", list(KALDI_OPTIONS.values()), ids=list(KALDI_OPTIONS))
def test_fbank_matches_plain_kaldi_reference(cfg: FbankConfig) -> None:
    wave = _tone_noise(0.5, cfg.sample_rate)
    ref = _kaldi_reference(wave, cfg)
    ours = fbank(torch.from_numpy(wave), cfg, subtract_mean=False).double().numpy()
    assert ours.shape == ref.shape == (num_frames(wave.size, cfg), cfg.num_features)
    if cfg.use_log_fbank:
        np.testing.assert_allclose(ours, ref, atol=2e-3)
    else:
        np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=1e-4 * float(np.abs(ref).max()))


def test_windows_are_kaldis() -> None:
    cfg = FbankConfig()
    np.testing.assert_allclose(window_function(cfg).numpy(), np.hanning(400), atol=1e-7)
    np.testing.assert_allclose(
        window_function(dataclasses.replace(cfg, window="hamming")).numpy(), np.hamming(400), atol=1e-7
    )
    np.testing.assert_allclose(
        window_function(dataclasses.replace(cfg, window="povey")).numpy(), np.hanning(400) ** 0.85, atol=1e-7
    )


# --- shapes, frame shifts, batching ---


def test_config_derived_sizes() -> None:
    cfg = FbankConfig()
    assert (cfg.window_size, cfg.window_shift, cfg.padded_window_size) == (400, 160, 512)
    assert cfg.high_freq_hz == 8000.0
    assert cfg.with_frame_shift(40).window_shift == 640
    assert cfg.scaled(4).frame_shift_ms == 40.0 and cfg.scaled(4).frame_length_ms == 25.0
    assert cfg.scaled(2, scale_window=True).window_size == 800
    assert cfg.scaled(2, scale_window=True).padded_window_size == 1024
    assert dataclasses.replace(cfg, round_to_power_of_two=False).padded_window_size == 400
    with pytest.raises(ValueError, match="window"):
        FbankConfig(window="blackman")
    with pytest.raises(ValueError, match="low_freq"):
        FbankConfig(low_freq=9000.0)
    with pytest.raises(ValueError, match="R"):
        cfg.scaled(0)


@pytest.mark.parametrize(("shift_ms", "frames"), [(10.0, 998), (20.0, 499), (40.0, 250)])
def test_ten_second_clip_frames_and_batching(shift_ms: float, frames: int) -> None:
    cfg = FbankConfig().with_frame_shift(shift_ms)
    assert num_frames(160000, cfg) == frames
    assert num_frames(399, cfg) == 0 and num_frames(400, cfg) == 1
    gen = torch.Generator().manual_seed(0)
    batch = torch.randn(3, 160000, generator=gen) * torch.tensor([[0.1], [1.0], [0.01]]) + 0.2
    out = fbank(batch, cfg)
    assert out.shape == (3, frames, 128) and out.dtype == torch.float32
    for b in range(3):
        single = fbank(batch[b], cfg)
        assert single.shape == (frames, 128)
        torch.testing.assert_close(out[b], single, atol=1e-4, rtol=1e-5)


def test_target_frames_for_shift() -> None:
    assert [target_frames_for_shift(1024, r) for r in (1, 2, 4)] == [1024, 512, 256]
    assert target_frames_for_shift(3, 8) == 1
    with pytest.raises(ValueError):
        target_frames_for_shift(1024, 0)


def test_empty_mel_filter_gives_constant_log_eps() -> None:
    cfg = FbankConfig()  # 128 bins from 20 Hz: one filter falls between FFT bins
    banks = mel_filterbank(cfg)
    assert banks.shape == (128, 257)
    empty = torch.nonzero(banks.sum(dim=1) == 0).flatten().tolist()
    assert len(empty) >= 1
    assert torch.all(banks[:, -1] == 0)  # Nyquist column unused, as in Kaldi
    feats = fbank(_chirp_noise(2.0), cfg)
    assert torch.isfinite(feats).all()
    for col in empty:
        assert torch.all(feats[:, col] == math.log(EPS))
    others = [c for c in range(128) if c not in empty]
    assert torch.all(feats[:, others].std(dim=0) > 0)


def test_mel_filterbank_is_cached_per_device_and_dtype() -> None:
    cfg = FbankConfig()
    assert mel_filterbank(cfg) is mel_filterbank(dataclasses.replace(cfg, frame_shift_ms=40.0))
    assert mel_filterbank(cfg, dtype=torch.float64).dtype == torch.float64
    assert mel_filterbank(cfg, "cpu").device.type == "cpu"


def test_subtract_mean_and_dtypes() -> None:
    wave = _chirp_noise(1.0)
    cfg = FbankConfig()
    a = fbank(wave, cfg)
    torch.testing.assert_close(a, fbank(wave - wave.mean(), cfg, subtract_mean=False))
    # Per-frame DC removal already cancels a constant offset.
    torch.testing.assert_close(a, fbank(wave + 0.5, cfg), atol=2e-3, rtol=0)
    assert fbank(wave.double(), cfg).dtype == torch.float64
    torch.testing.assert_close(fbank(wave.double(), cfg).float(), a, atol=2e-3, rtol=0)
    assert fbank(wave.half(), cfg).dtype == torch.float32
    with pytest.raises(TypeError, match="floating"):
        fbank((wave * 32767).to(torch.int16), cfg)
    with pytest.raises(ValueError, match="shape"):
        fbank(wave.reshape(1, 1, -1), cfg)


def test_short_clip_gives_zero_frames_and_pads() -> None:
    out = fbank(torch.zeros(2, 100))
    assert out.shape == (2, 0, 128)
    spec = FeatureSpec(FbankConfig(), target_length=8, mean=AUDIOSET_MEAN, std=AUDIOSET_STD)
    padded = extract(torch.zeros(2, 100), spec)
    assert padded.shape == (2, 8, 128)
    torch.testing.assert_close(padded, torch.full_like(padded, -AUDIOSET_MEAN / (2 * AUDIOSET_STD)))


def test_fbank_is_differentiable() -> None:
    wave = _chirp_noise(0.2).requires_grad_(True)
    fbank(wave).sum().backward()
    assert wave.grad is not None and torch.isfinite(wave.grad).all()


# --- AST pad/crop and normalisation ---


def test_pad_or_crop_along_time() -> None:
    feats = torch.randn(2, 5, 3)
    padded = pad_or_crop(feats, 8)
    assert padded.shape == (2, 8, 3)
    torch.testing.assert_close(padded[:, :5], feats)
    assert torch.all(padded[:, 5:] == 0)
    torch.testing.assert_close(pad_or_crop(feats, 4), feats[:, :4])
    assert pad_or_crop(feats[0], 5).shape == (5, 3)


def test_normalize_and_extract() -> None:
    feats = torch.tensor([[AUDIOSET_MEAN, AUDIOSET_MEAN + 2 * AUDIOSET_STD]])
    torch.testing.assert_close(normalize(feats, AUDIOSET_MEAN, AUDIOSET_STD), torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError):
        normalize(feats, 0.0, 0.0)
    cfg = FbankConfig().scaled(4)
    spec = FeatureSpec(cfg, target_length=target_frames_for_shift(1024, 4), mean=AUDIOSET_MEAN, std=AUDIOSET_STD)
    waves = torch.randn(2, 160000, generator=torch.Generator().manual_seed(1))
    out = extract(waves, spec)
    assert out.shape == (2, 256, 128)
    expected = (pad_or_crop(fbank(waves, cfg), 256) - AUDIOSET_MEAN) / (2 * AUDIOSET_STD)
    torch.testing.assert_close(out, expected)
    assert torch.all(out[:, 250:] == -AUDIOSET_MEAN / (2 * AUDIOSET_STD))
