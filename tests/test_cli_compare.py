"""``coarse2fine compare`` on real run folders: runs of other data, model or metric are refused
(or, with --allow-different, tabulated with a warning), what differs only in how a run trains is
not; unknown metrics and files that are no run folder are named; CSV gives values and gains
columns of their own, as an experiment's savings.csv does."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import shutil
from pathlib import Path

import pytest

from coarse2fine.cli import main
from coarse2fine.report.comparable import (
    RunFacts,
    differences,
    incomparable,
    run_facts,
    timing_lines,
    unchecked_lines,
)
from coarse2fine.report.plots import write_report
from coarse2fine.report.savings import read_log

TINY = ["data.train_clips=16", "data.val_clips=8", "train.epochs=1", "train.batch_size=8", "train.threads=1",
        "model.preset=micro", "c2f.schedule=1"]


def _train(out: Path, *sets: str) -> Path:
    args = [a for s in [*TINY, *sets] for a in ("--set", s)]
    assert main(["train", "demo", "--out", str(out), "--quiet", *args]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A baseline, a coarse-to-fine run that differs only in how it trains (schedule, method,
    epochs, name, seed, experiment section), and runs of other data, model and metric."""
    root = tmp_path_factory.mktemp("runs")
    return {
        "base": _train(root / "base"),
        "c2f": _train(root / "c2f", "c2f.schedule=4-1", "c2f.method=avgpool", "c2f.phase_epochs=[1, 1]",
                      "train.epochs=2", "name=mine", "train.seed=3", "experiment.seeds=2"),
        "data": _train(root / "data", "data.train_clips=24"),
        "model": _train(root / "model", "model.arch=ssast"),
        "metric": _train(root / "metric", "train.metric=mAP"),
    }


