"""Inference on files: windows, batching, reduction, labels, errors, run folders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from coarse2fine.atomic import save_safetensors, write_json
from coarse2fine.audio import AudioError, load_audio
from coarse2fine.features import FbankConfig, FeatureSpec, extract
from coarse2fine.model.ast import AST, ASTConfig
from coarse2fine.predict import (
    Prediction,
    check_hop,
    load_run_for_inference,
    predict_files,
    window_samples,
    window_starts,
)

SR = 16000
SPEC = FeatureSpec(FbankConfig(num_mel_bins=32), target_length=64, mean=-4.2677393, std=4.5689974)
WIN = 63 * 160 + 400  # 10480 samples = 0.655 s: the model's window
LABELS = ["/m/a", "/m/b", "/m/c", "/m/d"]
NAMES = ["Alpha", "Beta", "Gamma", "Delta"]


@pytest.fixture(scope="module")
def model() -> AST:
    torch.manual_seed(0)
    m = AST(ASTConfig(num_classes=4, embed_dim=32, depth=2, num_heads=2, num_mel_bins=32, target_length=64,
                      patch_size=8, stride=8)).eval()
    with torch.no_grad():  # spread the logits so that the ranking means something
        m.head.fc.weight.mul_(50.0)
        m.head.fc.bias.copy_(torch.tensor([0.3, -0.2, 0.1, 0.0]))
    return m


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    t = np.arange(7 * SR) / SR
    long = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(t.size)
    files = {"short": root / "short.wav", "long": root / "long.wav", "bad": root / "bad.wav"}
    sf.write(files["short"], 0.2 * rng.standard_normal(SR // 2), SR, subtype="PCM_16")
    sf.write(files["long"], long, SR, subtype="PCM_16")
    files["bad"].write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really a wav file")
    return {k: str(v) for k, v in files.items()}


def _manual_window_scores(model: AST, path: str, multilabel: bool = False) -> torch.Tensor:
    """Window scores computed by hand: AST-length windows, hop = half, last one aligned to the end."""
    wave = load_audio(path, SR)
    n = wave.numel()
    starts = list(range(0, n - WIN + 1, WIN // 2))
    if starts[-1] + WIN < n:
        starts.append(n - WIN)
    with torch.no_grad():
        logits = model(extract(torch.stack([wave[s:s + WIN] for s in starts]), SPEC))
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=-1)


def test_window_geometry():
    assert window_samples(SPEC) == WIN
    assert window_samples(FeatureSpec(FbankConfig(), 1024, 0.0, 1.0)) == 164080  # AST: 10.255 s
    assert window_starts(8000, WIN, WIN // 2) == [0]
    assert window_starts(WIN, WIN, 100) == [0]
    assert window_starts(WIN + 10, WIN, 5240) == [0, 10]  # last window aligned with the end
    assert window_starts(WIN + 5240, WIN, 5240) == [0, 5240]


def test_windows_and_top_k(model, wavs):
    short, long = predict_files(model, [wavs["short"], wavs["long"]], SPEC, LABELS, NAMES, top_k=3, batch_size=8)
    assert isinstance(short, Prediction) and short.error is None and short.path == wavs["short"]
    assert len(short.windows) == 1 and short.windows[0]["start_s"] == 0.0 and short.windows[0]["end_s"] == 0.5
    assert short.duration_s == 0.5

    # 7 s = 112000 samples: starts 0, 5240, ..., 99560 (20 windows), then one ending at 7.0 s.
    assert len(long.windows) == 21
    starts = [w["start_s"] for w in long.windows]
    assert starts[:20] == pytest.approx([i * 5240 / SR for i in range(20)])
    assert starts[20] == pytest.approx((112000 - WIN) / SR) and long.windows[-1]["end_s"] == pytest.approx(7.0)
    assert all(w["end_s"] - w["start_s"] == pytest.approx(WIN / SR) for w in long.windows)

    for pred in (short, long):
        assert len(pred.top) == 3
        scores = [s for _, _, s in pred.top]
        assert scores == sorted(scores, reverse=True)
        assert all(NAMES[LABELS.index(label)] == name for label, name, _ in pred.top)
        assert all(len(w["top"]) == 3 for w in pred.windows)
        assert sum(pred.scores) == pytest.approx(1.0, abs=1e-5)  # softmax: clip mean of distributions
    assert long.to_dict()["top"][0] == list(long.top[0])


def test_mean_and_max_reduction_match_manual_computation(model, wavs):
    manual = _manual_window_scores(model, wavs["long"])
    [mean] = predict_files(model, [wavs["long"]], SPEC, LABELS, NAMES, top_k=4, batch_size=5)
    torch.testing.assert_close(torch.tensor(mean.scores), manual.mean(dim=0), rtol=1e-5, atol=1e-6)
    # Every window lists all 4 classes here: their mean per class is the clip score.
    per_window = torch.tensor([[dict((lab, s) for lab, _, s in w["top"])[lab] for lab in LABELS] for w in mean.windows])
    torch.testing.assert_close(per_window, manual, rtol=1e-5, atol=1e-6)
    assert mean.top[0][2] == pytest.approx(float(manual.mean(dim=0).max()), abs=1e-6)

    [mx] = predict_files(model, [wavs["long"]], SPEC, LABELS, NAMES, top_k=2, reduce="max", multilabel=True)
    manual_ml = _manual_window_scores(model, wavs["long"], multilabel=True)
    torch.testing.assert_close(torch.tensor(mx.scores), manual_ml.amax(dim=0), rtol=1e-5, atol=1e-6)


def test_batching_does_not_change_scores_and_hop_is_honoured(model, wavs):
    paths = [wavs["long"], wavs["short"], wavs["long"]]
    a = predict_files(model, paths, SPEC, LABELS, top_k=4, batch_size=1)
    b = predict_files(model, paths, SPEC, LABELS, top_k=4, batch_size=16)
    for x, y in zip(a, b):
        torch.testing.assert_close(torch.tensor(x.scores), torch.tensor(y.scores), rtol=1e-5, atol=1e-6)
    assert a[1].top[0][1] == a[1].top[0][0]  # no display names: the label ids are shown
    [custom] = predict_files(model, [wavs["long"]], SPEC, LABELS, window_seconds=2.0, hop_seconds=2.0)
    assert [w["start_s"] for w in custom.windows] == [0.0, 2.0, 4.0, 5.0]


def test_a_hop_longer_than_the_window_is_refused(model, wavs):
    # 0.655 s windows 5 s apart would score 2 windows of a 7 s clip and skip the rest.
    with pytest.raises(ValueError, match=r"hop_seconds 5 s is longer than the window of 0.655 s"):
        predict_files(model, [wavs["long"]], SPEC, LABELS, hop_seconds=5.0)
    with pytest.raises(ValueError, match=r"longer than the window of 2.000 s"):
        predict_files(model, [wavs["long"]], SPEC, LABELS, window_seconds=2.0, hop_seconds=2.5)
    with pytest.raises(ValueError, match="--hop: must be more than 0 seconds"):
        check_hop(SPEC, 0.0, "--hop")
    check_hop(SPEC, WIN / SR, "--hop")  # a hop of exactly a window leaves no gap
    [whole] = predict_files(model, [wavs["long"]], SPEC, LABELS, hop_seconds=WIN / SR)
    assert len(whole.windows) == math.ceil(7 * SR / WIN)  # back to back, the last aligned to the end


def test_bad_files_are_named_or_skipped(model, wavs):
    with pytest.raises(AudioError, match="bad.wav"):
        predict_files(model, [wavs["short"], wavs["bad"]], SPEC, LABELS)
    preds = predict_files(model, [wavs["bad"], wavs["short"], str(wavs["short"]) + ".missing"], SPEC, LABELS,
                          skip_errors=True)
    assert [p.path for p in preds] == [wavs["bad"], wavs["short"], wavs["short"] + ".missing"]
    assert preds[0].path.endswith("bad.wav") and "cannot decode" in preds[0].error and preds[0].top == [] and preds[1].error is None
    assert "file not found" in preds[2].error
    with pytest.raises(ValueError, match="3 labels for a model with 4 classes"):
        predict_files(model, [wavs["short"]], SPEC, LABELS[:3])
    with pytest.raises(ValueError, match="model expects 64 frames"):
        predict_files(model, [wavs["short"]], FeatureSpec(FbankConfig(num_mel_bins=32), 32, 0.0, 1.0), LABELS)


def _write_run(run, model: AST, loss: str = "ce", labels: bool = True, target_length: int = 64) -> None:
    run.mkdir()
    save_safetensors(run / "model.safetensors", model.state_dict(), metadata={"format": "pt"})
    write_json(run / "model_config.json", model.config.to_dict())
    features = dict(sample_rate=16000, num_mel_bins=32, frame_length_ms=25.0, frame_shift_ms=10.0,
                    target_length=target_length, mean=-5.0, std=4.0)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "r", "features": features, "train": {"loss": loss}}))
    if labels:
        write_json(run / "labels.json", {"classes": LABELS, "display_names": NAMES})


def test_load_run_for_inference(model, wavs, tmp_path):
    _write_run(tmp_path / "run", model, loss="bce")
    loaded, spec, labels, names, multilabel = load_run_for_inference(tmp_path / "run")
    assert (labels, names, multilabel) == (LABELS, NAMES, True)
    assert spec == FeatureSpec(FbankConfig(num_mel_bins=32), 64, -5.0, 4.0)
    x = torch.randn(2, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    [pred] = predict_files(loaded, [wavs["short"]], spec, labels, names, multilabel=multilabel)
    assert pred.top[0][1] in NAMES

    _write_run(tmp_path / "nolabels", model, labels=False)
    _, _, labels, names, multilabel = load_run_for_inference(tmp_path / "nolabels")
    assert labels == names == ["class_0", "class_1", "class_2", "class_3"] and multilabel is False

    _write_run(tmp_path / "coarse", model, target_length=256)
    with pytest.raises(ValueError, match=r"config\.yaml: features give 256 frames"):
        load_run_for_inference(tmp_path / "coarse")
    (tmp_path / "run" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"model\.safetensors: file not found"):
        load_run_for_inference(tmp_path / "run")


def test_window_of_a_centred_front_end():
    from coarse2fine.features import LogMelConfig

    spec = FeatureSpec(LogMelConfig(), 1024, normalize=False)
    n = window_samples(spec)
    assert spec.frontend.num_frames(n) == 1024 and spec.frontend.num_frames(n - 320) == 1023  # 10.23 s at 32 kHz
