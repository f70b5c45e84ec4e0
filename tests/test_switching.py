"""Automatic phase switching: plateau and budget rules, and resume across an automatic switch."""

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from coarse2fine.cli import main
from coarse2fine.config import load_config
from coarse2fine.training.switching import budget_shares, leave_phase
from killing import kill_after_checkpoint


def rec(phase, acc, loss=1.0, flops=10, time_s=1.0):
    return {"phase": phase, "acc": acc, "train_loss": loss, "train_flops": flops, "train_time": time_s}


def cum(records):
    total_f = total_t = 0
    for i, r in enumerate(records, start=1):
        total_f += r["train_flops"]
        total_t += r["train_time"]
        r["epoch"], r["cum_flops"], r["cum_time"] = i, total_f, total_t
    return records


def cfg_with(**c2f):
    base = dict(switch="plateau", final_stop="epochs", patience=2, min_delta=0.0, loss_window=0, loss_tolerance=0.01,
                min_phase_epochs=1, budget_flops=0.0, budget_hours=0.0, budget_shares=None, initial_fraction=None)
    return SimpleNamespace(c2f=SimpleNamespace(**{**base, **c2f}), train=SimpleNamespace(metric="acc"))


def test_plateau_leaves_after_patience_evaluations_without_improvement():
    cfg = cfg_with(patience=2)
    recs = cum([rec(0, 0.1), rec(0, 0.3), rec(0, 0.3)])
    assert leave_phase(cfg, [10, 10], recs, higher=True) is None
    recs = cum([*recs, rec(0, 0.29)])
    assert leave_phase(cfg, [10, 10], recs, higher=True).startswith("plateau: acc not improved")
    # min_delta: a gain of 0.005 does not count when 0.01 is asked for.
    cfg = cfg_with(patience=1, min_delta=0.01)
    assert leave_phase(cfg, [10, 10], cum([rec(0, 0.3), rec(0, 0.305)]), higher=True) is not None
    # Lower is better (a loss-like metric): a falling value is an improvement.
    cfg.train = SimpleNamespace(metric="recon_mse")
    recs = cum([{**rec(0, 0), "recon_mse": v} for v in (1.0, 0.8)])
    assert leave_phase(cfg, [10, 10], recs, higher=False) is None


def test_plateau_on_the_training_loss_and_the_phase_cap():
    cfg = cfg_with(patience=99, loss_window=2, loss_tolerance=0.05)
    recs = cum([rec(0, a, loss) for a, loss in ((0.1, 2.0), (0.2, 1.5), (0.3, 1.45), (0.4, 1.44))])
    assert "training loss fell" in leave_phase(cfg, [10, 10], recs, higher=True)
    assert leave_phase(cfg_with(patience=99), [2, 10], cum([rec(0, 0.1), rec(0, 0.2)]), True) == "epochs: 2 of 2"


def test_budget_shares_and_the_final_stop():
    assert budget_shares(cfg_with().c2f, 2) == pytest.approx([0.25, 1.0])
    assert budget_shares(cfg_with(budget_shares=[0.2, 0.3, 0.5]).c2f, 3) == pytest.approx([0.2, 0.5, 1.0])
    cfg = cfg_with(switch="budget", final_stop="budget", budget_flops=100)
    recs = cum([rec(0, 0.1, flops=10), rec(0, 0.2, flops=10)])
    assert leave_phase(cfg, [50, 50], recs, True) is None  # 20 of 25 spent
    recs = cum([*recs, rec(0, 0.2, flops=10)])
    assert leave_phase(cfg, [50, 50], recs, True).startswith("budget: 30 FLOPs spent of 25")
    recs = cum([*recs, *(rec(1, 0.5, flops=30) for _ in range(2))])
    assert leave_phase(cfg, [50, 50], recs, True) is None  # 90 of 100
    recs = cum([*recs, rec(1, 0.5, flops=30)])
    assert leave_phase(cfg, [50, 50], recs, True).startswith("budget: 120 FLOPs spent of 100")


