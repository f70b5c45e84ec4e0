import os
import threading

import numpy as np
import soundfile as sf
import torch

from coarse2fine.data.cache import FeatureCache, cache_key
from coarse2fine.data.cached import CachedFeatureDataset
from coarse2fine.data.files import FileDataset
from coarse2fine.data.manifest import Entry
from coarse2fine.features import FbankConfig, FeatureSpec, extract


def _wav(path, seed=0, seconds=0.5):
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)
    return path


def test_hit_miss_and_invalidation(tmp_path):
    wav = _wav(tmp_path / "a.wav")
    cache = FeatureCache(tmp_path / "cache")
    calls = []

    def compute():
        calls.append(1)
        return torch.ones(3, 4)

    cfg = FbankConfig()
    a = cache.get(wav, cfg, compute)
    b = cache.get(wav, cfg, compute)
    assert torch.equal(a, b) and len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    cache.get(wav, cfg.with_frame_shift(40.0), compute)  # another frame shift: another entry
    assert len(calls) == 2
    k1 = cache_key(wav, cfg)
    _wav(wav, seed=1)  # the file changes
    os.utime(wav, ns=(1, 1))
    assert cache_key(wav, cfg) != k1
    cache.get(wav, cfg, compute)
    assert len(calls) == 3


def test_corrupt_entry_is_recomputed(tmp_path):
    wav = _wav(tmp_path / "a.wav")
    cache = FeatureCache(tmp_path / "cache")
    cache.get(wav, FbankConfig(), lambda: torch.zeros(2, 2))
    (entry,) = list((tmp_path / "cache").rglob("*.npy"))
    entry.write_bytes(b"garbage")
    assert torch.equal(cache.get(wav, FbankConfig(), lambda: torch.ones(2, 2)), torch.ones(2, 2))


def test_concurrent_writers_share_one_cache(tmp_path):
    wav = _wav(tmp_path / "a.wav")
    results, errors = [], []

    def worker():
        try:
            c = FeatureCache(tmp_path / "cache")  # two runs, two cache objects, one directory
            for _ in range(20):
                results.append(c.get(wav, FbankConfig(), lambda: torch.arange(12.0).view(3, 4)))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(torch.equal(r, results[0]) for r in results)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".tmp")]


def test_cached_dataset_matches_on_the_fly_features(tmp_path):
    paths = [_wav(tmp_path / f"{i}.wav", seed=i) for i in range(3)]
    files = FileDataset([Entry(p, ("x",)) for p in paths], ["x"], num_samples=8000)
    spec = FeatureSpec(FbankConfig(), target_length=64, mean=-5.0, std=4.0)
    ds = CachedFeatureDataset(files, FeatureCache(tmp_path / "cache"), spec)
    for _ in range(2):  # second pass reads the cache
        feats, target = ds[1]
        expected = extract(files[1][0][None], spec)[0]
        torch.testing.assert_close(feats, expected, atol=1e-4, rtol=1e-5)
    assert ds.cache.hits == 1 and target.tolist() == [1.0]
    coarse = FeatureSpec(FbankConfig(frame_shift_ms=40.0), target_length=16, mean=-5.0, std=4.0)
    ds.set_phase(coarse, None)
    assert ds[1][0].shape == (16, 128)