def test_runs_that_differ_only_in_how_they_train_are_tabulated(runs, capsys):
    assert main(["compare", str(runs["base"]), str(runs["c2f"])]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Setting") and "c2f" in out


def test_runs_of_one_name_in_several_experiments_each_have_their_row(runs, tmp_path, capsys):
    """Two runs named fshift_41 (of two experiments) made one row, the second hiding the first; and
    a run named baseline sat beside the Baseline row of another run (a new user's case)."""
    for parent in ("exp1", "exp2"):
        shutil.copytree(runs["c2f"], tmp_path / parent / "fshift_41")
    shutil.copytree(runs["c2f"], tmp_path / "exp1" / "baseline")
    assert main(["compare", str(runs["base"]), str(tmp_path / "exp1" / "fshift_41"), str(tmp_path / "exp2" / "fshift_41"),
                 str(tmp_path / "exp1" / "baseline"), "--format", "csv"]) == 0
    rows = [line.split(",")[0] for line in capsys.readouterr().out.splitlines()[1:] if line and "," in line]
    assert rows[:4] == ["Baseline (base)", "exp1/fshift_41", "exp2/fshift_41", "baseline"]
    run = str(tmp_path / "exp1" / "fshift_41")
    assert main(["compare", str(runs["base"]), run, run + "/"]) == 2  # one row would have hidden the other
    assert "given more than once among the runs" in capsys.readouterr().err


def test_compare_writes_the_tables_and_plots_of_your_own_runs(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["compare", str(runs["base"]), str(runs["c2f"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    made = sorted(p.name for p in out.iterdir())
    assert {"savings.md", "savings.csv", "phases.csv", "metric_vs_flops.png", "metric_vs_time.png"} <= set(made)
    assert f"Tables and plots in {out}" in printed and (out / "savings.csv").read_text().startswith("Setting,")
    assert "c2f" in (out / "savings.md").read_text() and "\n## Phases (phases.csv)\n\n| Setting" in (out / "savings.md").read_text()


def test_runs_of_other_data_or_model_or_metric_are_refused_naming_what_differs(runs, capsys):
    base = str(runs["base"])
    assert main(["compare", base, str(runs["c2f"]), str(runs["data"]), str(runs["model"])]) == 2
    err = capsys.readouterr().err
    assert f"{runs['data']}: data differs from the baseline {base} (train clips 16 -> 24" in err
    assert f"{runs['model']}: model differs from the baseline {base} (ast micro -> ssast micro)" in err
    assert str(runs["c2f"]) + ":" not in err and "--allow-different" in err
    assert main(["compare", base, str(runs["metric"])]) == 2
    assert f"metric differs from the baseline {base} (train.metric acc -> mAP)" in capsys.readouterr().err
    # The metric given explicitly: the runs' default metric no longer matters.
    assert main(["compare", base, str(runs["metric"]), "--metric", "acc"]) == 0


def test_allow_different_tabulates_them_with_a_warning(runs, capsys, caplog):
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        assert main(["compare", str(runs["base"]), str(runs["model"]), "--allow-different", "--quiet"]) == 0
    assert "model" in capsys.readouterr().out
    assert any("model differs from the baseline" in r.message and "--allow-different" in r.message
               for r in caplog.records)


def test_unknown_metric_and_a_file_for_a_run_folder_are_named(runs, capsys):
    assert main(["compare", str(runs["base"]), str(runs["c2f"]), "--metric", "accuracy"]) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'accuracy': the runs' records have acc, d_prime, mAP, mAUC, val_loss" in err
    config = runs["base"] / "config.yaml"
    assert main(["compare", str(config), str(runs["c2f"])]) == 2
    err = capsys.readouterr().err
    assert f"{config}: a file, not a run folder; give the run folder (one with log.json)" in err
    assert "JSON" not in err
    root = runs["base"].parent  # a folder of runs (an experiment's): the runs in it are named
    assert main(["compare", str(runs["base"]), str(root)]) == 2
    assert f"{root}: not a run folder; {root} holds runs: base, c2f, data, metric, ... (5 in all): give one of them" in (
        capsys.readouterr().err)
    (root / "empty").mkdir(exist_ok=True)
    assert main(["compare", str(runs["base"]), str(root / "empty")]) == 2
    assert "not a run folder (no log.json in it" in capsys.readouterr().err


def test_csv_gives_values_and_gains_their_own_columns_as_savings_csv_does(runs, capsys, tmp_path):
    assert main(["compare", str(runs["base"]), str(runs["c2f"]), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["Setting"] for r in rows] == ["Baseline", "c2f"]
    assert rows[1]["Best Acc"].replace(".", "").isdigit() and rows[1]["Best Acc gain"][0] in "+-"
    assert rows[0]["Best Acc gain"] == "" and "(" not in rows[1]["Best Acc"]
    records = {name: read_log(runs[name])["records"] for name in ("base", "c2f")}
    write_report(tmp_path, records["base"], {"c2f": records["c2f"]}, "acc")
    saved = (tmp_path / "savings.csv").read_text().splitlines()
    assert saved[0] == ",".join(rows[0])  # the experiment's savings.csv has the same columns
    assert main(["compare", str(runs["base"]), str(runs["c2f"]), "--format", "text"]) == 0
    assert "Best Acc (gain)" in capsys.readouterr().out  # text tables keep value and gain together
    assert main(["compare", str(runs["base"]), str(runs["c2f"]), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data["savings"][0]) == list(rows[0]) and data["savings"][1]["Best Acc"] == float(rows[1]["Best Acc"])
    saved = json.loads((tmp_path / "savings.json").read_text())
    assert saved["savings"] == data["savings"]
    assert [p["Setting"] for p in saved["phases"]] == [p["Setting"] for p in data["phases"]] and saved["notes"]


def test_class_ids_from_log_or_labels_json_and_paths_by_their_names(runs, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(runs["base"], moved)
    log_path = moved / "log.json"
    saved = json.loads(log_path.read_text())
    del saved["classes"]  # a log without its classes: labels.json beside it has them
    log_path.write_text(json.dumps(saved))
    base, same = run_facts(runs["base"], read_log(runs["base"])), run_facts(moved, read_log(moved))
    assert same.classes == base.classes and len(base.classes) == 8 and base.train_clips == 16
    assert differences(base, same) == {}
    (moved / "labels.json").write_text(json.dumps({"classes": list(base.classes[:6])}))
    assert differences(base, run_facts(moved, read_log(moved))) == {"data": ["classes 8 -> 6"]}
    (moved / "labels.json").write_text(json.dumps({"classes": list(reversed(base.classes))}))
    assert differences(base, run_facts(moved, read_log(moved))) == {"data": ["class ids differ"]}

    def facts(train: str, **data) -> RunFacts:
        return RunFacts("x", {"data": {"kind": "manifest", "train": train, **data}}, None, None)

    # Paths resolved from another working folder are the same data; another file is not.
    assert differences(facts("/a/train.csv"), facts("/b/train.csv", num_workers=4, cache_dir="/c")) == {}
    assert incomparable([facts("/a/fold_1.csv"), facts("/a/fold_2.csv")]) == [
        "x: data differs from the baseline x (data.train /a/fold_1.csv -> /a/fold_2.csv)"]


def test_a_file_that_is_no_run_log_or_has_no_config_is_named(runs, tmp_path, capsys):
    bad = tmp_path / "notes" / "log.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps({"hello": 1}))
    assert main(["compare", str(bad.parent), str(runs["c2f"])]) == 2
    assert f"{bad}: expected a run log with a non-empty 'records' list" in capsys.readouterr().err
    saved = json.loads((runs["base"] / "log.json").read_text())
    bad.write_text(json.dumps({**saved, "config": {**saved["config"], "train": {"epochz": 3}}}))
    assert main(["compare", str(runs["base"]), str(bad.parent)]) == 2
    assert f"{bad}: its 'config' is not a coarse2fine config (train: unknown key(s) epochz" in capsys.readouterr().err
    bad.write_text(json.dumps({**saved, "config": ["demo"]}))
    assert main(["compare", str(runs["base"]), str(bad.parent)]) == 2
    assert f"{bad}: its 'config' is not a coarse2fine config (a list)" in capsys.readouterr().err
    # A run log without a config: --calibrate-rounds has no config to time its steps from.
    bad.write_text(json.dumps({k: v for k, v in saved.items() if k != "config"}))
    assert main(["compare", str(runs["base"]), str(bad.parent), "--calibrate-rounds", "1"]) == 2
    assert f"--calibrate-rounds times each run's steps from its config; {bad} has none" in capsys.readouterr().err


def test_logs_without_a_config_are_compared_by_what_they_hold():
    cfg = {"data": {"kind": "manifest", "train": "a.csv"}, "model": {"arch": "ast"}, "train": {"metric": "acc"}}
    base = RunFacts("b", cfg, 32, ("x", "y"), clip_lists=("t", "v"))
    lightning = run_facts("l", {"records": [{"clips": 32}], "schedule": {"frames": 128, "mel_bins": 128}})
    assert lightning == RunFacts("l", {}, 32, None, has_config=False, input_size=(128, 128))
    assert differences(base, lightning) == {}  # not every data key of the baseline's config
    assert unchecked_lines([base, lightning]) == [
        ("l: compared with the baseline b by train clips only; not checked: classes, input size, data settings, "
         "features, model, objective and metric (no config in the run log of l)")]
    other = RunFacts("m", {}, 24, None, has_config=False, input_size=(96, 128))
    assert differences(lightning, other) == {"data": ["train clips 32 -> 24"],
                                             "features": ["input 128 x 128 -> 96 x 128"]}
    assert unchecked_lines([lightning, other], metric_given=True) == [
        ("m: compared with the baseline l by train clips, input size only; not checked: classes, data settings, "
         "features, model, objective (no config in the run log of l and m)")]
    assert unchecked_lines([base, RunFacts("c", cfg, 32, None, clip_lists=("t", "v"))]) == [
        "c: classes not compared with the baseline b (not in both run logs)"]
    assert unchecked_lines([base, RunFacts("d", cfg, 32, ("x", "y"), clip_lists=("t", "v"))]) == []
    assert unchecked_lines([base, RunFacts("e", cfg, 32, ("x", "y"))]) == [  # a log of an earlier version
        "e: clip lists not compared with the baseline b (not in both run logs)"]


def test_data_is_compared_by_its_clip_lists_not_by_the_names_of_its_files():
    """A new user's case: an identical manifest under another name was refused, and a manifest of the
    same name listing other folds was taken for the baseline's data."""
    def facts(name, data, lists):
        cfg = {"data": data, "model": {"arch": "ast"}, "train": {"metric": "acc"}}
        return RunFacts(name, cfg, 160, ("x", "y"), clip_lists=lists, used_lists=lists)

    base = facts("b", {"kind": "manifest", "train": "/d/esc/train.json", "val": "/d/esc/val.json"}, ("t1", "v1"))
    copy = facts("c", {"kind": "manifest", "train": "/ssd/train_copy.json", "val": "/ssd/val.json"}, ("t1", "v1"))
    assert differences(base, copy) == {}
    others = facts("o", {"kind": "manifest", "train": "/d/other/train.json", "val": "/d/esc/val.json"}, ("t2", "v1"))
    assert differences(base, others) == {"data": ["the train split lists other clips or labels"]}
    earlier = dataclasses.replace(others, folder="e", used_lists=None)  # a log of a version before used-clip digests
    assert differences(base, earlier) == {"data": [
        "the train split lists other clips or labels (the log of e, of an earlier version that skipped bad clips, holds "
        "the clips it listed, not those it used: --allow-different tabulates them)"]}
    packed = facts("p", {"kind": "shards", "train": "/packs/esc/train", "val": "/packs/esc/val"}, ("t1", "v1"))
    assert differences(base, packed) == {}  # the same clips, packed ...
    assert timing_lines([base, packed]) == [  # ... read another way, said under the table
        "p read its clips as data.kind shards, the baseline b as manifest: its wall and step time saves measure that "
        "too, and a pack's features, where it has them, were rounded to float16 when packed"]
    shorter = facts("s", {"kind": "shards", "train": "/packs/esc/train", "val": "/packs/esc/val",
                          "clip_seconds": 2.0}, ("t1", "v1"))
    assert differences(base, shorter) == {"data": ["data.clip_seconds None -> 2.0"]}  # what makes the clips counts
    old = [RunFacts(f.folder, f.config, 160, ("x", "y")) for f in (base, others)]  # logs of an earlier version
    assert differences(*old) == {}  # by the last names of the paths, as before (and said under the table)


def test_runs_timed_on_different_machines_are_named_in_the_note(runs, tmp_path, capsys):
    """A run resumed or trained on another machine: its time saves compare the machines too."""
    moved = Path(shutil.copytree(runs["c2f"], tmp_path / "elsewhere"))
    log = json.loads((moved / "log.json").read_text())
    here = log["records"][0]["machine"]
    for r in log["records"][1:]:
        r["machine"] = "Other CPU (AVX512), 8 threads"
        r["acc"] = 1.0  # it reaches the baseline's best, so its row has time saves that the note is about
    (moved / "log.json").write_text(json.dumps(log))
    assert main(["compare", str(runs["base"]), str(runs["c2f"])]) == 0
    assert "†" not in capsys.readouterr().out
    assert main(["compare", str(runs["base"]), str(moved)]) == 0
    out = capsys.readouterr().out
    assert f"† Timed on different machines or thread counts (elsewhere on {here} and Other CPU (AVX512), 8 threads)" in out


def test_runs_that_ran_with_other_timing_settings_are_named_in_the_notes(runs, tmp_path, capsys):
    # A compiled run against an eager baseline (a new user's case): only "‡ 1.17x" said so.
    assert main(["compare", str(runs["base"]), str(runs["c2f"])]) == 0
    assert "change how long a step takes" not in capsys.readouterr().out
    other = _train(tmp_path / "threads", "train.threads=2", "data.preload=false")
    assert main(["compare", str(runs["base"]), str(other)]) == 0
    out = capsys.readouterr().out
    assert (f"{tmp_path / 'threads'} ran with other settings than the baseline {runs['base']} that change how long a "
            "step takes, not what it learns (data.preload: false vs true; train.threads: 2 vs 1)") in out


def test_compare_out_keeps_its_calibration_and_uses_it_again(runs, tmp_path, capsys):
    # Each compare measured anew, so the same runs' calibrated save moved from one compare to the next.
    out = tmp_path / "report"
    args = ["compare", str(runs["base"]), str(runs["c2f"]), "--out", str(out), "--format", "csv"]
    assert main([*args, "--calibrate-rounds", "1"]) == 0
    first = capsys.readouterr().out
    assert "Calibrated time save (%)" in first and (out / "calibration.json").exists()
    assert "Calibrated steps (1 interleaved round in one process" in (out / "savings.md").read_text()
    saved = (out / "calibration.json").read_text()
    assert main(args) == 0  # no rounds: the kept calibration's column
    assert capsys.readouterr().out == first
    assert main([*args, "--calibrate-rounds", "1", "--recalibrate"]) == 0  # measured anew
    assert "Calibrated time save (%)" in capsys.readouterr().out and (out / "calibration.json").read_text() != saved
    assert main(["compare", str(runs["base"]), str(runs["c2f"]), "--format", "csv"]) == 0  # no --out: nothing kept
    assert "Calibrated" not in capsys.readouterr().out


def test_a_log_of_an_earlier_version_that_skipped_nothing_used_the_clips_it_listed():
    # An upgrade's case: a 156f83c baseline (no *_used_sha256) against a run on the same manifest that
    # skipped its one bad row was refused, "lists other clips or labels"
    from coarse2fine.report.comparable import run_facts

    data = {"train_list_sha256": "t", "val_list_sha256": "v"}
    assert run_facts("old", {"data": data, "skipped": []}).used_lists == ("t", "v")
    assert run_facts("old", {"data": data, "skipped": [{"path": "x.wav", "problem": "file not found"}]}).used_lists is None
