import pytest
import torch

from coarse2fine.config import load_config
from coarse2fine.training.optim import OptimConfig, build_optimizer, build_scheduler, lr_factor


def test_warmup_then_step_decay():
    cfg = OptimConfig(lr=1.0, warmup_steps=4, decay_start=3, decay_every=1, gamma=0.5)
    steps_per_epoch = 10
    assert lr_factor(0, steps_per_epoch, cfg) == pytest.approx(0.25)
    assert lr_factor(3, steps_per_epoch, cfg) == pytest.approx(1.0)
    assert lr_factor(19, steps_per_epoch, cfg) == pytest.approx(1.0)  # epoch 2
    assert lr_factor(20, steps_per_epoch, cfg) == pytest.approx(0.5)  # epoch 3: first decay
    assert lr_factor(30, steps_per_epoch, cfg) == pytest.approx(0.25)  # epoch 4


@pytest.mark.parametrize("preset,milestones,gamma", [
    ("audioset", [2, 3, 4, 5], 0.5),                # AST's full-set scheduler
    ("vggsound", [10, 15, 20, 25], 0.5),            # AST's balanced-set scheduler
    ("esc50", list(range(5, 21)), 0.85),
    ("speechcommands", list(range(5, 21)), 0.85),
])
def test_presets_decay_in_the_epochs_asts_multisteplr_does(preset, milestones, gamma):
    # AST builds MultiStepLR(milestones) and steps it once at the end of each epoch: the learning
    # rate of each epoch, as torch's own scheduler gives it, is the preset's factor in that epoch.
    cfg = load_config(preset)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ast = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=gamma)
    steps = 2 * cfg.train.optim.warmup_steps  # per epoch, so that each epoch's last step is past the warm-up
    for epoch in range(1, cfg.train.epochs + 1):
        ours = lr_factor(epoch * steps - 1, steps, cfg.train.optim)
        assert ours == pytest.approx(opt.param_groups[0]["lr"]), f"{preset} epoch {epoch}"
        opt.step()
        ast.step()


def test_scheduler_follows_factor_and_rebuild_resets():
    p = torch.nn.Parameter(torch.zeros(3))
    cfg = OptimConfig(lr=0.1, warmup_steps=5)
    opt = build_optimizer([p], cfg)
    sched = build_scheduler(opt, steps_per_epoch=4, cfg=cfg)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(3)
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1 * min(1, (i + 1) / 5) for i in range(6)])
    opt2 = build_optimizer([p], cfg)
    build_scheduler(opt2, 4, cfg)
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.02)  # warmup starts again
    assert not opt2.state  # no moments carried over


def test_adamw_and_unknown():
    p = torch.nn.Parameter(torch.zeros(1))
    assert isinstance(build_optimizer([p], OptimConfig(optimizer="adamw")), torch.optim.AdamW)
    opt = build_optimizer([p], OptimConfig())
    assert opt.param_groups[0]["betas"] == (0.95, 0.999) and opt.param_groups[0]["weight_decay"] == 5e-7
    with pytest.raises(ValueError, match="sgd"):
        build_optimizer([p], OptimConfig(optimizer="sgd"))


def test_fused_kernel_where_available():
    p = torch.nn.Parameter(torch.zeros(4))
    opt = build_optimizer([p], OptimConfig())
    # torch >= 2.4 has a fused CPU Adam; older versions fall back to the plain one.
    major, minor = (int(v) for v in torch.__version__.split(".")[:2])
    if (major, minor) >= (2, 4):
        assert opt.defaults["fused"] is True
    p.grad = torch.ones(4)
    opt.step()
    assert torch.all(p < 0)


