"""Controls and seeds: what the restart and equal-epochs controls train, ``1-1`` schedules with their
resets, the carried-over model's evaluation, finished seeds reused, and the commands."""

from __future__ import annotations

import csv
import io
import itertools
import json
import shutil
from argparse import Namespace
from pathlib import Path

import pytest

from coarse2fine.cli import main
from coarse2fine.cli.options import evidence
from coarse2fine.config import load_config
from coarse2fine.config.sections import ExperimentConfig
from coarse2fine.data.sources import load_splits
from coarse2fine.experiments.grid import run_experiment, run_settings
from coarse2fine.experiments.settings import (
    SEED_STRIDE,
    Variant,
    experiment_settings,
    parse_controls,
    seed_config,
    seed_folder,
)
from coarse2fine.training.folder import saved_config
from coarse2fine.training.loop import train_run

TINY = ["data.train_clips=32", "data.val_clips=16", "train.batch_size=8", "train.epochs=2", "model.preset=micro",
        "train.threads=1", "train.optim.warmup_steps=6"]


@pytest.fixture(scope="module")
def cfg():
    return load_config("demo", TINY)


def _phases(setting):
    return [(p.R, p.epochs) for p in setting.config.phases()]


def test_equal_epochs_control_trains_as_many_epochs_as_the_longest_variant():
    base = load_config("esc50-cpu")  # 40 baseline epochs: 4-1 is 10 + 40, 4-2-1 is 6 + 6 + 40
    settings = experiment_settings(base, [Variant("fshift", "4-1"), Variant("avgpool", "4-2-1")], ["equal-epochs"])
    assert [(s.name, s.role) for s in settings] == [("baseline", "baseline"), ("equal_epochs_52", "control"),
                                                    ("fshift_41", "coarse-to-fine"), ("avgpool_421", "coarse-to-fine")]
    control = settings[1]
    assert _phases(control) == [(1, 52)] and control.label == "Equal epochs 52 (control)"
    assert "avgpool_421" in control.about
    only_41 = experiment_settings(base, [Variant("fshift", "4-1")], ["equal-epochs"])[1]
    assert _phases(only_41) == [(1, 50)]
    assert only_41.name == "equal_epochs_50"  # a longer variant added later trains its control beside this one
    explicit = experiment_settings(base.replace({"c2f.phase_epochs": [3, 45]}), [Variant("patch-pi", "4-1")],
                                   ["equal-epochs"])[1]
    assert _phases(explicit) == [(1, 48)]


def test_restart_control_has_the_variants_phases_and_resets_at_full_resolution():
    base = load_config("esc50-cpu")
    settings = experiment_settings(base, [Variant("fshift", "4-1"), Variant("patch-pi", "4-1"),
                                          Variant("avgpool", "4-2-1")], parse_controls("restart"))
    controls = {s.name: s for s in settings if s.role == "control"}
    assert list(controls) == ["restart_11", "restart_111"]  # one per phase shape, shared by the two 4-1 variants
    assert _phases(controls["restart_11"]) == [(1, 10), (1, 40)]
    assert _phases(controls["restart_111"]) == [(1, 6), (1, 6), (1, 40)]
    assert controls["restart_11"].label == "Restart 11 (control)"
    assert "fshift_41 and patch-pi_41" in controls["restart_11"].about
    # Every run holds the experiment section at its defaults: the run does not depend on the experiment.
    tagged = base.replace({"experiment.seeds": 3, "experiment.controls": ["restart"]})
    assert all(s.config.experiment.seeds == 1 and not s.config.experiment.controls
               for s in experiment_settings(tagged, [Variant("fshift", "4-1")], ["restart"]))


def test_controls_are_refused_where_they_cannot_control_anything():
    base = load_config("esc50-cpu")
    with pytest.raises(ValueError, match="give some methods"):
        experiment_settings(base, [], ["restart"])
    with pytest.raises(ValueError, match="its own equal-epochs control"):
        experiment_settings(base.replace({"c2f.phase_epochs": [5, 35]}), [Variant("fshift", "4-1")], ["equal-epochs"])
    with pytest.raises(ValueError, match="fixed in advance"):
        experiment_settings(base.replace({"c2f.switch": "plateau"}), [Variant("fshift", "4-1")], ["restart"])
    with pytest.raises(ValueError, match="unknown control"):
        parse_controls("restart,warm")
    with pytest.raises(ValueError, match="experiment.controls"):
        load_config("demo", ["experiment.controls=[warm]"])
    assert parse_controls("all") == ["restart", "equal-epochs"] and parse_controls("none") == []


