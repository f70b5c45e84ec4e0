"""``model.init_from``: a missing source fails when the config is loaded (before any data is read
or any file written), a run of another size is described in plain words, a run of another family
is refused, and what was taken is summarised for the run's log."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from coarse2fine.config import RunConfig, load_config
from coarse2fine.data.sources import load_splits
from coarse2fine.experiments.pretraining import finetune_config
from coarse2fine.model import C2FModel
from coarse2fine.model.ast import AST, ASTConfig
from coarse2fine.model.ast.hf import export_hf_checkpoint
from coarse2fine.model.transfer import (
    SHOWN_MISMATCHES,
    initialise,
    load_saved_model,
    transfer_weights,
)
from coarse2fine.training.loop import train_run

AST_TINY = dict(embed_dim=32, depth=2, num_heads=2, num_mel_bins=32, target_length=64, patch_size=(8, 8))
TINY = ["data.train_clips=16", "data.val_clips=8", "train.epochs=1", "c2f.schedule=1", "train.batch_size=8",
        "train.threads=1"]


def tiny_config(arch: str, preset: str, *more: str) -> RunConfig:
    """The demo config, one small epoch at full resolution, of family ``arch`` at size ``preset``."""
    return load_config("demo", [*TINY, f"model.arch={arch}", f"model.preset={preset}", *more])


def model_of(cfg: RunConfig, num_classes: int = 8) -> C2FModel:
    """The freshly initialised model the config's first phase trains."""
    return cfg.phase(0, num_classes).build_model()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Finished runs: SSAST micro and AST micro, trained for one small epoch."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for arch in ("ssast", "ast"):
        cfg = tiny_config(arch, "micro")
        out[arch] = train_run(cfg, load_splits(cfg), root / arch, progress=False, fresh=True).out_dir
    return out


def test_a_missing_init_from_fails_at_load_before_any_data_is_read_or_file_written(tmp_path, capsys):
    from coarse2fine.cli import main

    gone, out = tmp_path / "no_such_run", tmp_path / "out"
    assert main(["train", "demo", "--out", str(out), "--quiet", "--set", f"model.init_from={gone}"]) == 2
    assert f"model.init_from: {gone} does not exist" in capsys.readouterr().err
    assert not out.exists()
    # In a config file the path is taken from the file's folder, and the error names it absolute.
    (tmp_path / "ft.yaml").write_text("extends: demo\nmodel:\n  init_from: runs/pre\n")
    with pytest.raises(ValueError, match=re.escape(f"model.init_from: {tmp_path / 'runs' / 'pre'} does not exist")):
        load_config(tmp_path / "ft.yaml")


def test_an_unfinished_run_folder_is_refused_at_load(tmp_path):
    (tmp_path / "pre").mkdir()
    (tmp_path / "pre" / "config.yaml").write_text("extends: demo\n")
    with pytest.raises(ValueError, match="without model_config.json: the run has not finished"):
        load_config("demo", [f"model.init_from={tmp_path / 'pre'}"])


def test_an_experiment_folder_is_refused_at_load_naming_its_runs(runs, capsys):
    """A new user's case: `check` took init_from=runs/exp (an experiment's folder) and `train` then said
    only that it was neither a run folder nor a checkpoint."""
    from coarse2fine.cli import main

    folder = runs["ast"].parent  # holds the runs ast and ssast
    held = f"{folder} holds runs: ast, ssast: give one of them, e.g. {folder / 'ast'}"
    assert main(["check", "demo", "--set", f"model.init_from={folder}"]) == 2
    assert f"model.init_from: {folder} is not a run folder; {held}" in capsys.readouterr().err
    # the model's own reader says the same when given it directly
    from coarse2fine.model.transfer import initialise

    with pytest.raises(ValueError, match=re.escape(f"is neither a coarse2fine run folder nor a checkpoint the ast family "
                                                   f"reads; {held}")):
        initialise(model_of(tiny_config("ast", "micro")), str(folder))


