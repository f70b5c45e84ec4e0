"""What a new user hit, each case reproduced: devices, types, unfinished runs, one "best", paths,
geometries that drop frames, and time figures that say when they cannot be trusted."""

import dataclasses
import json
import logging
import os
import re
from pathlib import Path

import pytest
import torch

from coarse2fine.cli import main
from coarse2fine.config import load_config
from coarse2fine.report.savings import (
    best_value,
    busy_runs,
    drifted,
    savings_table,
    table_note,
    timed_elsewhere,
)
from coarse2fine.report.seeds import seed_table
from coarse2fine.runtime import cpu_name, device_name
from coarse2fine.training.folder import RunFolderError, claim_folder
from coarse2fine.training.records import as_records
from killing import kill_after_checkpoint

TINY = ["data.train_clips=32", "data.val_clips=16", "train.batch_size=8", "train.threads=1", "model.preset=micro",
        "train.optim.warmup_steps=2"]


def _sets(values):
    return [a for s in values for a in ("--set", s)]


# 1. devices ---------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
@pytest.mark.parametrize("argv", [
    ["train", "demo", "--out", "x", "--set", "train.device=cuda"],
    ["bench", "demo", "--device", "cuda", "--classes", "8"],
    ["bench", "demo", "--device", "foo", "--classes", "8"],
])
def test_a_device_this_torch_cannot_use_is_one_line_naming_the_key(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    key = "train.device" if "train.device=cuda" in argv else "--device"
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert key in err and "available: auto, cpu" in err and not (tmp_path / "x").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_predict_on_a_device_this_torch_cannot_use(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "a.wav", "--device", "cuda:1"]) == 2
    err = capsys.readouterr().err
    assert "--device: 'cuda:1' cannot be used" in err and "without CUDA" in err


def test_auto_picks_what_this_machine_has():
    from coarse2fine.runtime import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type in (expected, "mps")


# 2, 3. types ---------------------------------------------------------------------------------

@pytest.mark.parametrize("override,message", [
    ("train.epochs=2.5", "train.epochs: expected an integer, got 2.5"),
    ("c2f.patience=1.5", "c2f.patience: expected an integer, got 1.5"),
    ("c2f.min_delta=-1", "c2f.min_delta: must be >= 0, got -1.0"),
    ("train.batch_size=true", "train.batch_size: expected an integer, got True"),
    ("augment.freqm=-3", "augment.freqm: must be >= 0, got -3"),
    ("data.sources=/some/folder", "data.sources: expected a list, e.g. `sources: [/some/folder]` in YAML, `--set 'data.sources=[/some/folder]'`"),
    ("c2f.phase_epochs=3", "c2f.phase_epochs: expected a list"),
    ("model.overrides.depht=2", "model.overrides: depht is not a field of the ast config; allowed: "),
])
def test_types_and_limits_are_checked_at_load(override, message):
    with pytest.raises(ValueError, match=message.replace("[", "\\[").replace("]", "\\]")):
        load_config("demo", [override])


def test_an_integer_given_as_a_whole_float_is_taken_and_said(caplog):
    with caplog.at_level(logging.WARNING):
        cfg = load_config("demo", ["train.epochs=3.0"])
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert "train.epochs: 3.0 taken as the integer 3" in caplog.text


def test_a_bare_string_for_sources_never_scans_the_filesystem(tmp_path):
    with pytest.raises(ValueError, match="got the string"):
        load_config("ssast_pretrain-cpu", [f"data.sources={tmp_path}"])


def test_configs_stay_valid_once_made():
    cfg = load_config("demo")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.metric = "accuracy"  # type: ignore[misc]
    with pytest.raises(ValueError, match="train.metric: 'accuracy' is not one of"):
        cfg.replace({"train.metric": "accuracy"})
    assert cfg.replace({"train.epochs": 3}).train.epochs == 3 and cfg.train.epochs == 12


# 4. runs are never lost -----------------------------------------------------------------------

def _train_args(out, *more):
    return ["train", "demo", "--out", str(out), "--quiet", *_sets([*TINY, "train.epochs=2", "c2f.phase_epochs=[1, 2]",
                                                                   "train.checkpoint_every=1"]), *more]


