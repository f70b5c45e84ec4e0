"""ONNX: export-onnx writes the final model (dynamic batch), checks it against PyTorch, and predict --onnx uses it."""

from __future__ import annotations

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