def test_a_run_of_another_family_is_refused_at_load_before_a_run_folder_is_made(runs, tmp_path, capsys):
    """A new user's case: init_from of an SSAST pretraining run in an AST config failed once the run had
    started, and left its folder behind."""
    from coarse2fine.cli import main

    out = tmp_path / "x"
    assert main(["train", "demo", "--out", str(out), "--set", f"model.init_from={runs['ssast']}"]) == 2
    assert (f"model.init_from: {runs['ssast']} is a run of the ssast family; this config builds model.arch ast: "
            "init_from takes a run of the same family (set model.arch: ssast") in capsys.readouterr().err
    assert not out.exists()


def test_configs_may_name_a_run_that_does_not_exist_yet_or_any_more(tmp_path):
    later = tmp_path / "pretrain" / "baseline"
    # pretrain-experiment names the pretraining run in the fine-tuning config before it is trained,
    pre = load_config("demo", ["model.arch=ssast", "model.preset=micro", "train.objective=masked_patch",
                               "train.metric=masked_acc"])
    assert finetune_config(load_config("demo"), pre, later, "ft").model.init_from == str(later)
    # and the saved config of a finished run is read even when its source is gone.
    assert load_config("demo", [f"model.init_from={later}"], check_runtime=False).model.init_from == str(later)


def test_a_run_of_another_size_says_so_in_plain_words_before_a_short_list_of_tensors(runs):
    target = model_of(tiny_config("ssast", "tiny"))
    with pytest.raises(ValueError) as err:
        initialise(target, str(runs["ssast"]))
    message = str(err.value)
    assert message.startswith(f"model.init_from {runs['ssast']}: the run is ssast micro (embed dim 64, 4 layers, 4 heads); "
                              "this config builds ssast tiny (embed dim 192, 12 layers, 3 heads)")
    count = int(re.search(r"(\d+) tensor\(s\) differ in shape", message).group(1))
    assert count > 20 and message.count(" vs ") == SHOWN_MISMATCHES
    assert f"... {count - SHOWN_MISMATCHES} more" in message


def test_check_loads_init_from_into_the_configs_model_as_a_run_would(runs, capsys):
    """`check` passed a run of another size, which the run then stopped on after reading its data."""
    from coarse2fine.cli import main

    sets = [a for s in [*TINY, "model.arch=ssast", f"model.init_from={runs['ssast']}"] for a in ("--set", s)]
    assert main(["check", "demo", *sets, "--set", "model.preset=tiny"]) == 1
    assert (f"A run of this config stops at its start: model.init_from {runs['ssast']}: the run is ssast micro (embed "
            "dim 64, 4 layers, 4 heads); this config builds ssast tiny") in capsys.readouterr().out
    assert main(["check", "demo", *sets, "--set", "model.preset=micro"]) == 0
    assert re.search(rf"\nmodel.init_from: \d+ tensors taken from run {re.escape(str(runs['ssast']))}, \d+ left as "
                     "initialised; classifier head: kept \(the same classes\)\n", capsys.readouterr().out)


def test_a_run_of_another_family_is_refused(runs):
    with pytest.raises(ValueError, match=re.escape(
            f"model.init_from {runs['ast']}: the run is ast micro (embed dim 64, 4 layers, 4 heads); this config builds "
            "ssast micro (embed dim 64, 4 layers, 4 heads): init_from takes a run of the same family; "
            "to fine-tune this run, set model.arch=ast and model.preset=micro")):
        initialise(model_of(tiny_config("ssast", "micro")), str(runs["ast"]))
    # SSAST's encoder reaches AST through the Hugging Face AST folder that export-hf writes.
    with pytest.raises(ValueError, match=re.escape(f"coarse2fine export-hf {runs['ssast']} --out DIR")):
        initialise(model_of(tiny_config("ast", "micro")), str(runs["ssast"]))


