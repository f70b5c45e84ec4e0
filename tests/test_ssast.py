"""SSAST: configs, masking, the joint masked patch objective, coarse-to-fine, FLOPs and checkpoint interop."""

from __future__ import annotations

import dataclasses
import logging
import math
from types import SimpleNamespace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from coarse2fine.compression import InputGeometry
from coarse2fine.config import PretrainConfig
from coarse2fine.model.flops import measured_training_flops, register_cpu_sdpa_flops
from coarse2fine.model.ssast import (
    PRETRAIN_PREFIXES,
    SSAST,
    SSAST_ARCH,
    SSASTConfig,
    convert_official_state_dict,
    export_ssast_hf,
    load_official_ssast,
    ssast_config,
    ssast_load_pretrained,
    ssast_make_config,
)
from coarse2fine.objectives.masked_patch import (
    MASKED_PATCH_METRICS,
    MaskedPatchObjective,
    cluster_mask,
    draw_masks,
    masked_patch_objective,
    mse_loss,
    nce_loss,
    random_masks,
    scaled_mask_count,
)

MEL, FRAMES = 128, 128  # 16 x 16 patches: 8 x 8 = 64 tokens; 128 x 2 patches: 1 x 64


def _settings(patch=None, stride=None, **overrides) -> SimpleNamespace:
    return SimpleNamespace(preset="micro", patch_size=patch, stride=stride, drop_path_rate=0.0, overrides=overrides)


def _model(pretrain: bool = True, frames: int = FRAMES, seed: int = 0, **overrides) -> SSAST:
    torch.manual_seed(seed)
    cfg = ssast_config("micro", num_classes=5, num_mel_bins=MEL, target_length=frames, pretrain_heads=pretrain, **overrides)
    return SSAST(cfg)


def _x(frames: int = FRAMES, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, frames, MEL, generator=torch.Generator().manual_seed(seed)) * 0.5


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _objective(**kw) -> MaskedPatchObjective:
    return MaskedPatchObjective(full_tokens=64, mask_patch=50, **kw)  # 400/512 of 64 tokens


# --- configs and parameters ------------------------------------------------------------------

def test_variants_presets_and_make_config():
    geo = InputGeometry(1024, 128)
    patch = ssast_make_config(_settings(), 527, geo)
    frame = ssast_make_config(_settings(patch=(128, 2)), 527, geo)
    assert (patch.patch_size, patch.stride, patch.grid, patch.num_tokens) == ((16, 16), (16, 16), (8, 64), 512)
    assert (frame.patch_size, frame.stride, frame.grid, frame.num_tokens) == ((128, 2), (128, 2), (1, 512), 512)
    assert patch.patch_values == frame.patch_values == 256 and patch.pooling == "mean" and not patch.pretrain_heads
    for name, dims in {"base": (768, 12), "small": (384, 6), "tiny": (192, 3), "micro": (64, 4)}.items():
        cfg = ssast_config(name)
        assert (cfg.embed_dim, cfg.num_heads) == dims
    assert SSAST_ARCH.name == "ssast" and SSAST_ARCH.model_cls is SSAST and "micro" in SSAST_ARCH.presets
    cfg = ssast_make_config(_settings(pretrain_heads=True, pooling="cls"), 3, InputGeometry(256, 128, 4))
    assert cfg.pretrain_heads and cfg.pooling == "cls" and cfg.grid == (8, 16)
    assert SSASTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="non-overlapping"):
        ssast_make_config(_settings(stride=(10, 10), pretrain_heads=True), 3, geo)
    with pytest.raises(ValueError, match="pooling"):
        ssast_config("micro", pooling="max")


