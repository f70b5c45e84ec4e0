"""FileDataset (decode on access, load_all, failures) and fbank statistics over unpadded frames."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from coarse2fine.data.datasets import WaveformDataset
from coarse2fine.data.files import FileDataset
from coarse2fine.data.manifest import Entry, Manifest, fsdd_manifest
from coarse2fine.data.stats import dataset_stats, unpadded_lengths
from coarse2fine.data.validate import validate
from coarse2fine.features import FbankConfig, fbank, num_frames

FSDD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd"
CFG = FbankConfig()


def noise(seconds: float, rate: int, seed: int, channels: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (int(seconds * rate), channels)).astype(np.float32)
    return x[:, 0] if channels == 1 else x


@pytest.fixture
def clips(tmp_path: Path) -> list[Entry]:
    sf.write(tmp_path / "short.wav", noise(0.25, 16000, 0), 16000, subtype="PCM_16")
    sf.write(tmp_path / "long.flac", noise(1.5, 16000, 1), 16000, subtype="PCM_24")
    sf.write(tmp_path / "low.wav", noise(0.5, 8000, 2, channels=2), 8000, subtype="FLOAT")
    return [
        Entry(tmp_path / "short.wav", ("dog",)),
        Entry(tmp_path / "long.flac", ("cat", "dog")),
        Entry(tmp_path / "low.wav", ("bird",)),
    ]


CLASSES = ["bird", "cat", "dog"]


def test_items_fixed_length_and_targets(clips: list[Entry]):
    ds = FileDataset(clips, CLASSES, num_samples=16000, multilabel=True)
    assert len(ds) == 3 and ds.num_classes == 3
    wave, target = ds[0]
    assert wave.shape == (16000,) and wave.dtype == torch.float32
    assert wave[:4000].abs().max() > 0.1 and torch.count_nonzero(wave[4000:]) == 0  # padded at the end
    assert target.tolist() == [0, 0, 1]
    long, target = ds[1]
    ref, _ = sf.read(clips[1].path, dtype="float32")
    assert torch.allclose(long, torch.from_numpy(ref[:16000]), atol=1e-6)  # cropped at the end
    assert target.tolist() == [0, 1, 1]
    low, _ = ds[2]
    assert low[:7900].abs().max() > 0.05 and torch.count_nonzero(low[8100:]) == 0  # 0.5 s at 8 kHz -> 8000 samples
    assert ds.failures == []


def test_unknown_label_rejected(clips: list[Entry]):
    with pytest.raises(ValueError, match="'cat'"):
        FileDataset(clips, ["bird", "dog"], num_samples=100)


def test_load_all_matches_items(clips: list[Entry]):
    ds = FileDataset(clips, CLASSES, num_samples=8000)
    mem = ds.load_all()
    assert isinstance(mem, WaveformDataset) and mem.waves.shape == (3, 8000) and mem.class_names == CLASSES
    for i in range(3):
        assert torch.equal(mem[i][0], ds[i][0]) and torch.equal(mem[i][1], ds[i][1])
    assert ds.lengths == [4000, 24000, 8000]


def test_from_manifest(clips: list[Entry]):
    m = Manifest(clips, CLASSES, ["Bird", "Cat", "Dog"], True, "test")
    ds = FileDataset.from_manifest(m, num_samples=1600, sample_rate=8000)
    assert ds.multilabel and ds.sample_rate == 8000 and ds[1][0].shape == (1600,)


def test_failure_does_not_stop_the_epoch(clips: list[Entry], caplog):
    ds = FileDataset(clips, CLASSES, num_samples=4000)
    clips[1].path.unlink()  # removed after validation
    clips[2].path.write_bytes(b"RIFF garbage")  # overwritten with junk
    with caplog.at_level(logging.WARNING, logger="coarse2fine.data.files"):
        batches = list(DataLoader(ds, batch_size=2))
    waves = torch.cat([b[0] for b in batches])
    assert waves.shape == (3, 4000)
    assert waves[0].abs().max() > 0 and torch.count_nonzero(waves[1:]) == 0
    assert ds.failures == [clips[1].path, clips[2].path]
    assert sum("could not load" in r.getMessage() for r in caplog.records) == 2
    mem = ds.load_all()
    assert torch.count_nonzero(mem.waves[1:]) == 0 and ds.lengths[1:] == [0, 0]
    assert ds.failures == [clips[1].path, clips[2].path]  # each path once, however often it failed
    assert ds.failure_counts == {clips[1].path: 2, clips[2].path: 2}


def test_a_file_failing_every_read_is_listed_once(clips: list[Entry]):
    ds = FileDataset(clips, CLASSES, num_samples=4000)
    clips[0].path.unlink()
    for _epoch in range(5):
        list(DataLoader(ds, batch_size=2))
    assert ds.failures == [clips[0].path] and ds.failure_counts == {clips[0].path: 5}


def test_a_clip_truncated_below_min_seconds_is_a_failure(clips: list[Entry], caplog):
    """A file cut short after validation (28 samples) is not trained on as near-silence: below
    min_seconds it is a failure, as `check` would call it, replaced by silence and recorded."""
    ds = FileDataset(clips, CLASSES, num_samples=4000, min_seconds=0.1)
    assert ds[0][0].abs().max() > 0.1 and ds.failures == []
    sf.write(clips[0].path, noise(1.0, 16000, 5)[:28], 16000, subtype="PCM_16")  # truncated mid-run
    with caplog.at_level(logging.WARNING, logger="coarse2fine.data.files"):
        wave, _ = ds[0]
    assert torch.count_nonzero(wave) == 0 and ds.failures == [clips[0].path]
    assert any("too short: 0.002 s < 0.1 s" in r.getMessage() for r in caplog.records)
    assert ds.load_all().lengths[0] == 0
    # without a minimum the 28 samples are a clip like any other
    loose = FileDataset(clips, CLASSES, num_samples=4000)
    assert loose[0][0][:28].abs().max() > 0 and loose.failures == []


def test_from_manifest_applies_the_validated_min_seconds(clips: list[Entry]):
    m = Manifest(clips, CLASSES, CLASSES, True, "test")
    usable = validate(m, min_seconds=0.2).filtered(m)
    assert usable.min_seconds == 0.2 and FileDataset.from_manifest(usable, 4000).min_seconds == 0.2
    assert FileDataset.from_manifest(usable, 4000, min_seconds=0.0).min_seconds == 0.0
    sf.write(clips[0].path, noise(0.15, 16000, 6), 16000, subtype="PCM_16")  # 0.25 s -> 0.15 s
    ds = FileDataset.from_manifest(usable, 4000)
    assert torch.count_nonzero(ds[0][0]) == 0 and ds.failures == [clips[0].path]
    assert FileDataset.from_manifest(m, 4000)[0][0].abs().max() > 0  # unvalidated: no minimum


# ----------------------------------------------------------------------------- statistics


def reference_stats(clips: list[torch.Tensor], target_length: int) -> tuple[float, float]:
    """Mean/std of each clip's own fbank frames (no padding anywhere), cut at target_length."""
    feats = torch.cat([fbank(c, CFG)[:target_length] for c in clips]).double()
    return float(feats.mean()), float(feats.std(unbiased=False))