def test_initialising_from_a_run_returns_what_was_taken_for_the_log(runs):
    target = model_of(tiny_config("ssast", "micro"), num_classes=3)  # other classes: the head is not taken
    summary = initialise(target, str(runs["ssast"]))
    heads = tuple(sorted(target.head_keys()))
    # the source's head (8 classes) is not used: it is counted with what was left unused
    classes = tuple(json.loads((runs["ssast"] / "labels.json").read_text())["classes"])
    assert heads and (summary.source, summary.taken, summary.new, summary.unused, summary.source_classes) == (
        f"run {runs['ssast']}", len(target.state_dict()) - len(heads), heads, heads, classes)
    assert summary.replaced == heads and summary.replaced_why == "8 classes, task has 3: new head"
    assert summary.to_dict() == {"source": f"run {runs['ssast']}", "taken": summary.taken, "new": len(heads),
                                 "unused": len(heads), "new_tensors": list(heads), "unused_tensors": list(heads),
                                 "head": None}


def test_init_from_takes_a_weights_file_of_a_run_folder(runs, tmp_path):
    """model_best.safetensors (the best epoch's weights) as a fine-tuning start: a run folder's file."""
    from safetensors.torch import load_file, save_file

    best = runs["ast"] / "model_best.safetensors"
    assert best.is_file()
    changed = {k: v + 1 for k, v in load_file(best).items()}  # weights of its own, told apart from model.safetensors
    save_file(changed, tmp_path / "other.safetensors")
    (tmp_path / "model_config.json").write_text((runs["ast"] / "model_config.json").read_text())
    (tmp_path / "labels.json").write_text((runs["ast"] / "labels.json").read_text())
    target = model_of(tiny_config("ast", "micro"))
    initialise(target, str(tmp_path / "other.safetensors"))
    assert torch.equal(target.state_dict()["pos_embed"], changed["pos_embed"])
    with pytest.raises(ValueError, match=r"model_wa.safetensors: file not found \(the run folder holds "):
        initialise(model_of(tiny_config("ast", "micro")), str(runs["ast"] / "model_wa.safetensors"))


def test_weights_are_a_file_of_the_run_folder_by_name_or_by_path(runs, tmp_path, monkeypatch):
    # `predict runs/c41 f.flac --weights runs/c41/model_best.safetensors` looked for runs/c41/runs/c41/...
    from coarse2fine.model.transfer import weights_in_run

    monkeypatch.chdir(runs["ast"].parent)
    assert weights_in_run("ast", "model_best.safetensors") == "model_best.safetensors"
    assert weights_in_run("ast", "ast/model_best.safetensors") == "model_best.safetensors"
    assert weights_in_run("ast", str(runs["ast"] / "model_best.safetensors")) == "model_best.safetensors"
    load_saved_model("ast", "ast/model_best.safetensors")
    assert weights_in_run("ast", "ast/model_wa.safetensors") == "model_wa.safetensors"  # not there: named there
    (tmp_path / "elsewhere.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"elsewhere.safetensors: the weights must be a file of the run folder ast"):
        weights_in_run("ast", str(tmp_path / "elsewhere.safetensors"))


def _init_line(caplog) -> str:
    """The one log line an initialisation wrote."""
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("initialised from")]
    return line


def test_init_from_a_hugging_face_folder_of_other_classes_logs_the_head_it_replaced(tmp_path, caplog):
    # A new user's case: a Hugging Face AST folder of 10 classes into a 6-class task logged "unused: none".
    export_hf_checkpoint(AST(ASTConfig(num_classes=10, **AST_TINY)), tmp_path / "hf")
    target = AST(ASTConfig(num_classes=6, **AST_TINY))
    with caplog.at_level(logging.INFO, logger="coarse2fine.model.transfer"):
        summary = initialise(target, str(tmp_path / "hf"))
    line = _init_line(caplog)
    assert line.endswith("new: head.fc.bias, head.fc.weight; "
                         "unused: head.fc.bias, head.fc.weight (10 classes, task has 6: new head)"), line
    given = initialise(AST(ASTConfig(num_classes=6, **AST_TINY)), str(tmp_path / "hf"), ([f"c{i}" for i in range(6)], None))
    assert given.head == "new (10 classes, task has 6)"  # as check prints it
    assert summary.new == summary.unused == ("head.fc.bias", "head.fc.weight")
    assert summary.to_dict()["unused"] == 2 and summary.to_dict()["unused_tensors"] == ["head.fc.bias", "head.fc.weight"]


