import pytest

from coarse2fine.config import apply_overrides, config_from_dict, load_config, preset_names, save_config


def test_demo_preset_loads_with_overrides(tmp_path):
    assert "demo" in preset_names()
    cfg = load_config("demo", ["train.epochs=3", "c2f.schedule=4-2-1", "model.patch_size=[16, 8]", "train.optim.lr=0.01"])
    assert cfg.train.epochs == 3 and cfg.c2f.schedule == "4-2-1"
    assert cfg.model.patch_size == (16, 8) and cfg.train.optim.lr == 0.01
    path = tmp_path / "cfg.yaml"
    save_config(cfg, path)
    assert load_config(path).to_dict() == cfg.to_dict()


def test_unknown_keys_and_presets_are_named():
    with pytest.raises(ValueError, match="^train: unknown key.*epochz"):
        config_from_dict({"train": {"epochz": 3}})
    with pytest.raises(ValueError, match="unknown preset 'nope'.*demo"):
        load_config("nope")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config("missing.yaml")
    with pytest.raises(ValueError, match="section.key=value"):
        apply_overrides({}, ["train.epochs"])


def test_bad_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yaml: invalid YAML"):
        load_config(bad)


def test_yaml_numbers_are_coerced_and_bad_types_named():
    cfg = load_config("demo", ["train.optim.lr=3e-4", "train.epochs=7"])
    assert cfg.train.optim.lr == 3e-4 and isinstance(cfg.train.optim.lr, float)
    with pytest.raises(ValueError, match="^train.epochs: expected an integer, got .many."):
        load_config("demo", ["train.epochs=many"])


@pytest.mark.parametrize("override,message", [
    ("train.metric=accuracy", "train.metric: 'accuracy' is not one of acc, mAP, mAUC, d_prime, val_loss"),
    ("train.loss=hinge", "train.loss: 'hinge' is not one of ce, bce"),
    ("train.objective=contrastive", "train.objective: 'contrastive' is not one of"),
    ("train.optim.optimizer=sgd", "train.optim.optimizer: 'sgd' is not one of adam, adamw"),
    ("train.amp=fp8", "train.amp: 'fp8' is not one of none, bf16, fp16"),
    ("train.device=tpu", "train.device: 'tpu' is not one of"),
    ("model.arch=resnet", "model.arch: 'resnet' is not one of ast, htsat, ssast"),
    ("model.preset=huge", "model.preset: 'huge' is not one of base, small, tiny, micro"),
    ("c2f.method=blur", "c2f.method: 'blur' is not one of fshift, avgpool, maxpool, patch"),
    ("c2f.patch_resize=nearest", "c2f.patch_resize: 'nearest' is not one of bilinear, pi"),
    ("c2f.schedule=1-4", "c2f.schedule: schedule '1-4'"),
    ("c2f.phase_epochs=[1, 2, 3]", "c2f: phase_epochs \\[1, 2, 3\\] has 3 entries but schedule 4-1 has 2"),
    ("data.on_error=ignore", "data.on_error: 'ignore' is not one of raise, skip"),
    ("data.kind=webdataset", "data.kind: 'webdataset' is not one of synthetic, manifest, fsdd, esc50, unlabeled"),
    ("data.pad=mirror", "data.pad: 'mirror' is not one of zeros, repeat"),
    ("train.optim.schedule=cosine", "train.optim.schedule: 'cosine' is not one of step, epochs"),
    ("features.frontend=mfcc", "features.frontend: 'mfcc' is not one of fbank, logmel"),
    ("features.fbank.window=box", "features.fbank: unknown window 'box'"),
    ("train.epochs=0", "train.epochs: must be >= 1"),
    ("model.patch_size=[16, 48]", "at R=4 .*patch \\(16, 48\\).*32 frames"),
    ("train.objective=masked_patch", "train.metric: 'acc' is not one of masked_acc, recon_mse, val_loss"),
])
def test_every_enumerated_value_is_checked_when_the_config_is_loaded(override, message):
    with pytest.raises(ValueError, match=message):
        load_config("demo", [override])


def test_objective_and_family_must_agree_at_load():
    with pytest.raises(ValueError, match="masked_patch trains model.arch ssast, not ast"):
        load_config("demo", ["train.objective=masked_patch", "train.metric=masked_acc"])


def test_preset_names_win_over_folders_of_the_same_name(tmp_path, monkeypatch):
    # A folder named like a preset in the current directory must not be taken for a config file.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "esc50").mkdir()
    (tmp_path / "esc50-cpu").mkdir()
    (tmp_path / "my.yaml").write_text("extends: esc50-cpu\nname: mine\n")
    cfg = load_config("my.yaml")
    assert cfg.name == "mine" and cfg.model.preset == "micro" and cfg.features.target_length == 512
    assert load_config("esc50").name == "esc50"


