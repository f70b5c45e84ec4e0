"""Config mistakes a new user hit, each refused when the config is loaded (so ``check``, ``flops``
and ``train`` agree) and named after the file (or ``--set``) that made it."""

import logging
import re

import pytest

from coarse2fine.cli import main
from coarse2fine.config import load_config
from coarse2fine.phases import Schedule, parse_schedule


def _write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return path


# 1. a shards config that inherits a feature cache ------------------------------------------------

@pytest.fixture
def shards_over_cache(tmp_path, monkeypatch):
    """``sh.yaml`` (shards) extends ``my.yaml`` (which sets data.cache_dir), as the user wrote them."""
    pytest.importorskip("wids")
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "my.yaml", "extends: demo\ndata:\n  cache_dir: ../cache\n")
    return _write(tmp_path, "sh.yaml", "extends: my.yaml\ndata:\n  kind: shards\n  train: packed/train\n"
                                       "  val: packed/val\n")


def test_a_feature_cache_with_shards_is_refused_at_load_naming_the_file_that_set_it(shards_over_cache):
    with pytest.raises(ValueError, match=r"^my\.yaml: data\.cache_dir: the feature cache reads audio files; with "
                                         r"data\.kind shards, pack the features instead.*\(data\.kind from sh\.yaml\)$"):
        load_config("sh.yaml")
    with pytest.raises(ValueError, match=r"^data\.cache_dir: the feature cache"):  # --set: as typed
        load_config("demo", ["data.kind=shards", "data.train=t", "data.val=v", "data.cache_dir=c"])
    assert load_config("sh.yaml", ["data.cache_dir=null"]).data.cache_dir is None


