"""Checkpoints: a training process killed at any step of any phase resumes to identical weights."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from coarse2fine.checkpoint import load_checkpoint
from coarse2fine.cli import main

SETTINGS = [
    "data.train_clips=32", "data.val_clips=16", "train.batch_size=8", "train.threads=1", "train.epochs=2",
    "train.optim.warmup_steps=3", "c2f.schedule=4-1", "c2f.method=patch", "c2f.phase_epochs=[2, 2]",
    "augment.freqm=16", "augment.timem=16", "augment.mixup=0.5", "augment.wa_start=1", "augment.wa_end=2",
    "train.checkpoint_every=1",
]


def _args(out, *extra):
    return ["train", "demo", "--out", str(out), "--quiet", *[a for s in SETTINGS for a in ("--set", s)], *extra]


def _start(out):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "coarse2fine.cli", *_args(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_at(out, phase, step):
    """Run training in a subprocess and SIGKILL it once a checkpoint at (phase, step) or later exists."""
    proc = _start(out)
    ckpt = out / "checkpoint.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                st = load_checkpoint(ckpt)["progress"]
            except ValueError:
                st = None
            if st and (st["phase"], st["step"] or 99) >= (phase, step):
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"training was not killed mid-run: {proc.stderr.read().decode()[-2000:]}"
    return load_checkpoint(ckpt)["progress"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = _start(out)
    assert proc.wait() == 0, proc.stderr.read().decode()[-2000:]
    return out


@pytest.mark.parametrize("phase,step", [(0, 2), (1, 1), (1, 3)])
def test_killed_run_resumes_to_identical_weights(reference, tmp_path, phase, step):
    state = _kill_at(tmp_path, phase, step)
    assert not (tmp_path / "model.safetensors").exists()
    assert main(_args(tmp_path, "--resume")) == 0
    for name in ("model.safetensors", "model_wa.safetensors"):
        ours, ref = load_file(tmp_path / name), load_file(reference / name)
        assert ours.keys() == ref.keys()
        for k in ref:
            assert torch.equal(ours[k], ref[k]), f"{name}:{k} differs after resuming from {state['phase'], state['step']}"
    a = json.loads((tmp_path / "log.json").read_text())["records"]
    b = json.loads((reference / "log.json").read_text())["records"]
    assert [(r["epoch"], r["train_loss"], r["acc"], r["train_flops"]) for r in a] == [(r["epoch"], r["train_loss"], r["acc"], r["train_flops"]) for r in b]
    assert not (tmp_path / "checkpoint.safetensors").exists()


def test_checkpoint_never_unpickles(tmp_path):
    bad = tmp_path / "checkpoint.safetensors"
    bad.write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(bad)


def test_nan_loss_stops_with_step_and_phase_named(tmp_path, capsys):
    # A learning rate of 1e30 blows the weights up within a few steps.
    rc = main(_args(tmp_path, "--set", "train.optim.lr=1e30", "--set", "train.optim.warmup_steps=0"))
    err = capsys.readouterr().err
    assert rc == 3
    assert "loss is nan" in err or "loss is inf" in err
    assert "phase 1, R=4" in err and "step" in err
    log = json.loads((tmp_path / "log.json").read_text())
    assert "non-finite loss" in log["stopped"] and not log["done"]
