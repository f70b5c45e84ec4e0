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
    with pytest.raises(ValueError, match="config.train: unknown key.*epochz"):
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
    with pytest.raises(ValueError, match="config.train.epochs: expected int, got 'many'"):
        load_config("demo", ["train.epochs=many"])
