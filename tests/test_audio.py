"""Audio decoding: formats and subtypes, mixdown, resampling, and one clear error per bad file."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from coarse2fine.audio import AudioError, audio_info, fix_length, load_audio, remove_dc, truncated_wav


def _sine(freq: float, sr: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wave: torch.Tensor, sr: int) -> float:
    x = wave.numpy().astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * sr / x.size)


# (format, subtype, extension, tolerance against the float signal)
LOSSLESS = [
    ("WAV", "PCM_U8", "wav", 2.0 / 2**8),
    ("WAV", "PCM_16", "wav", 2.0 / 2**16),
    ("WAV", "PCM_24", "wav", 2.0 / 2**24),
    ("WAV", "PCM_32", "wav", 1e-7),
    ("WAV", "FLOAT", "wav", 0.0),
    ("WAV", "DOUBLE", "wav", 1e-7),
    ("FLAC", "PCM_16", "flac", 2.0 / 2**16),
    ("FLAC", "PCM_24", "flac", 2.0 / 2**24),
]


@pytest.mark.parametrize(("fmt", "subtype", "ext", "tol"), LOSSLESS, ids=[f"{f}-{s}" for f, s, _, _ in LOSSLESS])
def test_lossless_subtypes_decode_to_float32(tmp_path: Path, fmt: str, subtype: str, ext: str, tol: float) -> None:
    signal = _sine(440.0, 16000, 0.25)
    path = tmp_path / f"clip.{ext}"
    sf.write(path, signal, 16000, format=fmt, subtype=subtype)
    wave = load_audio(path)
    assert wave.dtype == torch.float32 and wave.ndim == 1 and wave.numel() == signal.size
    assert float(np.abs(wave.numpy() - signal).max()) <= tol
    assert audio_info(path) == (16000, 1, signal.size)


@pytest.mark.parametrize(("fmt", "subtype", "ext"), [("OGG", "VORBIS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3")])
def test_lossy_formats_decode(tmp_path: Path, fmt: str, subtype: str, ext: str) -> None:
    if fmt not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} cannot write {fmt}")
    path = tmp_path / f"clip.{ext}"
    sf.write(path, _sine(1000.0, 16000, 0.5), 16000, format=fmt, subtype=subtype)
    wave = load_audio(path)
    assert wave.dtype == torch.float32 and abs(wave.numel() - 8000) < 2000  # codec delay/padding
    assert abs(_peak_hz(wave, 16000) - 1000.0) < 10.0


def test_stereo_is_mixed_down_by_mean(tmp_path: Path) -> None:
    left, right = _sine(440.0, 16000, 0.1), _sine(880.0, 16000, 0.1, amp=0.25)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    wave = load_audio(path)
    assert wave.shape == (left.size,)
    np.testing.assert_allclose(wave.numpy(), 0.5 * (left + right), atol=1e-7)
    assert audio_info(path) == (16000, 2, left.size)


def test_raw_waveform_is_kept(tmp_path: Path) -> None:
    """No DC removal or gain: features remove the mean themselves."""
    signal = _sine(440.0, 16000, 0.1, amp=0.2) + 0.3
    path = tmp_path / "offset.wav"
    sf.write(path, signal, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(str(path)).numpy(), signal)


@pytest.mark.parametrize("rate", [8000, 44100])
def test_resampled_to_16k(tmp_path: Path, rate: int) -> None:
    signal = _sine(440.0, rate, 1.0)
    path = tmp_path / f"tone_{rate}.wav"
    sf.write(path, signal, rate, subtype="PCM_16")
    wave = load_audio(path, 16000)
    assert wave.dtype == torch.float32
    assert abs(wave.numel() - signal.size * 16000 / rate) <= 1
    assert abs(_peak_hz(wave, 16000) - 440.0) <= 2.0
    assert 0.45 < float(wave.abs().max()) < 0.55  # no gain change


def test_resampled_to_other_rates(tmp_path: Path) -> None:
    path = tmp_path / "tone.flac"
    sf.write(path, _sine(1000.0, 16000, 0.5), 16000)
    wave = load_audio(path, sample_rate=32000)
    assert wave.numel() == 16000 and abs(_peak_hz(wave, 32000) - 1000.0) <= 4.0
    with pytest.raises(ValueError, match="sample_rate"):
        load_audio(path, sample_rate=0)


# --- every bad file is an AudioError naming the file ---


def _write_nonfinite(path: Path, value: float) -> None:
    signal = _sine(440.0, 16000, 0.1)
    signal[100] = value
    sf.write(path, signal, 16000, subtype="FLOAT")


def _bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"bad_{kind}.wav"
    if kind == "corrupt":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    elif kind == "zero-bytes":
        path.write_bytes(b"")
    elif kind == "empty":
        sf.write(path, np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    elif kind == "nan":
        _write_nonfinite(path, float("nan"))
    elif kind == "inf":
        _write_nonfinite(path, float("inf"))
    elif kind == "directory":
        path.mkdir()
    return path  # "missing": never written


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("missing", "not found"),
        ("corrupt", "cannot decode"),
        ("zero-bytes", "empty: 0-byte file"),  # as check and pack say it ("Format not recognised")
        ("empty", "empty"),
        ("nan", "NaN or infinite"),
        ("inf", "NaN or infinite"),
        ("directory", "not a regular file"),
    ],
)
def test_bad_files_raise_audio_error_naming_the_file(tmp_path: Path, kind: str, words: str) -> None:
    path = _bad_file(tmp_path, kind)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    message = str(info.value)
    assert path.name in message and words in message
    assert message.startswith(str(path))
    assert isinstance(info.value, ValueError) and info.value.path == str(path)


@pytest.mark.parametrize("kind", ["missing", "corrupt", "zero-bytes"])
def test_audio_info_errors(tmp_path: Path, kind: str) -> None:
    path = _bad_file(tmp_path, kind)
    with pytest.raises(AudioError, match=path.name):
        audio_info(path)


def test_audio_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(AudioError("/data/x.wav", "audio is empty (0 samples)")))
    assert isinstance(err, AudioError) and str(err) == "/data/x.wav: audio is empty (0 samples)"


# --- waveform helpers ---


def test_remove_dc_per_clip() -> None:
    waves = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 3.0]])
    torch.testing.assert_close(remove_dc(waves), torch.tensor([[-1.0, 0.0, 1.0], [-1.0, -1.0, 2.0]]))
    torch.testing.assert_close(remove_dc(torch.tensor([2.0, 4.0])), torch.tensor([-1.0, 1.0]))


def test_fix_length_pads_and_crops_at_the_end() -> None:
    wave = torch.arange(1.0, 6.0)
    torch.testing.assert_close(fix_length(wave, 3), torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(fix_length(wave, 7), torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 0.0]))
    assert fix_length(wave, 5).shape == (5,)
    assert fix_length(torch.ones(2, 4), 6).shape == (2, 6)
    with pytest.raises(ValueError):
        fix_length(wave, -1)


def test_fix_length_repeats_a_short_clip_when_asked():
    wave = torch.arange(1, 4, dtype=torch.float32)
    assert fix_length(wave, 7, pad="repeat").tolist() == [1, 2, 3, 1, 2, 3, 1]
    assert fix_length(wave, 7).tolist() == [1, 2, 3, 0, 0, 0, 0]
    assert fix_length(wave, 2, pad="repeat").tolist() == [1, 2]
    with pytest.raises(ValueError, match="pad must be"):
        fix_length(wave, 7, pad="mirror")


def test_a_wav_cut_short_is_told_from_a_short_one(tmp_path: Path) -> None:
    """libsndfile reads a WAV whose data the file does not hold (a download cut short) as a shorter clip;
    its header says how long it should be."""
    sf.write(tmp_path / "whole.wav", np.zeros((16000, 2), np.float32), 16000, subtype="PCM_16")
    whole = (tmp_path / "whole.wav").read_bytes()
    assert truncated_wav(tmp_path / "whole.wav") is None
    (tmp_path / "cut.wav").write_bytes(whole[:len(whole) - 16000])  # 4 bytes a frame: 0.25 s gone
    assert truncated_wav(tmp_path / "cut.wav") == ("truncated: its header says 1.000 s of audio, the file holds "
                                                   "0.750 s (a download or copy cut short)")
    assert audio_info(tmp_path / "cut.wav")[2] == 12000  # what libsndfile says: a shorter clip
    # a header written before the length was known (a streaming writer's 0xFFFFFFFF) is not a cut
    data_at = whole.index(b"data") + 4
    (tmp_path / "streamed.wav").write_bytes(whole[:data_at] + b"\xff\xff\xff\xff" + whole[data_at + 4:len(whole) - 16000])
    assert truncated_wav(tmp_path / "streamed.wav") is None
    # other formats are libsndfile's to judge; a short chunk before the data (odd length, padded) is skipped
    sf.write(tmp_path / "x.flac", np.zeros(1600, np.float32), 16000)
    assert truncated_wav(tmp_path / "x.flac") is None
    fmt_end = whole.index(b"data")
    odd = whole[:fmt_end] + b"LIST\x03\x00\x00\x00abc\x00" + whole[fmt_end:len(whole) - 16000]
    (tmp_path / "odd.wav").write_bytes(odd)
    assert "the file holds 0.750 s" in truncated_wav(tmp_path / "odd.wav")