def test_pretraining_and_finetuning_models_have_only_used_parameters():
    pre, ft = _model(True), _model(False)
    pre_names, ft_names = set(pre.state_dict()), set(ft.state_dict())
    assert {"mask_embed", "cpredlayer.0.weight", "cpredlayer.2.weight", "gpredlayer.0.bias", "gpredlayer.2.bias"} <= pre_names
    assert pre.mask_embed.shape == (1, 1, 64) and pre.cpredlayer[2].weight.shape == (256, 64)
    assert not any(k.startswith("head.") for k in pre_names)
    assert {"head.norm.weight", "head.fc.weight"} <= ft_names and not any(k.startswith(PRETRAIN_PREFIXES) for k in ft_names)
    assert pre(_x()).shape == (2, 64) and ft(_x()).shape == (2, 5)  # pooled embedding / logits
    pre.train()
    _objective().training_loss(pre, _x(), None, _gen()).backward()
    assert [n for n, p in pre.named_parameters() if p.grad is None] == []
    ft.train()
    ft(_x()).sum().backward()
    assert [n for n, p in ft.named_parameters() if p.grad is None] == []


def test_pooling_mean_of_patch_tokens_or_cls():
    x = _x()
    for pooling in ("mean", "cls"):
        model = _model(False, pooling=pooling).eval()
        with torch.no_grad():
            h = model.forward_tokens(x)
            want = h[:, 2:].mean(1) if pooling == "mean" else (h[:, 0] + h[:, 1]) / 2
            torch.testing.assert_close(model.forward_features(x), want)


def test_patch_targets_follow_the_conv_token_order():
    model = _model()
    x = _x()
    targets = model.patch_targets(x)
    assert targets.shape == (2, 64, 256)
    b, f, t = 1, 3, 5  # freq row 3, time column 5 -> token 3 * 8 + 5
    manual = x[b].T[f * 16:(f + 1) * 16, t * 16:(t + 1) * 16].reshape(-1)
    torch.testing.assert_close(targets[b, f * 8 + t], manual)
    proj = model.patch_embed.proj
    with torch.no_grad():
        tokens = targets @ proj.weight.reshape(64, -1).T + proj.bias
        torch.testing.assert_close(tokens, model.embed_patches(x), rtol=1e-4, atol=1e-4)


def test_masked_patch_content_cannot_leak_into_predictions():
    model = _model().eval()
    x = _x()
    mask = draw_masks(2, model.config.grid, 20, True, _gen(3))
    y = x.clone()
    for b in range(2):  # overwrite every masked patch of the input
        for n in mask[b].tolist():
            f, t = divmod(n, 8)
            y[b, t * 16:(t + 1) * 16, f * 16:(f + 1) * 16] = 9.0
    with torch.no_grad():
        a, b_ = model(x, mpc_mask=mask)["mpc"], model(y, mpc_mask=mask)["mpc"]
    torch.testing.assert_close(a[0], b_[0])  # same predictions
    assert not torch.equal(a[1], b_[1])  # different targets


# --- masking ---------------------------------------------------------------------------------

def test_cluster_mask_counts_range_and_index_zero():
    for seed in range(20):
        idx = cluster_mask(64, 8, 50, _gen(seed))
        assert idx.shape == (50,) and idx.dtype == torch.long
        assert len(set(idx.tolist())) == 50 and int(idx.min()) >= 1 and int(idx.max()) < 64


def test_cluster_mask_draws_square_blocks_wrapping_across_rows():
    seen = set()
    for seed in range(40):
        idx = cluster_mask(512, 64, 9, _gen(seed)).tolist()
        start = idx[0]
        blocks = {c: [start + 64 * i + j for i in range(c) for j in range(c)] for c in (3, 4, 5)}
        if start == 0 or start + 64 * 4 + 4 >= 512:
            continue  # a block clipped at index 0 or at the end of the grid
        matches = [c for c, block in blocks.items() if idx == block[:9]]
        assert matches, idx
        seen.add(matches[0])
    assert seen == {3, 4, 5}  # every cluster factor occurs