def test_the_init_from_log_line_names_every_tensor_not_loaded_as_is_in_one_short_line(caplog):
    # Three blocks the target has no place for (36 tensors, summarised by block), a positional
    # embedding resized to the target's shorter input, and the classes the same: the head is taken.
    source = AST(ASTConfig(num_classes=6, **{**AST_TINY, "depth": 5}))
    target = AST(ASTConfig(num_classes=6, **{**AST_TINY, "target_length": 32}))
    with caplog.at_level(logging.INFO, logger="coarse2fine.model.transfer"):
        summary = transfer_weights(source, target, "src")
    line = summary.line()  # initialise logs it, once the head is settled
    assert "it is ast custom size (embed dim 32, 5 layers, 2 heads); this config builds ast custom size" in caplog.text
    assert line == ("initialised from src: 35 tensors taken; resized to this model's geometry: "
                    "pos_embed [1, 10, 32] -> [1, 6, 32]; new: none; unused: not in this model: "
                    "blocks.2.* (12 tensors), blocks.3.* (12 tensors), blocks.4.* (12 tensors)"), line
    assert len(summary.unused) == 36 and summary.new == ()


def test_long_lists_of_tensors_are_grouped_by_module_or_counted():
    from coarse2fine.model.transfer import name_list

    assert name_list([]) == "none" and name_list(["a.w", "a.b"]) == "a.w, a.b"
    assert name_list([f"blocks.{b}.{n}" for b in (2, 3) for n in "abcd"], 6) == "blocks.2.* (4 tensors), blocks.3.* (4 tensors)"
    assert name_list([f"x{i}" for i in range(9)], 6) == "x0, x1, x2, x3, x4, x5, ... 3 more (9 tensors in all)"


