"""Analytic FLOP counts against torch.utils.flop_counter.FlopCounterMode."""

from __future__ import annotations

import logging

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from coarse2fine.model import AST, ASTConfig, ast_config, ast_forward_flops, ast_training_flops
from coarse2fine.model.flops import measured_training_flops, register_cpu_sdpa_flops

log = logging.getLogger(__name__)

P = 8
TINY = dict(num_classes=5, embed_dim=32, depth=2, num_heads=2, num_mel_bins=32, target_length=64,
            patch_size=(P, P), stride=(P, P))


def _geometry(method: str, r: int) -> dict:
    if method == "compressed":  # Pool / Fshift: fewer frames, same patches
        return dict(target_length=64 // r)
    if method == "patch":  # Patch: p x pR patches on the full input
        return dict(patch_size=(P, P * r), stride=(P, P * r))
    return dict(stride=(6, 6))  # overlapping patches, as AST's official 10/10


def test_register_cpu_sdpa_flops_is_idempotent():
    register_cpu_sdpa_flops()
    register_cpu_sdpa_flops()
    assert torch.ops.aten._scaled_dot_product_flash_attention_for_cpu in torch.utils.flop_counter.flop_registry


@pytest.mark.parametrize("method,r", [("compressed", 1), ("compressed", 2), ("compressed", 4),
                                      ("patch", 2), ("patch", 4), ("overlap", 1)])
def test_analytic_flops_equal_flop_counter_mode_exactly(method, r):
    torch.manual_seed(0)
    cfg = ASTConfig(**{**TINY, **_geometry(method, r)})
    model = AST(cfg)
    x = torch.randn(2, cfg.target_length, cfg.num_mel_bins)
    register_cpu_sdpa_flops()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    assert counter.get_total_flops() == ast_forward_flops(cfg, 2)
    assert measured_training_flops(model, x) == ast_training_flops(cfg, 2)


def test_set_geometry_model_measures_like_a_fresh_one():
    model = AST(ASTConfig(**TINY))
    model.set_patch_geometry(64, patch_size=(P, 4 * P), stride=(P, 4 * P))
    x = torch.randn(1, 64, 32)
    loss = torch.nn.CrossEntropyLoss()
    y = torch.tensor([1])
    assert measured_training_flops(model, x, lambda out: loss(out, y)) == ast_training_flops(model.config, 1)


def test_flop_counts_scale_with_batch_and_tokens():
    base = ast_config("base")  # 128 x 1024, 16 x 16 non-overlapping: 512 tokens
    coarse = ast_config("base", target_length=256)  # R = 4: 128 tokens
    assert ast_training_flops(base, 4) == 4 * ast_training_flops(base, 1)
    ratio = ast_training_flops(base) / ast_training_flops(coarse)
    log.info("base training FLOPs R=1 / R=4: %.3f", ratio)
    assert 4.0 < ratio < 4.5  # linear layers scale by R, attention by R^2
