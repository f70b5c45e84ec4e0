"""Inference on files: windows, batching, reduction, labels, errors, run folders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from coarse2fine.atomic import save_safetensors, write_json
from coarse2fine.audio import AudioError, fix_length, load_audio
from coarse2fine.compression import Compression, phase_input
from coarse2fine.config import load_config
from coarse2fine.data.sources import load_validation, manifests
from coarse2fine.features import FbankConfig, FeatureSpec, extract
from coarse2fine.model.ast import AST, ASTConfig
from coarse2fine.predict import (
    ClipSpec,
    Prediction,
    audio_files,
    check_hop,
    load_run_for_inference,
    predict_files,
    run_clip,
    window_features,
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


# ----------------------------------------------------------------------------- the data path's input

CLIP_S = 0.5  # data.clip_seconds of the configs below: 8000 samples, 48 fbank / 51 log-mel frames, padded to 64
FRONTENDS = {
    "fbank": ["features.frontend=fbank", "features.fbank.num_mel_bins=32"],
    "logmel": ["features.frontend=logmel", "features.logmel.sample_rate=16000", "features.logmel.n_fft=512",
               "features.logmel.win_length=512", "features.logmel.hop_length=160", "features.logmel.n_mels=32",
               "features.logmel.f_max=8000", "features.mean=-9.0", "features.std=3.0"],
}


def _evaluation_input(root, waves: list[np.ndarray], pad: str, frontend: str):
    """``waves`` written as a one-class folder set, and what the training/evaluation data path
    feeds the model for them: its config (clips of ``CLIP_S``, ``pad``), the files in its order
    and the validation clips' model input at R = 1 (the loop's ``val_batches``: ``phase_input``)."""
    folder = root / "set" / "a"
    folder.mkdir(parents=True)
    for i, wave in enumerate(waves):
        sf.write(folder / f"{i:03d}.wav", wave, SR, subtype="PCM_16")
    cfg = load_config("demo", ["data.kind=manifest", f"data.train={root / 'set'}", f"data.val={root / 'set'}",
                               f"data.clip_seconds={CLIP_S}", f"data.pad={pad}", "data.min_seconds=0.05",
                               "features.target_length=64", *FRONTENDS[frontend]])
    val = load_validation(cfg)
    clips, _ = val.take(torch.arange(len(val)))
    spec = cfg.features.spec()
    with torch.no_grad():
        x = phase_input(clips, val.serves, spec, Compression())
    return cfg, [str(e.path) for e in manifests(cfg)[1].entries], x


def _noise(seconds: float, seed: int) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * (300 + 400 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("frontend", ["fbank", "logmel"])
@pytest.mark.parametrize("pad", ["zeros", "repeat"])
def test_a_short_clip_gets_the_model_input_evaluation_gave_it(model, tmp_path, pad, frontend):
    # Shorter than data.clip_seconds (0.12 s, 0.3 s) and exactly as long (0.5 s).
    cfg, paths, evaluated = _evaluation_input(tmp_path, [_noise(0.3, 1), _noise(CLIP_S, 2), _noise(0.12, 3)],
                                              pad, frontend)
    spec, clip = cfg.features.spec(), ClipSpec.from_config(cfg)
    assert clip == ClipSpec(8000, pad, 800)  # data.min_seconds 0.05: the shortest file training takes
    ours = window_features(paths, spec, clip)
    torch.testing.assert_close(ours, evaluated, rtol=0, atol=1e-6)
    # The input predict used to make (the waveform zero-padded to a window of 64 frames) was not it.
    old = extract(torch.stack([fix_length(load_audio(p, SR), window_samples(spec)) for p in paths]), spec)
    assert (old[0] - evaluated[0]).abs().max() > 0.1

    preds = predict_files(model, paths, spec, LABELS, clip=clip, batch_size=2)
    with torch.no_grad():
        expected = torch.softmax(model(evaluated), dim=-1)
    assert [len(p.windows) for p in preds] == [1, 1, 1]
    torch.testing.assert_close(torch.tensor([p.scores for p in preds]), expected, rtol=1e-5, atol=1e-6)


def test_a_file_shorter_than_training_accepts_is_scored_with_a_warning(model, tmp_path, caplog):
    """A new user's case: a 0.01 s file was scored without a word, where training refuses clips under
    data.min_seconds."""
    paths = [str(tmp_path / "short.wav"), str(tmp_path / "ok.wav")]
    for path, seconds in zip(paths, (0.05, 0.3)):
        sf.write(path, _noise(seconds, 1), SR, subtype="PCM_16")
    with caplog.at_level("WARNING", logger="coarse2fine.predict"):
        preds = predict_files(model, paths, SPEC, LABELS, clip=ClipSpec(8000, "zeros", 1600))
    assert len(preds) == 2 and all(p.scores for p in preds)
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [f"{paths[0]}: 0.050 s, shorter than the 0.1 s that training accepts (data.min_seconds): scored, "
                      "on a window that is mostly padding"]
    caplog.clear()
    silent = str(tmp_path / "silent.wav")  # scored without a word, where check and training refuse it
    sf.write(silent, np.zeros(SR // 2, dtype=np.float32), SR)
    with caplog.at_level("WARNING", logger="coarse2fine.predict"):
        assert predict_files(model, [silent], SPEC, LABELS)[0].scores
    assert [r.getMessage() for r in caplog.records] == [
        f"{silent}: silent: peak amplitude 0.0e+00 < 1e-07 (digital silence), which training and check refuse: scored "
        "all the same"]


@pytest.mark.parametrize("pad", ["zeros", "repeat"])
def test_each_window_of_a_long_file_is_a_training_clip(model, wavs, tmp_path, pad):
    """Every window of a 7 s file gets the input that training gives a clip of that audio: clips
    of data.clip_seconds by default, and with a shorter window (0.3 s) one padded to the clip."""
    wave = load_audio(wavs["long"], SR)
    for window_s, folder in ((None, "default"), (0.3, "short")):
        win = int(round((window_s or CLIP_S) * SR))
        starts = window_starts(wave.numel(), win, win // 2)
        assert starts[-1] == wave.numel() - win and len(starts) > 20  # the last one ends with the file
        segments = [wave[s:s + win].numpy() for s in starts]  # 16-bit audio: written back losslessly
        (tmp_path / folder).mkdir()
        cfg, _, evaluated = _evaluation_input(tmp_path / folder, segments, pad, "fbank")
        [pred] = predict_files(model, [wavs["long"]], cfg.features.spec(), LABELS, clip=ClipSpec.from_config(cfg),
                               window_seconds=window_s, top_k=4, batch_size=7)
        assert [w["start_s"] for w in pred.windows] == pytest.approx([s / SR for s in starts])
        assert pred.windows[-1]["end_s"] == pytest.approx(7.0)
        per_window = torch.tensor([[dict((lab, s) for lab, _, s in w["top"])[lab] for lab in LABELS]
                                   for w in pred.windows])
        with torch.no_grad():
            expected = torch.softmax(model(evaluated), dim=-1)
        torch.testing.assert_close(per_window, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.tensor(pred.scores), expected.mean(dim=0), rtol=1e-5, atol=1e-6)


def test_window_and_hop_follow_the_training_clip(model, wavs, caplog):
    clip = ClipSpec(8000, "zeros")
    with pytest.raises(ValueError, match=r"--hop 0.6 s is longer than the window of 0.500 s"):
        check_hop(SPEC, 0.6, "--hop", clip=clip)
    check_hop(SPEC, 0.6, "--hop")  # the 0.655 s window of 64 frames, without a clip
    [whole] = predict_files(model, [wavs["long"]], SPEC, LABELS, clip=clip, hop_seconds=CLIP_S)
    assert len(whole.windows) == 14  # 7 s in 0.5 s windows back to back
    with caplog.at_level("WARNING", logger="coarse2fine.predict"):
        [longer] = predict_files(model, [wavs["long"]], SPEC, LABELS, clip=clip, window_seconds=1.0)
    assert "longer than the training clips' (data.clip_seconds) 0.500 s" in caplog.text
    assert [w["start_s"] for w in longer.windows][:3] == [0.0, 0.5, 1.0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="coarse2fine.predict"):  # padded, unlike training's clips: said
        predict_files(model, [wavs["long"]], SPEC, LABELS, clip=clip, window_seconds=0.125)
    assert ("window of 0.125 s is shorter than the training clips' (data.clip_seconds) 0.500 s: each window is "
            "padded (zeros) to that length, 75 % of it not audio") in caplog.text
    with pytest.raises(ValueError, match="pad must be 'zeros' or 'repeat'"):
        ClipSpec(8000, "reflect")
    with pytest.raises(ValueError, match="window_seconds: must be more than 0"):
        predict_files(model, [wavs["long"]], SPEC, LABELS, window_seconds=0.0)


def test_run_clip_reads_the_run_config(model, tmp_path):
    _write_run(tmp_path / "run", model)
    assert run_clip(tmp_path / "run") == ClipSpec(20480, "zeros", 1600)  # the defaults: 1.28 s at 16 kHz, 0.1 s
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    cfg["data"] = {"clip_seconds": 5.0, "pad": "repeat"}
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert run_clip(tmp_path / "run") == ClipSpec(80000, "repeat", 1600)
    with pytest.raises(ValueError, match=r"config\.yaml: file not found"):
        run_clip(tmp_path)


def test_folders_stand_for_their_audio_files(model, wavs, tmp_path):
    root = tmp_path / "audio"
    (root / "b" / "deep").mkdir(parents=True)
    (root / ".hidden").mkdir()
    short = sf.read(wavs["short"], dtype="float32")[0]
    for name in ("b/deep/z.flac", "b/a.WAV", "c.ogg", ".hidden/x.wav", "b/.dot.wav"):
        sf.write(root / name, short, SR)
    (root / "notes.txt").write_text("not audio")
    expected = [str(root / n) for n in ("b/a.WAV", "b/deep/z.flac", "c.ogg")]
    assert audio_files([root, wavs["short"]]) == [*expected, wavs["short"]]
    # a file given by name and in its folder (or by two names) is scored once, where it came first
    assert audio_files([expected[2], root, f"{root}/b/../c.ogg"]) == [expected[2], *expected[:2]]
    preds = predict_files(model, [wavs["long"], root], SPEC, LABELS, top_k=2)
    assert [p.path for p in preds] == [wavs["long"], *expected]
    assert all(p.error is None and len(p.top) == 2 for p in preds)
    torch.testing.assert_close(torch.tensor(preds[1].scores), torch.tensor(preds[2].scores))  # WAV, FLAC: one audio
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.md").write_text("no audio here")
    with pytest.raises(ValueError, match=r"empty: no audio files in this folder"):
        predict_files(model, [wavs["short"], tmp_path / "empty"], SPEC, LABELS)
