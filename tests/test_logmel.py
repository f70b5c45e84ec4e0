"""HTS-AT log-mel front end: agreement with an independent numpy/scipy reference (framing with
reflect padding, scipy's periodic Hann window, np.fft.rfft, a Slaney mel filterbank written here
from the published formulas), published librosa values, frame counts at Fshift R = 2 and 4,
batching, device and dtype, the pipeline's FeatureSpec, and errors.

Tolerances (max abs difference in dB against the float64 reference):
* float64 input: ``F64_TOL_DB`` on every bin (measured about 4e-12 dB);
* float32 input: ``F32_TOL_DB`` on bins at least 10 dB above the floor ``10 log10(amin)``
  (measured at most 2.8e-4 dB on the chirp and the ESC-50 clips); floored bins must sit at the
  floor.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from coarse2fine.features import FeatureSpec, extract
from coarse2fine.features.logmel import (
    LogMelConfig,
    hz_to_mel_slaney,
    logmel,
    logmel_num_frames,
    mel_to_hz_slaney,
    slaney_mel_filterbank,
    stft_window,
)

scipy_signal = pytest.importorskip("scipy.signal")

ESC50_DIR = Path(os.environ.get("C2F_ESC50_DIR", "/work/shared/data/esc50/audio"))  # 16 kHz FLAC, 5 s
# A dog bark that is 93 % digital silence (exercises the amin floor) and a bird clip (dense).
ESC50_CLIPS = ("1-100032-A-0.flac", "1-100038-A-14.flac")

F64_TOL_DB = 1e-6
F32_TOL_DB = 2e-3
FLOOR_MARGIN_DB = 10.0
SR = 32000


# ---------------------------------------------------------------- independent numpy reference


def _ref_hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney: 3 mels per 200 Hz below 1 kHz; above, 15 + 27 mels per factor 6.4."""
    f = np.asarray(f, dtype=np.float64)
    log_region = 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_region, 3.0 * f / 200.0)


def _ref_mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((m - 15.0) * np.log(6.4) / 27.0), 200.0 * m / 3.0)


