import numpy as np
import torch

from coarse2fine.data.datasets import synthetic_splits
from coarse2fine.data.synthetic import CLASSES, SyntheticConfig, make_clip, make_split


def test_deterministic_and_split_dependent():
    cfg = SyntheticConfig(num_clips=16)
    a, la = make_split("train", cfg)
    b, lb = make_split("train", cfg)
    assert torch.equal(a, b) and torch.equal(la, lb)
    v, _ = make_split("val", cfg)
    assert not torch.equal(a, v)
    assert a.shape == (16, 20480) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and a.abs().max() < 5


def test_balanced_labels():
    _, labels = make_split("train", SyntheticConfig(num_clips=80))
    assert np.bincount(labels.numpy()).tolist() == [10] * len(CLASSES)


def test_temporal_pairs_are_time_reversed_in_structure():
    # up- and down-chirps share their spectrum's range but not its order in time:
    # the first half of an up-chirp is lower in frequency than its second half.
    cfg = SyntheticConfig(num_clips=2, snr_db=(60.0, 60.0))
    for idx, rising in ((0, True), (1, False)):
        wave, label = make_clip(idx, "train", cfg)
        assert label == idx
        active = np.flatnonzero(np.abs(wave) > 1e-3 * np.abs(wave).max())
        seg = wave[active[0] : active[-1]]
        half = len(seg) // 2

        def centroid(x):
            spec = np.abs(np.fft.rfft(x))
            return (spec * np.arange(len(spec))).sum() / spec.sum() / len(x)

        assert (centroid(seg[:half]) < centroid(seg[half:])) == rising


def test_splits_one_hot():
    s = synthetic_splits(16, 8, 0.5, 16000)
    wave, target = s.train[3]
    assert wave.shape == (8000,) and target.sum() == 1 and target[3] == 1
    assert s.val.num_classes == len(CLASSES)