@pytest.mark.parametrize("command", ["check", "flops", "train"])
def test_check_flops_and_train_all_refuse_it(shards_over_cache, command, capsys):
    args = [command, "sh.yaml", *(["--out", "runs/sh"] if command == "train" else []), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "my.yaml: data.cache_dir: the feature cache reads audio files" in err and "Traceback" not in err
    assert not (shards_over_cache.parent / "runs").exists()


@pytest.mark.parametrize("overrides,message", [
    (["data.kind=manifest"], r"^data\.kind 'manifest' needs data\.train and data\.val"),
    (["data.kind=esc50"], r"^data\.kind 'esc50' needs data\.root"),
    (["data.kind=fsdd"], r"^data\.kind 'fsdd' needs data\.root"),
    (["data.kind=unlabeled", "train.objective=masked_patch", "model.arch=ssast"], r"^data\.kind 'unlabeled' needs data\.sources"),
    (["data.kind=esc50", "data.root=x", "data.fold=6"], r"^data\.fold: ESC-50 has folds 1-5, got 6"),
    (["train.device=cpu", "train.amp=bf16"], r"^train\.amp: bf16 needs a CUDA device, not train\.device cpu"),
])
def test_what_a_data_kind_or_device_needs_is_checked_at_load(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config("demo", overrides)


def test_a_data_kind_without_its_data_names_the_file(tmp_path):
    _write(tmp_path, "base.yaml", "extends: demo\ndata:\n  train: a.csv\n")
    mine = _write(tmp_path, "mine.yaml", "extends: base.yaml\ndata:\n  kind: manifest\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(mine))}: data\.kind 'manifest' needs data\.train and data\.val"):
        load_config(mine)


def test_mixed_precision_without_cuda_is_refused_at_load(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^train\.amp: bf16 needs a CUDA device; train\.device auto is cpu"):
        load_config("demo", ["train.amp=bf16"])
    load_config("demo", ["train.amp=bf16"], check_runtime=False)  # a run's config, read elsewhere


# 2. an error about several keys names where the last of them was set ------------------------------

@pytest.fixture
def pre(tmp_path):
    _write(tmp_path, "pre.yaml", "extends: ssast_pretrain-cpu\n")
    _write(tmp_path, "prepatch.yaml", "extends: pre.yaml\nc2f: {method: patch}\n")
    return tmp_path


def test_a_cross_key_error_names_the_file_that_set_the_key_last(pre):
    with pytest.raises(ValueError, match=rf"^{re.escape(str(pre / 'prepatch.yaml'))}: model ssast/micro with c2f\.method "
                                         r"patch at R=4") as err:
        load_config(pre / "prepatch.yaml")
    assert "preset ssast_pretrain-cpu" not in str(err.value)


def test_a_cross_key_error_from_set_is_named_as_typed(pre, capsys):
    with pytest.raises(ValueError, match=r"^--set c2f\.method=patch: model ssast/micro with c2f\.method patch at R=4"):
        load_config(pre / "pre.yaml", ["c2f.method=patch"])
    assert main(["flops", str(pre / "pre.yaml"), "--set", "c2f.method=patch"]) == 2
    err = capsys.readouterr().err
    assert "error: --set c2f.method=patch: model ssast/micro with c2f.method patch" in err
    assert "preset ssast_pretrain-cpu" not in err
    # an unknown key given by --set names the --set, not the config it was added to
    for typed, text in (("trian.epochs=3", "unknown top-level key(s) trian"), ("train.epoch=3", "train: unknown key(s) epoch")):
        with pytest.raises(ValueError, match=rf"^--set {re.escape(typed)}: {re.escape(text)}"):
            load_config("demo", [typed])
    with pytest.raises(ValueError, match=r"^train\.epochs: must be >= 1"):  # the message starts with the key typed
        load_config("demo", ["train.epochs=0"])


def test_cross_key_errors_follow_the_key_set_last(tmp_path):
    _write(tmp_path, "accum.yaml", "extends: demo\ntrain:\n  grad_accum: 3\n")
    with pytest.raises(ValueError, match=r"accum\.yaml: train\.batch_size 16 must be a multiple of train\.grad_accum \(3\)"):
        load_config(tmp_path / "accum.yaml")  # batch_size is the preset's: the file changed grad_accum
    _write(tmp_path, "arch.yaml", "extends: ssast_pretrain-cpu\nmodel:\n  arch: ast\n")
    with pytest.raises(ValueError, match=r"arch\.yaml: train\.objective: masked_patch trains model\.arch ssast, not ast"):
        load_config(tmp_path / "arch.yaml")
    _write(tmp_path, "steps.yaml", "extends: demo\nc2f:\n  phase_epochs: [1, 2, 3]\n")
    with pytest.raises(ValueError, match=r"steps\.yaml: c2f: phase_epochs \[1, 2, 3\] has 3 entries"):
        load_config(tmp_path / "steps.yaml")


# 3. malformed schedules -------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["4--1", "4-1-", "-4-1", "4-+1", "4- -1", "4,,1"])
def test_a_schedule_with_an_empty_or_signed_part_is_refused(bad, tmp_path):
    expected = "expected factors joined by '-'"
    with pytest.raises(ValueError, match=expected):
        parse_schedule(bad)
    with pytest.raises(ValueError, match=rf"^c2f\.schedule: schedule {re.escape(repr(bad))}: {expected}"):
        load_config("demo", [f"c2f.schedule={bad}"])
    mine = _write(tmp_path, "mine.yaml", f"extends: demo\nc2f:\n  schedule: \"{bad}\"\n")
    with pytest.raises(ValueError, match=rf"mine\.yaml: c2f\.schedule: schedule .*{expected}"):
        load_config(mine)


def test_schedules_as_documented_still_parse():
    assert parse_schedule("4 - 2 - 1") == (4, 2, 1) and parse_schedule("8>4>1") == (8, 4, 1)
    assert parse_schedule("4,1") == (4, 1) and parse_schedule("1") == (1,)
    with pytest.raises(ValueError, match="is empty"):
        parse_schedule("  ")


# 4. extends: of a file that is not there --------------------------------------------------------

def test_extends_of_a_missing_file_names_the_file_that_extends_and_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    _write(tmp_path / "configs", "chain.yaml", "extends: missingext.yaml\n")
    _write(tmp_path / "configs", "missingext.yaml", "extends: nothere.yaml\n")
    with pytest.raises(FileNotFoundError) as err:
        load_config("configs/chain.yaml")
    text = str(err.value)
    assert text.startswith("configs/missingext.yaml: extends: nothere.yaml: no such config file")
    assert f"{tmp_path / 'configs' / 'nothere.yaml'} (next to configs/missingext.yaml)" in text
    assert f"{tmp_path / 'nothere.yaml'} (from the current folder)" in text
    _write(tmp_path, "typo.yaml", "extends: demoo\n")
    with pytest.raises(FileNotFoundError, match=r"^typo\.yaml: extends: demoo: .*no preset is named 'demoo' either; "
                                                r"did you mean the preset demo\? \(presets: .*demo"):
        load_config("typo.yaml")


def test_the_cli_says_it_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "chain.yaml", "extends: missingext.yaml\n")
    _write(tmp_path, "missingext.yaml", "extends: nothere.yaml\n")
    assert main(["check", "chain.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missingext.yaml: extends: nothere.yaml" in err


# 5. the command line's method names in a config ---------------------------------------------------

@pytest.mark.parametrize("method,resize", [("patch-bl", "bilinear"), ("patch-pi", "pi")])
def test_a_command_line_method_name_in_a_config_says_how_to_write_it(method, resize, tmp_path):
    assert Schedule.build("4-1", 2, frames=128, mel_bins=128, method=method).patch_resize == resize
    mine = _write(tmp_path, "mine.yaml", f"extends: demo\nc2f:\n  method: {method}\n")
    with pytest.raises(ValueError, match=rf"mine\.yaml: c2f\.method: '{method}' is not one of fshift, avgpool, maxpool, "
                                         rf"patch: .*`method: patch` with `patch_resize: {resize}`"):
        load_config(mine)
    cfg = load_config("demo", ["c2f.method=patch", f"c2f.patch_resize={resize}"])  # what the message says to write
    assert (cfg.c2f.method, cfg.c2f.patch_resize) == ("patch", resize)


# 6. a warning names the file too -----------------------------------------------------------------

def test_a_whole_float_for_an_integer_names_the_file_that_gave_it(tmp_path, caplog):
    _write(tmp_path, "base.yaml", "extends: demo\ntrain:\n  epochs: 2.0\n")
    mine = _write(tmp_path, "mine.yaml", "extends: base.yaml\nc2f:\n  phase_epochs: [1.0, 2]\n")
    with caplog.at_level(logging.WARNING):
        cfg = load_config(mine)
    assert cfg.train.epochs == 2 and cfg.c2f.phase_epochs == [1, 2]
    assert f"{tmp_path / 'base.yaml'}: train.epochs: 2.0 taken as the integer 2" in caplog.text
    assert f"{mine}: c2f.phase_epochs[0]: 1.0 taken as the integer 1" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_config(mine, ["train.epochs=3.0"])
    assert "\ntrain.epochs: 3.0 taken as the integer 3" in "\n" + "\n".join(r.getMessage() for r in caplog.records)


def test_weight_averaged_epochs_past_the_final_phase_are_said_once_when_loaded(caplog):
    # audioset averages epochs 1..5 of the final phase; a 2-epoch trial run averages 1..2, said at load
    with caplog.at_level(logging.WARNING):
        cfg = load_config("audioset-cpu", ["train.epochs=2"])
        cfg.replace({"name": "other"})  # a derived config says nothing more
    said = [r.getMessage() for r in caplog.records if "weight averaging" in r.getMessage()]
    assert said == ["preset audioset: augment: weight averaging of the final phase's epochs 1..5, but it trains 2: "
                    "epochs 1..2 are averaged"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_config("audioset-cpu", ["train.epochs=2", "augment.wa_start=3", "augment.wa_end=0"])
        load_config("audioset-cpu")  # its own epochs cover 1..5: nothing to say
    assert [r.getMessage() for r in caplog.records if "weight averaging" in r.getMessage()] == [
        "--set augment.wa_start=3: augment: weight averaging of the final phase's epochs 3..its last, but it trains 2: "
        "no epoch is averaged (no model_wa.safetensors)"]


def test_a_manifest_path_that_is_not_there_is_named_by_its_key_before_anything_trains(tmp_path, monkeypatch, capsys):
    """A new user's case: `train audioset-cpu` said only "/x/data/audioset_train.json: no such file or
    folder", not which key holds the preset's placeholder nor how to set it; then the next try named
    the next placeholder."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "audioset-cpu", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    data = tmp_path / "data"
    assert (f"data.train: {data / 'audioset_train.json'}: no such file or folder (preset audioset's placeholder); "
            f"data.val: {data / 'audioset_eval.json'}: no such file or folder (preset audioset's placeholder); "
            f"data.label_csv: {data / 'class_labels_indices.csv'}: no such file or folder (preset audioset's "
            "placeholder); set them to your files: --set data.train=PATH, --set data.val=PATH, --set "
            "data.label_csv=PATH (or `train: PATH`, `val: PATH`, `label_csv: PATH` under `data:` in your config); "
            "data.label_csv may be null: CSV manifests name their classes") in err
    assert not (tmp_path / "run").exists()  # nothing written, and no empty folder left
    # a {fold} manifest says which fold it looked for, and a path of the user's own is no placeholder
    from coarse2fine.data.manifest import ManifestError
    from coarse2fine.data.sources import manifests

    (tmp_path / "f1.csv").write_text("path,label\n")
    cfg = load_config("audioset-cpu", [f"data.train={tmp_path}/f{{fold}}.csv", f"data.val={tmp_path}/f1.csv",
                                       "data.fold=2", "data.label_csv=null"])
    with pytest.raises(ManifestError) as caught:
        manifests(cfg)
    assert str(caught.value) == (f"data.train: {tmp_path}/f{{fold}}.csv with data.fold 2: no such file or folder "
                                 f"({tmp_path}/f2.csv); set it to your files: --set data.train=PATH (or `train: PATH` "
                                 "under `data:` in your config); a PATH of each fold's own file keeps {fold} where the "
                                 "fold number goes (data.fold fills it in)")


@pytest.mark.parametrize("override,message", [
    ("augment.timem=2000", r"augment\.timem: 2000 is more than the features' 512 frames \(features\.target_length\): "
                           r"a mask could blank a whole clip"),
    ("augment.freqm=500", r"augment\.freqm: 500 is more than the features' 128 mel bins: a mask could blank"),
])
def test_a_specaugment_mask_wider_than_the_features_is_refused_at_load_naming_the_file(override, message, tmp_path):
    mine = _write(tmp_path, "mine.yaml", f"extends: esc50-cpu\naugment:\n  {override.split('.')[1].replace('=', ': ')}\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(mine))}: {message}"):
        load_config(mine)
    assert load_config("esc50-cpu", ["augment.timem=512", "augment.freqm=128"]).augment.timem == 512  # as wide: taken


def test_a_mask_made_too_wide_by_shorter_features_names_the_file_that_shortened_them(tmp_path):
    """A new user's case: a file that only set features.target_length: 128 on voxceleb-cpu was told that
    preset voxceleb's timem was wrong, not that its own change made it so, nor what to set."""
    mine = _write(tmp_path, "mine.yaml", "extends: voxceleb-cpu\nfeatures:\n  target_length: 128\n")
    with pytest.raises(ValueError, match=re.escape(
            "preset voxceleb: augment.timem: 192 is more than the features' 128 frames (features.target_length): a mask "
            "could blank a whole clip; set augment.timem to at most 128 (AST masks up to 192 of 1024 frames and 48 of "
            f"128 mel bins) (features.target_length from {mine})")):
        load_config(mine)


def test_every_unknown_key_of_a_config_is_named_at_once_with_the_key_it_is_closest_to(tmp_path):
    """A new user's case: a file with typos in three sections took three tries, one typo named a try."""
    mine = _write(tmp_path, "mine.yaml", "extends: esc50-cpu\ntrain:\n  epoch: 3\n  optim:\n    warmup_step: 5\n"
                                         "features:\n  target_lenght: 100\n  colour: red\n")
    with pytest.raises(ValueError) as err:
        load_config(mine)
    assert str(err.value).startswith(f"{mine}: features: unknown key(s) colour, target_lenght (target_length?); known: ")
    assert str(err.value).endswith("(also unknown: train.epoch (epochs?), train.optim.warmup_step (warmup_steps?))")


def test_a_typo_does_not_hide_the_other_values_problems(tmp_path):
    """A new user's case: a typo was named, and once fixed a wrong value in another section came up,
    then another: one round a kind of error. The values are checked with the typos named, each in
    the sections without a typo, and key by key in the one with it (where a check of keys together
    could blame a key the typo left out: c2f.phase_epochs for a misspelt schedule)."""
    mine = _write(tmp_path, "mine.yaml", "extends: esc50-cpu\ntrain:\n  epochz: 3\n  optim:\n    lr: fast\n"
                                         "augment:\n  freqm: -1\nc2f:\n  schedul: 4-2-1\n  phase_epochs: [1, 1, 1]\n")
    with pytest.raises(ValueError) as err:
        load_config(mine)
    text = str(err.value)
    assert text.startswith(f"{mine}: train: unknown key(s) epochz (epochs?); known: ")
    assert "(also unknown: c2f.schedul (schedule?))" in text
    assert f"{mine}: train.optim.lr: expected a number, got 'fast'" in text
    assert f"{mine}: augment.freqm: must be >= 0, got -1" in text
    assert "phase_epochs" not in text
    # a section's check of a key against another (train.metric against train.objective) runs with a typo
    # in its section, and beside a value that fails its own limit (train.epochs: 0)
    mine = _write(tmp_path, "two.yaml", "extends: demo\ntrain:\n  epoch: 3\n  metric: accuracy\n")
    with pytest.raises(ValueError, match=r"train.metric: 'accuracy' is not one of acc, mAP"):
        load_config(mine)
    with pytest.raises(ValueError) as err:
        load_config("demo", ["train.metric=accuracy", "train.epochs=0"])
    assert str(err.value) == ("train.epochs: must be >= 1, got 0 (also: train.metric: 'accuracy' is not one of acc, "
                              "mAP, mAUC, d_prime, val_loss)")


def test_a_misspelt_preset_or_a_key_named_as_other_code_names_it_gets_a_guess(tmp_path):
    with pytest.raises(ValueError, match=r"unknown preset 'speechcomands-cpu' \(did you mean speechcommands-cpu\?\)"):
        load_config("speechcomands-cpu")
    mine = _write(tmp_path, "mine.yaml", "extends: speechcomands-cpu\n")
    with pytest.raises(FileNotFoundError, match=r"no preset is named 'speechcomands-cpu' either; did you mean the preset "
                                                r"speechcommands-cpu\? \(presets: "):
        load_config(mine)
    with pytest.raises(ValueError, match=r"train\.optim: unknown key\(s\) learning_rate \(lr\?\), warmup "
                                         r"\(warmup_steps\?\); known: optimizer, lr, "):
        load_config("demo", ["train.optim.learning_rate=1e-3", "train.optim.warmup=3"])


def test_a_misspelt_flat_feature_key_gets_a_guess_and_the_flat_keys_are_named_as_known():
    # --set features.num_mel_bin=64 (features.num_mel_bins, a flat alias of features.fbank.num_mel_bins) got no
    # guess and a list of known keys without the flat ones (a new user's case)
    with pytest.raises(ValueError) as err:
        load_config("demo", ["features.num_mel_bin=64"])
    assert str(err.value) == (
        "--set features.num_mel_bin=64: features: unknown key(s) num_mel_bin (num_mel_bins?); known: frontend, fbank, "
        "logmel, target_length, mean, std, normalize; flat aliases: sample_rate (fbank.sample_rate), num_mel_bins "
        "(fbank.num_mel_bins), frame_length_ms (fbank.frame_length_ms), frame_shift_ms (fbank.frame_shift_ms)")
    with pytest.raises(ValueError, match=r"also unknown: features.frame_shift \(frame_shift_ms\?\)"):
        load_config("demo", ["data.train_clip=3", "features.frame_shift=5"])
    assert load_config("demo", ["features.num_mel_bins=64"]).features.fbank.num_mel_bins == 64


def test_every_wrong_value_of_a_config_is_named_at_once_each_by_the_file_that_set_it(tmp_path):
    """A new user's case: `c2f.method: fshfit` and `train.metric: accuracy` in one file took two tries,
    as did timem and freqm both too wide."""
    base = _write(tmp_path, "base.yaml", "extends: demo\nc2f:\n  method: fshfit\n")
    mine = _write(tmp_path, "mine.yaml", "extends: base.yaml\ntrain:\n  metric: accuracy\naugment:\n  mixup: -1\n")
    with pytest.raises(ValueError) as err:
        load_config(mine)
    text = str(err.value)
    assert text.startswith(f"{mine}: train.metric: 'accuracy' is not one of acc, mAP")  # the config's order
    for part in (f"{mine}: augment.mixup: must be >= 0", f"{base}: c2f.method: 'fshfit' is not one of fshift"):
        assert part in text, text  # each named by the file that set it
    with pytest.raises(ValueError, match=r"^augment\.timem: 200 is more than .* \(also: augment\.freqm: 300 is more "
                                         r"than the features' 128 mel bins"):  # a --set named as typed: by its key
        load_config("demo", ["augment.timem=200", "augment.freqm=300"])
    with pytest.raises(ValueError, match=r"^train\.epochs: expected an integer, got 'abc' \(also: c2f\.method: 'x' is "
                                         r"not one of"):
        load_config("demo", ["train.epochs=abc", "c2f.method=x"])


def test_a_preset_shrunk_with_train_epochs_alone_warns_that_its_phases_stay_and_its_baseline_is_the_epochs(caplog,
                                                                                                          capsys):
    """A new user's case: `pretrain-experiment ssast_pretrain-cpu --set train.epochs=2` trained a 2-epoch
    baseline against 3 + 15 epochs of coarse-to-fine; `pretrain ... --schedule 1` was refused."""
    with caplog.at_level("WARNING", logger="coarse2fine.config"):
        load_config("ssast_pretrain-cpu", ["train.epochs=2"], check_runtime=False)
    assert ("preset ssast_pretrain-cpu: c2f.phase_epochs [3, 15]: the final phase alone trains 15 epochs, more than "
            "train.epochs 2 (the baseline's") in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="coarse2fine.config"):
        load_config("ssast_pretrain-cpu", check_runtime=False)  # the recipe: 3 + 15 against 24
    assert "final phase alone" not in caplog.text
    assert main(["flops", "ssast_pretrain-cpu", "--schedule", "1", "--classes", "0"]) == 0  # the baseline
    assert "1.00x the baseline's 24 epochs" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"phase_epochs \[3, 15\] has 2 entries but schedule 4-2-1 has 3 phases; give "
                                         r"one entry per phase, or c2f\.phase_epochs: null for the paper's split"):
        load_config("ssast_pretrain-cpu", ["c2f.schedule=4-2-1"], check_runtime=False)


def test_a_compile_mode_without_compile_warns_once(caplog):
    # train.compile_mode: reduce-overhead alone was silently ignored (a new user's case).
    with caplog.at_level("WARNING", logger="coarse2fine.config"):
        cfg = load_config("demo", ["train.compile_mode=reduce-overhead"], check_runtime=False)
        cfg.baseline()  # a derived config says nothing again
    assert caplog.text.count("train.compile_mode: reduce-overhead compiles nothing without train.compile: true") == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="coarse2fine.config"):
        load_config("demo", ["train.compile_mode=reduce-overhead", "train.compile=true"], check_runtime=False)
    assert "compile_mode" not in caplog.text


def test_a_sections_checks_across_keys_report_every_problem_at_once(tmp_path, monkeypatch):
    # They came one per try, after the section's values were right.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "two.yaml").write_text("extends: demo\naugment:\n  mixup: 2.0\n  mixup_alpha: 0\n  wa_start: 5\n"
                                       "  wa_end: 3\nc2f:\n  phase_epochs: [1, 2]\n  phase_steps: [10, 20]\n"
                                       "  initial_fraction: 1.5\n")
    with pytest.raises(ValueError) as err:
        load_config("two.yaml", check_runtime=False)
    text = str(err.value)
    for problem in ("augment.mixup: a probability in [0, 1], got 2.0", "augment.mixup_alpha: must be > 0, got 0.0",
                    "augment.wa_end: weight averaging needs wa_start <= wa_end", "c2f: give phase_epochs or phase_steps",
                    "c2f.initial_fraction: must be in (0, 1), got 1.5"):
        assert problem in text, text
    # across sections too: the loss against multi-label data and the batch against accumulation, at once
    with pytest.raises(ValueError) as err:
        load_config("demo", ["data.multilabel=true", "train.grad_accum=3"], check_runtime=False)
    assert "set train.loss: bce" in str(err.value) and "must be a multiple of train.grad_accum (3)" in str(err.value)


def test_a_data_key_the_kind_does_not_read_warns_when_you_set_it(tmp_path, caplog):
    # `--set data.train_clips=100` on ESC-50 data changed nothing and said nothing (a new user's case).
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        load_config("esc50-cpu", ["data.train_clips=100"])
    assert caplog.text.count("data.train_clips: data.kind esc50 does not read it (only synthetic data does)") == 1
    caplog.clear()
    # A key a preset set for its own kind, inherited by data of another kind, is not yours: no warning.
    (tmp_path / "mine.yaml").write_text("extends: demo\ndata:\n  kind: manifest\n  train: t.json\n  val: v.json\n")
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        load_config(str(tmp_path / "mine.yaml"))
    assert "does not read it" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):  # FSDD has no folds (nor does a run differ by one)
        load_config("fsdd_digits-cpu", ["data.fold=3"])
    assert "data.fold: data.kind fsdd does not read it (only manifest, esc50 and shards data does)" in caplog.text
    (tmp_path / "mine.yaml").write_text("extends: demo\ndata:\n  kind: manifest\n  train: t.json\n  val: v.json\n"
                                        "  root: /data/fsdd\n")
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        load_config(str(tmp_path / "mine.yaml"))
    assert f"{tmp_path / 'mine.yaml'}: data.root: data.kind manifest does not read it (only fsdd and esc50" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):  # a run's saved config.yaml holds every key
        load_config(str(tmp_path / "mine.yaml"), check_runtime=False)
    assert "does not read it" not in caplog.text
    # Your own file for the files, then one for their pack: its label CSV was for the files' kind.
    (tmp_path / "packed.yaml").write_text(f"extends: {tmp_path / 'mine.yaml'}\ndata:\n  kind: shards\n"
                                          "  train: p/train\n  val: p/val\n")
    (tmp_path / "mine.yaml").write_text("extends: demo\ndata:\n  kind: manifest\n  train: t.json\n  val: v.json\n"
                                        "  label_csv: labels.csv\n")
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        load_config(str(tmp_path / "packed.yaml"))
    assert "does not read it" not in caplog.text