def test_controls_and_seeds_as_config_keys_and_options():
    cfg = load_config("demo", ["experiment.controls=[equal-epochs]", "experiment.seeds=3"])
    assert evidence(cfg, Namespace(controls=None, seeds=None)) == (["equal-epochs"], 3)
    assert evidence(cfg, Namespace(controls="restart,equal-epochs", seeds=2)) == (["restart", "equal-epochs"], 2)
    assert evidence(cfg, Namespace(controls="none", seeds=None)) == ([], 3)
    with pytest.raises(ValueError, match="--seeds"):
        evidence(cfg, Namespace(controls=None, seeds=0))
    with pytest.raises(ValueError, match="experiment.seeds"):
        load_config("demo", ["experiment.seeds=0"])


def test_seeds_vary_train_seed_and_live_beside_seed_zero(cfg, tmp_path):
    assert seed_config(cfg, 0) is cfg
    assert seed_config(cfg, 2).train.seed == cfg.train.seed + 2 * SEED_STRIDE
    assert seed_folder(tmp_path, "fshift_41", 0) == tmp_path / "fshift_41"
    assert seed_folder(tmp_path, "fshift_41", 2) == tmp_path / "fshift_41_s2"


def test_one_one_schedule_resets_at_the_phase_change_and_evaluates_the_carried_over_model(cfg, splits, tmp_path):
    restart = cfg.replace({"c2f.schedule": "1-1", "c2f.phase_epochs": [1, 2]})
    result = train_run(restart, splits, tmp_path / "restart", progress=False)
    recs = result.records
    assert [(r.epoch, r.phase, r.R, r.phase_epoch) for r in recs] == [(1, 0, 1, 1), (2, 1, 1, 1), (3, 1, 1, 2)]
    # 4 steps per epoch, 6 warm-up steps: the LR at an epoch's start climbs within a phase and starts over at epoch 2.
    assert recs[1].lr == pytest.approx(recs[0].lr) and recs[2].lr > recs[1].lr
    # The same seed trains the baseline's first epoch; the reset changes the second (fresh Adam and LR schedule).
    baseline = train_run(cfg.replace({"c2f.schedule": "1", "train.epochs": 3}), splits, tmp_path / "base",
                         progress=False)
    assert baseline.records[0].train_loss == recs[0].train_loss and baseline.records[0].metrics == recs[0].metrics
    assert baseline.records[1].lr > recs[1].lr and baseline.records[1].train_loss != recs[1].train_loss
    # The carried-over model, evaluated before phase 2 trains, is the model phase 1 ended with: it keeps everything.
    entry = result.phases[1].entry_metrics
    assert entry == recs[0].metrics and result.phases[0].entry_metrics == {}
    logged = json.loads((tmp_path / "restart" / "log.json").read_text())["phases"]
    assert logged[1]["entry_metrics"] == entry
    # The entry evaluation changes nothing in training.
    quiet = train_run(restart.replace({"c2f.eval_on_entry": False}), splits, tmp_path / "quiet", progress=False)
    assert [(r.train_loss, r.metrics) for r in quiet.records] == [(r.train_loss, r.metrics) for r in recs]
    assert quiet.phases[1].entry_metrics == {}


def test_finished_seeds_are_reused(cfg, splits, tmp_path):
    settings = experiment_settings(cfg.replace({"train.epochs": 1}), [])
    [one] = run_settings(settings, tmp_path, splits, seeds=1, progress=False)
    stamp = (tmp_path / "baseline" / "log.json").stat().st_mtime_ns
    [two] = run_settings(settings, tmp_path, splits, seeds=2, progress=False)
    assert [r.status for r in two.runs] == ["finished", "trained"]  # seed 0 reused, seed 1 trained
    assert (tmp_path / "baseline" / "log.json").stat().st_mtime_ns == stamp
    assert two.runs[0].records == one.runs[0].records and two.runs[1].records != one.runs[0].records
    assert json.loads((tmp_path / "baseline_s1" / "log.json").read_text())["config"]["train"]["seed"] == SEED_STRIDE
    [again] = run_settings(settings, tmp_path, splits, seeds=2, progress=False)
    assert [r.status for r in again.runs] == ["finished", "finished"]


