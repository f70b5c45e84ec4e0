"""Runs trained in turns of one epoch (``experiment.interleave``) are the runs trained one after
the other: same draws, same weights, same records but the time, and an interrupted group resumes."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal

import pytest
import torch
from safetensors.torch import load_file

from coarse2fine.cli import main
from coarse2fine.config import load_config
from coarse2fine.experiments.grid import run_settings
from coarse2fine.experiments.settings import Variant, experiment_settings
from coarse2fine.report.savings import table_note
from coarse2fine.training.folder import CHECKPOINT
from coarse2fine.training.interrupt import RunInterrupted

# Stochastic depth draws from torch's global generator, mixup and SpecAugment from the run's own;
# the features are held in memory, one phase at a time per run.
TINY = ["data.train_clips=32", "data.val_clips=16", "train.batch_size=8", "model.preset=micro", "train.threads=1",
        "train.optim.warmup_steps=3", "c2f.phase_epochs=[1, 2]", "train.epochs=3", "model.drop_path_rate=0.3",
        "augment.mixup=0.5", "augment.timem=16", "data.in_memory=on"]
VARIANTS = [Variant("fshift", "4-1"), Variant("avgpool", "4-1")]
EPOCH_LINE = re.compile(r"^(\S+) epoch (\d+) \(phase")


@pytest.fixture(scope="module")
def cfg():
    return load_config("demo", TINY)


def _same_runs(a, b) -> None:
    """Two experiments' runs trained the same: every record but its times, and the final weights."""
    for ra, rb in zip(a, b, strict=True):
        [x], [y] = ra.runs, rb.runs
        assert x.name == y.name
        drop = {"train_time", "cum_time", "data_time", "step_time", "step_median", "step_deciles", "eval_time",
                "load_avg", "mfu", "turns"}
        assert ([{k: v for k, v in r.to_dict().items() if k not in drop} for r in x.records]
                == [{k: v for k, v in r.to_dict().items() if k not in drop} for r in y.records])
        wa, wb = load_file(x.out_dir / "model.safetensors"), load_file(y.out_dir / "model.safetensors")
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _epoch_order(caplog) -> list[tuple[str, int]]:
    return [(m[1], int(m[2])) for r in caplog.records if (m := EPOCH_LINE.match(r.getMessage()))]


def test_runs_trained_in_turns_are_the_runs_trained_one_after_another(cfg, splits, tmp_path, caplog):
    settings = experiment_settings(cfg, VARIANTS)
    alone = run_settings(settings, tmp_path / "alone", splits, progress=False)
    served = splits.train._phase
    with caplog.at_level(logging.INFO, logger="coarse2fine.training"):
        turns = run_settings(settings, tmp_path / "turns", splits, progress=False, interleave=True)
    _same_runs(alone, turns)
    assert "3 of 3 runs trained in turns of one epoch" in caplog.text
    # Each epoch says how it was trained, and so do the tables' notes.
    assert all(r.turns is None for a in alone for r in a.runs[0].records)
    assert all(r.turns == 3 for t in turns for r in t.runs[0].records)
    records = {s.setting.label: s.runs[0].records for s in turns}
    assert "The runs were trained in turns of one epoch each" in table_note(records.pop("Baseline"), records)
    mixed = {"Fshift 41": turns[1].runs[0].records, "Avg Pool 41": alone[2].runs[0].records}
    assert "in whole or in part: Baseline, Fshift 41; alone: Avg Pool 41" in table_note(turns[0].runs[0].records, mixed)
    assert "in turns" not in table_note(alone[0].runs[0].records, {"Fshift 41": alone[1].runs[0].records})
    # Epoch k of every run before epoch k + 1 of any: the baseline's 3 epochs, 4-1's 1 + 2.
    assert _epoch_order(caplog) == [(n, k) for k in (1, 2, 3) for n in ("baseline", "fshift_41", "avgpool_41")]
    # The data the experiment was given still serves the phase it served: each run had its own view.
    assert splits.train._phase == served


def test_an_interleaved_experiment_stopped_by_a_signal_continues_to_the_same_runs(cfg, splits, tmp_path, caplog):
    settings = experiment_settings(cfg, VARIANTS)
    alone = run_settings(settings, tmp_path / "alone", splits, progress=False)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a job started in the background

    class SignalAt(logging.Handler):
        """SIGINT while fshift_41 ends its epoch 2 (its first at R = 1): the others wait between epochs."""

        def emit(self, record):
            if record.getMessage().startswith("fshift_41 epoch 2 "):
                os.kill(os.getpid(), signal.SIGINT)

    handler = SignalAt()
    logger = logging.getLogger("coarse2fine.training.loop")
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name), \
                pytest.raises(RunInterrupted, match="fshift_41: stopped on SIGINT") as stopped:
            run_settings(settings, tmp_path / "turns", splits, progress=False, interleave=True)
    finally:
        logger.removeHandler(handler)
    caplog.clear()
    assert signal.getsignal(signal.SIGINT) is before  # the group's handlers are gone
    assert stopped.value.exit_code == 130
    paused = str(stopped.value).split("the runs trained in turns with it stopped at the end of their last epoch")[1]
    assert str(tmp_path / "turns" / "baseline") in paused and str(tmp_path / "turns" / "avgpool_41") in paused
    for name in ("baseline", "fshift_41", "avgpool_41"):  # every run left a checkpoint, none finished
        assert (tmp_path / "turns" / name / CHECKPOINT).exists()
        assert not (tmp_path / "turns" / name / "model.safetensors").exists()
    with caplog.at_level(logging.INFO, logger="coarse2fine.training.loop"):
        again = run_settings(settings, tmp_path / "turns", splits, progress=False, interleave=True)
    assert [r.runs[0].status for r in again] == ["resumed"] * 3
    # avgpool_41 waited at the end of its epoch 1; the others go on from epoch 3.
    assert _epoch_order(caplog) == [("baseline", 3), ("fshift_41", 3), ("avgpool_41", 2), ("avgpool_41", 3)]
    _same_runs(alone, again)