def test_extends_is_relative_to_the_file_that_extends(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "base.yaml").write_text("extends: demo\ntrain:\n  epochs: 3\n")
    (tmp_path / "configs" / "run.yaml").write_text("extends: base.yaml\nname: run\n")
    monkeypatch.chdir(tmp_path.parent)  # not the folder the configs are in
    cfg = load_config(tmp_path / "configs" / "run.yaml")
    assert cfg.name == "run" and cfg.train.epochs == 3 and cfg.data.kind == "synthetic"
    # A file without a name of its own is named after itself, not after what it extends.
    assert load_config(tmp_path / "configs" / "base.yaml").name == "base"


def test_legacy_flat_feature_keys_move_under_fbank():
    cfg = config_from_dict({"features": {"num_mel_bins": 64, "frame_shift_ms": 20.0, "target_length": 64}})
    assert cfg.features.fbank.num_mel_bins == 64 and cfg.features.fbank.frame_shift_ms == 20.0
    assert cfg.features.num_mel_bins == 64 and cfg.features.spec().frontend == cfg.features.fbank


def test_a_flat_feature_key_wins_over_the_fbank_value_a_config_inherits(tmp_path, monkeypatch):
    # Every preset sets features.fbank; a flat key (the README's "earlier versions" spelling) in a
    # file or a --set was dropped in favour of the preset's value, silently (a new user's defect).
    monkeypatch.chdir(tmp_path)
    assert load_config("demo", ["features.num_mel_bins=64"]).features.num_mel_bins == 64
    assert load_config("demo", ["features.sample_rate=8000"]).features.sample_rate == 8000
    assert load_config("demo").replace({"features.num_mel_bins": 64}).features.fbank.num_mel_bins == 64
    (tmp_path / "mine.yaml").write_text("extends: demo\nfeatures:\n  num_mel_bins: 64\n  frame_shift_ms: 20.0\n")
    cfg = load_config("mine.yaml")
    assert (cfg.features.fbank.num_mel_bins, cfg.features.fbank.frame_shift_ms) == (64, 20.0)
    # a later file or --set still wins over it, whichever spelling it uses
    assert load_config("mine.yaml", ["features.fbank.num_mel_bins=32"]).features.num_mel_bins == 32
    (tmp_path / "theirs.yaml").write_text("extends: mine.yaml\nfeatures:\n  fbank:\n    num_mel_bins: 96\n")
    assert load_config("theirs.yaml").features.num_mel_bins == 96

    (tmp_path / "both.yaml").write_text("extends: demo\nfeatures:\n  num_mel_bins: 64\n  fbank:\n    num_mel_bins: 128\n")
    with pytest.raises(ValueError, match=r"^both.yaml: features.num_mel_bins: 64 and features.fbank.num_mel_bins: 128 "
                                         r"both set it; keep features.fbank.num_mel_bins"):
        load_config("both.yaml")
    # flat keys set the fbank front end: refused, not ignored, for a config of another front end
    (tmp_path / "htsat.yaml").write_text("extends: htsat_esc50-cpu\nfeatures:\n  sample_rate: 16000\n")
    with pytest.raises(ValueError, match=r"^htsat.yaml: features.sample_rate: the flat keys of earlier versions set "
                                         r"the fbank front end, but features.frontend is logmel: set them under "
                                         r"features.logmel"):
        load_config("htsat.yaml")
    with pytest.raises(ValueError, match=r"^features.sample_rate: the flat keys .* features.frontend is logmel"):
        load_config("htsat_esc50-cpu", ["features.sample_rate=16000"])
    with pytest.raises(ValueError, match=r"features.frontend is logmel"):
        config_from_dict({"features": {"frontend": "logmel", "sample_rate": 16000}})


