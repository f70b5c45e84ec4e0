"""A trained run's weights used from the command line: predict on audio files, export to Hugging Face."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from coarse2fine.cli import main

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
    assert main(["predict", str(hf_dir), str(clip), "--json", "--device", "cpu"]) == 0
    (pred_hf,) = json.loads(capsys.readouterr().out)
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


def test_export_hf_takes_the_output_folder_as_export_onnx_does(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "demo", "--out", str(run), "--quiet", *[a for s in TRAIN for a in ("--set", s)]]) == 0
    assert main(["export-hf", str(run), "--out", str(tmp_path / "by_option")]) == 0
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
    # demo's window: 128 frames of 10 ms plus the 25 ms frame, 1.295 s; a 5 s hop would skip most of the audio.
    assert main(["predict", str(run), str(clip), "--hop", "5", "--device", "cpu", "--quiet"]) == 2
    captured = capsys.readouterr()
    assert "--hop 5 s is longer than the window of 1.295 s" in captured.err and captured.out == ""
    with pytest.raises(SystemExit):
        main(["predict", str(run), str(clip), "--hop", "0"])
    assert "must be more than 0 seconds" in capsys.readouterr().err
    assert main(["predict", str(run), str(clip), "--hop", "1.295", "--json", "--device", "cpu", "--quiet"]) == 0
    (pred,) = json.loads(capsys.readouterr().out)
    assert len(pred["windows"]) == 13  # back to back over 16 s, the last aligned to the end
