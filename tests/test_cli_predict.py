"""A trained run's weights used from the command line: predict on audio files, export to Hugging Face."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from coarse2fine.atomic import save_safetensors, write_json
from coarse2fine.cli import main
from coarse2fine.compression import Compression, phase_input
from coarse2fine.config import load_config
from coarse2fine.data.sources import load_validation, manifests
from coarse2fine.model.ast import AST, ASTConfig

TRAIN = ["data.train_clips=16", "data.val_clips=8", "train.epochs=1", "train.batch_size=8", "train.threads=1", "c2f.schedule=1"]


def test_train_predict_export(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "demo", "--out", str(run), "--quiet", *[a for s in TRAIN for a in ("--set", s)]]) == 0
    clip = tmp_path / "long.wav"
    t = np.arange(int(16000 * 3.5)) / 16000
    sf.write(clip, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    (tmp_path / "bad.wav").write_bytes(b"nope")
    capsys.readouterr()
    assert main(["predict", str(run), str(clip), "--top-k", "3", "--json", "--device", "cpu"]) == 0
    (pred,) = json.loads(capsys.readouterr().out)
    assert len(pred["top"]) == 3 and len(pred["windows"]) > 1
    scores = [s for _, _, s in pred["top"]]
    assert scores == sorted(scores, reverse=True) and abs(sum(pred["scores"]) - 1) < 1e-4  # softmax, single-label
    assert main(["predict", str(run), str(tmp_path / "bad.wav"), "--skip-errors", "--device", "cpu"]) == 1
    assert "bad.wav: error" in capsys.readouterr().out
    # A corrupt file among good ones: every readable file is scored, the bad one listed, exit 1.
    other = tmp_path / "other.flac"
    sf.write(other, (0.2 * np.sin(2 * np.pi * 880 * t[:16000])).astype(np.float32), 16000)
    assert main(["predict", str(run), str(clip), str(tmp_path / "bad.wav"), str(other), "--json", "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    preds = json.loads(captured.out)
    assert [p["error"] is None for p in preds] == [True, False, True]
    assert preds[0]["scores"] == pred["scores"] and len(preds[2]["top"]) == 5
    assert "1 of 3 file(s) could not be scored" in captured.err and "bad.wav" in captured.err

    from transformers import ASTForAudioClassification

    hf_dir = tmp_path / "hf"
    assert main(["export-hf", str(run), str(hf_dir)]) == 0
    assert "exported" in capsys.readouterr().out
    hf = ASTForAudioClassification.from_pretrained(hf_dir).eval()
    # A Hugging Face folder does not know the run's clip length (data.clip_seconds, 1.28 s): its windows fill
    # the model's 128 frames (1.295 s). Given the clip length as --window, it scores the run's very inputs.
    assert main(["predict", str(hf_dir), str(clip), "--json", "--device", "cpu"]) == 0
    (pred_hf,) = json.loads(capsys.readouterr().out)
    assert pred_hf["windows"][0]["end_s"] == 1.295 and pred["windows"][0]["end_s"] == 1.28
    assert main(["predict", str(hf_dir), str(clip), "--window", "1.28", "--json", "--device", "cpu"]) == 0
    (pred_hf,) = json.loads(capsys.readouterr().out)
    assert [w["start_s"] for w in pred_hf["windows"]] == [w["start_s"] for w in pred["windows"]]
    assert np.allclose(pred_hf["scores"], pred["scores"], atol=1e-5)
    assert hf.config.id2label[0] == "up_chirp"
    x = torch.randn(1, 128, 128)
    from coarse2fine.predict import load_run_for_inference

    ours = load_run_for_inference(run)[0].eval()
    with torch.no_grad():
        assert torch.allclose(ours(x), hf(x).logits, atol=1e-5)


def test_coarse_to_fine_fine_tuning_from_a_hugging_face_checkpoint(tmp_path):
    from safetensors.torch import load_file

    from coarse2fine.model.ast.hf import load_hf_checkpoint

    run = tmp_path / "pretrain"
    assert main(["train", "demo", "--out", str(run), "--quiet", *[a for s in TRAIN for a in ("--set", s)]]) == 0
    assert main(["export-hf", str(run), str(tmp_path / "hf")]) == 0
    source, _ = load_hf_checkpoint(tmp_path / "hf")
    # Fine-tune 4-1 with Patch PI from the exported checkpoint: 16x64 patches, 16 tokens first.
    ft = tmp_path / "finetune"
    args = [*TRAIN, "c2f.schedule=4-1", "c2f.method=patch", "c2f.phase_epochs=[1, 1]", "train.optim.lr=1e-12",
            f"model.init_from={tmp_path / 'hf'}"]
    assert main(["train", "demo", "--out", str(ft), "--quiet", *[a for s in args for a in ("--set", s)]]) == 0
    tuned = load_file(ft / "model.safetensors")
    # With a vanishing learning rate the blocks keep the pretrained weights through both phases.
    for k in ("blocks.0.attn.qkv.weight", "blocks.3.mlp.fc2.weight", "norm.weight"):
        torch.testing.assert_close(tuned[k], source.state_dict()[k], atol=1e-6, rtol=0)
    log = json.loads((ft / "log.json").read_text())
    assert [r["tokens"] for r in log["records"]] == [16, 64]


def test_export_hf_takes_the_output_folder_as_export_onnx_does(tmp_path, capsys, caplog):
    run = tmp_path / "run"
    assert main(["train", "demo", "--out", str(run), "--quiet", *[a for s in TRAIN for a in ("--set", s)]]) == 0
    with caplog.at_level("WARNING", logger="coarse2fine"):
        assert main(["export-hf", str(run), "--out", str(tmp_path / "by_option")]) == 0
    # transformers pads a short clip's features with 0 where training padded its audio: short keyword clips
    # scored at chance through transformers without a word (a new user's case)
    clip = load_config(str(run / "config.yaml"), check_runtime=False).data.clip_seconds
    assert (f"the run pads any clip shorter than {clip:g} s with silence (data.pad: zeros) before its features; "
            "transformers' ASTFeatureExtractor pads a short clip's features with 0 instead") in caplog.text
    assert f"pad the audio to {clip:g} s (zeros) before the feature extractor" in caplog.text
    assert main(["export-hf", str(run), str(tmp_path / "positional")]) == 0
    assert main(["export-hf", str(run)]) == 0  # default: RUN/hf
    files = [sorted(p.name for p in d.iterdir()) for d in (tmp_path / "by_option", tmp_path / "positional", run / "hf")]
    assert files[0] == files[1] == files[2] and "config.json" in files[0]
    assert json.loads((run / "hf" / "config.json").read_text()) == json.loads((tmp_path / "by_option" / "config.json").read_text())
    capsys.readouterr()
    assert main(["export-hf", str(run), str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 2
    assert "two output folders given" in capsys.readouterr().err


def test_predict_refuses_a_hop_longer_than_the_window(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "demo", "--out", str(run), "--quiet", *[a for s in TRAIN for a in ("--set", s)]]) == 0
    clip = tmp_path / "long.wav"
    sf.write(clip, (0.3 * np.sin(2 * np.pi * 440 * np.arange(16 * 16000) / 16000)).astype(np.float32), 16000)
    capsys.readouterr()
    # demo's window: its training clips, data.clip_seconds = 1.28 s; a 5 s hop would skip most of the audio.
    assert main(["predict", str(run), str(clip), "--hop", "5", "--device", "cpu", "--quiet"]) == 2
    captured = capsys.readouterr()
    assert "--hop 5 s is longer than the window of 1.280 s" in captured.err and captured.out == ""
    with pytest.raises(SystemExit):
        main(["predict", str(run), str(clip), "--hop", "0"])
    assert "must be more than 0 seconds" in capsys.readouterr().err
    assert main(["predict", str(run), str(clip), "--hop", "1.28", "--json", "--device", "cpu", "--quiet"]) == 0
    (pred,) = json.loads(capsys.readouterr().out)
    assert len(pred["windows"]) == 13  # back to back over 16 s, the last aligned to the end
    # --window: seconds of audio per model input; the hop is checked against it.
    assert main(["predict", str(run), str(clip), "--window", "1", "--hop", "1.2", "--device", "cpu", "--quiet"]) == 2
    assert "--hop 1.2 s is longer than the window of 1.000 s" in capsys.readouterr().err
    assert main(["predict", str(run), str(clip), "--window", "2", "--hop", "2", "--json", "--device", "cpu",
                 "--quiet"]) == 0
    (pred,) = json.loads(capsys.readouterr().out)
    assert [w["start_s"] for w in pred["windows"]] == [0, 2, 4, 6, 8, 10, 12, 14]


def _write_run(run, data: dict) -> AST:
    """A run folder (no training needed) of a micro AST on 32 mel bins x 64 frames with ``data``."""
    torch.manual_seed(0)
    model = AST(ASTConfig(num_classes=2, embed_dim=32, depth=1, num_heads=2, num_mel_bins=32, target_length=64,
                          patch_size=8, stride=8)).eval()
    with torch.no_grad():
        model.head.fc.weight.mul_(50.0)
    run.mkdir()
    save_safetensors(run / "model.safetensors", model.state_dict(), metadata={"format": "pt"})
    write_json(run / "model_config.json", model.config.to_dict())
    features = {"frontend": "fbank", "fbank": {"num_mel_bins": 32}, "target_length": 64}
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "r", "data": data, "features": features,
                                                     "train": {"loss": "ce"}}))
    return model


def test_predict_feeds_a_folder_of_clips_what_evaluation_fed_the_model(tmp_path, capsys):
    audio = tmp_path / "audio"
    rng = np.random.default_rng(0)
    for i, seconds in enumerate((0.25, 0.5, 0.4, 0.15)):  # data.clip_seconds 0.5: three short clips, one exact
        (audio / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        t = np.arange(int(seconds * 16000)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (250 + 300 * i) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(audio / f"c{i % 2}" / f"{i}.wav", wave.astype(np.float32), 16000, subtype="PCM_16")
    run = tmp_path / "run"
    model = _write_run(run, {"kind": "manifest", "train": str(audio), "val": str(audio), "clip_seconds": 0.5,
                             "pad": "repeat", "min_seconds": 0.1})
    capsys.readouterr()
    assert main(["predict", str(run), str(audio), "--json", "--device", "cpu", "--quiet"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert [p["path"] for p in preds] == [str(audio / "c0" / "0.wav"), str(audio / "c0" / "2.wav"),
                                          str(audio / "c1" / "1.wav"), str(audio / "c1" / "3.wav")]

    # The run's validation set is these files, in this order: its evaluation input, as the loop makes it.
    cfg = load_config(run / "config.yaml")
    val = load_validation(cfg)
    clips, _ = val.take(torch.arange(len(val)))
    assert [str(e.path) for e in manifests(cfg)[1].entries] == [p["path"] for p in preds]
    with torch.no_grad():
        expected = torch.softmax(model(phase_input(clips, val.serves, cfg.features.spec(), Compression())), dim=-1)
    assert torch.allclose(torch.tensor([p["scores"] for p in preds]), expected, atol=1e-6)
    assert [len(p["windows"]) for p in preds] == [1, 1, 1, 1]

    (tmp_path / "empty").mkdir()
    assert main(["predict", str(run), str(tmp_path / "empty"), "--device", "cpu", "--quiet"]) == 2
    assert f"{tmp_path / 'empty'}: no audio files in this folder" in capsys.readouterr().err


def test_predict_on_what_is_not_a_model_folder_says_what_it_is_in_one_line(tmp_path, capsys):
    # A new user's case: an experiment folder (run folders and savings.md) given for a run said
    # "runs/exp/config.json: file not found".
    exp = tmp_path / "exp"
    exp.mkdir()
    for name in ("baseline", "fshift_41", "patch_41", "pool_41", "pool_21"):
        _write_run(exp / name, {"clip_seconds": 0.5})
    (exp / "savings.md").write_text("| run | |\n")
    (exp / "unfinished").mkdir()
    (exp / "unfinished" / "config.yaml").write_text("extends: demo\n")
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(8000, dtype=np.float32), 16000)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "empty").mkdir()
    cases = {
        exp: f"{exp}: neither a run folder nor a Hugging Face model folder; {exp} holds runs: baseline, fshift_41, "
             f"patch_41, pool_21, ... (6 in all): give one of them, e.g. {exp / 'baseline'}",
        tmp_path / "empty": f"{tmp_path / 'empty'}: neither a run folder nor a Hugging Face model folder "
                            "(no model_config.json, config.yaml or config.json in it)",
        tmp_path / "gone": f"{tmp_path / 'gone'}: no such folder (give a run folder or a Hugging Face model folder)",
        clip: f"{clip}: an audio file, not a run folder or a Hugging Face model folder; give the model first, "
              "then the audio files",
        tmp_path / "model.onnx": f"{tmp_path / 'model.onnx'}: an ONNX file, not a run folder or a Hugging Face model "
                                 f"folder; give the run folder it was exported from, and the file as --onnx "
                                 f"{tmp_path / 'model.onnx'}",
        exp / "baseline" / "model.safetensors": f"{exp / 'baseline' / 'model.safetensors'}: a weights file, not a run "
                                                f"folder or a Hugging Face model folder; give the run folder that holds "
                                                f"it ({exp / 'baseline'}) and --weights model.safetensors",
        exp / "savings.md": f"{exp / 'savings.md'}: a file, not a run folder or a Hugging Face model folder",
    }
    capsys.readouterr()
    for target, message in cases.items():
        assert main(["predict", str(target), str(clip), "--device", "cpu", "--quiet"]) == 2, target
        captured = capsys.readouterr()
        assert captured.err.strip() == f"coarse2fine: error: {message}" and captured.out == "", captured.err
    # The export commands take run folders only, and say so as predict does.
    assert main(["export-hf", str(exp), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (f"coarse2fine: error: {exp}: not a run folder; {exp} holds runs: "
                                               f"baseline, fshift_41, patch_41, pool_21, ... (6 in all): give one of "
                                               f"them, e.g. {exp / 'baseline'}")
    # One of the runs it names is what predict takes.
    assert main(["predict", str(exp / "baseline"), str(clip), "--device", "cpu", "--quiet"]) == 0
    assert str(clip) in capsys.readouterr().out