def test_a_warmup_over_half_a_phase_or_longer_than_it_is_named():
    from coarse2fine.training.optim import warmup_warning

    cfg = OptimConfig(lr=1e-3, warmup_steps=1000)
    assert warmup_warning(cfg, steps_per_epoch=1000, epochs=2) is None  # half of the phase: the recipe's case
    assert warmup_warning(cfg, 100, 15) == "a warm-up of 1000 steps takes 67 % of the phase's 1500 steps"
    # 300 steps: the LR climbs to 300 / 1000 of lr and no further
    assert warmup_warning(cfg, 100, 3) == ("a warm-up of 1000 steps is longer than the phase (300 steps): "
                                           "its LR ends at 0.0003, never 0.001")
    assert warmup_warning(OptimConfig(warmup_steps=0), 1, 1) is None
    # As long as the phase: the LR reaches lr at its last step (it was said to be longer, "never lr").
    assert warmup_warning(cfg, 100, 10) == "a warm-up of 1000 steps takes 100 % of the phase's 1000 steps"
    assert warmup_warning(OptimConfig(lr=1e-3, warmup_steps=2), 1, 1).startswith(
        "a warm-up of 2 steps is longer than the phase (1 step):")


def test_a_run_warns_of_a_phase_its_warmup_outlasts_before_it_trains(tmp_path, caplog, capsys):
    from coarse2fine.cli import main

    sets = ["data.train_clips=32", "data.val_clips=16", "train.batch_size=8", "train.threads=1", "model.preset=micro",
            "model.overrides.depth=1", "c2f.phase_epochs=[1, 3]", "train.optim.warmup_steps=7"]
    with caplog.at_level("WARNING", logger="coarse2fine"):
        assert main(["train", "demo", "--out", str(tmp_path / "run"), "--quiet",
                     *[a for s in sets for a in ("--set", s)]]) == 0
    warned = [r.getMessage() for r in caplog.records if "warm-up" in r.getMessage()]
    # 4 steps an epoch: phase 1 (4 steps) never ends its warm-up, phase 2 (12 steps) spends 58 % of it there;
    # one value (half of the shortest phase) clears both
    assert warned == [
        "demo, phase 1 (R=4, 1 epoch): a warm-up of 7 steps is longer than the phase (4 steps): its LR ends at "
        "0.000571, never 0.001; at most 2 steps clears every phase of this run (--set train.optim.warmup_steps=2)",
        "demo, phase 2 (R=1, 3 epochs): a warm-up of 7 steps takes 58 % of the phase's 12 steps; at most 2 steps "
        "clears every phase of this run (--set train.optim.warmup_steps=2)"]
    # `check` says the same before anything trains
    capsys.readouterr()
    assert main(["check", "demo", *[a for s in sets for a in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    assert f"warning: {warned[0].removeprefix('demo, ')}\nwarning: {warned[1].removeprefix('demo, ')}\n" in out
    # and the value it gives clears them all
    assert main(["check", "demo", *[a for s in sets for a in ("--set", s)], "--set", "train.optim.warmup_steps=2"]) == 0
    assert "warning" not in capsys.readouterr().out


def test_a_phase_of_one_step_gets_no_warm_up_as_the_value_that_clears_it():
    from coarse2fine.config import load_config
    from coarse2fine.training.optim import long_warmups

    cfg = load_config("demo", ["c2f.phase_epochs=[1, 1]", "train.batch_size=8", "train.optim.warmup_steps=3"])
    lines = long_warmups(cfg, [cfg.phase(p) for p in range(2)], clips=8)  # one step an epoch
    assert len(lines) == 2 and all(line.endswith("at most 0 steps (no warm-up) clears every phase of this run "
                                                 "(--set train.optim.warmup_steps=0)") for line in lines)
    cleared = cfg.replace({"train.optim.warmup_steps": 0})
    assert long_warmups(cleared, [cleared.phase(p) for p in range(2)], clips=8) == []


def test_decay_end_before_decay_start_fails_at_load():
    with pytest.raises(ValueError, match=r"train.optim.decay_end: the last decayed epoch, at least decay_start \(6\)"):
        load_config("esc50", ["train.optim.decay_end=4"])
    assert load_config("esc50-cpu").train.optim.decay_end == 0  # its own decay runs to the last epoch