@pytest.mark.parametrize("make", ["directory", "missing", "binary"])
def test_unreadable_config_is_one_clear_line(tmp_path, capsys, make):
    from coarse2fine.cli import main

    path = tmp_path / "cfg.yaml"
    if make == "directory":
        path.mkdir()
    elif make == "binary":
        path.write_bytes(b"\xff\xfe\x00bad")
    rc = main(["check", str(path)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1 and str(path) in err


def test_a_metric_typo_fails_before_any_training(tmp_path, capsys):
    from coarse2fine.cli import main

    rc = main(["train", "demo", "--out", str(tmp_path / "run"), "--quiet", "--set", "train.metric=accuracy"])
    assert rc == 2 and "train.metric: 'accuracy'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_error_names_the_file_of_the_chain_that_set_the_key(tmp_path):
    (tmp_path / "base.yaml").write_text("extends: demo\ntrain:\n  epoch: 3\n")
    (tmp_path / "mine.yaml").write_text("extends: base.yaml\ndata:\n  fold: 0\n")
    (tmp_path / "top.yaml").write_text("extends: base.yaml\ntrian:\n  epochs: 3\n")
    (tmp_path / "ok.yaml").write_text("extends: demo\ntrain:\n  epochs: 3\n")
    with pytest.raises(ValueError, match=r"base\.yaml: train: unknown key\(s\) epoch"):
        load_config(tmp_path / "mine.yaml", ["data.fold=1"])  # the parent's mistake, named as the parent's
    with pytest.raises(ValueError, match=r"mine\.yaml: data\.fold: must be >= 1"):
        load_config(tmp_path / "mine.yaml", ["train={}"])
    # base.yaml's typo too, in the same error
    with pytest.raises(ValueError, match=r"top\.yaml: unknown top-level key\(s\) trian \(train\?\); known sections "
                                         r".*\(also unknown: train\.epoch \(epochs\?\)\)$"):
        load_config(tmp_path / "top.yaml")
    with pytest.raises(ValueError, match=r"^--set train\.grad_accum=4: train\.batch_size 30 must be a multiple"):  # as typed
        load_config(tmp_path / "ok.yaml", ["train.batch_size=30", "train.grad_accum=4"])


def test_a_changed_config_is_written_as_extends_plus_the_change_with_a_presets_relative_paths(tmp_path):
    import yaml

    from coarse2fine.config.files import config_yaml

    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: esc50-cpu\ntrain:\n  epochs: 4\n")  # esc50's data.root is relative, read from the cwd
    cfg = load_config(mine).replace({"c2f.schedule": "2-1"})
    written = yaml.safe_load(config_yaml(cfg, str(mine)))
    assert written == {"extends": str(mine), "name": "mine", "c2f": {"schedule": "2-1"}}
    (tmp_path / "plan.yaml").write_text(config_yaml(cfg, str(mine)))
    assert load_config(tmp_path / "plan.yaml").to_dict() == cfg.to_dict()


def test_a_long_differing_value_is_shown_where_it_differs():
    # A pack of other settings was refused with two identical-looking shortened lists (a new user's case).
    from coarse2fine.config.files import config_difference

    sets = [{"name": "r1", "R": 1, "kind": "fbank", "sample_rate": 16000, "frame_shift_ms": 10.0},
            {"name": "r4", "R": 4, "kind": "fbank", "sample_rate": 16000, "frame_shift_ms": 40.0}]
    other = [sets[0], {**sets[1], "name": "r2", "R": 2, "frame_shift_ms": 20.0}]
    assert config_difference({"feature_sets": sets}, {"feature_sets": other}) == "feature_sets[1].R: 4 vs 2"
    assert config_difference({"c2f": {"phase_epochs": [1, 2]}}, {"c2f": {"phase_epochs": [1, 3]}}) == (
        "c2f.phase_epochs: [1, 2] vs [1, 3]")  # short values whole


def test_a_single_number_for_stride_or_patch_size_is_that_number_on_both_axes(tmp_path):
    # `model.stride: 10`, as AST's --fstride 10 --tstride 10, was refused: "expected a list, got 10" (a new user's case)
    cfg = load_config("demo", ["c2f.schedule=1", "model.stride=10", "model.patch_size=16.0"])
    assert cfg.model.stride == (10, 10) and cfg.model.patch_size == (16, 16)
    assert cfg.to_dict()["model"]["stride"] == [10, 10]
    assert config_from_dict({"c2f": {"schedule": "1"}, "model": {"stride": 10}}).model.stride == (10, 10)
    with pytest.raises(ValueError, match=r"model.stride: must be >= 1, got 0"):
        load_config("demo", ["c2f.schedule=1", "model.stride=0"])
    with pytest.raises(ValueError, match=r"model.stride: expected a whole number \(the same on both axes\) or a pair "
                                         r"\[freq, time\], got 10.5"):  # it said "model.stride[0]: expected an integer"
        load_config("demo", ["c2f.schedule=1", "model.stride=10.5"])
    with pytest.raises(ValueError, match=r"model.stride: expected a list, got True"):
        load_config("demo", ["model.stride=true"])
    with pytest.raises(ValueError, match=r"train.optim.betas: expected a list, got 0.9"):  # not a pair of axes
        load_config("demo", ["train.optim.betas=0.9"])
