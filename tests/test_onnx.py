"""ONNX: export-onnx writes the final model (dynamic batch), checks it against PyTorch, and predict --onnx uses it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from coarse2fine.cli import main  # noqa: E402
from coarse2fine.cli.models import check_features  # noqa: E402
from coarse2fine.onnx_model import OnnxClassifier, check_onnx  # noqa: E402
from coarse2fine.predict import load_run_for_inference  # noqa: E402
from coarse2fine.training.checkpoint import load_checkpoint  # noqa: E402

# A micro AST trained 2-1 with Patch PI: the exported model went through a coarse phase and back.
TRAIN = ["data.train_clips=16", "data.val_clips=8", "train.batch_size=8", "train.threads=1", "model.preset=micro",
         "model.overrides.depth=1", "c2f.schedule=2-1", "c2f.method=patch", "c2f.phase_epochs=[1, 1]"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A finished run folder after ``export-onnx``, what the command printed and what it logged
    (exported once, in a process of its own as a user runs it: the exporter takes seconds)."""
    run = tmp_path_factory.mktemp("onnx") / "run"
    assert main(["train", "demo", "--out", str(run), "--quiet", *[a for s in TRAIN for a in ("--set", s)]]) == 0
    done = subprocess.run([sys.executable, "-m", "coarse2fine", "export-onnx", str(run)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return run, done.stdout, done.stderr


def test_export_onnx_checks_against_pytorch_and_predict_uses_it(exported, tmp_path, capsys):
    run, out, _ = exported
    assert "onnxruntime vs PyTorch on 4 clip(s): max |diff|" in out and "tolerance 0.0001 + 0.001 x |logit|): OK" in out
    assert (run / "model.onnx").is_file() and not list(run.glob("*.onnx.data"))  # one file, weights inside

    clip = tmp_path / "tone.wav"
    t = np.arange(int(16000 * 3.0)) / 16000
    sf.write(clip, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    assert main(["predict", str(run), str(clip), "--json", "--device", "cpu"]) == 0
    (torch_pred,) = json.loads(capsys.readouterr().out)
    assert main(["predict", str(run), str(clip), "--json", "--onnx", str(run / "model.onnx")]) == 0
    (onnx_pred,) = json.loads(capsys.readouterr().out)
    assert len(onnx_pred["windows"]) == len(torch_pred["windows"]) > 1  # windows batched together: dynamic batch
    assert np.allclose(onnx_pred["scores"], torch_pred["scores"], atol=1e-5)
    assert [label for label, _, _ in onnx_pred["top"]] == [label for label, _, _ in torch_pred["top"]]


def test_onnx_classifier_and_check(exported, tmp_path):
    run, _, _ = exported
    path = run / "model.onnx"
    model = load_run_for_inference(run)[0]
    onnx = OnnxClassifier(path)
    assert (onnx.geometry.frames, onnx.geometry.mel_bins, onnx.num_classes) == (128, 128, 8)
    for batch in (1, 3):
        x = torch.randn(batch, 128, 128, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            assert torch.allclose(onnx(x), model(x), atol=1e-5)
    x = torch.randn(2, 128, 128)
    assert check_onnx(model, path, x).ok
    with torch.no_grad():
        model.head.fc.bias.add_(0.1)  # a model that is no longer the exported one fails the check
    clip = tmp_path / "noise.wav"
    sf.write(clip, np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32), 16000)
    spec = load_run_for_inference(run)[1]
    assert check_features(run, spec, [str(clip)], 4).shape == (1, 128, 128)  # --audio: a short file, padded
    assert check_features(run, spec, None, 3).shape == (3, 128, 128)  # the run's validation clips
    check = check_onnx(model, path, x)
    assert not check.ok and check.max_abs_diff == pytest.approx(0.1, abs=1e-4) and "MISMATCH" in check.summary()


def test_export_prints_no_third_party_noise(exported):
    """torch's exporter warns about torchvision operators (no dependency here) and its own
    deprecations, once per process: a user's export-onnx shows none of them."""
    _, _, logged = exported
    assert "torchvision" not in logged and "LeafSpec" not in logged and "Warning" not in logged, logged


def _tone(path):
    t = np.arange(int(16000 * 2.0)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    return path


def test_an_export_of_other_weights_than_predict_would_use_is_refused(tmp_path, capsys):
    """A new user's case: export-onnx of an unfinished run's checkpoint wrote RUN/model.onnx; once
    the run had finished, predict --onnx RUN/model.onnx scored with the checkpoint's weights."""
    from safetensors.torch import load_file, save_file

    from killing import kill_after_checkpoint

    run, clip = tmp_path / "unf", _tone(tmp_path / "clip.wav")
    # 12 steps of phase 0, each checkpointed: a kill there is not missed on a loaded machine
    args = ["train", "demo", "--out", str(run), "--quiet",
            *[a for s in [*TRAIN, "train.checkpoint_every=1", "c2f.phase_epochs=[6, 1]"] for a in ("--set", s)]]
    kill_after_checkpoint(args, run, phase=0)
    ckpt = run / "checkpoint.safetensors"
    # The export is named after its weights and says which weights it exported.
    assert main(["export-onnx", str(run), "--weights", "checkpoint.safetensors", "--quiet"]) == 0
    printed = capsys.readouterr().out
    # a loaded machine may let the kill land in a later epoch of phase 0: read where it stopped
    pr = load_checkpoint(ckpt)["progress"]
    assert pr["model_phase"] == 0 and pr["epoch"] >= 1
    position = f"phase 1, epoch {pr['epoch']}, step {pr['step']}"
    assert f"exported {ckpt} (ast, {position})" in printed and f"to {run / 'checkpoint.onnx'} (" in printed
    assert (run / "checkpoint.onnx").is_file() and not (run / "model.onnx").exists()
    onnx = OnnxClassifier(run / "checkpoint.onnx")  # the file says where it came from
    assert (onnx.weights, onnx.weights_sha256) == ("checkpoint.safetensors", hashlib.sha256(ckpt.read_bytes()).hexdigest())
    assert main(["predict", str(run), str(clip), "--weights", "checkpoint.safetensors", "--onnx",
                 str(run / "checkpoint.onnx"), "--quiet"]) == 0
    # The user's file: the checkpoint's export under the finished model's name; then the run finishes.
    assert main(["export-onnx", str(run), "--weights", "checkpoint.safetensors", "--out", str(run / "model.onnx"),
                 "--quiet"]) == 0
    assert main(args) == 0 and not ckpt.exists()
    capsys.readouterr()
    assert main(["predict", str(run), str(clip), "--onnx", str(run / "model.onnx"), "--quiet"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and captured.out == "", err
    assert (f"{run / 'model.onnx'} was exported from checkpoint.safetensors (sha256 {onnx.weights_sha256[:12]}), "
            f"not from {run / 'model.safetensors'} (sha256 ") in err
    assert f"export it again (coarse2fine export-onnx {run}: writes {run / 'model.onnx'})" in err
    # Exported again from the final weights: accepted, and the same scores as PyTorch.
    assert main(["export-onnx", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), str(clip), "--json", "--device", "cpu", "--quiet"]) == 0
    (torch_pred,) = json.loads(capsys.readouterr().out)
    assert main(["predict", str(run), str(clip), "--json", "--onnx", str(run / "model.onnx"), "--quiet"]) == 0
    (onnx_pred,) = json.loads(capsys.readouterr().out)
    assert np.allclose(onnx_pred["scores"], torch_pred["scores"], atol=1e-5)
    # From Python: other weights are refused, naming the file the export came from when it is there,
    from coarse2fine.onnx_model import check_source

    weights = load_file(run / "model.safetensors")
    weights["head.fc.bias"] = weights["head.fc.bias"] + 0.1
    save_file(weights, run / "model_wa.safetensors")
    with pytest.raises(ValueError, match=f"was exported from model.safetensors .* not from {run / 'model_wa.safetensors'}"
                                         r".*--weights model_wa.safetensors: writes .*model_wa.onnx\), or give "
                                         r"--weights model.safetensors, the weights it came from$"):
        check_source(OnnxClassifier(run / "model.onnx"), run / "model_wa.safetensors")
    # and so is a weights file rewritten since the export (the same name, another content).
    save_file(weights, run / "model.safetensors")
    with pytest.raises(ValueError, match=r"was exported from an earlier .*model\.safetensors \(sha256 "):
        check_source(OnnxClassifier(run / "model.onnx"), run / "model.safetensors")


def test_another_runs_export_is_refused_naming_the_run_it_came_from(exported, tmp_path, capsys):
    """A new user's case: `predict runs/baseline x.wav --onnx runs/fshift_41/model.onnx` said the export came
    "from an earlier runs/baseline/model.safetensors", as if the baseline's weights had changed."""
    import shutil

    from safetensors.torch import load_file, save_file

    run, _, _ = exported
    other = tmp_path / "other"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("*.onnx", ".coarse2fine.lock"))
    weights = load_file(other / "model.safetensors")
    weights["head.fc.bias"] = weights["head.fc.bias"] - 0.1
    save_file(weights, other / "model.safetensors")
    assert main(["predict", str(other), str(_tone(tmp_path / "clip.wav")), "--onnx", str(run / "model.onnx"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (f"{run / 'model.onnx'} was exported from other weights than {other / 'model.safetensors'}, the weights "
            "predict uses here: from a model.safetensors with sha256 ") in err
    assert f"(the export is {run / 'model.safetensors'}'s: predict with {run}): export it again" in err
    assert "an earlier" not in err


def test_an_export_that_records_no_weights_is_used_with_a_warning(exported, tmp_path, capsys, caplog):
    import onnx

    run, _, _ = exported
    proto = onnx.load(str(run / "model.onnx"))
    kept = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith("coarse2fine.weights")]
    assert len(kept) == len(proto.metadata_props) - 2  # the export recorded the weights' name and digest
    del proto.metadata_props[:]
    for key, value in kept:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(tmp_path / "old.onnx"))  # as exported before the weights were recorded
    assert OnnxClassifier(tmp_path / "old.onnx").weights_sha256 is None
    with caplog.at_level("WARNING", logger="coarse2fine.onnx_model"):
        assert main(["predict", str(run), str(_tone(tmp_path / "clip.wav")), "--onnx", str(tmp_path / "old.onnx"),
                     "--quiet"]) == 0
    assert f"{tmp_path / 'old.onnx'} records no weights file it was exported from" in caplog.text
    assert "cannot check that it is the model of" in caplog.text and "clip.wav" in capsys.readouterr().out


def test_a_hugging_face_folder_with_an_export_is_scored_with_a_warning(exported, tmp_path, capsys, caplog):
    run, _, _ = exported
    assert main(["export-hf", str(run), "--out", str(tmp_path / "hf"), "--quiet"]) == 0
    with caplog.at_level("WARNING", logger="coarse2fine"):
        assert main(["predict", str(tmp_path / "hf"), str(_tone(tmp_path / "clip.wav")), "--onnx",
                     str(run / "model.onnx"), "--quiet"]) == 0
    assert "whose weights cannot be checked against a Hugging Face folder's" in caplog.text
    assert "clip.wav" in capsys.readouterr().out