def test_a_key_of_the_other_lr_schedule_warns_when_you_set_it_not_when_a_preset_carries_it(tmp_path, caplog):
    # Step-decay keys set by hand under HTS-AT's per-epoch schedule changed nothing and said nothing.
    (tmp_path / "mine.yaml").write_text("extends: htsat_esc50-cpu\ntrain:\n  optim:\n    decay_start: 4\n")
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        load_config(str(tmp_path / "mine.yaml"))
    assert (f"{tmp_path / 'mine.yaml'}: train.optim.decay_start: train.optim.schedule epochs does not read it (only "
            "schedule step does): it changes nothing in this run") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        load_config("esc50-cpu", ["train.optim.epoch_factors=[[1, 1.0], [5, 0.5]]"])
    assert caplog.text.count("train.optim.epoch_factors: train.optim.schedule step does not read it") == 1
    caplog.clear()
    # The HTS-AT presets inherit AST's decay keys, and a file of yours that switches the schedule after
    # setting them was setting them for the other one: neither is yours to be told of.
    (tmp_path / "ast.yaml").write_text("extends: esc50-cpu\ntrain:\n  optim:\n    decay_start: 4\n")
    (tmp_path / "per_epoch.yaml").write_text(f"extends: {tmp_path / 'ast.yaml'}\ntrain:\n  optim:\n"
                                             "    schedule: epochs\n    epoch_factors: [[1, 1.0]]\n")
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        load_config("htsat_esc50-cpu")
        load_config(str(tmp_path / "per_epoch.yaml"))
    assert "does not read it" not in caplog.text and "changes nothing" not in caplog.text
    # `stats` prints a mean and std to paste; under HTS-AT's features.normalize: false they did nothing, silently
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        load_config("htsat_esc50-cpu", ["features.mean=-47.8", "features.std=37.3"])
    assert caplog.text.count("features.normalize is false (the model normalises its input itself): it changes "
                             "nothing in this run") == 2


