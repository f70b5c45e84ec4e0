"""The command line's options: every one has help and shows its default, every command takes
--quiet, method and schedule names are the same in every command, presets show their YAML."""

from __future__ import annotations

import argparse
import json

import pytest
import yaml

from coarse2fine.cli import build_parser, main
from coarse2fine.cli.options import config_methods, run_overrides
from coarse2fine.config import load_config, preset_names


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_option_of_every_subcommand_has_help():
    missing = [f"{name} {a.option_strings[0] if a.option_strings else a.dest}"
               for name, p in _subcommands().items() for a in p._actions
               if not isinstance(a, argparse._HelpAction) and a.help != argparse.SUPPRESS
               and not (a.help or "").strip()]
    assert missing == []


def test_help_shows_defaults():
    commands = _subcommands()
    assert "0.15,0.25,0.35" in commands["plan"].format_help()
    predict = " ".join(commands["predict"].format_help().split())
    assert "best first (default: 5)" in predict and "(default: auto)" in predict
    assert "(default: fshift)" in " ".join(commands["pretrain-experiment"].format_help().split())
    # A help that names its default already is not given a second one.
    assert "(default 10) (default" not in commands["bench"].format_help()


def test_every_command_takes_quiet():
    assert [name for name, p in _subcommands().items() if "--quiet" not in p._option_string_actions] == []


def test_export_hf_help_says_what_it_takes():
    text = " ".join(_subcommands()["export-hf"].format_help().split())
    assert "as export-onnx" not in text
    assert "--out OUT output folder (default: RUN/hf)" in text and "the same as --out (kept for older scripts)" in text


@pytest.mark.parametrize("command", ["train", "flops", "bench"])
@pytest.mark.parametrize("method, resize", [("patch-bl", "bilinear"), ("patch-pi", "pi")])
def test_single_method_commands_take_the_patch_variants(command, method, resize):
    extra = ["--out", "x"] if command == "train" else []
    args = build_parser().parse_args([command, "demo", "--method", method, *extra,
                                      "--set", f"c2f.patch_resize={'pi' if resize == 'bilinear' else 'bilinear'}"])
    cfg = load_config("demo", run_overrides(args))
    assert (cfg.c2f.method, cfg.c2f.patch_resize) == ("patch", resize)  # --method wins over --set


def test_flops_with_a_patch_variant(capsys):
    assert main(["flops", "demo", "--method", "patch-bl", "--schedule", "2-1", "--classes", "8", "--quiet"]) == 0
    assert "demo: ast micro, patch, schedule 2-1" in capsys.readouterr().out


def test_flops_calls_the_epochs_caps_where_a_rule_ends_the_phases(capsys):
    # A budget run's phases may each run train.epochs (its share of the budget ends them): flops
    # showed 12 coarse epochs and the whole schedule's FLOPs as what the run costs.
    sets = ["--set", "c2f.switch=budget", "--set", "c2f.budget_flops=8e11", "--set", "c2f.final_stop=budget"]
    assert main(["flops", "demo", "--classes", "8", "--quiet", *sets]) == 0
    out = capsys.readouterr().out
    assert "whole schedule: at most " in out
    assert "the epochs are caps: with c2f.switch: budget and c2f.final_stop: budget a phase may end before them" in out
    assert main(["flops", "demo", "--classes", "8", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "at most" not in out and "caps" not in out
    assert main(["flops", "demo", "--classes", "8", "--quiet", "--json", *sets]) == 0
    data = json.loads(capsys.readouterr().out)  # the JSON said none of it
    assert (data["switch"], data["final_stop"], data["epochs_are_caps"], data["budget_flops"]) == ("budget", "budget",
                                                                                                    True, 8e11)


def test_multi_method_commands_take_bare_patch_as_the_configs_resize(tmp_path, capsys):
    assert config_methods("fshift,patch", "bilinear") == "fshift,patch-bl"
    assert config_methods("patch, patch-pi", "pi") == "patch-pi"
    # Nothing trained yet: --report-only names the runs it would tabulate, patch as the config's.
    out = str(tmp_path / "x")
    assert main(["experiment", "demo", "--methods", "patch", "--set", "c2f.patch_resize=bilinear", "--out", out,
                 "--report-only", "--quiet"]) == 2
    assert "(not finished: baseline, patch-bl_41)" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "experiment", "crossval"])
