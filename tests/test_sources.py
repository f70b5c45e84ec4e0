"""Data sources end to end: manifests with bad files, FSDD, and what a run reports."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from coarse2fine.cli import main
from coarse2fine.config import load_config
from coarse2fine.data.sources import load_splits
from coarse2fine.data.validate import InvalidInputError
from coarse2fine.training.loop import train_run

FSDD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fsdd"


def _make_set(root: Path, bad: bool) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "class_labels_indices.csv").write_text('index,mid,display_name\n0,/m/a,"Dog, barking"\n1,/m/b,Cat\n')
    rows = []
    for i in range(8):
        p = root / f"clip{i}.wav"
        t = np.arange(8000) / 16000
        sf.write(p, (0.3 * np.sin(2 * np.pi * (300 + 500 * (i % 2)) * t) + 0.01 * rng.standard_normal(8000)).astype(np.float32), 16000)
        rows.append({"wav": str(p), "labels": "/m/a" if i % 2 == 0 else "/m/b"})
    if bad:
        (root / "broken.wav").write_bytes(b"RIFF\x00\x00not audio at all")
        sf.write(root / "silent.wav", np.zeros(8000, np.float32), 16000)
        rows += [{"wav": str(root / "broken.wav"), "labels": "/m/a"}, {"wav": str(root / "silent.wav"), "labels": "/m/b"},
                 {"wav": str(root / "missing.wav"), "labels": "/m/a"}]
    manifest = {"data": rows}
    (root / "train.json").write_text(json.dumps(manifest))
    (root / "val.json").write_text(json.dumps({"data": rows[:4]}))
    return root / "train.json", root / "val.json", root / "class_labels_indices.csv"


def _settings(train, val, labels, *extra):
    return ["data.kind=manifest", f"data.train={train}", f"data.val={val}", *([f"data.label_csv={labels}"] if labels else []),
            "data.clip_seconds=0.5", "features.target_length=64", "train.epochs=1", "train.batch_size=4",
            "train.optim.warmup_steps=1", "c2f.schedule=1", *extra]


def _cfg(train, val, labels, *extra):
    return load_config("demo", _settings(train, val, labels, *extra))


def test_bad_files_stop_before_training_naming_each(tmp_path):
    cfg = _cfg(*_make_set(tmp_path, bad=True))
    with pytest.raises(InvalidInputError) as err:
        load_splits(cfg)
    msg = str(err.value)
    assert "broken.wav" in msg and "silent.wav" in msg and "missing.wav" in msg


def test_skip_option_trains_and_lists_bad_files_in_the_report(tmp_path, caplog):
    cfg = _cfg(*_make_set(tmp_path / "data", bad=True), "data.on_error=skip", "augment.freqm=8", "augment.timem=8",
               "augment.mixup=0.5", "augment.balanced_sampling=true", "augment.wa_start=1", "augment.wa_end=1")
    splits = load_splits(cfg)
    assert len(splits.train) == 8 and splits.display_names == ["Dog, barking", "Cat"]
    with caplog.at_level("INFO", logger="coarse2fine"):
        train_run(cfg, splits, tmp_path / "run", progress=False)
    assert "balanced sampling (augment.balanced_sampling" in caplog.text  # the run's first line says so
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert sorted(Path(s["path"]).name for s in log["skipped"]) == ["broken.wav", "missing.wav", "silent.wav"]
    assert all(s["problem"] for s in log["skipped"])
    assert "weight_averaged" in log and (tmp_path / "run" / "model_wa.safetensors").exists()
    labels = json.loads((tmp_path / "run" / "labels.json").read_text())
    assert labels["classes"] == ["/m/a", "/m/b"]


def test_train_says_at_its_end_how_many_clips_it_did_not_train_on(tmp_path, capsys):
    # The last line said only "trained; best acc ...": the skipped clips were a warning far above it.
    from coarse2fine.cli import main

    sets = _settings(*_make_set(tmp_path / "data", bad=True), "data.on_error=skip", "train.threads=1")
    assert main(["train", "demo", "--out", str(tmp_path / "run"), "--quiet", *[a for s in sets for a in ("--set", s)]]) == 0
    assert "  3 bad clip(s) skipped before training (log.json: skipped)\n" in capsys.readouterr().out


def test_check_and_load_splits_warn_of_a_clip_listed_twice_with_other_labels(tmp_path, capsys):
    from coarse2fine.cli import main

    train, val, labels = _make_set(tmp_path / "data", bad=False)
    rows = json.loads(train.read_text())["data"]
    train.write_text(json.dumps({"data": [*rows, {**rows[0], "labels": "/m/b"}]}))
    sets = _settings(train, val, labels)
    assert load_splits(_cfg(train, val, labels)).listing == [
        f"{train}: 1 clip(s) listed more than once, each trained as often as listed; 1 with other labels (e.g. "
        "clip0.wav, with other labels: /m/a at train.json entry 1, /m/b at train.json entry 9)"]
    assert main(["check", "demo", *[a for s in sets for a in ("--set", s)]]) == 0
    assert f"warning: {train}: 1 clip(s) listed more than once" in capsys.readouterr().out


def _csv_set(root: Path, rows: dict[str, list[str]]) -> dict[str, Path]:
    """CSV manifests (no label CSV) of short tones: ``{split: [label, ...]}``."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, labels in rows.items():
        lines = ["path,label"]
        for i, label in enumerate(labels):
            p = root / f"{split}{i}.wav"
            sf.write(p, (0.3 * np.sin(2 * np.pi * (200 + 100 * i) * np.arange(8000) / 16000)).astype(np.float32), 16000)
            lines.append(f"{p},{label}")
        out[split] = root / f"{split}.csv"
        out[split].write_text("\n".join(lines) + "\n")
    return out


