"""Features held in memory per phase, and TensorBoard logs."""

import pytest
import torch

from coarse2fine.compression import Compression
from coarse2fine.config import load_config
from coarse2fine.data.datasets import synthetic_splits
from coarse2fine.data.memory import FeatureStore, feature_bytes
from coarse2fine.data.sources import in_memory, load_splits
from coarse2fine.features import extract
from coarse2fine.training.loop import train_run

SMALL = ["data.train_clips=16", "data.val_clips=8", "train.batch_size=8", "train.threads=1", "train.epochs=1"]


@pytest.mark.parametrize("method,R", [("fshift", 4), ("avgpool", 2), ("maxpool", 4), ("patch", 4), ("fshift", 1)])
def test_store_serves_each_phase_model_input(method, R):
    cfg = load_config("demo", SMALL)
    waves = synthetic_splits(16, 8, 1.28, 16000).train
    store = FeatureStore(waves, batch_size=5)
    comp = Compression(method, R)
    spec = comp.feature_spec(cfg.features.spec())
    store.set_phase(spec, comp)
    expected = comp.transform(extract(waves.waves, spec))
    got = torch.stack([store[i][0] for i in range(len(store))])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(store[3][1], waves.targets[3]) and store.serves == "model_input"
    inputs = store.inputs
    store.set_phase(spec, comp)
    assert store.inputs is inputs  # the same phase again: nothing recomputed


def test_store_in_float16_and_before_a_phase():
    store = FeatureStore(synthetic_splits(4, 2, 1.28, 16000).train, dtype=torch.float16)
    with pytest.raises(RuntimeError, match="set_phase"):
        store[0]
    comp = Compression("avgpool", 4)
    store.set_phase(comp.feature_spec(load_config("demo").features.spec()), comp)
    assert store.inputs.dtype == torch.float16 and store[0][0].dtype == torch.float32


def test_views_of_a_store_share_a_phase_input_they_both_serve_and_free_it_when_none_does():
    """Runs in turns each hold a view of one store (:meth:`FeatureStore.separate`): equal model
    inputs (every method at R = 1, Patch's coarse phase, the same pooling) are computed once."""
    import gc
    import weakref

    base = load_config("demo").features.spec()
    store = FeatureStore(synthetic_splits(8, 2, 1.28, 16000).train, batch_size=4)
    a, b, c = store.separate(), store.separate(), store.separate()

    def phase(view, method, R):
        comp = Compression(method, R)
        view.set_phase(comp.feature_spec(base), comp)
        return view.inputs

    full = phase(a, "fshift", 1)
    assert phase(b, "avgpool", 1) is full and phase(c, "patch", 4) is full  # the full-resolution features, once
    pooled = phase(a, "avgpool", 4)
    assert phase(b, "avgpool", 4) is pooled and phase(c, "maxpool", 4) is not pooled
    torch.testing.assert_close(c.inputs, Compression("maxpool", 4).transform(full))
    shifted = phase(b, "fshift", 4)  # other features: their own tensor, shared in turn
    assert phase(c, "fshift", 4) is shifted and shifted is not pooled and a.inputs is pooled
    gone = weakref.ref(full)
    del full
    gc.collect()
    assert gone() is None  # no view serves the full-resolution features any more: freed
    assert torch.equal(phase(a, "patch", 1), Compression("fshift", 1).transform(extract(store.source.waves, base)))


def test_in_memory_auto_follows_the_size_limit():
    cfg = load_config("demo", ["data.memory_limit_gb=0.01"])
    assert feature_bytes(2240, 128, 128) == 2240 * 128 * 128 * 4
    assert not in_memory(cfg, 2240) and in_memory(load_config("demo"), 2240)
    assert in_memory(load_config("demo", ["data.memory_limit_gb=0.01", "data.in_memory=on"]), 2240)
    assert not in_memory(load_config("demo", ["data.in_memory=off"]), 10)
    assert not in_memory(load_config("demo", ["data.cache_dir=/tmp/x"]), 10)
    splits = load_splits(load_config("demo", SMALL))
    assert splits.train.serves == "model_input" and splits.val.serves == "model_input"


def test_training_from_memory_matches_training_from_waveforms(tmp_path):
    on = train_run(load_config("demo", [*SMALL, "c2f.phase_epochs=[1, 1]", "c2f.method=avgpool"]),
                   load_splits(load_config("demo", SMALL)), tmp_path / "on", progress=False).records
    cfg = load_config("demo", [*SMALL, "c2f.phase_epochs=[1, 1]", "c2f.method=avgpool", "data.in_memory=off"])
    off = train_run(cfg, load_splits(cfg), tmp_path / "off", progress=False).records
    for a, b in zip(on, off):
        assert a.train_flops == b.train_flops
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4) and a.metric("acc") == pytest.approx(b.metric("acc"), abs=0.13)


def test_tensorboard_scalars_against_epochs_flops_and_time(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config("demo", [*SMALL, "c2f.phase_epochs=[1, 1]", "train.tensorboard=true"])
    recs = train_run(cfg, load_splits(cfg), tmp_path, progress=False).records
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"epoch/acc", "epoch/train_loss", "epoch/cum_flops", "vs_gflops/acc", "vs_time_ms/acc"} <= set(tags)
    assert [e.step for e in acc.Scalars("epoch/acc")] == [1, 2]
    assert [e.step for e in acc.Scalars("vs_gflops/acc")] == [round(r.cum_flops / 1e9) for r in recs]
