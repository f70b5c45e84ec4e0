"""End-to-end: real training runs on a few synthetic clips with a one-layer micro AST."""

import json

import pytest
import torch
from safetensors.torch import load_file

from coarse2fine.cli import main
from coarse2fine.config import load_config
from coarse2fine.core import phase_input
from coarse2fine.experiments.grid import Variant, run_experiment
from coarse2fine.model import ast_training_flops, model_from_config_dict
from coarse2fine.training.loop import train_run

SMALL = [
    "data.train_clips=32", "data.val_clips=16", "train.epochs=2", "train.batch_size=16",
    "train.optim.warmup_steps=2", "train.threads=1",
]


@pytest.fixture(scope="module")
def cfg():
    return load_config("demo", [*SMALL, "model.preset=micro"])


@pytest.mark.parametrize("method", ["fshift", "avgpool", "patch"])
def test_two_phase_run_records_flops_time_and_weights(cfg, splits, tmp_path, method):
    cfg = cfg.replace({"c2f.schedule": "4-1", "c2f.method": method, "c2f.phase_epochs": [1, 2]})
    result = train_run(cfg, splits, tmp_path, progress=False)
    recs = result.records
    assert [(r.epoch, r.phase, r.R, r.phase_epoch) for r in recs] == [(1, 0, 4, 1), (2, 1, 1, 1), (3, 1, 1, 2)]
    assert [r.tokens for r in recs] == [16, 64, 64]
    # FLOPs: the analytic count for the real geometry of each phase, times the clips seen.
    full = model_from_config_dict(json.loads((tmp_path / "model_config.json").read_text()))
    assert full.arch == "ast" and recs[-1].train_flops == ast_training_flops(full.config, 1) * 32
    coarse = cfg.phase(0, 8).build_model()
    assert recs[0].train_flops == ast_training_flops(coarse.config, 1) * 32
    assert recs[-1].cum_flops == 32 * (ast_training_flops(coarse.config, 1) + 2 * ast_training_flops(full.config, 1))
    # The recorded accuracy is the saved model's on the validation set.
    full.load_state_dict(load_file(tmp_path / "model.safetensors"))
    val = splits.val
    val.set_phase(cfg.phase(1, 8).features, cfg.phase(1, 8).compression)
    x, y = val.take(torch.arange(len(val)))
    with torch.no_grad():
        acc = (full.eval()(phase_input(x, val.serves, cfg.phase(1, 8).features, cfg.phase(1, 8).compression)).argmax(-1)
               == y.argmax(-1)).float().mean().item()
    assert recs[-1].metric("acc") == pytest.approx(acc)
    # The LR schedule (warmup included) restarts at the phase change.
    assert recs[1].lr == pytest.approx(recs[0].lr)
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["done"] and len(log["records"]) == 3
    assert (tmp_path / "log.csv").read_text().splitlines()[0].startswith("epoch,phase,R")
    weights = load_file(tmp_path / "model.safetensors")
    assert weights["pos_embed"].shape[1] == 64 + 2


def test_the_best_epochs_weights_are_kept_beside_the_last_ones(cfg, splits, tmp_path):
    """A new user's case: `train` reported the best epoch (12.50 % at epoch 4) and `predict` scored the
    last one's weights (8.93 %, epoch 8) with nothing saying so. model_best.safetensors holds the final
    phase's best epoch, the one the reports name."""
    from safetensors import safe_open

    cfg = cfg.replace({"c2f.schedule": "2-1", "c2f.phase_epochs": [1, 4], "train.optim.lr": 0.01})
    result = train_run(cfg, splits, tmp_path, progress=False)
    final = [r for r in result.records if r.phase == 1]
    best = max(final, key=lambda r: (r.metric("acc"), -r.epoch))  # the first of equal values
    with safe_open(str(tmp_path / "model_best.safetensors"), framework="pt") as fh:
        assert fh.metadata()["epoch"] == str(best.epoch)
    model = model_from_config_dict(json.loads((tmp_path / "model_config.json").read_text()))
    model.load_state_dict(load_file(tmp_path / "model_best.safetensors"))
    setup = cfg.phase(1, 8)
    val = splits.val
    val.set_phase(setup.features, setup.compression)
    x, y = val.take(torch.arange(len(val)))
    with torch.no_grad():
        acc = (model.eval()(phase_input(x, val.serves, setup.features, setup.compression)).argmax(-1)
               == y.argmax(-1)).float().mean().item()
    assert acc == pytest.approx(best.metric("acc"))
    from coarse2fine.cli.training import weights_line

    assert weights_line(result, "acc") == (f"weights: model.safetensors (the last epoch's, 5), model_best.safetensors "
                                           f"(the best epoch's, {best.epoch}: predict, export-hf and export-onnx take "
                                           "it with --weights model_best.safetensors)")
    (tmp_path / "model_best.safetensors").unlink()  # as a run of an earlier version, continued by this one, has none
    assert weights_line(result, "acc").endswith(f"; no model_best.safetensors: its best epoch, {best.epoch}, was "
                                                "trained by an earlier version, which did not keep it")
    off = tmp_path / "off"
    train_run(cfg.replace({"train.save_best": False}), splits, off, progress=False)
    assert (off / "model.safetensors").exists() and not (off / "model_best.safetensors").exists()