def test_switch_settings_are_checked_at_load():
    with pytest.raises(ValueError, match="c2f.switch: 'auto' is not one of fixed, plateau, budget"):
        load_config("demo", ["c2f.switch=auto"])
    with pytest.raises(ValueError, match="needs one of budget_flops or budget_hours"):
        load_config("demo", ["c2f.switch=budget"])
    with pytest.raises(ValueError, match="budget_shares"):
        load_config("demo", ["c2f.switch=budget", "c2f.budget_flops=1e12", "c2f.budget_shares=[0.5, 0.2]"])


SETTINGS = ["data.train_clips=32", "data.val_clips=16", "train.batch_size=8", "train.threads=1", "train.epochs=4",
            "train.optim.warmup_steps=2", "c2f.switch=budget", "c2f.final_stop=budget", "c2f.budget_flops=8e9",
            "augment.mixup=0.5", "augment.timem=16", "train.checkpoint_every=1"]


def _args(out, *extra):
    return ["train", "demo", "--out", str(out), "--quiet", *[a for s in SETTINGS for a in ("--set", s)], *extra]


def test_budget_run_switches_logs_why_and_resumes_exactly_across_the_switch(tmp_path):
    ref = tmp_path / "ref"
    assert main(_args(ref)) == 0
    log = json.loads((ref / "log.json").read_text())
    phases = [r["phase"] for r in log["records"]]
    # Micro AST, 32 clips: 0.75 GFLOPs an epoch at R = 4, 3.1 at R = 1. The coarse phase leaves
    # once 25 % of 8 GFLOPs is spent (after 3 epochs), the run stops once all of it is.
    assert phases == [0, 0, 0, 1, 1] and len(log["switches"]) == 2
    assert log["switches"][0]["reason"].startswith("budget:") and log["switches"][1]["phase"] == 1  # counted from 0, as in the records
    assert log["records"][2]["cum_flops"] >= 2e9 > log["records"][1]["cum_flops"] and log["records"][-1]["cum_flops"] >= 8e9
    # Kill right after the switch (a checkpoint in phase 2) and resume: identical weights and log.
    out = tmp_path / "killed"
    kill_after_checkpoint(_args(out), out, phase=1)
    assert main(_args(out, "--resume")) == 0
    a, b = load_file(out / "model.safetensors"), load_file(ref / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in b)
    again = json.loads((out / "log.json").read_text())
    assert again["switches"] == log["switches"]
    assert [(r["epoch"], r["acc"], r["train_loss"]) for r in again["records"]] == \
        [(r["epoch"], r["acc"], r["train_loss"]) for r in log["records"]]


def test_a_budget_below_one_epoch_of_each_phase_is_warned_of_before_training(tmp_path, caplog, capsys):
    # 5e9 FLOPs on a config whose phases cost 7.75e9 for one epoch each: spent 7x over, without a word
    sets = ["c2f.switch=budget", "c2f.final_stop=budget", "c2f.budget_flops=5e9", "train.epochs=2",
            "data.train_clips=64", "data.val_clips=16", "train.batch_size=16", "train.threads=1"]
    args = [a for s in sets for a in ("--set", s)]
    said = ("c2f.budget_flops 5e+09: every phase trains at least one epoch, and one epoch of each (phase 1 (R=4) "
            "1.5e+09, phase 2 (R=1) 6.25e+09 FLOPs for 64 clips) is 7.75e+09 FLOPs, 1.6x the budget")
    assert main(["check", "demo", *args]) == 0
    assert f"warning: {said}" in capsys.readouterr().out
    with caplog.at_level("WARNING", logger="coarse2fine"):
        assert main(["train", "demo", "--out", str(tmp_path), "--quiet", *args]) == 0
    assert said in caplog.text
    spent = json.loads((tmp_path / "log.json").read_text())["records"][-1]["cum_flops"]
    assert spent == pytest.approx(7.75e9, rel=1e-3)  # one epoch each, as the warning said
    caplog.clear()
    with caplog.at_level("WARNING", logger="coarse2fine"):
        assert main(["train", "demo", "--out", str(tmp_path / "enough"), "--quiet", *args,
                     "--set", "c2f.budget_flops=2e10"]) == 0
    assert "every phase trains at least one epoch" not in caplog.text