def test_cluster_mask_terminates_where_ssast_hangs_and_errors_clearly():
    idx = cluster_mask(64, 8, 63, _gen())  # every patch but index 0 (SSAST's loop never ends here)
    assert sorted(idx.tolist()) == list(range(1, 64))
    with pytest.raises(ValueError, match="at most 63"):
        cluster_mask(64, 8, 64, _gen())
    with pytest.raises(ValueError, match="cannot draw 0"):
        cluster_mask(64, 8, 0, _gen())
    with pytest.raises(ValueError, match="cannot draw 65"):
        random_masks(2, 64, 65, _gen())


def test_random_masks_and_reproducibility_with_a_generator():
    m = random_masks(3, 64, 50, _gen(4))
    assert m.shape == (3, 50) and all(len(set(r)) == 50 for r in m.tolist())
    for cluster in (True, False):
        a = draw_masks(3, (8, 8), 30, cluster, _gen(7))
        assert torch.equal(a, draw_masks(3, (8, 8), 30, cluster, _gen(7)))
        g = _gen(7)
        first = draw_masks(3, (8, 8), 30, cluster, g)
        state = g.get_state()  # resumable: the generator holds all the state
        second = draw_masks(3, (8, 8), 30, cluster, g)
        g2 = torch.Generator()
        g2.set_state(state)
        assert torch.equal(first, a) and torch.equal(draw_masks(3, (8, 8), 30, cluster, g2), second)
        assert not torch.equal(first, second)


def test_scaled_mask_count_per_phase_and_rounding():
    assert [scaled_mask_count(400, 512, n, True) for n in (512, 256, 128, 64)] == [400, 200, 100, 50]
    assert scaled_mask_count(5, 10, 5, False) == 3  # 2.5 rounds half up (Python's round would give 2)
    assert scaled_mask_count(400, 512, 100, True) == 78  # 78.125
    assert scaled_mask_count(1, 512, 64, True) == 1  # at least one
    assert scaled_mask_count(400, 512, 4, True) == 2 and scaled_mask_count(400, 512, 4, False) == 3  # N-2 / N-1
    with pytest.raises(ValueError, match="too few"):
        scaled_mask_count(400, 512, 2, True)