def _ref_mel_filters(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangles at rfft bin frequencies between Slaney-mel-spaced edges, area 2 / (hi - lo)."""
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    edges = _ref_mel_to_hz(np.linspace(_ref_hz_to_mel(fmin), _ref_hz_to_mel(fmax), n_mels + 2))
    weights = np.zeros((n_mels, freqs.size))
    for i in range(n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        rising = (freqs - lo) / (mid - lo)
        falling = (hi - freqs) / (hi - mid)
        weights[i] = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (hi - lo))
    return weights


def _ref_logmel(x: np.ndarray, cfg: LogMelConfig) -> np.ndarray:
    """float64 reference [frames, n_mels]: numpy framing, scipy window, np.fft.rfft."""
    x = np.asarray(x, dtype=np.float64)
    if cfg.center:
        x = np.pad(x, cfg.n_fft // 2, mode=cfg.pad_mode)  # numpy "reflect" omits the edge sample
    frames = np.lib.stride_tricks.sliding_window_view(x, cfg.n_fft)[:: cfg.hop_length]
    win = scipy_signal.get_window(cfg.window, cfg.win_length, fftbins=True)
    left = (cfg.n_fft - cfg.win_length) // 2
    win = np.pad(win, (left, cfg.n_fft - cfg.win_length - left))
    power = np.abs(np.fft.rfft(frames * win, axis=-1)) ** cfg.power
    mel = power @ _ref_mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max).T
    return 10.0 * np.log10(np.maximum(mel, cfg.amin))


def _check_against_reference(x: np.ndarray, cfg: LogMelConfig) -> tuple[float, float]:
    """Assert float64 and float32 agreement with the reference; return both max diffs in dB."""
    ref = _ref_logmel(x, cfg)
    out64 = logmel(torch.from_numpy(x), cfg).numpy()
    out32 = logmel(torch.from_numpy(x).float(), cfg).numpy().astype(np.float64)
    assert out64.shape == out32.shape == ref.shape == (cfg.num_frames(x.size), cfg.n_mels)
    d64 = float(np.abs(out64 - ref).max())
    floor = 10.0 * math.log10(cfg.amin)
    live = ref > floor + FLOOR_MARGIN_DB
    assert live.any()
    d32 = float(np.abs(out32 - ref)[live].max())
    assert d64 < F64_TOL_DB, d64
    assert d32 < F32_TOL_DB, d32
    assert out32.min() >= floor - 1e-4
    return d64, d32


def _chirp_noise(seconds: float = 10.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Linear chirp 50 Hz -> 15 kHz plus white noise (float64)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    phase = 50.0 * t + 0.5 * (15000.0 - 50.0) / seconds * t**2
    return 0.5 * np.sin(2 * np.pi * phase) + 0.05 * rng.standard_normal(t.size)


def _esc50_10s(name: str) -> np.ndarray:
    """An ESC-50 clip resampled 16 -> 32 kHz with soxr and doubled to 10 s, as HTS-AT does."""
    sf = pytest.importorskip("soundfile")
    soxr = pytest.importorskip("soxr")
    path = ESC50_DIR / name
    if not path.is_file():
        pytest.skip(f"ESC-50 clip not found at {path}")
    x, sr = sf.read(path, dtype="float64")
    assert sr == 16000 and x.ndim == 1
    y = soxr.resample(x, 16000, SR)
    return np.concatenate([y, y])


# ---------------------------------------------------------------- reference agreement


@pytest.mark.parametrize(
    "cfg",
    [LogMelConfig(), LogMelConfig().scaled(2), LogMelConfig().scaled(4), LogMelConfig().scaled(4, scale_window=True)],
    ids=["R1", "R2", "R4", "R4-window"],
)
def test_chirp_noise_matches_reference(cfg: LogMelConfig) -> None:
    _check_against_reference(_chirp_noise(), cfg)


@pytest.mark.parametrize("name", ESC50_CLIPS)
def test_esc50_clip_matches_reference(name: str) -> None:
    x = _esc50_10s(name)
    assert x.size == 320000
    _check_against_reference(x, LogMelConfig())
    _check_against_reference(x, LogMelConfig().scaled(4))


def test_esc50_silence_sits_at_the_floor() -> None:
    x = _esc50_10s(ESC50_CLIPS[0])
    out = logmel(torch.from_numpy(x).float(), LogMelConfig())
    assert torch.isfinite(out).all()
    assert torch.isclose(out.min(), torch.tensor(-100.0), atol=1e-4)  # 10 log10(1e-10)


@pytest.mark.parametrize(
    "cfg",
    [
        LogMelConfig(center=False),
        LogMelConfig(pad_mode="constant"),
        LogMelConfig(n_fft=2048, win_length=1000, hop_length=480, n_mels=40, f_min=0.0, f_max=16000.0),
        LogMelConfig(window="hamming", power=1.0),
    ],
    ids=["no-center", "constant-pad", "short-window", "hamming-magnitude"],
)
def test_other_settings_match_reference(cfg: LogMelConfig) -> None:
    _check_against_reference(_chirp_noise(seconds=2.0), cfg)


def test_window_is_periodic_hann() -> None:
    cfg = LogMelConfig()
    w = stft_window(cfg, dtype=torch.float64).numpy()
    np.testing.assert_allclose(w, scipy_signal.get_window("hann", 1024, fftbins=True), atol=1e-15)
    np.testing.assert_allclose(w, torch.hann_window(1024, periodic=True, dtype=torch.float64).numpy(), atol=1e-15)
    assert w[0] == 0.0 and w[-1] > 0.0  # periodic: no trailing zero


# ---------------------------------------------------------------- Slaney mel scale and filters


def test_slaney_mel_scale_published_values() -> None:
    """librosa's documented examples: hz_to_mel(60) = 0.9, [110, 220, 440] -> [1.65, 3.3, 6.6],
    mel_to_hz([1..5]) = 66.667 ... 333.333; the scale is continuous at 1 kHz = 15 mels."""
    hz = torch.tensor([60.0, 110.0, 220.0, 440.0, 1000.0, 11025.0], dtype=torch.float64)
    mel = hz_to_mel_slaney(hz)
    np.testing.assert_allclose(mel.numpy(), [0.9, 1.65, 3.3, 6.6, 15.0, 49.91059448015905], rtol=1e-12)
    m = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    np.testing.assert_allclose(mel_to_hz_slaney(m).numpy(), 200.0 * m.numpy() / 3.0, rtol=1e-12)
    grid = torch.linspace(0.0, 16000.0, 1001, dtype=torch.float64)
    np.testing.assert_allclose(mel_to_hz_slaney(hz_to_mel_slaney(grid)).numpy(), grid.numpy(), atol=1e-9)


def test_filterbank_matches_published_librosa_values() -> None:
    """librosa.filters.mel(sr=22050, n_fft=2048) defaults: first entries of rows 0 and 1."""
    cfg = LogMelConfig(sample_rate=22050, n_fft=2048, win_length=2048, n_mels=128, f_min=0.0, f_max=11025.0)
    w = slaney_mel_filterbank(cfg, dtype=torch.float64)
    assert w.shape == (128, 1025)
    row0 = [0.0, 0.016182853208219942, 0.032365706416439884, 0.028990088037379964, 0.012807234829160026, 0.0]
    row1 = [0.0, 0.0, 0.0, 0.009779235793639925, 0.025962089001859864, 0.035393705451959974,
            0.01921085224374004, 0.003027999035520103, 0.0]
    np.testing.assert_allclose(w[0, :6].numpy(), row0, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(w[1, :9].numpy(), row1, rtol=1e-10, atol=1e-15)


def test_htsat_filterbank_matches_reference() -> None:
    cfg = LogMelConfig()
    w = slaney_mel_filterbank(cfg, dtype=torch.float64)
    assert w.shape == (64, 513)
    np.testing.assert_allclose(w.numpy(), _ref_mel_filters(SR, 1024, 64, 50.0, 14000.0), rtol=1e-10, atol=1e-15)
    assert (w.amax(dim=1) > 0).all()  # no empty filter at HTS-AT's settings
    assert w[:, 0].sum() == 0 and w[:, -1].sum() == 0  # nothing below 50 Hz or above 14 kHz
    assert slaney_mel_filterbank(cfg) is slaney_mel_filterbank(cfg)  # cached
    assert slaney_mel_filterbank(cfg).dtype == torch.float32


# ---------------------------------------------------------------- frame counts and Fshift


def _stft_frames(n: int, cfg: LogMelConfig) -> int:
    return logmel(torch.zeros(1, n), cfg).shape[1]


@pytest.mark.parametrize(
    ("seconds", "R", "scale_window", "expected"),
    [(10, 1, False, 1001), (5, 1, False, 501), (10, 2, False, 501), (10, 4, False, 251), (10, 4, True, 251)],
)
def test_frame_counts(seconds: int, R: int, scale_window: bool, expected: int) -> None:
    cfg = LogMelConfig().scaled(R, scale_window)
    n = seconds * SR
    assert cfg.num_frames(n) == expected == 1 + n // cfg.hop_length
    assert _stft_frames(n, cfg) == expected


@pytest.mark.parametrize("n", [513, 1000, 1023, 1024, 1025, 31999, 32000, 32001])
@pytest.mark.parametrize(
    "cfg",
    [LogMelConfig(), LogMelConfig(n_fft=1023, win_length=1023), LogMelConfig(center=False), LogMelConfig(hop_length=1280)],
    ids=["even", "odd-nfft", "no-center", "hop1280"],
)
def test_num_frames_matches_torch_stft(n: int, cfg: LogMelConfig) -> None:
    if n < cfg.min_samples:
        assert cfg.num_frames(n) == 0
        return
    assert cfg.num_frames(n) == logmel_num_frames(n, cfg) == _stft_frames(n, cfg)


def test_num_frames_without_center() -> None:
    cfg = LogMelConfig(center=False)
    assert cfg.num_frames(320000) == 1 + (320000 - 1024) // 320 == 997
    assert cfg.num_frames(1023) == 0 and cfg.num_frames(1024) == 1


def test_scaled() -> None:
    base = LogMelConfig()
    r4 = base.scaled(4)
    assert (r4.window_shift, r4.window_size, r4.n_fft) == (1280, 1024, 1024)
    assert r4.window_shift > r4.window_size  # Fshift at R=4: samples between windows are skipped
    w4 = base.scaled(4, scale_window=True)
    assert (w4.window_shift, w4.window_size, w4.n_fft) == (1280, 4096, 4096)
    assert w4.n_mels == 64 and w4.sample_rate == SR
    big = LogMelConfig(n_fft=8192).scaled(2, scale_window=True)
    assert (big.win_length, big.n_fft) == (2048, 8192)  # n_fft is only grown, never shrunk
    assert base.scaled(1) == base


# ---------------------------------------------------------------- batching, device, dtype, pipeline


def test_batch_equals_per_clip() -> None:
    rng = np.random.default_rng(3)
    clips = torch.from_numpy(np.stack([_chirp_noise(2.0, seed=s) * g for s, g in ((1, 1.0), (2, 0.01), (4, 3.0))]))
    clips = clips.float() + 0.01 * torch.from_numpy(rng.standard_normal(clips.shape)).float()
    cfg = LogMelConfig()
    batch = logmel(clips, cfg)
    assert batch.shape == (3, 201, 64)
    for i in range(3):
        single = cfg.compute(clips[i : i + 1])[0]
        torch.testing.assert_close(batch[i], single, rtol=0, atol=1e-4)
        torch.testing.assert_close(logmel(clips[i], cfg), single, rtol=0, atol=1e-4)  # 1-D input


def _devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_and_dtype_preserved(device: str, dtype: torch.dtype) -> None:
    x = torch.from_numpy(_chirp_noise(1.0)).to(device=device, dtype=dtype).unsqueeze(0)
    out = LogMelConfig().compute(x)
    assert out.device.type == device and out.dtype == dtype and out.shape == (1, 101, 64)
    ref = _ref_logmel(_chirp_noise(1.0), LogMelConfig())
    tol = F64_TOL_DB if dtype == torch.float64 else F32_TOL_DB
    assert float(np.abs(out[0].double().cpu().numpy() - ref).max()) < tol


def test_half_input_computes_in_float32() -> None:
    out = logmel(torch.from_numpy(_chirp_noise(0.5)).half().unsqueeze(0))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_frontend_protocol_and_feature_spec() -> None:
    cfg = LogMelConfig()
    assert cfg.kind == "logmel" and "kind" not in dataclasses.asdict(cfg)  # ClassVar, not a field
    assert (cfg.sample_rate, cfg.num_mel_bins, cfg.window_size, cfg.window_shift) == (32000, 64, 1024, 320)
    json.dumps(dataclasses.asdict(cfg))  # the feature cache hashes these settings
    spec = FeatureSpec(cfg, target_length=1024, normalize=False)
    wave = torch.from_numpy(_chirp_noise()).float()
    feats = extract(wave, spec)
    assert feats.shape == (1024, 64)
    torch.testing.assert_close(feats[:1001], logmel(wave, cfg))
    assert (feats[1001:] == 0).all()  # pad_or_crop pads with zeros; HTS-AT's model handles 1001 -> 1024


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"f_max": 16001.0}, ValueError, "Nyquist"),
        ({"f_min": 14000.0}, ValueError, "f_min < f_max"),
        ({"f_min": -1.0}, ValueError, "0 <= f_min"),
        ({"hop_length": 0}, ValueError, "hop_length must be >= 1"),
        ({"win_length": 2048}, ValueError, "win_length .* must be <= n_fft"),
        ({"n_mels": 0}, ValueError, "n_mels"),
        ({"sample_rate": 0}, ValueError, "sample_rate"),
        ({"n_fft": 1024.0}, TypeError, "n_fft must be an integer"),
        ({"hop_length": True}, TypeError, "hop_length must be an integer"),
        ({"window": "hanning"}, ValueError, "unknown window"),
        ({"pad_mode": "symmetric"}, ValueError, "unknown pad_mode"),
        ({"amin": 0.0}, ValueError, "amin must be positive"),
        ({"power": 0.0}, ValueError, "power must be positive"),
    ],
)
def test_invalid_settings(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        LogMelConfig(**kwargs)


def test_invalid_inputs() -> None:
    cfg = LogMelConfig()
    with pytest.raises(ValueError, match="R must be >= 1"):
        cfg.scaled(0)
    with pytest.raises(ValueError, match=r"\[n\] or \[B, n\]"):
        logmel(torch.zeros(1, 1, 32000), cfg)
    with pytest.raises(TypeError, match="floating point"):
        logmel(torch.zeros(1, 32000, dtype=torch.int16), cfg)
    with pytest.raises(ValueError, match="num_samples"):
        cfg.num_frames(-1)


def test_short_clip_with_reflect_padding_raises() -> None:
    cfg = LogMelConfig()
    assert cfg.min_samples == 513
    with pytest.raises(ValueError, match="too short.*reflect.*at least 513"):
        logmel(torch.zeros(1, 512), cfg)
    assert logmel(torch.zeros(1, 513), cfg).shape == (1, 2, 64)
    constant = LogMelConfig(pad_mode="constant")  # the documented way to take short clips
    assert constant.min_samples == 1
    assert logmel(torch.zeros(1, 100), constant).shape == (1, 1, 64)
    with pytest.raises(ValueError, match="center=False.*at least 1024"):
        logmel(torch.zeros(1, 1000), LogMelConfig(center=False))


@pytest.mark.parametrize("pad_mode", ["replicate", "circular"])
def test_other_pad_modes_run(pad_mode: str) -> None:
    cfg = LogMelConfig(pad_mode=pad_mode)
    out = logmel(torch.from_numpy(_chirp_noise(0.5)).float(), cfg)
    assert out.shape == (cfg.num_frames(16000), 64) and torch.isfinite(out).all()