def test_experiment_command_with_controls_and_seeds(tmp_path, capsys):
    args = ["experiment", "demo", "--schedules", "4-1", "--methods", "fshift", "--controls", "restart,equal-epochs",
            "--seeds", "2", "--out", str(tmp_path), "--quiet", *[a for s in TINY for a in ("--set", s)]]
    assert main(args) == 0
    out = capsys.readouterr().out
    for row in ("Baseline", "Equal epochs 3 (control)", "Restart 11 (control)", "Fshift 41"):
        assert row in out
    assert "Paired gain (95 % CI)" in out and "2 seeds per setting" in out
    # the equal-epochs control repeats the baseline's steps: its time saves are the time measures' spread here
    row = next(r for r in csv.DictReader(io.StringIO((tmp_path / "savings.csv").read_text()))
               if r["Setting"] == "Equal epochs 3 (control)")
    assert row["FLOPs save (%)"] == "0.00"
    assert (f"Equal epochs 3 (control) trains the baseline's steps again up to the baseline's best (FLOPs save 0.00): "
            f"its time saves (wall time {row['Wall time save (%)']}{row['Wall time save (%) marks']}, ") in (
                tmp_path / "savings.md").read_text()
    savings = (tmp_path / "savings.csv").read_text().splitlines()
    # one number per cell: mean and std, a gain and its interval, each in a column of its own
    assert savings[0].startswith("Setting,Seeds,Best Acc,Best Acc std,Paired gain,Paired gain CI low,Paired gain CI high,")
    assert len(savings) == 5 and "±" not in "".join(savings) and "[" not in "".join(savings)
    kept = (tmp_path / "kept.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in kept[1:]] == ["Restart 11 (control)", "Fshift 41"]
    restart = next(csv.DictReader(io.StringIO("\n".join(kept))))
    assert (restart["Kept (after / before)"], restart["Kept (after / before) std"]) == ("1.00", "0.00")  # exactly kept
    assert (tmp_path / "fshift_41_s1" / "log.json").exists()
    assert (tmp_path / "metric_vs_flops.png").stat().st_size > 1000
    # Run again: every seed of every setting is reused, the table is the same.
    assert main(args) == 0
    assert (tmp_path / "savings.csv").read_text().splitlines() == savings


def test_report_only_tabulates_the_whole_seeds_and_trains_nothing(tmp_path, capsys):
    base = ["experiment", "demo", "--schedules", "4-1", "--methods", "fshift", "--out", str(tmp_path), "--quiet",
            *[a for s in TINY for a in ("--set", s)]]
    assert main([*base, "--report-only"]) == 2  # nothing finished yet
    assert "holds no finished baseline to tabulate yet" in capsys.readouterr().err
    assert main(base) == 0  # seed 0 of both settings
    one_seed = (tmp_path / "savings.csv").read_text()
    # An experiment still training (avgpool not yet run): the settings finished so far, against the baseline.
    assert main([*base[:5], "fshift,avgpool", *base[6:], "--report-only"]) == 0
    out = capsys.readouterr().out
    assert "2 of 3 settings finished (first seed)" in out and "Fshift 41" in out and out.rstrip().endswith("avgpool_41")
    assert (tmp_path / "savings.csv").read_text() == one_seed
    (tmp_path / "savings.csv").unlink()
    # An experiment of two seeds whose seed 1 is only half done: the baseline's seed 1 finished.
    cfg = load_config("demo", TINY)
    baseline = experiment_settings(cfg, [Variant("fshift", "4-1")])[0]
    train_run(seed_config(baseline.config, 1), load_splits(cfg), seed_folder(tmp_path, baseline.name, 1), progress=False)
    assert main([*base, "--seeds", "2", "--report-only"]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 seed(s) finished for every setting" in out and out.rstrip().endswith("fshift_41_s1")
    assert "baseline vs 4-1, 1 of 2 seeds finished" in (tmp_path / "savings.md").read_text()
    assert (tmp_path / "savings.csv").read_text() == one_seed  # the whole seed 0, as the one-seed experiment wrote it
    assert not (tmp_path / "fshift_41_s1").exists()  # nothing trained
    # A path that the data kind does not read (data.root of synthetic data) makes no other setting and
    # is no path difference to list (tests/test_sources.py: one that it reads is listed).
    log_path = tmp_path / "fshift_41" / "log.json"
    saved = json.loads(log_path.read_text())
    saved["config"]["data"]["root"] = "/elsewhere/data"
    log_path.write_text(json.dumps(saved))
    assert main([*base, "--report-only"]) == 0
    assert "other paths" not in capsys.readouterr().out
    assert (tmp_path / "savings.csv").read_text() == one_seed
    # Another config's finished run in a folder is named, not silently tabulated or overwritten.
    assert main([*base, "--report-only", "--set", "train.epochs=3"]) == 2
    err = capsys.readouterr().err
    assert "holds a finished run of another config (train.epochs: 2 vs 3" in err  # past the paths
    assert "a report of it needs the options and --set values it was trained with" in err
    assert main([*base, "--report-only", "--fresh"]) == 2


def test_train_command_prints_what_the_phase_change_kept(tmp_path, capsys):
    args = ["train", "demo", "--schedule", "4-1", "--out", str(tmp_path), "--quiet", "--set", "c2f.phase_epochs=[1, 1]",
            *[a for s in TINY for a in ("--set", s)]]
    assert main(args) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "carried over" in x)
    phases = json.loads((tmp_path / "log.json").read_text())["phases"]
    assert "phase 1 -> 2 (R=4 -> R=1)" in line and f"{100 * phases[1]['entry_metrics']['acc']:.2f} % carried over" in line


EVIDENCE = Path(__file__).resolve().parents[1] / "docs" / "evidence"


@pytest.mark.parametrize("preset,sets", [("esc50-cpu", []), ("htsat_esc50-cpu", ["--set", "augment.mask_value=0"])])
def test_the_published_evidence_is_tabulated_again_by_the_documented_command(preset, sets, tmp_path, capsys):
    # docs/evidence/README.md: the same command with --report-only rebuilds RESULTS.md's table from the logs.
    # Logs of an earlier version lack keys added since (experiment.interleave): at their defaults, the same runs;
    # HTS-AT's were trained before its presets' SpecAugment fill changed, which the README's command sets back.
    out = Path(shutil.copytree(EVIDENCE / preset, tmp_path / preset))
    assert main(["experiment", preset, "--schedules", "4-1", "--methods", "fshift,patch-pi", "--controls",
                 "restart,equal-epochs", "--seeds", "3", "--out", str(out), "--report-only", *sets]) == 0
    printed = capsys.readouterr().out
    assert "3 of 3 seed(s) finished for every setting" in printed and "Not finished" not in printed
    assert _first_table(out / "savings.md") == _first_table(EVIDENCE / preset / "savings.md")  # to the digit


def _first_table(path: Path) -> list[str]:
    """The rows of the first markdown table in ``path`` (the seeds table)."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    return list(itertools.takewhile(lambda line: line.startswith("| "), lines[start:]))


def test_a_saved_config_of_an_earlier_version_takes_the_keys_added_since_at_their_defaults():
    old = {"name": "x", "experiment": {"controls": [], "seeds": 1}, "features": {"num_mel_bins": 64}}
    filled = saved_config(old)
    assert filled["experiment"] == {"controls": [], "seeds": 1, "interleave": False}
    assert filled["features"]["fbank"]["num_mel_bins"] == 64 and "num_mel_bins" not in filled["features"]
    assert filled["name"] == "x" and "train" in filled and "c2f" in filled  # every section, at its defaults


def test_run_experiment_refuses_seeds_and_controls_it_would_not_train(tmp_path):
    # It trained one seed and no control of a config that asked for them, silently (a new user's case).
    cfg = load_config("demo", [*TINY, "experiment.seeds=2", "experiment.controls=[restart]"])
    with pytest.raises(ValueError, match=r"run_experiment trains one seed without controls; demo asks for "
                                         r"experiment.seeds 2 and controls \['restart'\]: train them with run_settings"):
        run_experiment(cfg, [Variant("fshift", "4-1")], tmp_path)
    assert not any(tmp_path.iterdir())


def test_commands_of_one_run_say_they_train_no_seeds_or_controls_and_store_none(tmp_path, capsys, caplog):
    """`train` with experiment.seeds / controls trained one run silently and stored them, so the same
    run was later refused as another config (experiment.seeds: 1 vs 3)."""
    out = tmp_path / "run"
    args = ["train", "demo", "--schedule", "1", "--out", str(out), "--quiet", *[a for s in TINY for a in ("--set", s)]]
    with caplog.at_level("WARNING", logger="coarse2fine"):
        assert main([*args, "--set", "experiment.seeds=3", "--set", "experiment.controls=[restart]"]) == 0
    assert ("demo: train trains one seed (train.seed: 0) and no controls; experiment.seeds: 3 and "
            "experiment.controls: ['restart'] are read by `coarse2fine experiment` and `crossval --methods` (and the "
            "seeds by `pretrain-experiment`)") in caplog.text
    assert load_config(str(out / "config.yaml")).experiment == ExperimentConfig()  # the defaults, as experiment's runs
    capsys.readouterr()
    assert main(args) == 0 and "already finished in this folder" in capsys.readouterr().out
    # a run an earlier version saved with the experiment's keys is the same run
    log = json.loads((out / "log.json").read_text())
    log["config"]["experiment"] = {"controls": ["restart"], "seeds": 3, "interleave": True}
    (out / "log.json").write_text(json.dumps(log))
    assert main(args) == 0 and "already finished in this folder" in capsys.readouterr().out


def test_the_restart_control_of_scaled_coarse_batches_trains_at_the_variants_batches(tmp_path, capsys):
    """Under c2f.coarse_batch: scale the restart control trained its first phase at the unscaled batch,
    learning rate and warm-up (4x the updates of the variant's coarse phase): not the variant without
    its coarse input (a new user's case)."""
    base = load_config("demo", [*TINY, "c2f.coarse_batch=scale", "train.batch_size=4", "c2f.phase_epochs=[1, 1]"])
    settings = experiment_settings(base, [Variant("fshift", "4-1"), Variant("fshift", "2-1")], ["restart"])
    controls = {s.name: s for s in settings if s.role == "control"}
    assert list(controls) == ["restart_11_batch4x1", "restart_11_batch2x1"]
    for name, variant in (("restart_11_batch4x1", "fshift_41"), ("restart_11_batch2x1", "fshift_21")):
        mine, theirs = (next(s for s in settings if s.name == n).config for n in (name, variant))
        for i in range(2):
            a, b = mine.phase(i, 8), theirs.phase(i, 8)
            assert a.R == 1 and (a.batch_size, a.optim, a.epochs) == (b.batch_size, b.optim, b.epochs)
    assert "each phase at the batch (16/4 clips), learning rate and warm-up of the variant's" in controls[
        "restart_11_batch4x1"].about
    args = ["experiment", "demo", "--schedules", "4-1", "--methods", "fshift", "--controls", "restart", "--out",
            str(tmp_path), "--quiet", "--calibrate-rounds", "1",
            *[a for s in [*TINY, "c2f.coarse_batch=scale", "train.batch_size=4", "c2f.phase_epochs=[1, 1]"]
              for a in ("--set", s)]]
    assert main(args) == 0
    steps = json.loads((tmp_path / "calibration.json").read_text())["steps"]
    assert {k.split(" [")[0] for k in steps} == {"R=1", "fshift R=4", "R=1 batch x4", "R=1 batch x1"}
    logged = json.loads((tmp_path / "restart_11_batch4x1" / "log.json").read_text())["records"]
    variant = json.loads((tmp_path / "fshift_41" / "log.json").read_text())["records"]
    assert [r["steps"] for r in logged] == [r["steps"] for r in variant] == [2, 8]  # 32 clips: batch 16, then 4


def test_a_report_without_entry_evaluations_says_why_it_has_no_kept_table(tmp_path):
    # The kept table and kept.csv were gone without a word (a new user's case).
    args = ["experiment", "demo", "--schedules", "4-1", "--methods", "fshift", "--out", str(tmp_path), "--quiet",
            "--calibrate-rounds", "0", *[a for s in [*TINY, "c2f.eval_on_entry=false", "c2f.phase_epochs=[1, 1]"]
                                         for a in ("--set", s)]]
    assert main(args) == 0
    assert not (tmp_path / "kept.csv").exists()
    assert ("No kept table for Fshift 41: c2f.eval_on_entry: false (the carried-over model is not evaluated at a "
            "phase change)") in (tmp_path / "savings.md").read_text()


def test_a_setting_that_nothing_reads_does_not_make_another_run(tmp_path, capsys):
    # c2f.patience warned "does nothing here", then the finished run was refused as another config's.
    args = ["train", "demo", "--schedule", "1", "--out", str(tmp_path), "--quiet", *[a for s in TINY for a in ("--set", s)]]
    assert main(args) == 0
    capsys.readouterr()
    for unread in ("c2f.patience=5", "c2f.lr_scaling=linear", "pretrain.mask_patch=50"):
        assert main([*args, "--set", unread]) == 0 and "already finished in this folder" in capsys.readouterr().out
    assert main([*args, "--set", "c2f.patience=5", "--set", "c2f.switch=plateau"]) == 2  # read there: another run
    assert "holds a finished run of another config" in capsys.readouterr().err