def test_objective_scales_the_count_with_the_phase():
    cfg = ssast_config("micro", num_mel_bins=128, target_length=1024, pretrain_heads=True)  # 512 tokens
    model = SSAST(cfg)
    objective = MaskedPatchObjective(full_tokens=512)
    counts = {}
    for r in (1, 4, 8):
        model.set_geometry(InputGeometry(1024 // r, 128, r))
        counts[r] = (model.num_tokens, objective.num_masked(model))
    assert counts == {1: (512, 400), 4: (128, 100), 8: (64, 50)}
    assert objective.uses_cluster(model)
    frame = SSAST(ssast_config("micro", target_length=1024, patch_size=(128, 2), stride=(128, 2), pretrain_heads=True))
    assert not objective.uses_cluster(frame) and objective.num_masked(frame) == 400


# --- losses ----------------------------------------------------------------------------------

def test_nce_and_mse_against_a_hand_computed_case():
    e = torch.eye(4)
    target = torch.stack([e[:3], e[:3]])  # 2 clips, 3 masked patches, 4 values each: e1, e2, e3
    pred = torch.stack([
        2 * e[:3],  # clip 0: total = 2 I
        torch.tensor([[1.0, 2.0, 0.0, 5.0], [0.0, 1.0, 0.5, 0.0], [0.0, 0.0, 3.0, 0.0]]),  # clip 1
    ])
    # clip 1: total[a, b] = target_a . pred_b = pred_b[a] -> rows (true patches) a, columns (predictions) b:
    #   [[1, 0, 0], [2, 1, 0], [0, 0.5, 3]]; log-softmax over each row (over predictions), diagonal.
    E = math.e
    diag0 = [2 - math.log(E**2 + 2)] * 3
    diag1 = [1 - math.log(E + 2), 1 - math.log(E**2 + E + 1), 3 - math.log(1 + E**0.5 + E**3)]
    loss, correct = nce_loss(pred, target)
    assert loss.item() == pytest.approx(-(sum(diag0) + sum(diag1)) / 6, rel=1e-6)
    # accuracy: argmax over the true patches per prediction (columns [1,2,0], [0,1,.5], [0,0,3]) -> 0-th wrong
    assert int(correct) == 3 + 2
    # the other softmax axis (the paper's eq. (1)) gives another value here
    other = -torch.diagonal(torch.bmm(target, pred.transpose(1, 2)).log_softmax(1), dim1=1, dim2=2).mean()
    assert abs(other.item() - loss.item()) > 1e-3
    # MSE: clip 0 differs by e_a (3 x 1), clip 1 by (0,2,0,5), (0,0,.5,0), (0,0,2,0): 29 + .25 + 4
    assert mse_loss(pred, target).item() == pytest.approx((3 + 33.25) / 24)


# --- the objective ---------------------------------------------------------------------------

def test_objective_config_factory_and_validation():
    cfg = SimpleNamespace(pretrain=PretrainConfig(), model=_settings(pretrain_heads=True),
                          features=SimpleNamespace(target_length=1024, num_mel_bins=128))
    objective = masked_patch_objective(cfg)
    assert (objective.full_tokens, objective.mask_patch, objective.nce_weight, objective.mse_weight) == (512, 400, 1.0, 10.0)
    assert objective.metrics == MASKED_PATCH_METRICS == {"masked_acc": True, "recon_mse": False, "val_loss": False}
    cfg.pretrain = PretrainConfig(mask_patch=100, full_tokens=128, masking="random")
    assert masked_patch_objective(cfg).full_tokens == 128
    with pytest.raises(ValueError, match="masking"):
        PretrainConfig(masking="block")
    with pytest.raises(ValueError, match="not both 0"):
        PretrainConfig(nce_weight=0, mse_weight=0)
    with pytest.raises(ValueError, match="no pretraining heads"):
        _objective().training_loss(_model(False), _x(), None, _gen())


def test_evaluate_is_deterministic_and_gathers_every_process():
    model = _model().eval()
    objective = _objective()
    batches = [(_x(seed=s), None) for s in (1, 2)]
    one = objective.evaluate(model, batches, lambda obj: [obj])
    assert set(one) == set(MASKED_PATCH_METRICS) and 0 <= one["masked_acc"] <= 1
    assert objective.evaluate(model, batches, lambda obj: [obj]) == one  # fixed-seed masks
    two = objective.evaluate(model, batches, lambda obj: [obj, obj])  # two identical "processes"
    assert two == pytest.approx(one)
    assert one["val_loss"] > 10 * one["recon_mse"]


def test_a_few_pretraining_steps_lower_the_loss_on_a_fixed_batch():
    model = _model(seed=3).train()
    objective = _objective()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = _x(batch=4)
    losses = []
    for _ in range(8):
        loss = objective.training_loss(model, x, None, _gen(11))  # the same masks every step
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0] and losses == sorted(losses, reverse=True), losses
    assert set(objective.last_terms) == {"nce", "mse", "masked_acc"}


# --- coarse-to-fine --------------------------------------------------------------------------

def test_weights_carry_over_between_phases_heads_unchanged():
    model = _model()
    heads = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(PRETRAIN_PREFIXES)}
    shapes = {}
    for r in (4, 2, 1):  # coarse to fine
        model.set_geometry(InputGeometry(FRAMES // r, MEL, r))
        sd = model.state_dict()
        shapes[r] = {k: tuple(v.shape) for k, v in sd.items()}
        assert sd["pos_embed"].shape == (1, 2 + 64 // r, 64)
        for k, v in heads.items():
            assert torch.equal(sd[k], v), k
        loss = _objective().training_loss(model, _x(FRAMES // r), None, _gen())
        assert torch.isfinite(loss)
    assert shapes[4].keys() == shapes[2].keys() == shapes[1].keys()
    differ = {k for k in shapes[1] if not shapes[1][k] == shapes[2][k] == shapes[4][k]}
    assert differ == {"pos_embed"}


def test_patch_method_refused_for_pretraining_supported_for_finetuning():
    geo = InputGeometry(FRAMES, MEL, 1, 2)
    with pytest.raises(ValueError, match="Patch method.*fshift, avgpool or maxpool"):
        ssast_make_config(_settings(pretrain_heads=True), 5, geo)
    pre = _model()
    with pytest.raises(ValueError, match="SSAST pretraining predicts pf x pt patches"):
        pre.set_geometry(geo)
    assert pre.config.patch_size == (16, 16)  # unchanged
    ft = _model(False)
    ft.set_geometry(geo)
    assert ft.config.patch_size == (16, 32) and ft(_x()).shape == (2, 5)
    assert ssast_make_config(_settings(), 5, geo).patch_size == (16, 32)


# --- FLOPs -----------------------------------------------------------------------------------

def _measured_step(model: SSAST, objective: MaskedPatchObjective, x: torch.Tensor) -> int:
    register_cpu_sdpa_flops()
    with FlopCounterMode(display=False) as counter:
        objective.training_loss(model, x, None, _gen()).backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("r", [1, 4])
def test_pretraining_step_flops_equal_flop_counter_mode(r):
    model = _model().train()
    model.set_geometry(InputGeometry(FRAMES // r, MEL, r))
    objective = _objective()
    x = _x(FRAMES // r, batch=2)
    assert _measured_step(model, objective, x) == objective.training_flops(model, 2)
    one_pass = _objective(nce_weight=0.0)  # generative pass only: half the encoder work
    assert one_pass.tasks == ("mpg",)
    assert _measured_step(model, one_pass, x) == one_pass.training_flops(model, 2)


def test_frame_based_pretraining_and_finetuning_flops():
    frame = _model(patch_size=(128, 2), stride=(128, 2)).train()  # 64 frame tokens, random masking
    objective = _objective()
    assert not objective.uses_cluster(frame)
    assert _measured_step(frame, objective, _x()) == objective.training_flops(frame, 2)
    ft = _model(False).train()
    x = _x()
    assert measured_training_flops(ft, x) == ft.training_flops(2)
    register_cpu_sdpa_flops()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        ft(x)
    assert counter.get_total_flops() == ft.forward_flops(2)


# --- checkpoint interop ----------------------------------------------------------------------

def _official_layout(model: SSAST, finetuned: bool = False) -> dict[str, torch.Tensor]:
    """``model``'s weights as the official code saves them (DataParallel, timm names under ``v.``)."""
    sd = {}
    for k, v in model.state_dict().items():
        if k.startswith(PRETRAIN_PREFIXES):
            sd[f"module.{k}"] = v.clone()
        elif k.startswith("head."):
            sd["module.mlp_head." + {"norm": "0", "fc": "1"}[k.split(".")[1]] + "." + k.split(".")[2]] = v.clone()
        else:
            sd[f"module.v.{k}"] = v.clone()
    d = model.config.embed_dim
    sd["module.v.head.weight"], sd["module.v.head.bias"] = torch.zeros(1000, d), torch.zeros(1000)  # ImageNet heads
    sd["module.v.head_dist.weight"], sd["module.v.head_dist.bias"] = torch.zeros(1000, d), torch.zeros(1000)
    if not finetuned:
        sd["module.p_input_fdim"] = torch.nn.Parameter(torch.tensor(model.config.num_mel_bins), requires_grad=False)
        sd["module.p_input_tdim"] = torch.nn.Parameter(torch.tensor(model.config.target_length), requires_grad=False)
    return sd


def test_official_pretraining_checkpoint_round_trip(tmp_path):
    model = _model().eval()
    converted, size = convert_official_state_dict(_official_layout(model))
    assert size == (MEL, FRAMES) and "cpredlayer.2.weight" in converted and "v.head.weight" not in converted
    path = tmp_path / "SSAST-Micro-Patch-50.pth"
    torch.save(_official_layout(model), path)
    back = load_official_ssast(path, num_heads=4)  # micro: the heads are not in the weights
    assert back.config == dataclasses.replace(model.config, num_classes=527)  # no classifier: the default count
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    mask = draw_masks(2, model.config.grid, 10, True, _gen())
    with torch.no_grad():
        torch.testing.assert_close(back(_x(), mpc_mask=mask)["mpc"][0], model(_x(), mpc_mask=mask)["mpc"][0])
    with pytest.raises(ValueError, match="not in the original AST layout"):
        convert_official_state_dict({**_official_layout(model), "module.v.extra": torch.zeros(1)})


def test_load_pretrained_moves_official_weights_to_the_target_geometry(tmp_path):
    source = _model().eval()
    path = tmp_path / "ssast.pth"
    torch.save(_official_layout(source), path)
    target = _model(False, frames=FRAMES // 2, seed=9)  # a fine-tuning model at R = 2
    assert ssast_load_pretrained(target, str(path))
    sd = target.state_dict()
    assert torch.equal(sd["blocks.2.mlp.fc1.weight"], source.state_dict()["blocks.2.mlp.fc1.weight"])
    source.set_geometry(InputGeometry(FRAMES // 2, MEL, 2))
    assert torch.equal(sd["pos_embed"], source.pos_embed.detach())
    assert not any(k.startswith(PRETRAIN_PREFIXES) for k in sd)
    again = _model(True, frames=FRAMES // 4, seed=9)  # continued pretraining at R = 4 keeps the heads
    assert ssast_load_pretrained(again, str(path))
    assert torch.equal(again.cpredlayer[2].weight, source.cpredlayer[2].weight)
    assert torch.equal(again.mask_embed, source.mask_embed)
    assert not ssast_load_pretrained(target, str(tmp_path)) and not ssast_load_pretrained(target, str(tmp_path / "no.pth"))
    frame_target = _model(False, patch_size=(128, 2), stride=(128, 1))
    with pytest.raises(ValueError, match="patch shape"):
        ssast_load_pretrained(frame_target, str(path))


def test_official_finetuned_checkpoint_maps_mlp_head(tmp_path):
    model = _model(False, stride=(10, 10)).eval()  # 12 x 12 overlapping tokens
    path = tmp_path / "ft.pth"
    torch.save(_official_layout(model, finetuned=True), path)
    back = load_official_ssast(path, num_heads=4)  # micro: the heads are not in the weights
    assert back.config.stride == (10, 10) and back.config.target_length == FRAMES and not back.config.pretrain_heads
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x))


def test_export_to_hugging_face_ast(tmp_path, caplog):
    transformers = pytest.importorskip("transformers")
    model = _model(False, frames=64).eval()
    x = _x(64)
    with caplog.at_level(logging.WARNING, logger="coarse2fine.model.ssast"):
        out = export_ssast_hf(model, tmp_path / "hf")
    assert "pools (cls + dist) / 2" in caplog.text
    hf = transformers.ASTForAudioClassification.from_pretrained(out).eval()
    with torch.no_grad():
        hidden = hf.audio_spectrogram_transformer(input_values=x).last_hidden_state
        torch.testing.assert_close(hidden, model.forward_tokens(x), rtol=1e-4, atol=1e-4)
        cls_model = _model(False, frames=64, pooling="cls").eval()
        hf_cls = transformers.ASTForAudioClassification.from_pretrained(export_ssast_hf(cls_model, tmp_path / "cls")).eval()
        torch.testing.assert_close(hf_cls(input_values=x).logits, cls_model(x), rtol=1e-4, atol=1e-4)
    frame = _model(False, frames=64, patch_size=(128, 2), stride=(128, 2))
    with pytest.raises(ValueError, match="square patches only"):
        export_ssast_hf(frame, tmp_path / "frame")