def test_a_validation_set_without_some_classes_takes_the_training_columns(tmp_path, caplog):
    # A small validation set often lacks a class. Its targets must use the training set's
    # columns, not columns of its own; a training class whose clips are all bad is named.
    csv = _csv_set(tmp_path, {"train": ["cat", "dog", "owl", "cat", "dog", "owl"], "val": ["owl", "cat"]})
    with open(csv["train"], "a") as f:
        f.write(f"{tmp_path / 'gone.wav'},bat\n")
    cfg = _cfg(csv["train"], csv["val"], None, "data.on_error=skip")
    with caplog.at_level("INFO"):
        splits = load_splits(cfg)
    assert splits.train.class_names == splits.val.class_names == ["bat", "cat", "dog", "owl"]
    assert splits.val.targets.argmax(1).tolist() == [3, 1]
    assert "1 class(es) have no usable training clip: bat" in caplog.text
    assert "2 of the 4 training classes have no validation clip" in caplog.text


def test_a_validation_label_training_never_saw_is_a_bad_clip_named_with_the_others(tmp_path, capsys):
    """It stopped `check` at once (exit 2), hiding every other bad clip (a new user's case): it is
    a bad clip like the others, listed with them, stopping a run or skipped (data.on_error)."""
    csv = _csv_set(tmp_path, {"train": ["cat", "dog"], "val": ["cat", "emu", "emu"]})
    with open(csv["train"], "a") as f:
        f.write(f"{tmp_path / 'gone.wav'},cat\n")
    why = f"label(s) emu not in the training set {csv['train']} (give both splits the same label_csv, or remove the clip)"
    with pytest.raises(InvalidInputError) as err:
        load_splits(_cfg(csv["train"], csv["val"], None))
    assert f"{tmp_path / 'val1.wav'}: val.csv line 3: {why}" in str(err.value)  # as an editor counts lines
    assert f"{tmp_path / 'val2.wav'}: val.csv line 4: {why}" in str(err.value)
    assert "gone.wav" in str(err.value)  # the other split's bad clip in the same message
    splits = load_splits(_cfg(csv["train"], csv["val"], None, "data.on_error=skip"))
    assert len(splits.val) == 1 and len(splits.skipped) == 3
    sets = _settings(csv["train"], csv["val"], None)
    assert main(["check", "demo", *[a for s in sets for a in ("--set", s)]]) == 1
    out = capsys.readouterr().out
    assert "2 training and 1 validation clips usable; 3 bad" in out and f"{tmp_path / 'val2.wav'}: val.csv line 4: {why}" in out


def test_a_split_with_no_usable_clip_is_reported_with_the_other_splits_bad_clips(tmp_path):
    train, val, labels = _make_set(tmp_path, bad=True)
    rows = json.loads(train.read_text())["data"]
    val.write_text(json.dumps({"data": [r for r in rows if "silent" in r["wav"]]}))  # nothing usable
    with pytest.raises(InvalidInputError) as err:
        load_splits(_cfg(train, val, labels, "data.on_error=skip"))
    msg = str(err.value)
    assert "val.json: no clip is usable" in msg and "silent.wav" in msg
    assert "also bad (skipped) in the other split: 3 clip(s)" in msg and "broken.wav" in msg and "missing.wav" in msg


