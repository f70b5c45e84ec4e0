"""Self-supervised pretraining coarse-to-fine: unlabeled sources, the pretrain command, fine-tuning
from a pretraining run, and the pretraining comparison."""

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from coarse2fine.cli import main
from coarse2fine.config import config_from_dict, load_config
from coarse2fine.data.sources import load_splits
from coarse2fine.data.unlabeled import is_validation, source_files, unlabeled_manifests, windows
from coarse2fine.experiments.pretraining import finetune_config
from coarse2fine.experiments.settings import SEED_STRIDE

# Pretraining the micro SSAST on the demo's synthetic clips (labels ignored): 64 patches of
# 16 x 16 at R = 1, 16 at R = 4; 50 of 64 masked (78 %, SSAST's 400 of 512), 13 of 16 at R = 4 (12.5, half up).
SSAST = ["model.arch=ssast", "model.preset=micro", "train.objective=masked_patch", "train.metric=masked_acc",
         "pretrain.mask_patch=50", "data.train_clips=16", "data.val_clips=8", "train.batch_size=8",
         "train.threads=1", "train.epochs=2", "train.optim.warmup_steps=2"]


def _sets(settings):
    return [a for s in settings for a in ("--set", s)]


def _write(path, seconds, sr=16000, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(int(seconds * sr))).astype(np.float32), sr)
    return path


def test_sources_mix_folders_csv_and_json_with_filters(tmp_path):
    a = _write(tmp_path / "speech" / "spk1" / "a.flac", 5.3)
    _write(tmp_path / "speech" / "spk1" / ".hidden.wav", 1.0)
    _write(tmp_path / "speech" / "spk2" / "b_3.wav", 1.0)
    esc = [_write(tmp_path / "esc" / "audio" / f"{i}.wav", 5.0, seed=i) for i in range(4)]
    (tmp_path / "esc" / "meta.csv").write_text("filename,fold,target\n" + "".join(f"{i}.wav,{i % 2 + 1},{i}\n" for i in range(4)))
    (tmp_path / "as.json").write_text(json.dumps({"data": [{"wav": str(esc[0]), "labels": "/m/x"}]}))
    assert source_files(tmp_path / "speech") == sorted([a, tmp_path / "speech" / "spk2" / "b_3.wav"])
    assert source_files(f"{tmp_path / 'speech'}?exclude=*_[0-4].wav") == [a]
    assert source_files(f"{tmp_path / 'esc' / 'meta.csv'}?fold=2") == [esc[1], esc[3]]
    assert source_files(tmp_path / "as.json") == [esc[0]]
    # A 5.3 s file in 2 s windows: 0, 2, 4 (the last holds 1.3 s >= min 0.5 s); with min 1.5 s the last is dropped.
    assert [w.start for w in windows(a, 2.0, 0.5)] == [0.0, 2.0, 4.0]
    assert [w.start for w in windows(a, 2.0, 1.5)] == [0.0, 2.0]
    train, val = unlabeled_manifests([str(tmp_path / "speech"), f"{tmp_path / 'esc' / 'meta.csv'}?fold=1,2"], 2.0, 0.5, 0.3)
    files = {e.path for e in train.entries} | {e.path for e in val.entries}
    assert files == {a, tmp_path / "speech" / "spk2" / "b_3.wav", *esc}
    assert not {e.path for e in train.entries} & {e.path for e in val.entries}  # held out by file
    assert all(is_validation(e.path, 0.3) for e in val.entries) or len(val.entries) <= 3
    for bad, message in (("nope", "does not exist"), (f"{tmp_path / 'speech'}?fold=1", "need a CSV"),
                         (f"{tmp_path / 'esc' / 'meta.csv'}?split=a", "no column")):
        with pytest.raises(ValueError, match=message):
            source_files(bad)
    # Every source that fails is named in one error (a CSV that is not there gave a raw OSError).
    with pytest.raises(ValueError, match=r"^data.sources: nope does not exist; missing.csv does not exist; "
                                         r"[^;]*speech\?fold=1: column filters \(fold\) need a CSV source; a relative path"):
        unlabeled_manifests(["nope", "missing.csv?fold=1", str(tmp_path / "speech"), f"{tmp_path / 'speech'}?fold=1"],
                            2.0, 0.5, 0.3)


def test_check_of_unlabeled_audio_lists_no_classes(tmp_path, capsys):
    # "0 classes (training/validation clips): " with nothing after it (a new user's case)
    for i in range(6):
        _write(tmp_path / "speech" / f"{i}.wav", 1.0, seed=i)
    assert main(["check", "ssast_pretrain-cpu", "--set", f"data.sources=[{tmp_path / 'speech'}]",
                 "--set", "data.clip_seconds=1.0", "--set", "data.val_fraction=0.3"]) == 0
    printed = capsys.readouterr().out
    assert "clips usable; 0 bad" in printed and "classes" not in printed


