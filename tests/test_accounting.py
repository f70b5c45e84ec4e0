"""Costs before training: every phase's tokens and FLOPs per clip, as the loop will count them."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from coarse2fine.cli import main
from coarse2fine.config import load_config
from coarse2fine.model import register_cpu_sdpa_flops
from coarse2fine.objectives import build_objective
from coarse2fine.report.accounting import baseline_costs, phase_costs, run_flops_per_clip

CASES = {
    "ast": ["c2f.method=patch"],
    "htsat": ["model.arch=htsat", "model.preset=micro", "model.overrides.num_chunks=1"],
    "ssast": ["model.arch=ssast", "train.objective=masked_patch", "train.metric=masked_acc", "pretrain.mask_patch=50"],
}


@pytest.mark.parametrize("arch", list(CASES))
def test_phase_costs_are_what_flop_counter_measures(arch):
    cfg = load_config("demo", [*CASES[arch], "c2f.schedule=4-2-1"])
    costs = phase_costs(cfg, 8)
    assert [c.R for c in costs] == [4, 2, 1] and [c.phase for c in costs] == [1, 2, 3]
    objective = build_objective(cfg.train.objective, cfg)
    measured = []
    for c in costs:
        torch.manual_seed(0)
        model = cfg.phase(c.phase - 1, 8).build_model()
        x = torch.randn(1, c.frames, c.mel_bins)
        register_cpu_sdpa_flops()
        with FlopCounterMode(display=False) as counter:  # exactly what one training step runs
            objective.training_loss(model, x, torch.eye(8)[:1], torch.Generator().manual_seed(0)).backward()
        assert c.train_flops_per_clip == counter.get_total_flops() and c.tokens == model.num_tokens
        measured.append(counter.get_total_flops())
    # The demo's 12 epochs under 4-2-1: the initial phases share 30 % of them (round(1.8) = 2 each),
    # the final phase keeps all 12; the baseline is 12 epochs at R = 1.
    assert [c.epochs for c in costs] == [2, 2, 12]
    assert run_flops_per_clip(costs) == 2 * measured[0] + 2 * measured[1] + 12 * measured[2]
    assert [(c.R, c.epochs) for c in baseline_costs(cfg, 8)] == [(1, 12)]


def test_flops_command_json_lists_every_phase(capsys):
    assert main(["flops", "htsat_esc50-cpu", "--json", "--quiet", "--schedule", "4-2-1", "--classes", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["arch"] == "htsat" and out["classes"] == 50
    assert [(p["R"], p["tokens"]) for p in out["phases"]] == [(4, 512), (2, 1024), (1, 2048)]
    ratio = out["phases"][0]["train_flops_per_clip"] / out["phases"][2]["train_flops_per_clip"]
    assert 0.23 < ratio < 0.26  # Swin's cost is close to linear in tokens
    # 25 epochs under 4-2-1: the initial phases share 30 % (round(3.75) = 4 each), the final phase 25.
    f4, f2, f1 = (p["train_flops_per_clip"] for p in out["phases"])
    assert [p["epochs"] for p in out["phases"]] == [4, 4, 25]
    assert out["run_flops_per_clip"] == 4 * f4 + 4 * f2 + 25 * f1 and out["baseline_flops_per_clip"] == 25 * f1


def test_flops_command_text(capsys):
    assert main(["flops", "demo", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "train GFLOPs/clip" in out and "vs R=1" in out and "0.240" in out and "train tokens" not in out


def test_flops_shows_the_tokens_patchout_leaves_to_training(capsys):
    # The tokens column said 256 where a patchout run trains on 132 (its GFLOPs counted the 132).
    sets = ["model.overrides.pos_embed=disentangled", "model.overrides.patchout_time=10", "model.overrides.patchout_freq=2"]
    assert main(["flops", "esc50", "--classes", "50", "--quiet", *[a for s in sets for a in ("--set", s)]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:7] == ["phase", "R", "epochs", "input", "tokens", "train", "tokens"]
    assert lines[3].split()[6:8] == ["64", "36"] and lines[4].split()[6:8] == ["256", "132"]  # (8 - 2) x (32 - 10)
    assert lines[5].startswith("train tokens: those a training step sees after patchout")
    assert main(["flops", "esc50", "--classes", "50", "--quiet", "--json", *[a for s in sets for a in ("--set", s)]]) == 0
    assert [p["train_tokens"] for p in json.loads(capsys.readouterr().out)["phases"]] == [36, 132]


def test_flops_without_the_data_says_how_to_do_without(capsys, tmp_path):
    missing = str(tmp_path / "no_esc50_here")
    assert main(["flops", "htsat_esc50-cpu", "--quiet", "--set", f"data.root={missing}"]) == 2
    err = capsys.readouterr().err
    assert "no_esc50_here" in err and "--classes N" in err
    assert main(["flops", "htsat_esc50-cpu", "--quiet", "--set", f"data.root={missing}", "--classes", "50"]) == 0
