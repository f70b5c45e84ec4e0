"""The compute-budget planner: its arithmetic against the analytic FLOPs, and the plan command."""

import json

import pytest
import yaml

from coarse2fine.cli import main
from coarse2fine.config import load_config
from coarse2fine.report.accounting import phase_costs
from coarse2fine.report.planner import candidate, choose, merged, phase_epochs_for, planned_config, schedule_config


def test_phase_epochs_follow_the_initial_share():
    assert phase_epochs_for(20, 0.25, 2) == (5, 20)
    assert phase_epochs_for(20, 0.30, 3) == (3, 3, 20)
    assert phase_epochs_for(2, 0.15, 2) == (1, 2) and phase_epochs_for(7, 0.25, 1) == (7,)


def test_candidate_is_the_longest_run_within_the_flops_budget():
    cfg = schedule_config(load_config("demo"), "4-1")
    costs = phase_costs(cfg, 8)
    flops = [c.train_flops_per_clip for c in costs]
    clips = 2000
    one = clips * (3 * flops[0] + 12 * flops[1])  # 4-1 at 25 %: 3 + 12 epochs
    found = candidate(cfg, "4-1", 0.25, clips, flops, [1e-3, 4e-3], budget_flops=one)
    assert found.phase_epochs == (3, 12) and found.flops == one
    assert found.seconds == pytest.approx(clips * (3 * 1e-3 + 12 * 4e-3))
    # One FLOP less and the 12th epoch no longer fits.
    assert candidate(cfg, "4-1", 0.25, clips, flops, [1e-3, 4e-3], budget_flops=one - 1).phase_epochs == (3, 11)
    # A time budget: the FLOPs are predicted from the same plan.
    by_time = candidate(cfg, "4-1", 0.25, clips, flops, [1e-3, 4e-3], budget_seconds=clips * (3e-3 + 48e-3))
    assert by_time.phase_epochs == (3, 12) and by_time.flops == one
    assert candidate(cfg, "4-1", 0.25, clips, flops, [1e-3, 4e-3], budget_flops=1.0) is None


def test_choose_and_write_a_runnable_config(tmp_path):
    cfg = load_config("demo")
    found = [candidate(schedule_config(cfg, s), s, f, 100, [1.0, 4.0][: len(s.split("-"))], [1e-3, 4e-3], budget_flops=1e5)
             for s, f in (("1", 0.0), ("4-1", 0.15), ("4-1", 0.25))]
    chosen = choose(found, "4-1", 0.25)
    assert chosen.fraction == 0.25
    planned = planned_config(cfg, chosen)
    assert planned.c2f.phase_epochs == list(chosen.phase_epochs) and planned.train.epochs == chosen.phase_epochs[-1]
    assert planned.c2f.planned_flops == chosen.flops


def test_shares_that_round_to_the_same_epochs_are_one_candidate():
    # At a small budget 0.15 and 0.25 of 10 final epochs both round to 2 initial epochs.
    cfg = schedule_config(load_config("demo"), "4-1")
    found = [candidate(cfg, "4-1", f, 100, [1.0, 4.0], [1e-3, 4e-3], budget_flops=4200.0) for f in (0.15, 0.25, 0.35)]
    assert [c.phase_epochs for c in found] == [(2, 10), (2, 10), (3, 9)]
    plans = merged(found)
    assert [(c.phase_epochs, c.fractions) for c in plans] == [((2, 10), (0.15, 0.25)), ((3, 9), (0.35,))]
    assert plans[0].share == pytest.approx(0.2) and plans[1].share == pytest.approx(1 / 3)
    assert choose(plans, "4-1", 0.25) is plans[0] and choose(plans, "4-1", 0.33) is plans[1]


def test_plan_command_prints_candidates_and_writes_the_chosen_config(tmp_path, capsys):
    out = tmp_path / "plan.yaml"
    assert main(["plan", "demo", "--budget-flops", "3e12", "--rounds", "2", "--quiet", "--out", str(out),
                 "--set", "train.batch_size=8", "--set", "data.train_clips=200"]) == 0
    text = capsys.readouterr().out
    assert "predicted FLOPs" in text and "predicted time" in text and "4-2-1" in text and "->" in text
    assert "`coarse2fine train " + str(out) + " --out runs/demo_plan_41`" in text  # one folder per plan
    planned = load_config(out)
    costs = phase_costs(planned, 8)
    predicted = 200 * sum(c.epochs * c.train_flops_per_clip for c in costs)
    assert planned.c2f.schedule == "4-1" and planned.c2f.planned_flops == predicted <= 3e12