def test_best_so_far_is_the_first_of_equal_values_in_its_phase():
    from coarse2fine.training.loop import best_so_far
    from coarse2fine.training.records import EpochRecord

    def recs(*values, phase=1):
        return [EpochRecord(epoch=i + 1, phase=phase, R=1, phase_epoch=i + 1, metrics={"acc": v, "loss": v}, cum_flops=0,
                            cum_time=0.0) for i, v in enumerate(values)]

    assert best_so_far(recs(0.5), "acc", True) and best_so_far(recs(0.5, 0.6), "acc", True)
    assert not best_so_far(recs(0.6, 0.6), "acc", True) and not best_so_far(recs(0.6, float("nan")), "acc", True)
    assert best_so_far(recs(float("nan"), 0.1), "acc", True) and best_so_far(recs(0.3, 0.2), "loss", False)
    other = [*recs(0.9, phase=0), *recs(0.4)]  # a coarse phase's better value does not count
    assert best_so_far(other, "acc", True)


def test_training_learns_something(cfg, splits, tmp_path):
    cfg = cfg.replace({"c2f.schedule": "1", "c2f.phase_epochs": None, "train.epochs": 3})
    result = train_run(cfg, splits, tmp_path, progress=False)
    losses = [r.train_loss for r in result.records]
    assert losses[-1] < losses[0]


def test_experiment_reuses_finished_runs(cfg, splits, tmp_path):
    cfg = cfg.replace({"train.epochs": 1, "c2f.phase_epochs": None})
    base, runs = run_experiment(cfg, [Variant("maxpool", "2-1")], tmp_path, splits=splits, progress=False)
    assert list(runs) == ["Max Pool 21"]
    stamp = (tmp_path / "baseline" / "log.json").stat().st_mtime_ns
    base2, _ = run_experiment(cfg, [Variant("maxpool", "2-1")], tmp_path, splits=splits, progress=False)
    assert (tmp_path / "baseline" / "log.json").stat().st_mtime_ns == stamp
    assert base2.records == base.records


def test_demo_command_prints_the_savings_table(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path), "--methods", "fshift,patch-pi", "--quiet",
               *[a for s in SMALL + ["model.preset=micro", "train.epochs=1"] for a in ("--set", s)]])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Baseline" in out and "Fshift 41" in out and "Patch PI 41" in out
    assert "FLOPs" in out and (tmp_path / "savings.md").exists() and (tmp_path / "savings.csv").exists()
    assert (tmp_path / "metric_vs_flops.png").stat().st_size > 1000 and (tmp_path / "phases.csv").exists()
    assert main(["compare", str(tmp_path / "baseline"), str(tmp_path / "fshift_41"), "--format", "csv"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("Setting,Acc at first beat") and "fshift_41" in table


def test_cli_errors_are_clear(capsys):
    assert main(["demo", "--schedule", "1-4", "--quiet"]) == 2
    assert "schedule '1-4'" in capsys.readouterr().err
    assert main(["demo", "--methods", "blur", "--quiet"]) == 2
    assert "unknown method(s) blur" in capsys.readouterr().err