def test_the_demo_interleaves_and_the_options_set_it(tmp_path, capsys, caplog):
    assert load_config("demo").experiment.interleave and not load_config("esc50-cpu").experiment.interleave
    assert main(["crossval", "esc50-cpu", "--folds", "2", "--interleave", "--out", str(tmp_path / "cv")]) == 2
    assert "without --methods one setting trains" in capsys.readouterr().err
    out = tmp_path / "exp"
    code = main(["experiment", "demo", *(a for s in TINY for a in ("--set", s)), "--set", "train.epochs=2",
                 "--set", "c2f.phase_epochs=[1, 1]", "--methods", "fshift", "--no-interleave", "--out", str(out),
                 "--quiet"])
    assert code == 0 and "in turns" not in (out / "savings.md").read_text()
    # Runs trained without turns are the same runs: the demo preset's interleaved experiment reuses them.
    logs = {p: p.stat().st_mtime_ns for p in out.glob("*/log.json")}
    assert len(logs) == 2
    with caplog.at_level(logging.INFO, logger="coarse2fine.training.interleave"):
        code = main(["experiment", "demo", *(a for s in TINY for a in ("--set", s)), "--set", "train.epochs=2",
                     "--set", "c2f.phase_epochs=[1, 1]", "--methods", "fshift", "--out", str(out), "--quiet"])
    assert code == 0 and {p: p.stat().st_mtime_ns for p in out.glob("*/log.json")} == logs
    assert "trained in turns" not in caplog.text  # nothing trained: nothing said about turns
    # With only the baseline finished, --report-only says so (a group in turns finishes together, at its end).
    shutil.rmtree(out / "fshift_41")
    assert main(["experiment", "demo", *(a for s in TINY for a in ("--set", s)), "--set", "train.epochs=2",
                 "--set", "c2f.phase_epochs=[1, 1]", "--methods", "fshift", "--out", str(out), "--report-only"]) == 2
    assert "holds a finished baseline but no other finished setting to tabulate yet" in capsys.readouterr().err


def test_the_logs_name_each_seed_of_an_experiment_by_its_folder(cfg, splits, tmp_path, caplog):
    [baseline] = experiment_settings(cfg, [])[:1]
    with caplog.at_level(logging.INFO, logger="coarse2fine.training.loop"):
        run_settings([baseline], tmp_path, splits, seeds=2, progress=False)
    assert _epoch_order(caplog) == [("baseline", 1), ("baseline", 2), ("baseline", 3),
                                    ("baseline_s1", 1), ("baseline_s1", 2), ("baseline_s1", 3)]


def test_the_demo_command_trains_in_turns_and_prints_a_calibrated_column(tmp_path, capsys):
    out = tmp_path / "demo"
    sets = [a for s in [*TINY, "train.epochs=2", "c2f.phase_epochs=[1, 1]"] for a in ("--set", s)]
    assert main(["demo", *sets, "--methods", "fshift", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Calibrated time save (%)" in printed and (out / "calibration.json").exists()
    md = (out / "savings.md").read_text()
    assert "The runs were trained in turns of one epoch each" in md
    # the calibrated column's own spread: each phase's median step and its quartiles over the rounds
    assert re.search(r"Calibrated steps \(10 interleaved rounds in one process on cpu, load average .*\), median "
                     r"\[quartiles over the rounds\]: R=1 [\d.]+ ms \[[\d.]+, [\d.]+\]; fshift R=4 [\d.]+ ms", md)
    # a report of the same runs that times nothing keeps the saved calibration's column, to the digit
    table = (out / "savings.csv").read_text()
    assert main(["demo", *sets, "--methods", "fshift", "--out", str(out), "--quiet", "--calibrate-rounds", "0",
                 "--report-only"]) == 0
    assert "Calibrated time save (%)" in capsys.readouterr().out and (out / "savings.csv").read_text() == table
    assert main(["demo", *sets, "--methods", "fshift", "--out", str(tmp_path / "plain"), "--quiet",
                 "--calibrate-rounds", "0", "--no-interleave"]) == 0
    assert "Calibrated" not in capsys.readouterr().out and "in turns" not in (tmp_path / "plain" / "savings.md").read_text()