def _kill_in_phase_2(out: Path) -> None:
    kill_after_checkpoint(_train_args(out), out, phase=1)


def test_the_same_command_after_a_kill_resumes_and_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    _kill_in_phase_2(out)
    # An unfinished run: compare marks it, predict says which checkpoint it could use.
    assert main(["predict", str(out), "x.wav"]) == 2
    err = capsys.readouterr().err
    assert "an unfinished run" in err and "--weights checkpoint.safetensors" in err and "phase 2" in err
    assert main(["train", "demo", "--out", str(tmp_path / "other"), "--quiet", *_sets([*TINY, "train.epochs=1"])]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "other"), str(out)]) == 0
    text = capsys.readouterr().out
    assert "run: unfinished:" in text and "of 3 epochs" in text and "not in the table" in text
    assert main(["compare", str(tmp_path / "other"), str(out), "--include-unfinished"]) == 0
    assert "run (unfinished)" in capsys.readouterr().out
    # The same command, without --resume, continues the run.
    assert main(_train_args(out)) == 0
    assert "resumed from its checkpoint and finished" in capsys.readouterr().out
    assert json.loads((out / "log.json").read_text())["done"]
    # Again: nothing to do, nothing overwritten.
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert main(_train_args(out)) == 0
    assert "already finished in this folder" in capsys.readouterr().out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_finished_run_of_another_config_is_refused_unless_fresh(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "demo", "--out", str(out), "--quiet", *_sets([*TINY, "train.epochs=1"])]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--resume", "--schedule", "2-1"]) == 2
    err = capsys.readouterr().err
    assert "holds a finished run of another config" in err and "c2f.schedule: '4-1' vs '2-1'" in err and "--fresh" in err
    assert json.loads((out / "log.json").read_text())["config"]["c2f"]["schedule"] == "4-1"
    assert main([*args, "--schedule", "2-1", "--fresh"]) == 0
    assert json.loads((out / "log.json").read_text())["config"]["c2f"]["schedule"] == "2-1"
    capsys.readouterr()
    # Another name alone is the same run (an experiment's avgpool_41, trained again by `train my.yaml`).
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert main([*args, "--schedule", "2-1", "--set", "name=mine"]) == 0
    assert "already finished in this folder" in capsys.readouterr().out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp


def test_train_into_a_folder_that_holds_runs_is_refused_naming_them(tmp_path, capsys):
    # `train my.yaml --out runs/exp` (for runs/exp/fshift_41) wrote a run beside an experiment's runs and tables.
    run = tmp_path / "exp" / "baseline"
    args = ["train", "demo", "--quiet", *_sets([*TINY, "train.epochs=1", "c2f.schedule=1"])]
    assert main([*args, "--out", str(run)]) == 0
    capsys.readouterr()
    for more in ([], ["--fresh"]):
        assert main([*args, "--out", str(tmp_path / "exp"), *more]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / 'exp'} holds runs: baseline: give one of them, e.g. {run} (to continue or reuse it)" in err
    assert sorted(p.name for p in (tmp_path / "exp").iterdir() if not p.name.startswith(".")) == ["baseline"]
    assert main([*args, "--out", str(run)]) == 0  # the run itself: reused
    assert "already finished in this folder" in capsys.readouterr().out
    # The other way round: an experiment into a run's folder wrote its runs inside that run.
    assert main(["experiment", "demo", "--methods", "fshift", "--out", str(run), "--quiet",
                 *_sets([*TINY, "train.epochs=1"])]) == 2
    assert f"{run} is a run folder (it holds a run's log or checkpoint): an experiment writes its runs in folders " \
           "below its --out" in capsys.readouterr().err
    assert not (run / "baseline").exists()