def test_the_validation_split_alone_reads_none_of_the_training_clips(tmp_path):
    from coarse2fine.data.sources import load_validation

    train, val, labels = _make_set(tmp_path, bad=True)  # broken, silent and missing files in training only
    cfg = _cfg(train, val, labels)
    with pytest.raises(InvalidInputError):
        load_splits(cfg)
    assert len(load_validation(cfg)) == 4 and len(load_validation(cfg, clips=2)) == 2
    rows = json.loads(val.read_text())["data"]
    val.write_text(json.dumps({"data": [{"wav": str(tmp_path / "broken.wav"), "labels": "/m/a"}, *rows]}))
    assert len(load_validation(cfg, clips=2)) == 4  # a bad clip among the first two: all are checked, it is skipped


def test_stats_reads_the_training_split_alone(tmp_path, capsys):
    # `stats` decoded the validation set too and stopped on a bad validation clip it never reads.
    train, val, labels = _make_set(tmp_path, bad=False)
    rows = json.loads(val.read_text())["data"]
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    val.write_text(json.dumps({"data": [{"wav": str(tmp_path / "broken.wav"), "labels": "/m/a"}, *rows]}))
    sets = [x for s in _settings(train, val, labels) for x in ("--set", s)]
    assert main(["stats", "demo", *sets]) == 0
    assert "8 training clips: mean" in capsys.readouterr().out
    (tmp_path / "val.csv").write_text("foo,bar\n1,2\n")  # nor a validation list that cannot be read at all
    assert main(["stats", "demo", *sets, "--set", f"data.val={tmp_path / 'val.csv'}"]) == 0
    assert "8 training clips: mean" in capsys.readouterr().out
    # a bad training clip stops it as it stops training, or is left out and counted under on_error: skip
    train.write_text(json.dumps({"data": [{"wav": str(tmp_path / "broken.wav"), "labels": "/m/a"},
                                          *json.loads(train.read_text())["data"]]}))
    assert main(["stats", "demo", *sets]) != 0
    assert "train.json: 1 clip(s) cannot be used" in capsys.readouterr().err
    assert main(["stats", "demo", *sets, "--set", "data.on_error=skip"]) == 0
    assert "8 training clips (1 bad clip(s) skipped, as data.on_error: skip says): mean" in capsys.readouterr().out


def test_multilabel_data_needs_a_multilabel_loss(tmp_path):
    train, val, labels = _make_set(tmp_path, bad=False)
    rows = json.loads(train.read_text())["data"]
    rows[3]["labels"] = "/m/a,/m/b"  # one clip with two labels: multi-label data
    train.write_text(json.dumps({"data": rows}))
    with pytest.raises(ValueError, match=r"train.json: multi-label data.*clip3.wav: /m/a, /m/b.*train.loss is ce"):
        load_splits(_cfg(train, val, labels))  # refused before any audio is read
    splits = load_splits(_cfg(train, val, labels, "train.loss=bce", "train.metric=mAP"))
    assert splits.train.multilabel and splits.train.targets[3].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="data.multilabel: true .* train.loss: ce"):
        _cfg(train, val, labels, "data.multilabel=true")  # said when the config is loaded


