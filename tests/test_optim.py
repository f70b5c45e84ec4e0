import pytest
import torch

from coarse2fine.training.optim import OptimConfig, build_optimizer, build_scheduler, lr_factor


def test_warmup_then_step_decay():
    cfg = OptimConfig(lr=1.0, warmup_steps=4, decay_start=3, decay_every=1, gamma=0.5)
    steps_per_epoch = 10
    assert lr_factor(0, steps_per_epoch, cfg) == pytest.approx(0.25)
    assert lr_factor(3, steps_per_epoch, cfg) == pytest.approx(1.0)
    assert lr_factor(19, steps_per_epoch, cfg) == pytest.approx(1.0)  # epoch 2
    assert lr_factor(20, steps_per_epoch, cfg) == pytest.approx(0.5)  # epoch 3: first decay
    assert lr_factor(30, steps_per_epoch, cfg) == pytest.approx(0.25)  # epoch 4


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
