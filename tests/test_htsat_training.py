"""HTS-AT trained coarse-to-fine through the same loop as AST: every method and schedule, its own
front end, predict, and a run switched to HTS-AT from an AST preset."""

import json

import pytest
import torch

from coarse2fine.cli import main
from coarse2fine.config import load_config
from coarse2fine.data.sources import load_splits
from coarse2fine.predict import load_run_for_inference, predict_files
from coarse2fine.training.loop import train_run

# HTS-AT's front end at the demo's 16 kHz (hop 160 = 10 ms), the micro model with one chunk
# (the demo's 1.28 s clips give 128 frames: 32 at R = 4, the fewest a 4-stage Swin can take).
HTSAT = [
    "model.arch=htsat", "model.preset=micro", "model.overrides.num_chunks=1", "features.frontend=logmel",
    "features.logmel.sample_rate=16000", "features.logmel.n_fft=512", "features.logmel.win_length=400",
    "features.logmel.hop_length=160", "features.logmel.f_max=8000", "features.normalize=false",
    "data.train_clips=16", "data.val_clips=8", "train.batch_size=8", "train.threads=1", "train.epochs=1",
    "train.optim.warmup_steps=2", "augment.freqm=8", "augment.timem=16", "augment.spec_masks=2",
]


@pytest.fixture(scope="module")
def splits():
    return load_splits(load_config("demo", HTSAT))


@pytest.mark.parametrize("method,resize", [("fshift", "pi"), ("avgpool", "pi"), ("maxpool", "pi"), ("patch", "bilinear")])
def test_every_method_cuts_tokens_by_R_in_every_phase(splits, tmp_path, method, resize):
    cfg = load_config("demo", [*HTSAT, "c2f.schedule=4-2-1", f"c2f.method={method}", f"c2f.patch_resize={resize}",
                               "c2f.phase_epochs=[1, 1, 1]"])
    result = train_run(cfg, splits, tmp_path, progress=False)
    recs = result.records
    assert [(r.R, r.tokens) for r in recs] == [(4, 128), (2, 256), (1, 512)]  # 64 mel bins / 4 = 16 rows
    assert recs[0].train_flops < 0.27 * recs[2].train_flops and recs[1].train_flops < 0.52 * recs[2].train_flops
    assert all(r.train_loss == r.train_loss for r in recs)  # finite
    model, spec, labels, _, _ = load_run_for_inference(tmp_path)
    assert model.arch == "htsat" and spec.frontend.kind == "logmel" and not spec.normalize
    assert model.num_tokens == 512 and len(labels) == 8


@pytest.mark.parametrize("schedule,tokens", [("4-1", [128, 512]), ("2-1", [256, 512])])
def test_two_phase_schedules(splits, tmp_path, schedule, tokens):
    cfg = load_config("demo", [*HTSAT, f"c2f.schedule={schedule}", "c2f.phase_epochs=[1, 1]"])
    assert [r.tokens for r in train_run(cfg, splits, tmp_path, progress=False).records] == tokens


def test_predict_with_a_trained_htsat_run(splits, tmp_path):
    cfg = load_config("demo", [*HTSAT, "c2f.schedule=1"])
    train_run(cfg, splits, tmp_path, progress=False)
    model, spec, labels, names, multilabel = load_run_for_inference(tmp_path)
    import soundfile as sf

    clip = tmp_path / "clip.wav"
    sf.write(clip, (0.1 * torch.randn(40000)).numpy(), 16000)
    (pred,) = predict_files(model, [clip], spec, labels, names, top_k=3)
    assert len(pred.top) == 3 and len(pred.windows) >= 2 and abs(sum(pred.scores) - 1) < 1e-4


def test_switching_an_ast_preset_to_htsat(tmp_path, capsys):
    # The AST demo preset with model.arch switched: fbank features (128 mel bins) work too.
    args = ["train", "demo", "--out", str(tmp_path), "--quiet", *[a for s in (
        "model.arch=htsat", "model.preset=micro", "model.overrides.num_chunks=1", "data.train_clips=16",
        "data.val_clips=8", "train.batch_size=8", "train.threads=1", "train.epochs=1", "c2f.phase_epochs=[1, 1]",
    ) for a in ("--set", s)]]
    assert main(args) == 0
    log = json.loads((tmp_path / "log.json").read_text())
    assert [r["tokens"] for r in log["records"]] == [256, 1024]
    assert json.loads((tmp_path / "model_config.json").read_text())["arch"] == "htsat"


def test_htsat_fits_any_preset_and_geometry_errors_name_the_fix():
    for preset, chunks in (("demo", 1), ("fsdd_digits-cpu", 1), ("esc50-cpu", 2), ("audioset-cpu", 4), ("htsat_audioset", 4)):
        cfg = load_config(preset, ["model.arch=htsat", "model.preset=micro", "c2f.schedule=4-2-1"])
        assert cfg.phase(0, 2).model_config.num_chunks == chunks
    with pytest.raises(ValueError, match="at R=4 .*HTS-AT needs the frame count divisible by"):
        load_config("demo", ["model.arch=htsat", "model.preset=micro", "model.overrides.num_chunks=4"])