def test_a_checkpoint_continues_on_its_own_clips_wherever_they_lie_never_on_others(tmp_path, capsys):
    # A run stopped mid-epoch, then a clip added to its training CSV: the epoch order and the
    # targets would change under the checkpoint, so continuing is refused, saying what changed.
    csv = _csv_set(tmp_path / "data", {"train": ["cat", "dog"] * 8, "val": ["cat", "dog"]})
    out = tmp_path / "run"
    args = ["train", "demo", "--out", str(out), "--quiet", *[a for s in _settings(
        csv["train"], csv["val"], None, "train.epochs=3", "train.checkpoint_every=1", "train.threads=1") for a in ("--set", s)]]
    proc = subprocess.Popen([sys.executable, "-m", "coarse2fine.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    ckpt, deadline = out / "checkpoint.safetensors", time.time() + 120
    while time.time() < deadline and proc.poll() is None and not ckpt.exists():
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, proc.stderr.read().decode()[-2000:]
    original = csv["train"].read_text()
    with open(csv["train"], "a") as f:
        f.write(f"{tmp_path / 'data' / 'val0.wav'},cat\n")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{out} holds an unfinished run trained on other data (train_clips 16 -> 17)" in err
    assert "--fresh" in err and ckpt.exists()
    # As many clips, one of them another file, under the same manifest name: refused too.
    csv["train"].write_text(original.replace("train15.wav", "train14.wav"))
    assert main(args) == 2
    assert f"{out} holds an unfinished run trained on other data (the train split lists other clips" in capsys.readouterr().err
    # The same clips in a manifest elsewhere and the audio moved with it (another disk, a preempted job
    # resumed where the data is mounted elsewhere): the run continues.
    # The same clips in another order: the run's batches would change (a manifest rebuilt by a glob elsewhere).
    header, *rows = original.splitlines()
    csv["train"].write_text("\n".join([header, *reversed(rows)]) + "\n")
    assert main(args) == 2
    assert "the training clips are the same but listed in another order" in capsys.readouterr().err
    csv["train"].write_text(original)
    moved = tmp_path / "ssd" / "data"
    shutil.move(tmp_path / "data", moved)
    for name in ("train.csv", "val.csv"):
        (moved / name).write_text((moved / name).read_text().replace(str(tmp_path / "data"), str(moved)))
    args = [*args, "--set", f"data.train={moved / 'train.csv'}", "--set", f"data.val={moved / 'val.csv'}"]
    assert main(args) == 0, capsys.readouterr().err
    assert len(json.loads((out / "log.json").read_text())["records"]) == 3 and not ckpt.exists()
    # Finished, then moved again: the same command elsewhere reuses it (its clips compared, not its paths) ...
    again = tmp_path / "nfs" / "data"
    shutil.move(moved, again)
    for name in ("train.csv", "val.csv"):
        (again / name).write_text((again / name).read_text().replace(str(moved), str(again)))
    args = [*args, "--set", f"data.train={again / 'train.csv'}", "--set", f"data.val={again / 'val.csv'}"]
    capsys.readouterr()
    assert main(args) == 0 and "already finished in this folder" in capsys.readouterr().out
    # ... and a manifest there listing other clips is another run's data.
    (again / "train.csv").write_text((again / "train.csv").read_text().replace("train15.wav", "train14.wav"))
    assert main(args) == 2
    assert "holds a finished run of another config (its data: data.train:" in capsys.readouterr().err


def test_compare_takes_runs_by_their_clips_not_by_their_manifests_names(tmp_path, capsys):
    csv = _csv_set(tmp_path / "data", {"train": ["cat", "dog"] * 4, "val": ["cat", "dog"]})

    def train(name, train_csv, *extra):
        sets = _settings(train_csv, csv["val"], None, "train.threads=1", *extra)
        assert main(["train", "demo", "--out", str(tmp_path / name), "--quiet", *[a for s in sets for a in ("--set", s)]]) == 0
        return str(tmp_path / name)

    base = train("base", csv["train"])
    log = json.loads((tmp_path / "base" / "log.json").read_text())
    assert set(log["data"]) >= {"train_list_sha256", "val_list_sha256", "train_clips", "classes_sha256"}
    copy = tmp_path / "copy" / "my_train.csv"  # the same clips, in a manifest of another name elsewhere
    copy.parent.mkdir()
    shutil.copy(csv["train"], copy)
    same = train("same", copy, "c2f.schedule=2-1", "c2f.phase_epochs=[1, 1]")
    other = tmp_path / "other" / "train.csv"  # the same name and count, other clips
    other.parent.mkdir()
    other.write_text(csv["train"].read_text().replace("train7.wav", "train6.wav"))
    changed = train("other", other, "c2f.schedule=2-1", "c2f.phase_epochs=[1, 1]")
    capsys.readouterr()
    assert main(["compare", base, same]) == 0 and "clip lists" not in capsys.readouterr().out
    assert main(["compare", base, changed]) == 2
    assert f"{changed}: data differs from the baseline {base} (the train split lists other clips or labels)" in (
        capsys.readouterr().err)


def test_a_run_on_a_cleaned_manifest_compares_with_one_that_skipped_its_bad_rows(tmp_path, capsys):
    """A new user's case: a baseline trained with data.on_error: skip over a manifest with a missing
    clip; the coarse-to-fine run on the manifest cleaned of that row was refused by compare ("the
    train split lists other clips"), though both trained on the same clips."""
    csv = _csv_set(tmp_path / "data", {"train": ["cat", "dog"] * 4, "val": ["cat", "dog"]})
    messy = tmp_path / "data" / "messy.csv"
    messy.write_text(csv["train"].read_text() + f"{tmp_path / 'data' / 'gone.wav'},cat\n")

    def train(name, train_csv, *extra):
        sets = _settings(train_csv, csv["val"], None, "train.threads=1", "data.on_error=skip", *extra)
        assert main(["train", "demo", "--out", str(tmp_path / name), "--quiet", *[a for s in sets for a in ("--set", s)]]) == 0
        return str(tmp_path / name)

    base = train("base", messy)
    log = json.loads((tmp_path / "base" / "log.json").read_text())["data"]
    assert log["train_used_sha256"] != log["train_list_sha256"] and log["val_used_sha256"] == log["val_list_sha256"]
    clean = train("clean", csv["train"], "c2f.schedule=2-1", "c2f.phase_epochs=[1, 1]")
    capsys.readouterr()
    assert main(["compare", base, clean]) == 0, capsys.readouterr().err
    train("base", csv["train"])  # the baseline's folder on the cleaned manifest: the clips it trained on, reused
    assert "already finished in this folder" in capsys.readouterr().out
    other = tmp_path / "data" / "other.csv"  # one clip fewer than the baseline used: not the same data
    other.write_text(csv["train"].read_text().replace(f"{tmp_path / 'data' / 'train7.wav'},dog\n", ""))
    fewer = train("fewer", other, "c2f.schedule=2-1", "c2f.phase_epochs=[1, 1]")
    capsys.readouterr()
    assert main(["compare", base, fewer]) == 2
    assert "the train split lists other clips or labels" in capsys.readouterr().err


def test_a_finished_run_is_not_reused_on_a_manifest_edited_since(tmp_path, capsys):
    """An experiment's finished runs were reused (and --report-only tabulated them) after a clip of
    their training manifest was replaced: the tables then stood for data no run trained on."""
    csv = _csv_set(tmp_path / "data", {"train": ["cat", "dog"] * 4, "val": ["cat", "dog"]})
    sets = _settings(csv["train"], csv["val"], None, "train.threads=1", "train.epochs=2")
    args = ["experiment", "demo", "--schedules", "2-1", "--methods", "fshift", "--out", str(tmp_path / "exp"),
            "--quiet", "--calibrate-rounds", "0", *[a for s in sets for a in ("--set", s)]]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--report-only"]) == 0 and "trained on other clips" not in capsys.readouterr().out
    # a path the data kind does not read (a preset's data.root under data.kind manifest) is no path difference
    assert main([*args, "--report-only", "--set", f"data.root={tmp_path / 'elsewhere'}"]) == 0
    assert "other paths" not in capsys.readouterr().out
    # one it reads, resolved from another working folder when that run trained, is listed
    log_path = tmp_path / "exp" / "fshift_21" / "log.json"
    saved = json.loads(log_path.read_text())
    saved["config"]["data"]["val"] = "/elsewhere/val.csv"
    log_path.write_text(json.dumps(saved))
    assert main([*args, "--report-only"]) == 0
    assert f"data.val: '/elsewhere/val.csv' vs '{csv['val']}'" in capsys.readouterr().out
    original = csv["train"].read_text()
    csv["train"].write_text(original.replace("train7.wav", "train6.wav"))
    assert main([*args, "--report-only"]) == 0
    assert ("warning: trained on other clips than the data lists now (the tables compare these runs with each other, "
            "not on this data; the same command without --report-only refuses to reuse them): baseline (train), "
            "fshift_21 (train)") in capsys.readouterr().out
    assert main(args) == 2
    assert (f"{tmp_path / 'exp' / 'baseline'} holds a finished run of this config trained on other clips than its data "
            "lists now (the train split lists other clips or labels); --fresh trains it again") in capsys.readouterr().err
    csv["train"].write_text(original)  # the clips it trained on: reused as before
    assert main(args) == 0
    # a finished run whose data is not here (its folder copied elsewhere) is still reused by `train`, said so
    one = ["train", "demo", "--out", str(tmp_path / "exp" / "baseline"), "--quiet", "--schedule", "1", "--set", "name=baseline",
           *[a for s in sets for a in ("--set", s)]]
    assert main(one) == 0 and "already finished in this folder" in capsys.readouterr().out
    csv["val"].rename(tmp_path / "away.csv")
    assert main(one) == 0 and "already finished in this folder" in capsys.readouterr().out
    (tmp_path / "away.csv").rename(csv["val"])


def test_check_names_the_classes_and_what_a_run_would_not_expect(tmp_path, capsys):
    """A new user's typo ("fifty") became a class of its own that only the run's log named; a class with
    no usable training clip, clips in both splits and clips cut to the clip length went unsaid."""
    csv = _csv_set(tmp_path / "data", {"train": ["cat", "dog", "cat", "dog", "fifty"], "val": ["cat", "dog"]})
    long = tmp_path / "data" / "long.wav"
    sf.write(long, np.full(16000 * 3, 0.1, dtype=np.float32), 16000)  # 3 s, cut to 0.5 s
    with open(csv["val"], "a") as f:
        f.write(f"{tmp_path / 'data' / 'train0.wav'},cat\n{long},cat\n")  # a training clip, listed again
    sets = _settings(csv["train"], csv["val"], None, "data.clip_seconds=1.0")
    assert main(["check", "demo", *[a for s in sets for a in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    assert "3 classes (training/validation clips): cat 2/3, dog 2/1, fifty 1/0" in out
    assert "warning: 1 class(es) have no usable validation clip (it is not scored): fifty" in out
    assert (f"warning: 1 clip(s) are in both the training and the validation lists (the validation metric is not "
            f"measured on held-out clips): {tmp_path / 'data' / 'train0.wav'}") in out
    assert (f"1 of 9 clips are longer than data.clip_seconds (1 s) and are cut to it: each keeps its first 1 s, in "
            f"every epoch and evaluation (the longest: 3.00 s, {long}; a manifest's start column makes more clips of a "
            "long file)") in out
    linked = tmp_path / "linked"  # the same clip through a link to its folder: the same clip
    linked.symlink_to(tmp_path / "data")
    with open(csv["val"], "a") as f:
        f.write(f"{linked / 'train1.wav'},dog\n")
    assert main(["check", "demo", *[a for s in sets for a in ("--set", s)]]) == 0
    assert "warning: 2 clip(s) are in both the training and the validation lists" in capsys.readouterr().out
    assert "8 of 9 clips are shorter than data.clip_seconds (1 s) and are padded (data.pad: zeros; the shortest: 0.50 s" in out


def test_check_says_when_the_training_clips_mix_sample_rates(tmp_path, capsys):
    # 8 kHz FSDD speakers beside 16 kHz LibriSpeech ones: bandwidth alone told them apart, and nothing said so
    csv = _csv_set(tmp_path, {"train": ["cat", "dog"] * 3, "val": ["cat", "dog"]})
    sf.write(tmp_path / "narrow.wav", 0.3 * np.sin(np.arange(4000) / 3).astype(np.float32), 8000)
    with open(csv["train"], "a") as f:
        f.write(f"{tmp_path / 'narrow.wav'},cat\n")
    sets = [x for s in _settings(csv["train"], csv["val"], None) for x in ("--set", s)]
    assert main(["check", "demo", *sets]) == 0
    assert ("warning: the training clips mix sample rates: 8000 Hz (1), 16000 Hz (6); each is resampled to 16000 Hz "
            "(features.sample_rate)") in capsys.readouterr().out
    csv = _csv_set(tmp_path / "one", {"train": ["cat", "dog"] * 3, "val": ["cat", "dog"]})
    assert main(["check", "demo", *[x for s in _settings(csv["train"], csv["val"], None) for x in ("--set", s)]]) == 0
    assert "sample rates" not in capsys.readouterr().out


def test_cached_run_reuses_features_across_phases_and_runs(tmp_path):
    train, val, labels = _make_set(tmp_path / "data", bad=False)
    cfg = _cfg(train, val, labels, f"data.cache_dir={tmp_path / 'cache'}", "c2f.schedule=4-1", "c2f.phase_epochs=[1, 1]")
    train_run(cfg, load_splits(cfg), tmp_path / "run1", progress=False)
    n_entries = len(list((tmp_path / "cache").rglob("*.npy")))
    assert n_entries == 2 * 8  # two frame shifts (40 ms, 10 ms) x 8 files (val clips are train files: shared)
    splits = load_splits(cfg)
    train_run(cfg, splits, tmp_path / "run2", progress=False)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == n_entries
    assert splits.train.cache.misses == 0 and splits.train.cache.hits > 0


@pytest.mark.skipif(not FSDD.exists(), reason="FSDD not present in ../shared/data")
def test_fsdd_preset_reads_the_shared_data():
    cfg = load_config("fsdd_speakers-cpu", [f"data.root={FSDD}"])
    splits = load_splits(cfg)
    assert (len(splits.train), len(splits.val), splits.train.num_classes) == (2700, 300, 6)
    # Decoded into memory, then (1.28 s clips: 0.19 GB of features) served as each phase's model input.
    assert splits.train.serves == "model_input" and splits.train.source.waves.shape == (2700, int(1.28 * 16000))


@pytest.mark.skipif(not (FSDD.parent / "esc50" / "esc50.csv").exists(), reason="ESC-50 not present in ../shared/data")
def test_esc50_folds_from_the_official_metadata():
    from coarse2fine.data.esc50 import esc50_manifest

    train, val = esc50_manifest(FSDD.parent / "esc50", 1, "train"), esc50_manifest(FSDD.parent / "esc50", 1, "val")
    assert (len(train.entries), len(val.entries), len(train.classes)) == (1600, 400, 50)
    assert train.display_names[0] == "dog" and all(e.path.name.startswith("1-") for e in val.entries)
    assert not {e.path for e in train.entries} & {e.path for e in val.entries}
    with pytest.raises(ValueError, match="folds 1-5"):
        esc50_manifest(FSDD.parent / "esc50", 6, "val")


def test_crossval_runs_every_fold(tmp_path, capsys, caplog):
    from coarse2fine.cli import main

    caplog.set_level("INFO", logger="coarse2fine")
    for fold in (1, 2):
        train, val, labels = _make_set(tmp_path / f"f{fold}", bad=False)
        train.rename(tmp_path / f"train_{fold}.json")
        val.rename(tmp_path / f"val_{fold}.json")
    args = ["data.kind=manifest", f"data.train={tmp_path}/train_{{fold}}.json", f"data.val={tmp_path}/val_{{fold}}.json",
            f"data.label_csv={labels}", "data.clip_seconds=0.5", "features.target_length=64", "train.epochs=1",
            "train.batch_size=4", "train.threads=1"]
    assert main(["crossval", "demo", "--folds", "2", "--schedule", "1", "--out", str(tmp_path / "cv"), "--quiet",
                 *[a for s in args for a in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    assert "mean" in out and (tmp_path / "cv" / "fold2" / "log.json").exists()
    assert (tmp_path / "cv" / "folds.csv").read_text().splitlines()[0] == "fold,best acc,best acc std"
    assert (tmp_path / "cv" / "folds.md").read_text().startswith("# demo (baseline): cross-validation over 2 folds\n\n| fold |")
    assert f"Table in {tmp_path / 'cv'}: folds.md, folds.csv; each fold's run in fold<N>/" in out
    assert any(r.getMessage().startswith("fold2 epoch 1 ") for r in caplog.records)  # a run is called by its folder
    saved = load_config(str(tmp_path / "cv" / "fold2" / "config.yaml"), check_runtime=False).data
    assert (saved.fold, saved.split_path("val")) == (2, f"{tmp_path}/val_2.json")  # it said fold 1 beside fold 2's files
    assert main(["crossval", "demo", "--out", str(tmp_path / "x"), "--quiet"]) == 2  # no {fold} in the paths


def test_crossval_with_methods_controls_and_seeds_is_one_command(tmp_path, capsys):
    from coarse2fine.cli import main

    for fold in (1, 2):
        train, val, labels = _make_set(tmp_path / f"f{fold}", bad=False)
        train.rename(tmp_path / f"train_{fold}.json")
        val.rename(tmp_path / f"val_{fold}.json")
    args = ["data.kind=manifest", f"data.train={tmp_path}/train_{{fold}}.json",
            f"data.val={tmp_path}/val_{{fold}}.json", f"data.label_csv={labels}", "data.clip_seconds=0.5",
            "features.target_length=64", "train.epochs=1", "train.batch_size=4", "train.threads=1",
            "c2f.phase_epochs=[1, 1]"]
    sets = [a for s in args for a in ("--set", s)]
    out = tmp_path / "cv"
    assert main(["crossval", "demo", "--folds", "2", "--methods", "fshift", "--schedules", "2-1", "--controls",
                 "restart", "--seeds", "2", "--out", str(out), "--quiet", *sets]) == 0
    printed = capsys.readouterr().out
    rows = (out / "crossval.csv").read_text().splitlines()
    assert rows[0] == ("Setting,Seeds,Fold 1,Fold 2,Acc mean over folds,Acc mean over folds std,Paired gain by fold,"
                       "Paired gain by fold CI low,Paired gain by fold CI high,Run FLOPs (x baseline),"
                       "Run step time (x baseline),Run step time (x baseline) marks")  # one number per cell
    assert [r.split(",")[0] for r in rows[1:]] == ["Baseline", "Restart 11 (control)", "Fshift 21"]
    flops = [float(r.split(",")[-3]) for r in rows[1:]]  # what each setting cost against the baseline, per fold
    assert flops[:2] == [1.0, 2.0] and 1.0 < flops[2] < 2.0  # baseline: 1 epoch; restart: 2 at R = 1; 2-1: 1 + 1
    assert all(r.split(",")[1] == "2" for r in rows[1:])
    for fold in (1, 2):  # each fold is an experiment with its own report
        assert (out / f"fold{fold}" / "restart_11_s1" / "log.json").exists()
        assert (out / f"fold{fold}" / "savings.md").exists() and (out / f"fold{fold}" / "kept.csv").exists()
    assert "== cross-validation over 2 folds ==" in printed and "ESC-50's convention" in printed
    data = json.loads((out / "crossval.json").read_text())
    assert data["folds"] == [1, 2] and [r["Setting"] for r in data["crossval"]] == ["Baseline", "Restart 11 (control)",
                                                                                  "Fshift 21"]
    assert all(isinstance(r["Fold 1"], float) and r["Seeds"] == 2 for r in data["crossval"])  # numbers as numbers
    # --report-only: the table over the folds that have finished, nothing trained (while more folds train)
    table = (out / "crossval.csv").read_text()
    report = ["crossval", "demo", "--methods", "fshift", "--schedules", "2-1", "--controls", "restart", "--seeds", "2",
              "--out", str(out), "--quiet", "--report-only", *sets]
    assert main([*report, "--folds", "3"]) == 0
    printed = capsys.readouterr().out
    assert "== cross-validation, 2 of 3 folds finished ==" in printed and printed.rstrip().endswith(": fold3")
    assert (out / "crossval.csv").read_text() == table and not (out / "fold3").exists()
    assert "trained on other clips" not in printed
    val_1 = tmp_path / "val_1.json"  # a label fixed in fold 1's validation list since it trained
    original = val_1.read_text()
    fixed = json.loads(original)
    fixed["data"][0]["labels"] = "/m/b" if fixed["data"][0]["labels"] == "/m/a" else "/m/a"
    val_1.write_text(json.dumps(fixed))
    assert main([*report, "--folds", "2"]) == 0
    assert "the same command without --report-only refuses to reuse them): fold1/baseline (val), " in (
        capsys.readouterr().out)
    val_1.write_text(original)
    (out / "fold2" / "fshift_21_s1" / "log.json").unlink()  # a fold still training
    assert main([*report, "--folds", "2"]) == 0
    assert "1 of 2 folds finished" in capsys.readouterr().out
    assert (out / "crossval.csv").read_text().splitlines()[0].count("Fold ") == 1
    # Without --methods: the one setting per fold and seed; controls then have nothing to control.
    assert main(["crossval", "demo", "--folds", "2", "--seeds", "2", "--out", str(tmp_path / "one"), "--quiet", *sets,
                 "--set", "c2f.schedule=1", "--set", "c2f.phase_epochs=null"]) == 0
    assert (tmp_path / "one" / "fold2_s1" / "log.json").exists()
    folds = (tmp_path / "one" / "folds.csv").read_text().splitlines()
    assert folds[0] == "fold,best acc,best acc std" and folds[1].startswith("1,")  # mean and std over the fold's seeds
    assert all(cell.replace(".", "").isdigit() for cell in folds[1].split(",")[1:])
    assert main(["crossval", "demo", "--folds", "2", "--controls", "restart", "--out", str(tmp_path / "x"), "--quiet",
                 *sets]) == 2


def test_fsdd_without_a_root_is_a_clear_error():
    with pytest.raises(ValueError, match="needs data.root"):
        load_splits(load_config("fsdd_digits-cpu", ["data.root=null"]))


def test_a_missing_fsdd_folder_says_which_key_and_how_relative_paths_read(tmp_path):
    with pytest.raises(ValueError, match="nowhere: not a folder; point data.root at the FSDD folder .* current folder"):
        load_splits(load_config("fsdd_digits-cpu", [f"data.root={tmp_path / 'nowhere'}"]))


def test_fold_in_a_manifest_path_is_filled_from_data_fold_by_every_command(tmp_path, capsys):
    # {fold} manifests of two folds; a config of one's own extending htsat_esc50-cpu (which must not
    # pass on the AudioSet label file it would inherit) trains on the fold data.fold names.
    for fold, labels in ((1, ["cat", "dog"]), (2, ["cat", "dog", "owl"])):
        csv = _csv_set(tmp_path / f"f{fold}", {"train": labels, "val": labels[:2]})
        for split in ("train", "val"):
            csv[split].rename(tmp_path / f"{split}_fold{fold}.csv")
    (tmp_path / "mine.yaml").write_text("extends: htsat_esc50-cpu\ndata:\n  kind: manifest\n  train: train_fold{fold}.csv\n"
                                        "  val: val_fold{fold}.csv\n  fold: 2\n  clip_seconds: 0.5\n")
    cfg = load_config(tmp_path / "mine.yaml")
    assert cfg.data.split_path("train") == str(tmp_path / "train_fold2.csv") and cfg.data.label_csv is None
    assert load_splits(cfg).train.class_names == ["cat", "dog", "owl"]
    assert main(["check", str(tmp_path / "mine.yaml"), "--set", "data.fold=1"]) == 0
    assert "2 training and 2 validation clips usable" in capsys.readouterr().out