def test_stats_exclude_padding():
    gen = torch.Generator().manual_seed(0)
    raw = [0.3 * torch.randn(n, generator=gen) for n in (4000, 9000, 16000, 2000)]
    ref_mean, ref_std = reference_stats(raw, 1024)
    # variable-length clips, one at a time (grouping happens inside)
    mean, std = dataset_stats(raw, CFG, target_length=1024)
    assert math.isclose(mean, ref_mean, rel_tol=1e-6) and math.isclose(std, ref_std, rel_tol=1e-6)
    # the same clips zero-padded to 1 s or 2 s: waveform padding is not counted
    for n in (16000, 32000):
        padded = torch.stack([torch.nn.functional.pad(c, (0, n - len(c))) for c in raw])
        mean_p, std_p = dataset_stats(WaveformDataset(padded, torch.zeros(4, 1), ["x"]), CFG, target_length=1024, batch_size=3)
        # only the clip-mean removal sees the padding, which shifts the values a little
        assert abs(mean_p - ref_mean) < 0.05 and abs(std_p - ref_std) < 0.05
        naive = fbank(padded, CFG).double()
        assert naive.mean() < ref_mean - 1.0  # counting padding frames would drag the mean far down
    # explicit lengths give the same frames as detection
    padded = torch.stack([torch.nn.functional.pad(c, (0, 16000 - len(c))) for c in raw])
    assert dataset_stats(padded, CFG, 1024, lengths=[len(c) for c in raw]) == pytest.approx(dataset_stats(padded, CFG, 1024))


