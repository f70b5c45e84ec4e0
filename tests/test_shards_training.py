"""Training on packed shards: a run killed mid-phase resumes bit-identical to an uninterrupted
one across feature-shard and waveform phases, and two torchrun processes read every clip once
per epoch, each its share of every global batch."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from coarse2fine.cli import main
from coarse2fine.training.checkpoint import load_checkpoint
from coarse2fine.training.sampling import epoch_batches, shard

HELPERS = Path(__file__).parent / "helpers"
# 4-2-1 on a pack of 4-1's features: R=4 and R=1 read feature shards, R=2 waveforms (features on the device);
# balanced sampling uses the pack's weights; mixup and SpecAugment draw from the checkpointed generator;
# one loader worker reads the shards in its own process.
RESUME = ["c2f.schedule=4-2-1", "c2f.phase_epochs=[1, 1, 1]", "train.checkpoint_every=1", "augment.balanced_sampling=true",
          "augment.mixup=0.5", "augment.freqm=16", "augment.timem=16", "data.num_workers=1", "train.optim.warmup_steps=2"]


def _args(config, out, *extra):
    return ["train", str(config), "--out", str(out), "--quiet", *[a for s in RESUME for a in ("--set", s)], *extra]


def test_killed_shard_run_resumes_to_identical_weights(packed, tmp_path):
    reference = tmp_path / "reference"
    assert main(_args(packed.config, reference)) == 0
    log = json.loads((reference / "log.json").read_text())
    assert log["inputs"] == ["features", "waveforms", "features"] and [r["R"] for r in log["records"]] == [4, 2, 1]

    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "coarse2fine.cli", *_args(packed.config, out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt, deadline, state = out / "checkpoint.safetensors", time.time() + 120, None
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                state = load_checkpoint(ckpt)["progress"]
            except ValueError:
                state = None
            if state and (state["phase"], state["step"] or 99) >= (1, 1):  # inside the waveform phase
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"training was not killed mid-run: {proc.stderr.read().decode()[-2000:]}"
    assert main(_args(packed.config, out, "--resume")) == 0
    ours, ref = load_file(out / "model.safetensors"), load_file(reference / "model.safetensors")
    assert ours.keys() == ref.keys()
    for k in ref:
        assert torch.equal(ours[k], ref[k]), f"{k} differs after resuming from {state}"
    a, b = (json.loads((p / "log.json").read_text())["records"] for p in (out, reference))
    assert [(r["epoch"], r["train_loss"], r["acc"]) for r in a] == [(r["epoch"], r["train_loss"], r["acc"]) for r in b]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_torchrun_processes_read_every_clip_once_per_epoch(packed, tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HELPERS / "shard_reads.py"), str(packed.config), str(out), "train.device=cpu", "c2f.schedule=2-1",
           "c2f.phase_epochs=[1, 1]", "data.num_workers=0"]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reads = [[int(x) for x in (out / f"reads-{rank}.txt").read_text().split()] for rank in (0, 1)]
    clips = packed.audio.train_clips
    share = clips // 2
    assert [len(r) for r in reads] == [2 * share, 2 * share]
    for epoch in (1, 2):
        batches = epoch_batches(clips, 8, 0, epoch)
        seen = []
        for rank in (0, 1):
            mine = reads[rank][(epoch - 1) * share: epoch * share]
            assert mine == [i for b in batches for i in shard(b, 2, rank)]
            seen += mine
        assert sorted(seen) == list(range(clips))  # every clip once per epoch, across the two processes
    log = json.loads((out / "run" / "log.json").read_text())
    assert log["done"] and [r["R"] for r in log["records"]] == [2, 1]


def test_a_damaged_shard_of_the_fine_phase_stops_the_run_before_the_coarse_phase_trains(packed, tmp_path, capsys):
    """A new user's case: a truncated shard of the R=1 features was found only once the coarse phase had
    trained (hours, at AudioSet scale)."""
    import shutil

    copy = tmp_path / "pack"
    shutil.copytree(packed.root, copy)
    fine = sorted((copy / "train" / "r1").glob("*.tar"))[-1]
    fine.write_bytes(fine.read_bytes()[:1000])  # truncated
    out = tmp_path / "run"
    args = ["train", str(packed.config), "--out", str(out), "--quiet", "--set", f"data.train={copy / 'train'}",
            "--set", f"data.val={copy / 'val'}", "--set", "c2f.phase_epochs=[1, 1]"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{fine}: 1000 bytes, its descriptor says " in err and "run the same `coarse2fine pack` again" in err
    assert not (out / "log.json").exists()  # no epoch trained