def test_the_run_log_keeps_what_init_from_gave_also_when_resumed(runs, tmp_path):
    # The fine-tuning run is stopped by SIGTERM after a mid-epoch checkpoint, then continued: the
    # continued run does not initialise again, and its log.json still says what init_from gave.
    from coarse2fine.cli import main
    from coarse2fine.training.checkpoint import load_checkpoint

    sets = [*TINY, "model.arch=ssast", "model.preset=micro", f"model.init_from={runs['ssast']}",
            "data.train_clips=64", "train.checkpoint_every=1"]
    args = ["train", "demo", "--out", str(tmp_path / "ft"), "--quiet", *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.Popen([sys.executable, "-m", "coarse2fine.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    ckpt, deadline = tmp_path / "ft" / "checkpoint.safetensors", time.time() + 120
    while time.time() < deadline and proc.poll() is None and not ckpt.exists():
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, proc.stderr.read().decode()[-2000:]
    kept = load_checkpoint(ckpt)["init_from"]
    assert kept["source"] == f"run {runs['ssast']}" and kept["taken"] > 0 and kept["unused"] == 0
    assert main(args) == 0
    assert json.loads((tmp_path / "ft" / "log.json").read_text())["init_from"] == kept


def _hf_folder(tmp_path: Path, labels: list[str] | None, **config) -> tuple[Path, AST]:
    source = AST(ASTConfig(num_classes=4, **{**AST_TINY, **config}))
    export_hf_checkpoint(source, tmp_path / "hf", id2label=labels)
    return tmp_path / "hf", source


@pytest.mark.parametrize("task,head", [
    (["dog", "rain", "sea", "bird"], "kept"),          # the source's classes in its order
    (["bird", "sea", "dog", "rain"], "reordered"),     # the same classes in another order (a rebuilt label file)
    (["/m/d", "/m/r", "/m/s", "/m/b"], "kept"),        # ids the task names otherwise, display names the same
    (["zero", "one", "two", "three"], "new"),          # another task of as many classes
])
def test_a_head_taken_from_a_source_that_names_its_classes_fits_the_tasks(tmp_path, task, head, caplog):
    # A new user's case: a head was kept by position when the class count matched, whatever the
    # classes: a run continued after its label file was reordered scored 0 % where it had 57.5 %.
    folder, source = _hf_folder(tmp_path, ["dog", "rain", "sea", "bird"])
    target = AST(ASTConfig(num_classes=4, **AST_TINY))
    own = {k: v.clone() for k, v in target.state_dict().items()}
    display = ["dog", "rain", "sea", "bird"] if task[0].startswith("/m/") else task
    with caplog.at_level(logging.INFO, logger="coarse2fine.model.transfer"):
        summary = initialise(target, str(folder), (task, display))
    weight, theirs = target.state_dict()["head.fc.weight"], source.state_dict()["head.fc.weight"]
    names = ["dog", "rain", "sea", "bird"]
    assert summary.head.startswith(head)
    if head == "new":
        assert weight.equal(own["head.fc.weight"]) and summary.new == ("head.fc.bias", "head.fc.weight")
        assert "its 4 classes (dog, rain, sea, bird) are not this task's (zero, one, two, three): new head" in caplog.text
    else:
        rows = [names.index(name) for name in display]
        assert weight.equal(theirs[rows]) and target.state_dict()["head.fc.bias"].equal(source.state_dict()["head.fc.bias"][rows])
        assert summary.new == ()
    assert target.state_dict()["blocks.0.attn.qkv.weight"].equal(source.state_dict()["blocks.0.attn.qkv.weight"])


def test_a_source_whose_classes_are_placeholders_keeps_its_head_by_position(tmp_path):
    folder, source = _hf_folder(tmp_path, None)  # an export without names writes class_0 ...
    target = AST(ASTConfig(num_classes=4, **AST_TINY))
    summary = initialise(target, str(folder), (["a", "b", "c", "d"], ["a", "b", "c", "d"]))
    assert summary.head == "taken by position (the source does not name its classes)" and summary.source_classes is None
    assert target.state_dict()["head.fc.weight"].equal(source.state_dict()["head.fc.weight"])


def test_weights_a_finished_run_lacks_name_what_it_holds(runs):
    # export-hf / predict --weights model_wa.safetensors on a run without averaging asked whether it was
    # a finished run folder at all.
    with pytest.raises(ValueError, match=r"model_wa.safetensors: file not found \(the run folder holds "
                                         r"model.safetensors, model_best.safetensors; model_wa.safetensors is written only by a run that "
                                         r"averages weights \(augment.wa_start\)\)"):
        load_saved_model(runs["ast"], "model_wa.safetensors")


def test_a_run_continued_on_its_classes_reordered_keeps_what_it_learned(runs, tmp_path):
    classes = json.loads((runs["ast"] / "labels.json").read_text())["classes"]
    cfg = tiny_config("ast", "micro", f"model.init_from={runs['ast']}")
    target = model_of(cfg, num_classes=len(classes))
    summary = initialise(target, str(runs["ast"]), (classes[::-1], classes[::-1]))
    trained = load_saved_model(runs["ast"]).state_dict()["head.fc.weight"]
    assert summary.head.startswith("reordered") and target.state_dict()["head.fc.weight"].equal(trained.flip(0))
    # the demo's classes have no display names (None, as the run's report holds them): other classes
    other = initialise(model_of(cfg, num_classes=len(classes)), str(runs["ast"]), ([f"x{i}" for i in classes], None))
    assert other.head == "new (other classes)"


def test_a_checkpoint_at_another_patch_stride_says_so_and_how_to_keep_it(tmp_path, caplog):
    # A new user's case: AST's releases use stride 10; the presets' 16 was taken silently.
    folder, _ = _hf_folder(tmp_path, None, stride=(4, 4))
    target = AST(ASTConfig(num_classes=4, **AST_TINY, stride=(8, 8)))
    with caplog.at_level(logging.WARNING, logger="coarse2fine.model.transfer"):
        initialise(target, str(folder))
    assert ("it was trained with stride [4, 4], this config builds stride [8, 8]: its weights were moved to this "
            "model's grid") in caplog.text and "set model.stride: [4, 4] to keep the checkpoint's" in caplog.text
    caplog.clear()
    same, _ = _hf_folder(tmp_path / "same", None)
    with caplog.at_level(logging.WARNING, logger="coarse2fine.model.transfer"):
        initialise(AST(ASTConfig(num_classes=4, **{**AST_TINY, "target_length": 32})), str(same))
    assert "was trained with" not in caplog.text  # only another input length: nothing to say


def test_init_from_a_weights_file_or_another_file_says_what_it_is_and_what_to_give(runs, tmp_path):
    # A new user's case: the weight file instead of its folder gave "unrecognised original AST
    # key(s): ..." with ~40 keys, and a JSON file torch's advice to load it with weights_only=False.
    folder, _ = _hf_folder(tmp_path, None)
    target = AST(ASTConfig(num_classes=4, **AST_TINY))
    with pytest.raises(ValueError, match=rf"the weights of a Hugging Face AST folder: set model.init_from to the folder "
                                         rf"\({re.escape(str(folder))}, with its config.json\)"):
        initialise(target, str(folder / "model.safetensors"))
    # a weights file of a run folder is that run's weights (model_best.safetensors: its best epoch's)
    with pytest.raises(ValueError, match=rf"model.init_from {re.escape(str(runs['ast']))}: the run is ast micro"):
        initialise(target, str(runs["ast"] / "model.safetensors"))
    manifest = tmp_path / "train.json"
    manifest.write_text('{"data": []}')
    with pytest.raises(ValueError, match=r"train.json: a JSON file, not a file of weights"):
        initialise(target, str(manifest))
    labels = tmp_path / "labels.csv"
    labels.write_text('index,mid,display_name\n0,/m/a,"Dog"\n')
    with pytest.raises(ValueError, match=r"labels.csv: a CSV or text file, not a file of weights"):
        initialise(target, str(labels))
    pickled = tmp_path / "other.pth"
    torch.save({"args": argparse.Namespace(lr=1e-4)}, pickled)  # a training script's checkpoint
    with pytest.raises(ValueError, match=r"not a file of tensors that loads without running code from it") as err:
        initialise(target, str(pickled))
    assert "weights_only" not in str(err.value)
    stray = tmp_path / "stray.safetensors"
    from safetensors.torch import save_file

    save_file({f"layer{i}.weight": torch.zeros(1) for i in range(8)}, str(stray))
    with pytest.raises(ValueError, match=r"not in the original AST layout \(module.v.\*\): 8 key\(s\) it does not have: "
                                         r"layer0.weight, layer1.weight, layer2.weight, layer3.weight, layer4.weight, ... 3 more$"):
        initialise(target, str(stray))


@pytest.mark.parametrize("change,words", [
    ({"embed_dim": 16}, "it is ast custom size (embed dim 16, 2 layers, 2 heads); this config builds ast custom "
                        "size (embed dim 32, 2 layers, 2 heads)"),
    ({"num_mel_bins": 16}, "it is ast custom size (embed dim 32, 2 layers, 2 heads); this config builds ast custom "
                           "size (embed dim 32, 2 layers, 2 heads); they differ in num_mel_bins: 16 vs 32"),
])
def test_a_checkpoint_of_another_size_or_input_says_so_in_words_not_only_shapes(tmp_path, change, words):
    # A new user's case: a Hugging Face folder of another depth or mel bins gave only tensor shapes.
    folder, _ = _hf_folder(tmp_path, None, **change)
    with pytest.raises(ValueError, match=re.escape(f"{folder}: weights do not fit the model: {words} (")):
        initialise(AST(ASTConfig(num_classes=4, **AST_TINY)), str(folder))


def test_weights_that_do_not_fit_stop_a_run_before_its_data_is_read(runs, tmp_path):
    # A new user's case: `train` read and validated every clip of both splits, then stopped on
    # init_from weights of another size that `check` had named.
    cfg = tiny_config("ast", "tiny", f"model.init_from={runs['ast']}")
    read = []
    with pytest.raises(ValueError, match="the run is ast micro"):
        train_run(cfg, lambda: read.append(1) or load_splits(cfg), tmp_path / "run", progress=False)
    assert not read


def test_lightnings_config_module_matches_an_init_from_head_as_train_does(runs, caplog):
    # A new user's case: ConfigModule took a reordered task's head by position (3.75 % where train had 32.50 %).
    pytest.importorskip("lightning")
    from coarse2fine.integrations.lightning import ConfigModule

    classes = json.loads((runs["ast"] / "labels.json").read_text())["classes"]
    cfg = tiny_config("ast", "micro", f"model.init_from={runs['ast']}")
    trained = load_saved_model(runs["ast"]).state_dict()["head.fc.weight"]
    module = ConfigModule(cfg, len(classes), 16, classes=(classes[::-1], None))
    assert module.model.state_dict()["head.fc.weight"].equal(trained.flip(0))
    with caplog.at_level(logging.WARNING, logger="coarse2fine.integrations.lightning"):
        ConfigModule(cfg, len(classes), 16)
    assert "model.init_from without classes=(class ids, display names)" in caplog.text


def test_a_new_head_for_other_classes_is_said_in_the_one_log_line(tmp_path, caplog):
    # A new user's case: "59 tensors taken; new: none; unused: none", then a second line: new head.
    folder, _ = _hf_folder(tmp_path, ["dog", "rain", "sea", "bird"])
    with caplog.at_level(logging.INFO, logger="coarse2fine.model.transfer"):
        initialise(AST(ASTConfig(num_classes=4, **AST_TINY)), str(folder), (["a", "b", "c", "d"], None))
    assert _init_line(caplog).endswith(
        "new: head.fc.bias, head.fc.weight; unused: head.fc.bias, head.fc.weight (its 4 classes (dog, rain, sea, bird) "
        "are not this task's (a, b, c, d): new head); classifier head: new (other classes)")


def test_an_unfinished_runs_checkpoint_says_to_finish_the_run(tmp_path):
    from safetensors.torch import save_file

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n")
    save_file({"model.cls_token": torch.zeros(1, 1, 32), "optimizer.step": torch.zeros(1)}, str(run / "checkpoint.safetensors"))
    with pytest.raises(ValueError, match=rf"the checkpoint of a coarse2fine run that has not finished \({re.escape(str(run))}\): "
                                         r"continue it"):
        initialise(AST(ASTConfig(num_classes=4, **AST_TINY)), str(run / "checkpoint.safetensors"))


def test_a_run_of_other_mel_bins_names_that_and_not_the_phases_geometry(runs):
    # A new user's case: "they differ in num_mel_bins: 128 vs 64, time_factor: 1 vs 4" (time_factor: the 4-1 phase's)
    cfg = tiny_config("ast", "micro", "c2f.schedule=4-1", "train.epochs=2", "features.num_mel_bins=32")
    with pytest.raises(ValueError, match=r"they differ in num_mel_bins: \d+ vs 32 \(") as err:
        initialise(model_of(cfg), str(runs["ast"]))
    assert "time_factor" not in str(err.value)