def test_plan_on_manifests_that_skip_bad_clips_says_its_count_is_the_manifests_rows(tmp_path, capsys):
    # plan counted 94 clips where the run, skipping 6 bad rows, trained 88: compare said 0.936x.
    import numpy as np
    import soundfile as sf

    rows = ["path,label"]
    for i in range(6):
        sf.write(tmp_path / f"c{i}.wav", (0.1 * np.random.default_rng(i).standard_normal(8000)).astype(np.float32), 16000)
        rows.append(f"{tmp_path / f'c{i}.wav'},{'ab'[i % 2]}")
    (tmp_path / "train.csv").write_text("\n".join([*rows, f"{tmp_path / 'gone.wav'},a"]) + "\n")
    (tmp_path / "val.csv").write_text("\n".join(rows[:5]) + "\n")
    sets = ["data.kind=manifest", f"data.train={tmp_path / 'train.csv'}", f"data.val={tmp_path / 'val.csv'}",
            "data.clip_seconds=0.5", "features.target_length=64", "train.batch_size=2", "data.on_error=skip"]
    args = ["plan", "demo", "--budget-flops", "1e10", "--rounds", "1", "--quiet", "--out", str(tmp_path / "p.yaml")]
    assert main([*args, *[a for s in sets for a in ("--set", s)]]) == 0
    assert ("demo: 7 training clips (rows of the manifests: with data.on_error: skip a run trains only the usable "
            "ones, which `coarse2fine check` counts") in capsys.readouterr().out


def test_a_schedule_that_is_not_a_candidate_is_never_written_silently(tmp_path, capsys):
    # `plan --choose 3-1` wrote a 2-1 plan without a word (a new user's defect).
    sets = ["--set", "train.batch_size=8", "--set", "data.train_clips=200"]
    out = tmp_path / "plan.yaml"
    assert main(["plan", "demo", "--budget-flops", "3e12", "--rounds", "2", "--quiet", "--out", str(out),
                 "--choose", "2-1", "--schedules", "1,4-1", *sets]) == 2
    assert "schedule 2-1 is not among the candidates that fit the budget (1, 4-1); plan it with --schedules 2-1," in \
        capsys.readouterr().err
    assert not out.exists()
    # the config's own schedule (4-1) left out of --schedules: the longest candidate, said so
    assert main(["plan", "demo", "--budget-flops", "3e12", "--rounds", "2", "--quiet", "--out", str(out),
                 "--schedules", "1,2-1", *sets]) == 0
    assert "(the config's schedule 4-1 is not among the candidates: the one with the most epochs)" in \
        capsys.readouterr().out
    assert load_config(out).c2f.schedule == "2-1"


def test_a_planned_run_is_compared_with_its_prediction(tmp_path, capsys):
    out = tmp_path / "plan.yaml"
    small = ["train.batch_size=8", "data.train_clips=64", "data.val_clips=16"]
    assert main(["plan", "demo", "--budget-flops", "3e10", "--rounds", "2", "--quiet", "--out", str(out),
                 *[a for s in small for a in ("--set", s)]]) == 0
    capsys.readouterr()
    assert main(["train", str(out), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert main(["compare", str(tmp_path / "run"), str(tmp_path / "run"), "--format", "markdown", "--calibrate-rounds", "2"]) == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.startswith("run: planned"))
    planned = load_config(out)
    measured = json.loads((tmp_path / "run" / "log.json").read_text())["records"][-1]["cum_flops"]
    assert measured == pytest.approx(planned.c2f.planned_flops, rel=1e-9)  # the analytic FLOPs are the plan's
    assert "(1.000x)" in line and "calibrated time: each phase's real step" in text


def test_the_plan_extends_the_config_it_was_made_from(tmp_path, capsys, monkeypatch):
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "mine.yaml").write_text("extends: demo\ntrain:\n  batch_size: 8\ndata:\n  train_clips: 200\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "elsewhere" / "plan.yaml"
    assert main(["plan", "cfgs/mine.yaml", "--budget-flops", "3e12", "--rounds", "2", "--quiet", "--out", str(out),
                 "--set", "features.mean=-5.0"]) == 0
    written = yaml.safe_load(out.read_text())
    assert written["extends"] == str(tmp_path / "cfgs" / "mine.yaml")
    assert set(written) == {"extends", "name", "features", "train", "c2f"} and written["features"] == {"mean": -5.0}
    monkeypatch.chdir(tmp_path / "elsewhere")
    planned = load_config(out)
    assert planned.train.batch_size == 8 and planned.data.train_clips == 200 and planned.features.mean == -5.0
    assert planned.c2f.phase_epochs == written["c2f"]["phase_epochs"] and planned.c2f.planned_flops > 0
