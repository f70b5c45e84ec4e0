"""Checkpoints: a training process killed at any step of any phase resumes to identical weights."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from coarse2fine.cli import main
from coarse2fine.config import load_config
from coarse2fine.config.files import LOADING_KEYS, RUNTIME_KEYS
from coarse2fine.report import comparable
from coarse2fine.training.checkpoint import load_checkpoint
from coarse2fine.training.distributed import Dist
from coarse2fine.training.folder import RunFolderError
from coarse2fine.training.loop import restore_rng, train_run
from coarse2fine.training.progress import RngState

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


# ----------------------------------------------------------------------------- what is the same run

# Settings that say how a run is executed, not what it learns (the device "auto" resolves to here).
RUNTIME = [
    *(["train.tensorboard=true"] if importlib.util.find_spec("tensorboard") else []),
    "train.log_every=3", "train.checkpoint_every=2", "train.peak_tflops=1.0",
    f"train.device={'cuda' if torch.cuda.is_available() else 'cpu'}",
    "data.num_workers=1", "data.preload=false", "data.memory_limit_gb=4",
]


def _sets(values):
    return [a for s in values for a in ("--set", s)]


def _no_data():
    raise AssertionError("the data was read")


def _killed_write(target):
    """A process SIGKILLed inside an atomic write of ``target``: its temporary file stays."""
    code = textwrap.dedent(f"""
        import os, signal
        from coarse2fine import atomic
        with atomic.atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"x" * 100_000)
            os.kill(os.getpid(), signal.SIGKILL)
        """)
    assert subprocess.run([sys.executable, "-c", code]).returncode == -signal.SIGKILL
    (left,) = target.parent.glob(f".{target.name}.*.tmp")
    return left


def test_runtime_keys_are_config_keys_that_do_not_change_what_a_run_learns():
    values = load_config("demo").to_dict()
    for key in RUNTIME_KEYS:
        node = values
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{key} is no config key"
            node = node[part]
    # One definition of the loading keys: a run's identity and compare's "same data" share it.
    assert LOADING_KEYS <= RUNTIME_KEYS and LOADING_KEYS <= comparable.LOADING_KEYS
    # These change the numbers the model sees or which clips it trains on.
    assert not RUNTIME_KEYS & {"train.amp", "train.grad_accum", "data.in_memory_dtype", "data.on_error", "train.seed",
                               "train.epoch_steps", "train.optim.lr", "model.preset", "augment.mixup"}


def test_an_interrupted_run_continues_with_other_runtime_settings_to_the_same_weights(references, tmp_path, capsys,
                                                                                        caplog):
    reference = references("ast")
    _kill_at(tmp_path, 1, 1)
    ckpt = (tmp_path / "checkpoint.safetensors").read_bytes()
    # A change to what is learned is refused, naming it, before any data is read; the checkpoint stays.
    for change, named in (("train.optim.lr=0.0005", "train.optim.lr: 0.001 vs 0.0005"),
                          ("model.preset=tiny", "model.preset: 'micro' vs 'tiny'")):
        assert main(_args(tmp_path, "ast", *_sets([change, *RUNTIME]))) == 2
        assert f"holds an unfinished run of another config ({named})" in capsys.readouterr().err
        with pytest.raises(RunFolderError, match=f"unfinished run of another config \\({named}\\)"):
            train_run(load_config("demo", [*SETTINGS, change]), _no_data, tmp_path, progress=False)
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == ckpt
    # Runtime settings changed: the run continues (a write the kill cut short leaves nothing behind)
    # to the weights of the uninterrupted run, and its files hold the settings now in use.
    stale = _killed_write(tmp_path / "checkpoint.safetensors")
    with caplog.at_level("INFO", logger="coarse2fine"):
        assert main(_args(tmp_path, "ast", *_sets(RUNTIME))) == 0
    assert "resumed from its checkpoint and finished" in capsys.readouterr().out
    assert not stale.exists() and f"removed {stale.name} (0.1 MB)" in caplog.text
    assert "continuing with " in caplog.text and "train.log_every: 3 (the run so far used 50)" in caplog.text
    assert "data.memory_limit_gb: 4.0 (the run so far used 2.0)" in caplog.text
    assert "which is what mixup mixes" in caplog.text  # SETTINGS mix up: what the source serves matters
    for name in ("model.safetensors", "model_wa.safetensors"):
        ours, ref = load_file(tmp_path / name), load_file(reference / name)
        assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref), name
    a, b = (json.loads((d / "log.json").read_text()) for d in (tmp_path, reference))
    assert [(r["epoch"], r["acc"], r["train_flops"]) for r in a["records"]] == [
        (r["epoch"], r["acc"], r["train_flops"]) for r in b["records"]]
    for stored in (a["config"], yaml.safe_load((tmp_path / "config.yaml").read_text())):
        assert (stored["train"]["log_every"], stored["train"]["checkpoint_every"], stored["data"]["num_workers"]) == (3, 2, 1)
    # The finished run is this config's whatever its runtime settings: reused, no data read.
    caplog.clear()
    with caplog.at_level("INFO", logger="coarse2fine"):
        result = train_run(load_config("demo", [*SETTINGS, "train.log_every=9"]), _no_data, tmp_path, progress=False)
    assert result.status == "finished" and len(result.records) == len(b["records"])
    assert "the finished run of this config there ran with " in caplog.text
    assert "train.checkpoint_every: 2 (this config: 1)" in caplog.text
    assert "train.log_every: 3 (this config: 9)" in caplog.text
    with pytest.raises(RunFolderError, match="finished run of another config \\(train.optim.lr"):
        train_run(load_config("demo", [*SETTINGS, "train.optim.lr=0.0005"]), _no_data, tmp_path, progress=False)


def test_experiment_reuses_and_reports_finished_runs_whatever_their_runtime_settings(tmp_path, capsys):
    tiny = ["data.train_clips=32", "data.val_clips=16", "train.batch_size=8", "train.epochs=2", "model.preset=micro",
            "train.threads=1", "train.optim.warmup_steps=6"]
    base = ["experiment", "demo", "--schedules", "4-1", "--methods", "fshift", "--out", str(tmp_path), "--quiet",
            *_sets(tiny)]
    assert main(base) == 0
    trained = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/model.safetensors")}
    assert len(trained) == 2
    capsys.readouterr()
    runtime = _sets(["train.log_every=7", "data.num_workers=1", "train.device=cpu", "train.threads=2"])
    assert main([*base, *runtime]) == 0
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/model.safetensors")} == trained  # nothing trained
    assert main([*base, "--report-only", *runtime]) == 0
    assert "1 of 1 seed(s) finished for every setting" in capsys.readouterr().out
    assert main([*base, "--report-only", "--set", "train.optim.lr=0.0005"]) == 2
    assert "holds a finished run of another config (train.optim.lr" in capsys.readouterr().err


def test_a_checkpoint_of_another_device_type_resumes_with_new_augmentation_draws(caplog):
    # A CUDA generator's state (16 bytes) does not fit a CPU generator (nor the reverse): the
    # augmentation generator is seeded from it instead, the same way every time, with a warning.
    saved = {"torch": torch.get_rng_state(), "aug": torch.arange(16, dtype=torch.uint8)}
    states = []
    with caplog.at_level("WARNING", logger="coarse2fine"):
        for _ in range(2):
            rng = RngState(torch.Generator().manual_seed(1), torch.device("cpu"))
            restore_rng(rng, [saved], Dist())
            states.append(rng.aug.get_state())
    assert torch.equal(states[0], states[1]) and not torch.equal(states[0], torch.Generator().manual_seed(1).get_state())
    assert "written on another kind of device than cpu" in caplog.text


def test_a_changed_runtime_setting_is_logged_with_what_its_value_means():
    from coarse2fine.training.folder import _shown

    # "train.threads: 1 (the run so far used 0)" did not say that 0 is torch's default (a new user's case)
    assert [_shown("train.threads", v) for v in (0, 2)] == ["0 (torch's default)", "2"]
    assert _shown("data.num_workers", "auto") == "'auto'" and _shown("train.log_every", 0) == "0"


def test_a_run_that_stopped_with_no_checkpoint_is_not_overwritten_by_another_config(tmp_path, caplog):
    # A run stopped on a non-finite loss before its first checkpoint; a train of another config into the
    # same folder overwrote its log without a word (a new user's case).
    from coarse2fine.training.folder import claim_folder

    ours = load_config("demo").to_dict()
    (tmp_path / "log.json").write_text(json.dumps({"config": ours, "done": False, "records": [],
                                                   "stopped": "non-finite loss at epoch 1, step 3"}))
    other = load_config("demo", ["train.optim.lr=0.5"]).to_dict()
    with pytest.raises(RunFolderError, match=r"holds the log of a run of another config that stopped with no "
                                             r"checkpoint \(train.optim.lr: 0.001 vs 0.5\); use another --out, or --fresh"):
        claim_folder(other, tmp_path, resume=True, fresh=False)
    with caplog.at_level("INFO", logger="coarse2fine"):
        assert claim_folder(ours, tmp_path, resume=True, fresh=False) is None  # the same config starts again
    assert "stopped with no checkpoint to continue from; it starts again" in caplog.text
    assert claim_folder(other, tmp_path, resume=True, fresh=True) is None and not (tmp_path / "log.json").exists()
