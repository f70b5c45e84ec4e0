"""torchrun DDP on CPU (gloo over loopback): 2 processes match 1 process with the same global batch."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

SETTINGS = [
    "data.train_clips=32", "data.val_clips=16", "train.batch_size=8", "train.threads=1", "train.epochs=2",
    "train.optim.warmup_steps=2", "c2f.schedule=2-1", "c2f.method=fshift", "c2f.phase_epochs=[1, 2]", "train.device=cpu",
]


def _run(launcher, out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [*launcher, "-m", "coarse2fine.cli", "train", "demo", "--out", str(out), "--quiet",
           *[a for s in SETTINGS + list(extra) for a in ("--set", s)]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "log.json").read_text())["records"]


@pytest.mark.skipif(shutil.which("torchrun") is None and not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_processes_match_one(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517"]
    one = _run([sys.executable], tmp_path / "one")
    two = _run(torchrun, tmp_path / "two")
    accum = _run([sys.executable], tmp_path / "accum", "train.grad_accum=2")
    for other in (two, accum):
        assert len(other) == len(one) == 3
        for a, b in zip(one, other):
            assert a["train_flops"] == b["train_flops"]
            assert a["acc"] == pytest.approx(b["acc"], abs=1e-9)
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
            assert a["mAP"] == pytest.approx(b["mAP"], rel=1e-4)
    w1, w2 = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4


@pytest.mark.skipif(shutil.which("torchrun") is None and not torch.distributed.is_available(), reason="no torch.distributed")
def test_htsat_trains_under_torchrun(tmp_path):
    # HTS-AT's BatchNorm keeps per-process statistics on CPU (SyncBatchNorm needs GPUs), so this
    # checks that the family trains and evaluates across processes rather than exact parity.
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29518"]
    recs = _run(torchrun, tmp_path / "htsat", "model.arch=htsat", "model.preset=micro", "model.overrides.num_chunks=1")
    assert [(r["R"], r["tokens"]) for r in recs] == [(2, 512), (1, 1024), (1, 1024)]
    assert all(0.0 <= r["acc"] <= 1.0 and r["val_loss"] == r["val_loss"] for r in recs)
    weights = load_file(tmp_path / "htsat" / "model.safetensors")
    assert "bn0.running_mean" in weights and "layers.0.blocks.0.attn.relative_position_bias_table" in weights


@pytest.mark.skipif(shutil.which("torchrun") is None and not torch.distributed.is_available(), reason="no torch.distributed")
def test_sigterm_to_torchrun_stops_both_processes_at_one_step_and_the_run_continues(tmp_path):
    # torchrun passes SIGTERM on to its processes; they agree at the next checkpoint step, the
    # main one writes the checkpoint there, both exit; the same command then finishes the run.
    from coarse2fine.training.checkpoint import load_checkpoint

    out, env = tmp_path / "run", {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29519", "-m",
           "coarse2fine.cli", "train", "demo", "--out", str(out), "--quiet",
           *[a for s in [*SETTINGS, "data.train_clips=96", "train.checkpoint_every=1"] for a in ("--set", s)]]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpt, deadline = out / "checkpoint.safetensors", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            st = load_checkpoint(ckpt)["progress"] if ckpt.exists() else None
        except ValueError:
            st = None
        if st and st["step"] >= 2:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.002)
    proc.wait(timeout=120)
    err = proc.stderr.read()
    assert err.count("stopped on SIGTERM at epoch 1 (phase 1), step") == 2, err[-3000:]  # each process, one step
    state = load_checkpoint(ckpt)["progress"]
    assert (state["phase"], state["epoch"]) == (0, 1) and f"step {state['step']};" in err
    assert not (out / "model.safetensors").exists()
    finished = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert json.loads((out / "log.json").read_text())["done"]
