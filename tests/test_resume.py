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

from coarse2fine.cli import main
from coarse2fine.training.checkpoint import load_checkpoint

SETTINGS = [
    "data.train_clips=32", "data.val_clips=16", "train.batch_size=8", "train.threads=1", "train.epochs=2",
    "train.optim.warmup_steps=3", "c2f.schedule=4-1", "c2f.method=patch", "c2f.phase_epochs=[2, 2]",
    "augment.freqm=16", "augment.timem=16", "augment.mixup=0.5", "augment.wa_start=1", "augment.wa_end=2",
    "train.checkpoint_every=1",
]
# HTS-AT with stochastic depth (torch's global RNG), BatchNorm statistics and gradient clipping.
HTSAT = [
    *SETTINGS[:7], "c2f.method=avgpool", "c2f.phase_epochs=[1, 2]", "model.arch=htsat", "model.preset=micro",
    "model.overrides.num_chunks=1", "model.drop_path_rate=0.2", "train.optim.clip_grad_norm=1.0",
    "augment.mixup=0.5", "augment.timem=16", "train.checkpoint_every=1",
]
# SSAST pretraining: masks drawn from the augmentation generator, two masked passes per step.
SSAST = [
    *SETTINGS[:7], "c2f.method=fshift", "c2f.phase_epochs=[1, 2]", "model.arch=ssast", "model.preset=micro",
    "train.objective=masked_patch", "train.metric=masked_acc", "pretrain.mask_patch=50", "train.checkpoint_every=1",
]
# Frame-based SSAST (128 x 2 patches, random masking).
SSAST_FRAME = [*SSAST, "model.patch_size=[128, 2]", "c2f.method=avgpool"]
ARCHS = {"ast": SETTINGS, "htsat": HTSAT, "ssast": SSAST, "ssast_frame": SSAST_FRAME}


def _args(out, arch="ast", *extra):
    return ["train", "demo", "--out", str(out), "--quiet", *[a for s in ARCHS[arch] for a in ("--set", s)], *extra]


def _start(out, arch="ast"):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "coarse2fine.cli", *_args(out, arch)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_at(out, phase, step, arch="ast"):
    """Run training in a subprocess and SIGKILL it once a checkpoint at (phase, step) or later exists."""
    proc = _start(out, arch)
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
def references(tmp_path_factory):
    """The uninterrupted run of each configuration, made once."""
    made = {}

    def get(arch):
        if arch not in made:
            out = tmp_path_factory.mktemp(f"uninterrupted_{arch}")
            proc = _start(out, arch)
            assert proc.wait() == 0, proc.stderr.read().decode()[-2000:]
            made[arch] = out
        return made[arch]

    return get


@pytest.mark.parametrize("arch,phase,step", [("ast", 0, 2), ("ast", 1, 1), ("ast", 1, 3), ("htsat", 0, 3), ("htsat", 1, 2), ("ssast", 0, 2), ("ssast", 1, 1), ("ssast_frame", 1, 2)])
def test_killed_run_resumes_to_identical_weights(references, tmp_path, arch, phase, step):
    reference = references(arch)
    state = _kill_at(tmp_path, phase, step, arch)
    assert not (tmp_path / "model.safetensors").exists()
    assert main(_args(tmp_path, arch, "--resume")) == 0
    names = ("model.safetensors", "model_wa.safetensors") if arch == "ast" else ("model.safetensors",)
    for name in names:
        ours, ref = load_file(tmp_path / name), load_file(reference / name)
        assert ours.keys() == ref.keys()
        for k in ref:
            assert torch.equal(ours[k], ref[k]), f"{name}:{k} differs after resuming from {state['phase'], state['step']}"
    a = json.loads((tmp_path / "log.json").read_text())["records"]
    b = json.loads((reference / "log.json").read_text())["records"]
    metric = "masked_acc" if arch.startswith("ssast") else "acc"
    assert [(r["epoch"], r["train_loss"], r[metric], r["train_flops"]) for r in a] == [(r["epoch"], r["train_loss"], r[metric], r["train_flops"]) for r in b]
    # The carried-over model's evaluation at the phase change survives the kill (checkpointed, or made again).
    entries = [[p["entry_metrics"] for p in json.loads((d / "log.json").read_text())["phases"]]
               for d in (tmp_path, reference)]
    assert entries[0] == entries[1] and entries[0][1] and not entries[0][0]
    assert not (tmp_path / "checkpoint.safetensors").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_run_after_its_step_with_a_checkpoint_there(tmp_path, sig):
    # 12 steps an epoch; the signal comes once step 2 of the first epoch is checkpointed. The run
    # ends the step it is in, checkpoints there with the epoch's time so far, exits 128 + signal,
    # and the same command finishes it to the weights of an uninterrupted run.
    longer = ("--set", "data.train_clips=96")
    reference = tmp_path / "reference"
    assert main(_args(reference, "ast", *longer)) == 0
    out, env = tmp_path / "run", {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "coarse2fine.cli", *_args(out, "ast", *longer)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt, deadline = out / "checkpoint.safetensors", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            st = load_checkpoint(ckpt)["progress"] if ckpt.exists() else None
        except ValueError:  # caught mid-write
            st = None
        if st and st["step"] >= 2:
            proc.send_signal(sig)
            break
        time.sleep(0.002)
    assert proc.wait(timeout=120) == 128 + sig
    err = proc.stderr.read().decode()
    state = load_checkpoint(ckpt)["progress"]
    assert (state["phase"], state["epoch"]) == (0, 1) and 2 <= state["step"] < 12, state
    assert f"stopped on {signal.Signals(sig).name} at epoch 1 (phase 1), step {state['step']}" in err
    assert "run the same command to continue" in err and not (out / "model.safetensors").exists()
    assert len(state["step_times"]) == state["step"] and state["epoch_time"] > 0  # the epoch's time so far is kept
    assert main(_args(out, "ast", *longer)) == 0
    ours, ref = load_file(out / "model.safetensors"), load_file(reference / "model.safetensors")
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref)
    records = json.loads((out / "log.json").read_text())["records"]
    assert records[0]["steps"] == 12 and len([d for d in records[0]["step_deciles"]]) == 9


def test_checkpoint_never_unpickles(tmp_path):
    bad = tmp_path / "checkpoint.safetensors"
    bad.write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(bad)


def test_nan_loss_stops_with_step_and_phase_named(tmp_path, capsys):
    # A learning rate of 1e30 blows the weights up within a few steps.
    rc = main(_args(tmp_path, "ast", "--set", "train.optim.lr=1e30", "--set", "train.optim.warmup_steps=0"))
    err = capsys.readouterr().err
    assert rc == 3
    assert "loss is nan" in err or "loss is inf" in err
    assert "phase 1, R=4" in err and "step" in err
    log = json.loads((tmp_path / "log.json").read_text())
    assert "non-finite loss" in log["stopped"] and not log["done"]