def test_a_ctrl_c_after_the_run_finished_does_not_make_the_command_fail(tmp_path):
    """A new user's case: a Ctrl-C that came as the process exited, after `train` had printed the
    finished run, gave exit 130, which a script would take for an interrupted run."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "coarse2fine", "train", "demo", "--out", str(out), "--quiet",
                             *_sets([*TINY, "train.epochs=1"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
                            # as from a terminal, whatever this process ignores (a background job ignores SIGINT)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:
        if ": trained;" in line:  # the run is finished and written; the process is on its way out
            time.sleep(0.05)  # into the interpreter's exit (torch's teardown takes a good part of a second)
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads((out / "log.json").read_text())["done"]


def test_predict_uses_an_unfinished_runs_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    _kill_in_phase_2(out)
    wav = tmp_path / "tone.wav"
    import soundfile as sf

    sf.write(wav, 0.1 * torch.sin(torch.arange(16000) * 0.05).numpy(), 16000)
    assert main(["predict", str(out), str(wav), "--weights", "checkpoint.safetensors", "--top-k", "2"]) == 0
    assert "tone.wav" in capsys.readouterr().out


# 6. one "best" --------------------------------------------------------------------------------

def test_one_best_everywhere_is_the_final_phase(tmp_path, capsys):
    recs = as_records([
        {"epoch": 1, "phase": 0, "R": 4, "cum_flops": 1, "cum_time": 1, "acc": 0.5},
        {"epoch": 2, "phase": 1, "R": 1, "cum_flops": 5, "cum_time": 5, "acc": 0.2},
        {"epoch": 3, "phase": 1, "R": 1, "cum_flops": 9, "cum_time": 9, "acc": 0.3},
    ])
    assert best_value(recs, "acc") == 0.3 and best_value(recs, "acc", any_phase=True) == 0.5
    base = as_records([{"epoch": 1, "phase": 0, "cum_flops": 4, "cum_time": 4, "acc": 0.25}])
    assert savings_table("Baseline", base, {"c2f": recs}, "acc")[1]["Best Acc (gain)"] == "30.00 (+5.00)"
    out = tmp_path / "run"
    assert main(["train", "demo", "--out", str(out), "--quiet", *_sets([*TINY, "train.epochs=1"])]) == 0
    line = capsys.readouterr().out
    log = json.loads((out / "log.json").read_text())
    final = max(r["acc"] for r in log["records"] if r["phase"] == 1)
    coarse = max(r["acc"] for r in log["records"] if r["phase"] == 0)
    assert f"best acc {100 * final:.2f} % in the final phase (coarse phases: {100 * coarse:.2f} %)" in line  # as tables


# 7. paths in a config file are relative to that file --------------------------------------------

def test_a_config_outside_the_repo_runs_the_same_from_two_folders(tmp_path, monkeypatch, capsys):
    data = tmp_path / "project" / "data"
    for label in ("a", "b"):
        (data / label).mkdir(parents=True)
        for i in range(4):
            import soundfile as sf

            sf.write(data / label / f"{i}.wav", (0.1 * torch.randn(8000)).numpy(), 16000)
    cfgs = tmp_path / "project" / "configs"
    cfgs.mkdir()
    (cfgs / "mine.yaml").write_text("extends: demo\ndata:\n  kind: manifest\n  train: ../data\n  val: ../data\n"
                                    "  clip_seconds: 0.64\nfeatures:\n  target_length: 64\n")
    results = []
    for folder in (tmp_path, cfgs):
        monkeypatch.chdir(folder)
        cfg = load_config(str(cfgs / "mine.yaml") if folder == tmp_path else "mine.yaml", TINY)
        assert cfg.data.train == str(data)
        out = tmp_path / f"run_from_{folder.name}"
        assert main(["train", str(cfgs / "mine.yaml"), "--out", str(out), "--quiet", "--schedule", "1",
                     *_sets([*TINY, "train.epochs=1"])]) == 0
        results.append(json.loads((out / "log.json").read_text())["records"][0]["acc"])
    assert results[0] == results[1]


def test_a_key_the_data_kind_does_not_read_does_not_make_another_run(tmp_path, monkeypatch, capsys):
    # An FSDD preset's relative data.root, inherited by a manifest config, is taken from the folder the
    # command runs in: the same config from another folder is the same run (reused, resumed), while an
    # FSDD config whose root moved is another run.
    config = _small_manifest_set(tmp_path, bad=False)
    config.write_text(config.read_text().replace("extends: demo", "extends: fsdd_digits-cpu") + "features:\n"
                      "  target_length: 48\nmodel:\n  preset: micro\nc2f:\n  schedule: '1'\n")
    out = tmp_path / "run"
    args = ["train", str(config), "--out", str(out), "--quiet", *_sets([*TINY, "train.epochs=1"])]
    roots = []
    for folder in ("a", "b/c"):
        (tmp_path / folder).mkdir(parents=True)
        monkeypatch.chdir(tmp_path / folder)
        roots.append(load_config(str(config), [*TINY, "train.epochs=1"]).data.root)
        assert main(args) == 0
    assert roots[0] != roots[1]
    assert "already finished in this folder" in capsys.readouterr().out
    ours = load_config(str(config), [*TINY, "train.epochs=1"]).to_dict()
    theirs = json.loads((out / "log.json").read_text())["config"]
    assert theirs["data"]["root"] == roots[0] and ours["data"]["root"] == roots[1]
    assert claim_folder(ours, out, resume=True, fresh=False) is not None  # reused
    fsdd = {**ours, "data": {**ours["data"], "kind": "fsdd"}}
    moved = {**theirs, "data": {**theirs["data"], "kind": "fsdd"}}
    (out / "log.json").write_text(json.dumps({**json.loads((out / "log.json").read_text()), "config": moved}))
    with pytest.raises(RunFolderError, match="data.root"):
        claim_folder(fsdd, out, resume=True, fresh=False)


def test_command_line_paths_stay_relative_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("demo", ["data.cache_dir=cache"])
    assert cfg.data.cache_dir == str(tmp_path / "cache")


# 8. geometries that drop frames; budgets --------------------------------------------------------

def test_a_schedule_that_leaves_frames_unseen_is_refused_with_the_numbers():
    with pytest.raises(ValueError, match=r"at R=3 the model's input has 42 frames and its tokens see 32 of them, so 32 of "
                                         r"the 128 full-resolution frames would never be seen \(at R=1: 0\)"):
        load_config("demo", ["c2f.schedule=3-1"])
    load_config("demo", ["c2f.schedule=4-2-1"])  # every frame seen


@pytest.mark.parametrize("preset", ["demo", "esc50-cpu", "audioset", "htsat_esc50-cpu", "ssast_pretrain-cpu"])
@pytest.mark.parametrize("schedule", ["2-1", "4-1", "4-2-1"])
def test_shipped_presets_take_the_papers_schedules(preset, schedule):
    load_config(preset, [f"c2f.schedule={schedule}", "c2f.phase_epochs=null", "c2f.phase_steps=null"])


def test_a_zero_budget_is_named(capsys):
    assert main(["plan", "demo", "--budget-hours", "0", "--quiet"]) == 2
    assert "--budget-hours must be > 0, got 0" in capsys.readouterr().err


# 9. time figures say when they cannot be trusted --------------------------------------------------

def test_a_run_whose_epochs_varied_more_than_twice_is_flagged():
    def run(times):
        cum, out = 0.0, []
        for i, t in enumerate(times, start=1):
            cum += t
            out.append({"epoch": i, "phase": 0, "clips": 100, "train_time": t, "cum_flops": 10 * i, "cum_time": cum,
                        "acc": 0.1 * i})
        return as_records(out)

    steady, busy = run([1.0, 1.1, 0.95, 1.0]), run([1.0, 1.0, 2.6, 1.0])
    assert busy_runs({"steady": steady, "busy": busy}) == ["busy"]
    rows = savings_table("Baseline", steady, {"busy": busy}, "acc")
    assert rows[1]["Wall time save (%)"].endswith("*")


def test_every_epoch_records_the_load_average(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "demo", "--out", str(out), "--quiet", *_sets([*TINY, "train.epochs=1"])]) == 0
    recs = json.loads((out / "log.json").read_text())["records"]
    assert all("load_avg" in r and r["load_avg"] >= 0 for r in recs) == hasattr(os, "getloadavg")
    assert {r["machine"] for r in recs} == {f"{cpu_name()}, 1 thread"}  # what the time was measured on (threads=1)


def test_python_dash_m_runs_the_command_line():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "coarse2fine", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "experiment" in out.stdout and "train" in out.stdout


def test_time_saves_measured_on_another_machine_than_the_baseline_are_marked():
    def run(machines, cal=None):  # the runs of 3 epochs reach the best of the 4-epoch baseline
        out, cum, gain = [], 0.0, 0.4 / len(machines)
        for i, m in enumerate(machines, start=1):
            cum += 1.0
            rec = {"epoch": i, "phase": 0, "clips": 100, "steps": 10, "train_time": 1.0, "cum_flops": 10 * i,
                   "cum_time": cum, "step_median": 0.1, "step_deciles": [0.1] * 9, "acc": gain * i, "machine": m}
            if cal is not None:
                rec["cal_time"] = cal
            out.append(rec)
        return as_records(out)

    base = run(["A"] * 4, cal=1.0)
    same, other, resumed, unknown = (run(["A"] * 3, cal=1.0), run(["B"] * 3, cal=1.0), run(["A", "B", "B"], cal=1.0),
                                     run([None] * 3, cal=1.0))
    runs = {"same": same, "other": other, "resumed": resumed, "unknown": unknown}
    rows = savings_table("Baseline", base, runs, "acc")
    by = {r["Setting"]: r for r in rows}
    for name in ("other", "resumed"):
        assert by[name]["Wall time save (%)"].endswith("†") and by[name]["Step time save (%)"].endswith("†")
        assert not by[name]["Calibrated time save (%)"].endswith("†")  # timed in one process, on one machine
    for name in ("same", "unknown"):
        assert not any(cell.endswith("†") for cell in by[name].values())
    named = {"Baseline": base, "same": same, "other": other, "resumed": resumed}
    assert timed_elsewhere(named, "Baseline") == {"other": ["B"], "resumed": ["A", "B"]}
    assert "† Timed on different machines or thread counts (other on B; resumed on A and B)" in table_note(base, named)
    assert timed_elsewhere({"Baseline": resumed, "same": same}, "Baseline") == {"Baseline": ["A", "B"], "same": ["A"]}
    assert timed_elsewhere({"Baseline": base, "same": same}, "Baseline") == {}
    # seeds: a baseline whose seeds ran on two machines marks every setting
    seeds = seed_table("Baseline", [base, run(["B"] * 4)], {"same": [same, same]}, "acc")
    assert seeds[1]["Wall time save (%)"].endswith("†")


def test_time_saves_of_runs_whose_same_full_resolution_step_took_longer_are_marked():
    # The fine phase of a 4-1 run and the baseline run the same step (model, geometry, batch):
    # when its lower-quartile cost differs by more than 10 %, the machine's speed changed between
    # the runs, and the in-run time saves measure that too (seen on a VM: 1.2-1.44x in one demo).
    def run(epochs, fine_step, clips=100, coarse=0):  # the 4-1 runs reach the baseline's best at their last epoch
        out, cum = [], 0.0
        for i in range(1, coarse + epochs + 1):
            R, step = (4, 0.3 * fine_step) if i <= coarse else (1, fine_step)
            cum += 10 * step
            out.append({"epoch": i, "phase": int(i > coarse) if coarse else 0, "R": R, "clips": clips, "steps": 10,
                        "train_time": 10 * step, "cum_flops": 10 * i, "cum_time": cum, "step_median": step,
                        "step_deciles": [step] * 9, "acc": 0.4 * i / (coarse + epochs), "cal_time": 1.0,
                        "tokens": 64 // R})
        return as_records(out)

    base = run(4, 0.1)
    runs = {"steady": run(2, 0.105, coarse=1), "slower": run(2, 0.14, coarse=1), "faster": run(2, 0.08, coarse=1),
            "other batch": run(2, 0.2, clips=200, coarse=1)}
    by = {r["Setting"]: r for r in savings_table("Baseline", base, runs, "acc")}
    for name in ("slower", "faster"):
        assert by[name]["Wall time save (%)"].endswith("‡") and by[name]["Step time save (%)"].endswith("‡")
        assert not by[name]["Calibrated time save (%)"].endswith("‡")  # every phase timed in one process
    for name in ("steady", "other batch"):
        assert not any(cell.endswith("‡") for cell in by[name].values())
    assert drifted({"Baseline": base, **runs}, "Baseline") == pytest.approx({"slower": 1.4, "faster": 0.8})
    # patchout trains the same model on fewer tokens: its faster step is not the machine's speed
    patchout = as_records([{**r.to_dict(), "train_tokens": r.tokens // 2} for r in runs["faster"]])
    assert drifted({"Baseline": base, "patchout": patchout}, "Baseline") == {}
    assert "‡ The same full-resolution step took another time than in the baseline (slower 1.40x, faster 0.80x)" in \
        table_note(base, runs)
    # a restart control (1-1): every phase is the baseline's step, all of them count
    restart, cum = [], 0.0
    for i, step in enumerate([0.16] * 4 + [0.105], start=1):
        cum += 10 * step
        restart.append({"epoch": i, "phase": int(i > 4), "R": 1, "clips": 100, "steps": 10, "train_time": 10 * step,
                        "cum_flops": 10 * i, "cum_time": cum, "step_median": step, "step_deciles": [step] * 9,
                        "acc": 0.4 * i / 5, "tokens": 64})
    assert drifted({"Baseline": base, "restart": as_records(restart)}, "Baseline") == pytest.approx({"restart": 1.6})
    # seeds: the seeds' mean full-resolution step is set against the baseline seeds' mean
    seeds = {r["Setting"]: r for r in seed_table("Baseline", [base, base], {"slower": [runs["slower"], runs["steady"]],
                                                                           "steady": [runs["steady"]] * 2}, "acc")}
    assert seeds["slower"]["Wall time save (%)"].endswith("‡") and seeds["slower"]["Step time save (%)"].endswith("‡")
    assert not seeds["slower"]["Calibrated time save (%)"].endswith("‡")
    assert not seeds["slower"]["Run calibrated time (x baseline)"].endswith("‡")  # timed in one process
    assert not any(cell.endswith("‡") for cell in seeds["steady"].values())
    uncalibrated = {name: [dataclasses.replace(r, cal_time=None) for r in recs] for name, recs in runs.items()}
    plain = [dataclasses.replace(r, cal_time=None) for r in base]
    seeds = {r["Setting"]: r for r in seed_table("Baseline", [plain, plain], {"slower": [uncalibrated["slower"]] * 2},
                                                 "acc")}
    assert seeds["slower"]["Run step time (x baseline)"].endswith("‡")  # the run's cost in the drifted measure


def test_the_cpu_is_named_with_the_instructions_torch_uses():
    name = device_name(torch.device("cpu"))
    threads = torch.get_num_threads()
    assert name == f"{cpu_name()}, {threads} thread" + ("s" if threads > 1 else "")
    if hasattr(torch.backends.cpu, "get_cpu_capability"):
        assert torch.backends.cpu.get_cpu_capability() in name


def _small_manifest_set(folder: Path, on_error: str = "raise", bad: bool = True) -> Path:
    """Four 0.5 s clips of two classes as CSV manifests (and a text file posing as audio in the
    training list, when ``bad``), and a config of one's own extending the demo preset."""
    import numpy as np
    import soundfile as sf

    rows = ["path,label"]
    for i in range(4):
        sf.write(folder / f"ok{i}.wav", 0.1 * np.random.default_rng(i).standard_normal(8000), 16000)
        rows.append(f"ok{i}.wav,{'ab'[i % 2]}")
    (folder / "text.wav").write_text("not audio")
    (folder / "train.csv").write_text("\n".join([*rows, *(["text.wav,a"] if bad else [])]) + "\n")
    (folder / "val.csv").write_text("\n".join(rows) + "\n")
    (folder / "mine.yaml").write_text(f"extends: demo\ndata:\n  kind: manifest\n  train: train.csv\n  val: val.csv\n"
                                      f"  clip_seconds: 0.5\n  on_error: {on_error}\n")
    return folder / "mine.yaml"


