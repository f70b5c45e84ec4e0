"""crossval checks every fold's config and data (without decoding audio) before any fold trains."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from coarse2fine.cli import main
from coarse2fine.config import load_config
from coarse2fine.experiments.grid import fold_config


def _fold_set(root: Path, fold: int) -> None:
    """``train_{fold}.json`` / ``val_{fold}.json`` manifests of a tiny two-class set in ``root``."""
    folder = root / f"f{fold}"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(fold)
    rows = []
    for i in range(8):
        p = folder / f"clip{i}.wav"
        t = np.arange(8000) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (300 + 500 * (i % 2)) * t) + 0.01 * rng.standard_normal(8000)
        sf.write(p, wave.astype(np.float32), 16000)
        rows.append({"wav": str(p), "labels": "/m/a" if i % 2 == 0 else "/m/b"})
    (root / f"train_{fold}.json").write_text(json.dumps({"data": rows[:6]}))
    (root / f"val_{fold}.json").write_text(json.dumps({"data": rows[6:]}))


def _manifest_sets(root: Path, phase_epochs: str = "null") -> list[str]:
    (root / "labels.csv").write_text("index,mid,display_name\n0,/m/a,Dog\n1,/m/b,Cat\n")
    args = ["data.kind=manifest", f"data.train={root}/train_{{fold}}.json", f"data.val={root}/val_{{fold}}.json",
            f"data.label_csv={root}/labels.csv", "data.clip_seconds=0.5", "features.target_length=64",
            "train.epochs=1", "train.batch_size=4", "train.threads=1", f"c2f.phase_epochs={phase_epochs}"]
    return [a for s in args for a in ("--set", s)]


@pytest.mark.parametrize("methods", [[], ["--methods", "fshift", "--schedules", "2-1"]])
def test_missing_fold_manifest_stops_before_the_first_fold_trains(tmp_path, capsys, methods):
    _fold_set(tmp_path, 1)  # fold 2's manifests are missing
    sets = _manifest_sets(tmp_path, "[1, 1]" if methods else "null")
    schedule = [] if methods else ["--schedule", "1"]
    out = tmp_path / "cv"
    assert main(["crossval", "demo", "--folds", "2", *methods, *schedule, "--out", str(out), "--quiet", *sets]) == 2
    err = capsys.readouterr().err
    assert f"fold 2: data.train: {tmp_path}/train_{{fold}}.json with data.fold 2: no such file or folder" in err
    assert f"({tmp_path}/train_2.json)" in err
    assert err.count("a PATH of each fold's own file keeps {fold} where the fold number goes") == 1
    assert "(nothing trained; if the data stops at fold 1, give --folds 1)" in err
    assert not (out / "fold1").exists() and not list(out.rglob("log.json"))  # nothing trained


def test_unreadable_label_file_names_the_fold(tmp_path, capsys):
    for fold in (1, 2):
        _fold_set(tmp_path, fold)
    sets = _manifest_sets(tmp_path)
    (tmp_path / "val_2.json").write_text("{not json")
    out = tmp_path / "cv"
    assert main(["crossval", "demo", "--folds", "2", "--schedule", "1", "--out", str(out), "--quiet", *sets]) == 2
    err = capsys.readouterr().err
    assert "fold 2" in err and "val_2.json" in err
    assert not list(out.rglob("log.json"))


@pytest.mark.parametrize("methods", [[], ["--methods", "fshift", "--schedules", "4-1"]])
def test_esc50_folds_beyond_five_are_refused_at_once(tmp_path, capsys, methods):
    out = tmp_path / "cv"
    assert main(["crossval", "esc50-cpu", "--set", f"data.root={tmp_path}", "--folds", "6", *methods,
                 "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "fold 6" in err and "ESC-50 has folds 1-5, got 6" in err
    assert not (out / "fold1").exists()


def test_fold_configs_checks_every_fold_first(tmp_path):
    from coarse2fine.experiments.grid import fold_configs

    base = load_config("esc50-cpu", [f"data.root={tmp_path}"])
    with pytest.raises(ValueError, match="fold 6: .*ESC-50 has folds 1-5, got 6"):
        fold_configs(base, range(1, 7))  # refused by the config check, before fold 1's (absent) data is read


def test_finished_folds_are_reused(tmp_path, capsys):
    for fold in (1, 2):
        _fold_set(tmp_path, fold)
    sets = _manifest_sets(tmp_path)
    out = tmp_path / "cv"
    command = ["crossval", "demo", "--folds", "2", "--schedule", "1", "--out", str(out), "--quiet", *sets]
    assert main(command) == 0
    logs = {f: (out / f"fold{f}" / "log.json").stat().st_mtime_ns for f in (1, 2)}
    assert main(command) == 0
    assert {f: (out / f"fold{f}" / "log.json").stat().st_mtime_ns for f in (1, 2)} == logs


@pytest.mark.parametrize(("preset", "kind"), [("fsdd_speakers-cpu", "fsdd"), ("demo", "synthetic")])
def test_kinds_without_folds_say_so(tmp_path, capsys, preset, kind):
    assert main(["crossval", preset, "--set", f"data.root={tmp_path}", "--folds", "2", "--out", str(tmp_path / "x"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"data.kind {kind} has no folds" in err and "data.kind esc50" in err and "shards" in err
    assert "needs '{fold}' in data.train" not in err and "fold 1" not in err
    with pytest.raises(ValueError, match=f"data.kind {kind} has no folds"):
        fold_config(load_config(preset, [f"data.root={tmp_path}"]), 1)


def test_manifests_without_fold_placeholder_say_what_they_need(tmp_path):
    cfg = load_config("demo", ["data.kind=manifest", f"data.train={tmp_path}/t.json", f"data.val={tmp_path}/v.json"])
    with pytest.raises(ValueError, match=r"data.kind manifest needs '\{fold\}' in data.train and data.val"):
        fold_config(cfg, 1)


@pytest.mark.parametrize("option", [["--calibrate-rounds", "3"], ["--recalibrate"]])
def test_crossval_of_one_setting_refuses_calibration_it_would_not_do(tmp_path, capsys, option):
    # they were taken and ignored (a new user's case), where --interleave and --controls are refused
    assert main(["crossval", "demo", "--folds", "2", "--schedule", "1", "--out", str(tmp_path / "cv"), *option]) == 2
    assert "without --methods one setting trains, with nothing to compare: give --methods" in capsys.readouterr().err
    assert not (tmp_path / "cv").exists()