def test_a_budget_switch_whose_final_phase_ignores_the_budget_warns(caplog):
    # switch: budget with the default final_stop: epochs spent 3.6x the budget in a new user's run, silently.
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        load_config("demo", ["c2f.switch=budget", "c2f.budget_flops=8e11", "train.epochs=20"], check_runtime=False)
    assert ("c2f.switch: budget ends the coarse phases at their shares of the budget (8e+11 FLOPs); the final phase "
            "stops after its 20 epoch(s) (c2f.final_stop: epochs), whatever the budget") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        load_config("demo", ["c2f.switch=budget", "c2f.final_stop=budget", "c2f.budget_flops=8e11"], check_runtime=False)
    assert "whatever the budget" not in caplog.text


@pytest.mark.parametrize("sets,said", [
    (["c2f.patience=5", "c2f.min_delta=0.5"], "c2f.patience: 5, c2f.min_delta: 0.5: do nothing here, read only with "
                                              "c2f.switch: plateau or c2f.final_stop: plateau"),
    (["c2f.budget_flops=1e12"], "c2f.budget_flops: 1e+12: does nothing here, read only with c2f.switch: budget or "
                                "c2f.final_stop: budget"),
    (["c2f.lr_scaling=linear"], "c2f.lr_scaling: linear: does nothing here, read only with c2f.coarse_batch: scale"),
    (["pretrain.mask_patch=50"], "pretrain.mask_patch: 50: does nothing here, read only with train.objective: masked_patch"),
])
def test_settings_that_only_other_settings_make_read_warn(caplog, sets, said):
    # A researcher who set c2f.patience and forgot c2f.switch got the fixed schedule and no message.
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        load_config("demo", sets, check_runtime=False)
    assert said in caplog.text
    caplog.clear()
    selecting = {"c2f.patience": "c2f.switch=plateau", "c2f.budget_flops": "c2f.switch=budget",
                 "c2f.lr_scaling": "c2f.coarse_batch=scale", "pretrain.mask_patch": "train.objective=masked_patch"}
    more = ["train.metric=masked_acc", "model.arch=ssast"] if "pretrain" in sets[0] else []
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        load_config("demo", [*sets, selecting[sets[0].split("=")[0]], *more], check_runtime=False)
    assert "does nothing here" not in caplog.text and "do nothing here" not in caplog.text