def test_windows_of_long_recordings_are_read_from_their_offsets(tmp_path):
    sr = 16000
    sf.write(tmp_path / "long.wav", np.concatenate([np.full(2 * sr, 0.25), np.full(2 * sr, -0.5)]).astype(np.float32), sr)
    for i in range(3):
        _write(tmp_path / f"other{i}.wav", 1.0, seed=i)
    cfg = load_config("demo", [*SSAST, "data.kind=unlabeled", f"data.sources=[{tmp_path}]", "data.clip_seconds=2.0",
                               "data.val_fraction=0.3", "data.min_seconds=0.5", "data.preload=false", "data.in_memory=off"])
    splits = load_splits(cfg)
    means = {}
    for ds in (splits.train, splits.val):
        for i, entry in enumerate(ds.entries):
            if entry.path.name == "long.wav":
                means[entry.start] = round(float(ds[i][0].mean()), 3)
    assert means == {0.0: 0.25, 2.0: -0.5}
    assert splits.train.targets.shape[1] == 0 and splits.train.num_classes == 0 and len(splits.val) >= 1


def test_pretrain_coarse_to_fine_then_fine_tune_from_the_run(tmp_path, capsys):
    pre = tmp_path / "pre"
    assert main(["pretrain", "demo", "--out", str(pre), "--quiet", "--schedule", "4-1", *_sets([*SSAST, "c2f.phase_epochs=[1, 1]"])]) == 0
    log = json.loads((pre / "log.json").read_text())
    recs = log["records"]
    assert [(r["R"], r["tokens"]) for r in recs] == [(4, 16), (1, 64)]
    assert log["metrics"] == {"masked_acc": "max", "recon_mse": "min", "val_loss": "min"}
    assert all(0 <= r["masked_acc"] <= 1 and r["recon_mse"] > 0 for r in recs)
    cfg = load_config("demo", SSAST)
    from coarse2fine.report.accounting import phase_costs

    costs = phase_costs(cfg, 8)
    assert [r["train_flops"] for r in recs] == [c.train_flops_per_clip * 16 for c in costs]
    printed = capsys.readouterr().out
    assert "fine-tune from it with --set model.init_from=" in printed
    # "kept 0.15" read as knowledge lost, where the chance level had fallen 4x (a new user's case)
    assert ("masked_acc's chance level is 1 / the masked patches per clip (13 at R=4, 50 at R=1): part of a kept "
            "below 1.00 is the lower chance at full resolution") in printed
    weights = load_file(pre / "model.safetensors")
    assert {"mask_embed", "cpredlayer.0.weight", "gpredlayer.2.weight"} <= set(weights)
    # Fine-tune a classifier from the pretraining run, itself coarse-to-fine (Patch method): with a
    # vanishing LR the encoder keeps the pretrained weights through both phases.
    ft = tmp_path / "ft"
    args = ["model.arch=ssast", "model.preset=micro", "data.train_clips=16", "data.val_clips=8", "train.batch_size=8",
            "train.threads=1", "train.epochs=1", "c2f.method=patch", "c2f.phase_epochs=[1, 1]", "train.optim.lr=1e-12",
            f"model.init_from={pre}"]
    assert main(["train", "demo", "--out", str(ft), "--quiet", *_sets(args)]) == 0
    tuned = load_file(ft / "model.safetensors")
    for k in ("blocks.0.attn.qkv.weight", "blocks.3.mlp.fc2.weight", "norm.weight", "cls_token"):
        torch.testing.assert_close(tuned[k], weights[k], atol=1e-6, rtol=0)
    assert "mask_embed" not in tuned and "head.fc.weight" in tuned


def test_frame_based_pretraining_masks_at_random_and_fine_tunes(tmp_path):
    pre = tmp_path / "frame"
    settings = [*SSAST, "model.patch_size=[128, 2]", "pretrain.mask_patch=50", "c2f.method=avgpool", "c2f.phase_epochs=[1, 1]"]
    assert main(["pretrain", "demo", "--out", str(pre), "--quiet", *_sets(settings)]) == 0
    recs = json.loads((pre / "log.json").read_text())["records"]
    assert [(r["R"], r["tokens"]) for r in recs] == [(4, 16), (1, 64)]
    ft = tmp_path / "ft"
    args = ["model.arch=ssast", "model.preset=micro", "model.patch_size=[128, 2]", "data.train_clips=16", "data.val_clips=8",
            "train.batch_size=8", "train.threads=1", "train.epochs=1", "c2f.schedule=1", f"model.init_from={pre}"]
    assert main(["train", "demo", "--out", str(ft), "--quiet", *_sets(args)]) == 0
    tuned, pretrained = load_file(ft / "model.safetensors"), load_file(pre / "model.safetensors")
    assert tuned["patch_embed.proj.weight"].shape == pretrained["patch_embed.proj.weight"].shape == (64, 1, 128, 2)