def test_schedule_and_schedules_are_one_option(command):
    head = [command] if command == "demo" else [command, "demo", "--out", "x"]
    parse = build_parser().parse_args
    assert parse([*head, "--schedule", "4-1,2-1"]).schedules == parse([*head, "--schedules", "4-1,2-1"]).schedules


def test_crossval_without_methods_takes_one_schedule(tmp_path, capsys):
    assert main(["crossval", "demo", "--schedule", "4-1,2-1", "--out", str(tmp_path), "--quiet"]) == 2
    assert "without --methods one setting trains, with one schedule (got '4-1,2-1')" in capsys.readouterr().err


def test_presets_name_prints_its_yaml_and_what_it_extends(capsys):
    assert main(["presets"]) == 0
    assert capsys.readouterr().out.split() == preset_names()
    assert main(["presets", "esc50-cpu"]) == 0
    out = capsys.readouterr().out
    first, _, rest = out.partition("\n")
    assert first.startswith("# preset esc50-cpu (extends esc50;") and "extends: esc50-cpu" in first
    assert yaml.safe_load(rest)["extends"] == "esc50"
    assert main(["presets", "demo"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["name"] == "demo"
    assert main(["presets", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nope'" in err and "esc50-cpu" in err
    assert main(["presets", "esc50-cpux"]) == 2
    assert "unknown preset 'esc50-cpux' (did you mean esc50-cpu?)" in capsys.readouterr().err


def test_presets_resolved_prints_a_config_file_with_every_key_it_extends(tmp_path, capsys):
    # No command printed a file of one's own resolved through its extends chain (a new user's case).
    mine = tmp_path / "my.yaml"
    mine.write_text("extends: esc50-cpu\ntrain:\n  epochs: 3\n")
    assert main(["presets", str(mine)]) == 2
    assert "is a config file, not a preset: `coarse2fine presets" in capsys.readouterr().err
    assert main(["presets", str(mine), "--resolved", "--set", "c2f.schedule=2-1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# {mine} --set c2f.schedule=2-1, resolved: every key as a run of it loads them\n")
    values = yaml.safe_load(out)
    assert (values["name"], values["train"]["epochs"], values["c2f"]["schedule"]) == ("my", 3, "2-1")
    assert values["model"]["preset"] == "micro" and values["train"]["optim"]["gamma"] == 0.9  # from esc50-cpu
    assert load_config(str(mine), ["c2f.schedule=2-1"], check_runtime=False).to_dict() == values  # the same config
    assert main(["presets", "--resolved"]) == 2
    capsys.readouterr()
    assert main(["presets", str(tmp_path / "nothere.yaml")]) == 2  # it said "is a config file"
    assert f"nothere.yaml: no such config file ({tmp_path / 'nothere.yaml'})" in capsys.readouterr().err


def test_resume_refuses_a_folder_without_a_run_and_fresh(tmp_path, capsys):
    # --resume means "continue what is there": a mistyped --out must not start a new run silently.
    out = tmp_path / "typo"
    assert main(["train", "demo", "--out", str(out), "--resume", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert f"--resume: {out} holds no run to continue" in err and not out.exists()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "demo", "--out", str(out), "--resume", "--fresh"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_finetune_set_takes_every_task_or_the_one_it_names():
    from coarse2fine.cli.training import task_overrides

    out = task_overrides(["esc50-cpu", "my/task.yaml"], ["train.epochs=3", "esc50-cpu:train.epochs=10",
                                                         "my/task.yaml:data.root=C:/clips", "train.threads=2"])
    assert out == {"esc50-cpu": ["train.epochs=3", "train.epochs=10", "train.threads=2"],
                   "my/task.yaml": ["train.epochs=3", "data.root=C:/clips", "train.threads=2"]}  # in order: later wins
    assert task_overrides(["my/task.yaml"], ["task:train.epochs=2"]) == {"my/task.yaml": ["train.epochs=2"]}  # its stem
    with pytest.raises(ValueError, match=r"'esc50' is not a --finetune config \(they are: esc50-cpu, my/task.yaml\)"):
        task_overrides(["esc50-cpu", "my/task.yaml"], ["esc50:train.epochs=10"])


def test_output_into_a_closed_pipe_stops_quietly():
    """`coarse2fine check my.yaml | head -1` printed a BrokenPipeError traceback (a new user's case)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "coarse2fine.cli", "presets", "esc50"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes before the command prints (it is still importing)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err