def test_a_baseline_drops_the_per_phase_settings_of_its_variants_schedule():
    # experiment and flops stopped on "c2f.budget_shares: [0.3, 0.7] needs one share per phase of schedule 1"
    cfg = load_config("demo", ["c2f.switch=budget", "c2f.budget_flops=1e11", "c2f.budget_shares=[0.3, 0.7]",
                               "c2f.coarse_batch=scale", "c2f.batch_scales=[2, 1]", "c2f.phase_epochs=[1, 2]"],
                      check_runtime=False)
    base = cfg.baseline()
    assert base.c2f.schedule == "1" and base.c2f.budget_shares is None and base.c2f.batch_scales is None
    assert [p.epochs for p in base.phases()] == [cfg.train.epochs]


def test_an_initial_fraction_that_given_phase_lengths_override_warns(caplog):
    # tuned in a planned config (which gives phase_epochs), it changed nothing, silently (a new user's case)
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        cfg = load_config("demo", ["c2f.initial_fraction=0.5", "c2f.phase_epochs=[1, 4]"], check_runtime=False)
    assert "c2f.initial_fraction: 0.5: does nothing here" in caplog.text and cfg.phases()[0].epochs == 1
    caplog.clear()
    for sets in (["c2f.initial_fraction=0.5"],
                 ["c2f.initial_fraction=0.5", "c2f.phase_epochs=[1, 4]", "c2f.switch=budget", "c2f.budget_flops=1e12"]):
        with caplog.at_level(logging.WARNING, logger="coarse2fine"):
            load_config("demo", sets, check_runtime=False)
        assert "initial_fraction: 0.5: does nothing" not in caplog.text  # it splits the epochs, or the budget