def test_pretrain_refuses_a_classification_config(tmp_path, capsys):
    assert main(["pretrain", "demo", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "pretraining needs train.objective: masked_patch" in capsys.readouterr().err
    # pretrain-experiment "pretrained" a classifier and called its accuracy a pretext metric
    assert main(["pretrain-experiment", "demo", "--finetune", "demo", "--out", str(tmp_path / "y"), "--quiet"]) == 2
    assert "pretrain-experiment pretrains with train.objective: masked_patch" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def _number(cell: str) -> float | str | None:
    try:
        return None if cell in ("", "-") else float(cell)
    except ValueError:
        return cell


def test_pretraining_comparison_table(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["pretrain-experiment", "demo", "--finetune", "demo", "--out", str(out), "--quiet",
            *_sets([*SSAST, "c2f.phase_epochs=[1, 1]"]),
            *[a for s in ("data.train_clips=16", "data.val_clips=8", "train.batch_size=8", "train.threads=1",
                          "demo:train.epochs=1") for a in ("--finetune-set", s)]]  # the last for the task demo
    assert main(args) == 0
    text = capsys.readouterr().out
    # One number a cell: the metric and its gain over the baseline pretraining's in two columns.
    table = list(csv.DictReader(io.StringIO((out / "pretraining.csv").read_text())))
    assert not [c for r in table for c in r.values() if re.search(r" \([+-]?\d", c)]
    rows = (out / "pretraining.csv").read_text().splitlines()
    assert rows[0].startswith("Setting,Pretrain GFLOPs,Pretrain FLOPs save (%),Pretrain wall time (s),Pretrain wall "
                              "time save (%),Pretrain wall time save (%) marks,Pretrain step time save (%),Pretrain "
                              "step time save (%) marks,Pretext masked_acc,")
    assert rows[0].endswith(",demo acc,demo acc gain") and "(gain)" not in rows[0]
    assert [r.split(",")[0] for r in rows[1:]] == ["No pretraining", "Baseline", "Fshift 41"]
    base_flops = json.loads((out / "pretrain" / "baseline" / "log.json").read_text())["records"][-1]["cum_flops"]
    c2f_flops = json.loads((out / "pretrain" / "fshift_41" / "log.json").read_text())["records"][-1]["cum_flops"]
    assert f"{100 * (1 - c2f_flops / base_flops):.2f}" in rows[3]
    assert table[1]["demo acc gain"] == "" and re.fullmatch(r"[+-]\d+\.\d\d", table[0]["demo acc gain"])
    assert float(table[0]["demo acc"]) - float(table[1]["demo acc"]) == pytest.approx(float(table[0]["demo acc gain"]), abs=0.011)
    # Small runs stay readable: GFLOPs without an exponent, seconds to 0.1 s.
    assert float(table[1]["Pretrain GFLOPs"]) == pytest.approx(base_flops / 1e9, rel=1e-3) and "e" not in table[1]["Pretrain GFLOPs"]
    assert re.fullmatch(r"\d+\.\d", table[1]["Pretrain wall time (s)"])
    # The pretext metric of each pretraining, as its log has it at its best in the final phase.
    pre_log = json.loads((out / "pretrain" / "fshift_41" / "log.json").read_text())["records"]
    final = [r["masked_acc"] for r in pre_log if r["phase"] == pre_log[-1]["phase"]]
    assert float(table[2]["Pretext masked_acc"]) == pytest.approx(max(final), abs=5e-4)
    assert table[0]["Pretext masked_acc"] == ""  # a CSV cell holds a number or nothing
    # pretraining.json: the CSV's columns, numbers as numbers.
    report = json.loads((out / "pretraining.json").read_text())
    assert report["title"] == "demo: pretraining at R = 1 vs Fshift 41, fine-tuned on demo" and report["notes"]
    data = report["pretraining"]
    assert [list(r) for r in data] == [list(r) for r in table]
    assert data[1]["demo acc gain"] is None and isinstance(data[0]["demo acc gain"], float)
    assert data[1]["Pretrain GFLOPs"] == pytest.approx(float(table[1]["Pretrain GFLOPs"]))
    assert data == [{k: _number(v) for k, v in r.items()} for r in table]
    md = (out / "pretraining.md").read_text()
    assert md.startswith(f"# {report['title']}\n") and "demo acc (gain)" in md and "pretraining.json" in text
    assert "a save is 1 - run / the baseline pretraining's, over the whole run" in md and report["notes"][0] in text
    assert (out / "finetune" / "demo" / "no_pretraining" / "log.json").exists() and "Fshift 41" in text
    finetuned = json.loads((out / "finetune" / "demo" / "no_pretraining" / "log.json").read_text())
    assert len(finetuned["records"]) == 1  # --finetune-set demo:train.epochs=1 reached the task it names


def test_pretraining_comparison_with_seeds(tmp_path, capsys):
    """One seed cannot tell a -19 point downstream drop from noise (a new user's case): with --seeds
    every row is pretrained and fine-tuned per seed, seed k's fine-tuning from seed k's pretraining."""
    out = tmp_path / "cmp"
    args = ["pretrain-experiment", "demo", "--finetune", "demo", "--out", str(out), "--quiet", "--seeds", "2",
            *_sets([*SSAST, "c2f.phase_epochs=[1, 1]"]),
            *[a for s in ("data.train_clips=16", "data.val_clips=8", "train.batch_size=8", "train.threads=1",
                          "train.epochs=1") for a in ("--finetune-set", s)]]
    assert main(args) == 0
    printed = capsys.readouterr().out
    ft = load_config(str(out / "finetune" / "demo" / "fshift_41_s1" / "config.yaml"))
    assert ft.model.init_from == str(out / "pretrain" / "fshift_41_s1") and ft.train.seed == SEED_STRIDE
    pre = load_config(str(out / "pretrain" / "baseline_s1" / "config.yaml"))
    assert pre.train.seed == SEED_STRIDE and pre.experiment.seeds == 1  # the run's own config: no experiment
    table = list(csv.DictReader(io.StringIO((out / "pretraining.csv").read_text())))
    assert [r["Setting"] for r in table] == ["No pretraining", "Baseline", "Fshift 41"] and table[0]["Seeds"] == "2"
    finals = {label: [max(r["acc"] for r in json.loads((out / "finetune" / "demo" / f"{slug}{k}" / "log.json")
                                                         .read_text())["records"]) for k in ("", "_s1")]
              for label, slug in (("Baseline", "baseline"), ("Fshift 41", "fshift_41"))}
    mean = sum(finals["Fshift 41"]) / 2
    assert float(table[2]["demo acc"]) == pytest.approx(100 * mean, abs=0.006)
    gain = sum(a - b for a, b in zip(finals["Fshift 41"], finals["Baseline"])) / 2
    assert float(table[2]["demo acc paired gain"]) == pytest.approx(100 * gain, abs=0.006)
    assert table[1]["demo acc paired gain"] == "" and table[2]["demo acc paired gain CI low"] != ""
    assert "demo: pretraining at R = 1 vs Fshift 41, fine-tuned on demo, 2 seeds" in printed
    assert "Mean ± sample std (n - 1) over 2 seeds (seed k fine-tunes seed k's pretraining" in printed


def test_significant_digits_stay_readable_at_any_size():
    from coarse2fine.experiments.pretraining import significant

    assert [significant(x) for x in (51.78123, 0.00005178123, 1.2345e8, 0.0, 3.0)] == [
        "51.78", "0.00005178", "123400000", "0", "3"]


def test_a_fine_tune_config_holds_its_init_from_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # pretrain-experiment --out runs/ssl: a relative run folder
    cfg = finetune_config(load_config("demo"), load_config("demo", SSAST), Path("runs/ssl/pretrain/baseline"), "ft")
    assert cfg.model.init_from == str(tmp_path / "runs" / "ssl" / "pretrain" / "baseline")
    assert config_from_dict(cfg.to_dict()).model.init_from == cfg.model.init_from


def test_the_held_out_files_do_not_depend_on_where_the_data_lies(tmp_path):
    for root in ("here", "moved/elsewhere"):
        for i in range(12):
            _write(tmp_path / root / "speech" / f"clip{i}.wav", 0.3, seed=i)
    held = [sorted(e.path.name for e in unlabeled_manifests([str(tmp_path / root / "speech")], 1.0, 0.1, 0.3)[1].entries)
            for root in ("here", "moved/elsewhere")]
    assert held[0] == held[1] and 0 < len(held[0]) < 12
    # A tiny set that the fraction would hold out entirely still trains on one file.
    for i in range(2):
        _write(tmp_path / "tiny" / f"t{i}.wav", 0.3, seed=i)
    train, val = unlabeled_manifests([str(tmp_path / "tiny")], 1.0, 0.1, 0.99)
    assert len(train.entries) == 1 and len(val.entries) == 1