def test_a_finished_run_is_reused_and_a_changed_config_refused_without_reading_the_data(tmp_path, capsys):
    config = _small_manifest_set(tmp_path, bad=False)
    run = ["train", str(config), "--out", str(tmp_path / "run"), "--quiet", *_sets(TINY[2:] + ["train.epochs=1"])]
    assert main(run) == 0
    (tmp_path / "ok0.wav").unlink()  # reading the data now fails
    assert main(run) == 0 and "already finished in this folder" in capsys.readouterr().out
    assert main([*run, "--set", "train.optim.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "train.optim.lr" in err and "ok0.wav" not in err  # refused on the config alone
    assert main([*run, "--set", "train.optim.lr=0.5", "--out", str(tmp_path / "new")]) == 2
    assert "ok0.wav" in capsys.readouterr().err  # a run that trains reads the data


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_check_lists_bad_clips_and_says_what_a_run_of_this_config_does(tmp_path, capsys, caplog, on_error):
    _small_manifest_set(tmp_path, on_error)
    with caplog.at_level(logging.INFO):  # exit 1: a run of this config would stop on them
        assert main(["check", str(tmp_path / "mine.yaml")]) == (1 if on_error == "raise" else 0)
    out = capsys.readouterr().out
    assert "4 training and 4 validation clips usable; 1 bad" in out and f"{tmp_path / 'text.wav'}:" in out
    assert ("stops on these before training" in out) == (on_error == "raise")
    assert ("trains on the usable clips and lists the bad ones" in out)
    assert not [r for r in caplog.records if "skip" in r.getMessage()]  # no note of a run skipping them


class _Broken(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise ValueError("/data/train/r1/feat-000000.tar: sha256 differs from its descriptor's\nsecond line")


def test_an_error_in_a_loader_worker_is_one_message_not_the_workers_traceback():
    from coarse2fine.cli import error_text

    with pytest.raises(ValueError) as info:
        next(iter(torch.utils.data.DataLoader(_Broken(), num_workers=1)))
    assert "Original Traceback" in str(info.value)
    assert error_text(info.value) == "/data/train/r1/feat-000000.tar: sha256 differs from its descriptor's\nsecond line"
    assert error_text(ValueError("plain: message")) == "plain: message"


@pytest.mark.parametrize("preset, setting", [("fsdd_digits-cpu", "data.root=nowhere/fsdd"),
                                             ("esc50-cpu", "data.root=nowhere/esc50"),
                                             ("ssast_pretrain-cpu", "data.sources=[nowhere/speech]")])
def test_a_missing_data_path_says_relative_paths_are_taken_from_the_current_folder(preset, setting, tmp_path,
                                                                                   monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["check", preset, "--set", setting]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "a relative path in a shipped preset or --set is taken from the current folder" in err


def test_train_keeps_its_log_lines_in_the_run_folder(tmp_path, caplog):
    """Under a scheduler the console is gone when the job is: a new user found no log in the run folder."""
    out = tmp_path / "run"
    sets = _sets(["data.train_clips=16", "data.val_clips=8", "train.epochs=1", "train.threads=1",
                  "train.compile_mode=reduce-overhead"])  # a warning when the config is loaded, before the folder
    caplog.set_level("INFO", logger="coarse2fine")  # as the console logs without --quiet
    assert main(["train", "demo", "--out", str(out), *sets]) == 0
    text = (out / "train.log").read_text()
    assert text.index("compiles nothing without train.compile: true") < text.index("run demo: ast micro")
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO coarse2fine.training.loop: run demo: ast micro", text, re.M)
    assert "demo epoch 2 (phase 2, R=1)" in text
    assert main(["train", "demo", "--out", str(out), *sets]) == 0  # reused: appended to
    assert (out / "train.log").read_text().startswith(text) and "nothing to train" in (out / "train.log").read_text()
    before = (out / "train.log").read_text()
    assert main(["train", "demo", "--out", str(out), *sets, "--set", "train.optim.lr=0.5"]) == 2  # another run's folder
    assert (out / "train.log").read_text() == before
    assert main(["train", "demo", "--out", str(tmp_path / "never"), *sets, "--set", "model.preset=nope"]) == 2
    assert not (tmp_path / "never").exists()


def test_an_experiment_keeps_its_log_lines_in_its_folder(tmp_path, caplog):
    """`experiment`, `demo` and `crossval` kept no log: a job's console, gone with the job, held the only copy."""
    out = tmp_path / "exp"
    sets = _sets(["data.train_clips=16", "data.val_clips=8", "train.epochs=2", "train.threads=1",
                  "train.compile_mode=reduce-overhead"])  # a warning when the config is loaded, before any folder
    command = ["experiment", "demo", "--schedules", "2-1", "--methods", "fshift", "--out", str(out), "--quiet",
               "--calibrate-rounds", "0", *sets]
    caplog.set_level("INFO", logger="coarse2fine")
    assert main([*command, "--report-only"]) == 2 and not out.exists()  # trains nothing, writes nothing
    assert main(command) == 0
    text = (out / "experiment.log").read_text()
    assert text.index("compiles nothing without train.compile: true") < text.index("run baseline: ast micro")
    assert "fshift_21 epoch 1 (phase 1, R=2)" in text and "baseline epoch 2 (phase 1, R=1)" in text
    assert main(command) == 0  # reused: appended to, each start's lines apart
    again = (out / "experiment.log").read_text()
    assert again.startswith(text) and "another start in this folder" in again[len(text):]
    bad = tmp_path / "bad"
    assert main([*command[:-len(sets)], *sets, "--set", "data.kind=manifest", "--set", f"data.train={bad}/t.csv",
                 "--set", f"data.val={bad}/t.csv", "--out", str(bad)]) == 2
    assert not bad.exists()  # a start that fails before a run claims its folder leaves nothing


def _failed_start(out: Path, config) -> str:
    """What a start of ``config`` that failed after its folder was set up leaves in ``out`` (a
    out of memory at the first step, say): config.yaml, labels.json and its train.log lines."""
    from coarse2fine.config import config_yaml

    out.mkdir(parents=True)
    (out / "config.yaml").write_text(config_yaml(config))
    (out / "labels.json").write_text(json.dumps({"classes": ["a", "b"], "display_names": ["a", "b"]}))
    lines = "2024-01-01 00:00:00 ERROR coarse2fine: stopped: OutOfMemoryError: CUDA out of memory\n"
    (out / "train.log").write_text(lines)
    return lines


def test_another_config_starts_where_a_run_never_trained_and_says_so(tmp_path, caplog):
    """A start that failed left config.yaml, labels.json and train.log; another config's train then
    started there without a word, its train.log lines run on from the failed start's (a new user's case)."""
    out = tmp_path / "x"
    settings = ["data.train_clips=16", "data.val_clips=8", "train.epochs=1", "train.threads=1", "c2f.schedule=1"]
    before = _failed_start(out, load_config("demo", [*settings, "model.preset=tiny", "train.optim.lr=0.5"]))
    sets = _sets(settings)
    caplog.set_level("INFO", logger="coarse2fine")
    assert main(["train", "demo", "--out", str(out), *sets]) == 0
    assert ("the run there (config 'demo') was set up but never trained (no checkpoint, no log.json: it failed at its "
            "start); this run (config 'demo', which differs: model.preset: 'tiny' vs 'micro'; train.optim.lr: 0.5 vs "
            "0.001) starts in its place") in caplog.text
    text = (out / "train.log").read_text()
    assert text.startswith(before)
    separator, first = text[len(before):].splitlines()[:2]
    assert re.fullmatch(r"-+ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d another start in this folder; the lines above are earlier "
                        r"starts' -+", separator)
    assert "was set up but never trained" in first and "demo epoch 1 (phase 1, R=1)" in text


def test_a_run_that_never_trained_starts_again_and_weights_without_a_log_stay_refused(tmp_path, caplog):
    ours = load_config("demo")
    other = load_config("demo", ["train.optim.lr=0.5"]).to_dict()
    _failed_start(tmp_path / "same", ours)
    with caplog.at_level("INFO", logger="coarse2fine"):
        assert claim_folder(ours.to_dict(), tmp_path / "same", resume=True, fresh=False) is None
    assert "the run of this config there was set up but never trained (no checkpoint, no log.json); it starts again" \
        in caplog.text
    _failed_start(tmp_path / "weights", ours)
    (tmp_path / "weights" / "model.safetensors").write_bytes(b"")  # a run stopped between its weights and its log
    with pytest.raises(RunFolderError, match=r"holds the weights \(model.safetensors\) of a run of another config "
                                             r"\('demo': train.optim.lr: 0.001 vs 0.5\) with no log.json"):
        claim_folder(other, tmp_path / "weights", resume=True, fresh=False)