def test_stats_respect_target_length():
    gen = torch.Generator().manual_seed(1)
    clips = 0.2 * torch.randn(5, 16000, generator=gen) * torch.linspace(0.01, 1, 16000)
    for t in (10, 50, 1024):
        ref = reference_stats(list(clips), t)
        got = dataset_stats(clips, CFG, target_length=t, batch_size=2)
        assert got == pytest.approx(ref, rel=1e-6)
    # (waveform, target) pairs and numpy arrays work as input too
    pairs = [(c.numpy(), torch.zeros(2)) for c in clips]
    assert dataset_stats(pairs, CFG, 50) == pytest.approx(reference_stats(list(clips), 50), rel=1e-6)


def test_stats_errors():
    with pytest.raises(ValueError, match="no unpadded frames"):
        dataset_stats(torch.zeros(3, 16000), CFG, 128)
    with pytest.raises(ValueError, match="no unpadded frames"):
        dataset_stats(torch.randn(2, 100), CFG, 128)  # shorter than one window
    with pytest.raises(ValueError, match="lengths has 1 values"):
        dataset_stats(torch.randn(2, 1000), CFG, 128, lengths=[1000])


def test_unpadded_lengths():
    w = torch.tensor([[1.0, 0, 2, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 3]])
    assert unpadded_lengths(w).tolist() == [3, 0, 5]
    assert num_frames(400, CFG) == 1


@pytest.mark.skipif(not FSDD.is_dir(), reason=f"FSDD not found at {FSDD}")
def test_fsdd_load_all_and_stats():
    m = fsdd_manifest(FSDD, "speakers", "test")
    ds = FileDataset.from_manifest(m, num_samples=16000)
    mem = ds.load_all()
    assert mem.waves.shape == (300, 16000) and mem.targets.sum(0).tolist() == [50.0] * 6 and ds.failures == []
    assert min(ds.lengths) >= 0.1 * 16000 and torch.isfinite(mem.waves).all()
    mean, std = dataset_stats(mem, CFG, target_length=128)
    assert -12 < mean < 2 and 1 < std < 8
    padded_mean = float(fbank(mem.waves[:64], CFG).mean())
    assert padded_mean < mean  # padding frames (log eps) would lower the mean


@pytest.mark.parametrize("workers", [0, 1])
def test_run_lists_each_load_failure_once_and_reads_truncated_clips_as_failures(tmp_path: Path, workers: int):
    """Read from the files at each step (no preload, nothing in memory): a file deleted and one
    truncated to 28 samples after the check are replaced by silence, and log.json lists each once,
    also when loader worker processes read them, and a file of both splits once."""
    from coarse2fine.config import load_config
    from coarse2fine.data.sources import load_splits
    from coarse2fine.training.loop import train_run

    rows = []
    for i in range(6):
        t = np.arange(8000) / 16000
        sf.write(tmp_path / f"c{i}.wav", (0.3 * np.sin(2 * np.pi * (300 + 400 * (i % 2)) * t)).astype(np.float32), 16000)
        rows.append(f"c{i}.wav,{'dog' if i % 2 else 'cat'}")
    (tmp_path / "train.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "val.csv").write_text("path,label\n" + "\n".join(rows[2:]) + "\n")
    cfg = load_config("demo", [
        "data.kind=manifest", f"data.train={tmp_path / 'train.csv'}", f"data.val={tmp_path / 'val.csv'}", "data.clip_seconds=0.3",
        "data.preload=false", "data.in_memory=off", f"data.num_workers={workers}", "features.target_length=32", "train.epochs=3",
        "train.batch_size=2", "train.optim.warmup_steps=1", "c2f.schedule=1"])
    splits = load_splits(cfg)
    (tmp_path / "c0.wav").unlink()
    (tmp_path / "c2.wav").unlink()  # in both splits
    sf.write(tmp_path / "c1.wav", noise(0.1, 16000, 3)[:28], 16000)
    train_run(cfg, splits, tmp_path / "run", progress=False)
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert sorted(log["load_failures"]) == [str(tmp_path / f"c{i}.wav") for i in range(3)]  # each once
    counts = {tmp_path / "c0.wav": 3, tmp_path / "c1.wav": 3, tmp_path / "c2.wav": 3}  # once per epoch
    assert splits.train.failure_counts == counts and not (tmp_path / "run" / ".load_failures").exists()