def test_a_clip_length_that_does_not_fill_the_frames_or_overflows_them_warns(caplog):
    # 2.3 s clips cut silently to their first 1.29 s; 256 frames for 1.28 s clips doubled the FLOPs on padding
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        load_config("fsdd_speakers-cpu", ["data.clip_seconds=2.3"], check_runtime=False)
    assert ("data.clip_seconds: 2.3 s gives 228 frames, but features.target_length is 128: only each clip's first "
            "1.29 s reach the model") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        load_config("fsdd_speakers-cpu", ["features.target_length=256"], check_runtime=False)
    assert "features.target_length: 256 frames, but clips of data.clip_seconds 1.28 s give 126: 130 frames" in caplog.text
    caplog.clear()
    # neither key is wrong alone: the one set last is named (it named the preset that set target_length)
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        load_config("voxceleb-cpu", ["data.clip_seconds=3"], check_runtime=False)
    assert "--set data.clip_seconds=3: features.target_length: 1024 frames, but clips of data.clip_seconds 3 s" in (
        caplog.text) and "preset voxceleb: features.target_length" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        for preset in ("fsdd_speakers-cpu", "speechcommands", "audioset", "htsat_esc50", "ssast_pretrain"):
            load_config(preset, check_runtime=False)  # the recipes' own lengths (AST pads 98 frames to 128)
    assert "frames" not in caplog.text
