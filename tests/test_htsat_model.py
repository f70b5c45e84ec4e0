"""HTS-AT: shapes and token counts per geometry, weight carry-over, windows and the bias sub-table,
shift masks, FLOPs parity with FlopCounterMode, official checkpoint layout."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from coarse2fine.compression import Compression, InputGeometry
from coarse2fine.model.flops import measured_training_flops
from coarse2fine.model.htsat import (
    HTSAT,
    HTSAT_ARCH,
    HTSAT_PRESETS,
    HTSATConfig,
    convert_official_state_dict,
    htsat_config,
    htsat_forward_flops,
    htsat_load_pretrained,
    htsat_make_config,
    htsat_training_flops,
)
from coarse2fine.model.swin import MASK_VALUE, SwinBlock, relative_position_index, shift_attention_mask, window_plan

MEL, FRAMES, CLASSES = 64, 1024, 5
# Fshift / Pool at R (fewer frames) and Patch at k (4 x 4k patches on every frame): same token grid.
GEOMETRIES = {
    "R1": InputGeometry(FRAMES, MEL),
    "R2": InputGeometry(FRAMES // 2, MEL, time_factor=2),
    "R4": InputGeometry(FRAMES // 4, MEL, time_factor=4),
    "patch2": InputGeometry(FRAMES, MEL, time_patch_factor=2),
    "patch4": InputGeometry(FRAMES, MEL, time_patch_factor=4, patch_resize="bilinear"),
}
TIME_REDUCTION = {"R1": 1, "R2": 2, "R4": 4, "patch2": 2, "patch4": 4}


def _model(**overrides) -> HTSAT:
    torch.manual_seed(0)
    return HTSAT(htsat_config("micro", num_classes=CLASSES, **overrides)).eval()


def _x(frames: int = FRAMES, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, frames, MEL, generator=torch.Generator().manual_seed(5))


def _randomise(model: nn.Module) -> None:
    """Non-trivial weights and BatchNorm statistics (so that round trips test something)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        model.bn0.running_mean.normal_()
        model.bn0.running_var.uniform_(0.5, 2.0)


# --- config ---------------------------------------------------------------------------------

def test_config_json_round_trip_presets_and_unknown_keys():
    cfg = htsat_config("htsat")
    assert (cfg.embed_dim, cfg.depths, cfg.num_heads, cfg.window_size) == (96, (2, 2, 6, 2), (4, 8, 16, 32), 8)
    assert cfg.image_size == (256, 256) and cfg.grid == (64, 64) and cfg.stage_dims == [96, 192, 384, 768]
    assert (cfg.tscam_rows, cfg.time_steps) == (2, 32)
    back = HTSATConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.depths == (2, 2, 6, 2)
    with pytest.raises(ValueError, match="unknown HTSATConfig key"):
        HTSATConfig.from_dict({"dim": 3})
    assert set(HTSAT_PRESETS) >= {"htsat", "tiny", "micro"}
    with pytest.raises(ValueError, match="htsat, tiny, micro"):
        htsat_config("huge")


def test_parameter_count_of_published_size():
    with torch.device("meta"):
        model = HTSAT(htsat_config("htsat", num_classes=527))
    n = sum(p.numel() for p in model.parameters())
    tscam = sum(p.numel() for name, p in model.named_parameters() if name.startswith("tscam_conv."))
    assert tscam == 768 * 527 * 2 * 3 + 527  # 2.43 M
    assert 29.9e6 < n < 30.0e6  # backbone 27.53 M + TSCAM 2.43 M (the unused head is not built)


def test_parameter_names_are_official_and_geometry_buffers_not_in_state_dict():
    model = _model()
    names = set(model.state_dict())
    expected = {
        "bn0.weight", "bn0.running_mean", "patch_embed.proj.weight", "patch_embed.norm.weight",
        "layers.0.blocks.1.norm1.weight", "layers.0.blocks.1.attn.qkv.weight", "layers.0.blocks.1.attn.qkv.bias",
        "layers.0.blocks.1.attn.proj.weight", "layers.0.blocks.1.attn.relative_position_bias_table",
        "layers.0.blocks.1.norm2.bias", "layers.0.blocks.1.mlp.fc1.weight", "layers.0.blocks.1.mlp.fc2.bias",
        "layers.2.downsample.norm.weight", "layers.2.downsample.reduction.weight", "norm.weight",
        "tscam_conv.weight", "tscam_conv.bias",
    }
    assert expected <= names
    assert not any(k.endswith(("relative_position_index", "attn_mask")) for k in names)
    assert "layers.3.downsample.norm.weight" not in names and not any(k.startswith("head.") for k in names)
    assert model.head_keys() == ["tscam_conv.weight", "tscam_conv.bias"]


# --- geometry -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_shapes_and_tokens_at_each_geometry(name):
    geo, r = GEOMETRIES[name], TIME_REDUCTION[name]
    model = _model()
    full = model.config.stage_resolutions
    model.set_geometry(geo)
    assert model.geometry == geo  # set_geometry then geometry round-trips (time factor and resize included)
    assert model.config.stage_resolutions == [(h, w // r) for h, w in full]  # every stage: R times fewer tokens
    assert model.num_tokens == 64 * 64 // r
    assert model.patch_embed.proj.kernel_size == (4, 4 * geo.time_patch_factor)
    x = _x(geo.frames)
    assert model(x).shape == (2, CLASSES)
    assert model.tscam_logits(x).shape == (2, CLASSES, 32 // r)
    assert model.forward_features(x).shape == (2, 64)
    framewise = model.forward_framewise(x)
    assert framewise.shape == (2, geo.frames, CLASSES) and 0 < framewise.min() and framewise.max() < 1


def test_geometry_from_compression_and_flops_fall_by_r():
    base = htsat_config("htsat")
    flops = {}
    for r in (1, 2, 4):
        geo = Compression("fshift", r).input_geometry(FRAMES, MEL)
        flops[r] = htsat_training_flops(base.at_geometry(geo))
    assert flops[4] / flops[1] == pytest.approx(0.248, abs=0.002)
    assert flops[2] / flops[1] == pytest.approx(0.499, abs=0.002)
    patch = base.at_geometry(Compression("patch", 4).input_geometry(FRAMES, MEL))
    assert patch.stage_resolutions == base.at_geometry(InputGeometry(256, MEL)).stage_resolutions


def test_window_and_shift_rule():
    model = _model()
    plans = lambda: [[(b.plan.window, b.plan.shift) for b in s.blocks] for s in model.layers]  # noqa: E731
    full = ((8, 8), (0, 0)), ((8, 8), (4, 4))
    assert plans()[:3] == [list(full)] * 3
    assert plans()[3] == [((8, 8), (0, 0))] * 2  # stage 4 (8 x 8) is one window, never shifted
    model.set_geometry(GEOMETRIES["R4"])  # stages 64x16, 32x8, 16x4, 8x2
    assert plans() == [
        list(full),
        [((8, 8), (0, 0)), ((8, 8), (4, 0))],  # 32 x 8: shifted along frequency only
        [((8, 4), (0, 0)), ((8, 4), (4, 0))],
        [((8, 2), (0, 0)), ((8, 2), (0, 0))],
    ]


def test_rectangular_window_reads_the_exact_sub_table():
    torch.manual_seed(0)
    block = SwinBlock(8, 2, 8, False, 4.0, True, 0.0, 0.0, 0.0, 1e-5)
    nn.init.normal_(block.attn.relative_position_bias_table)
    block.set_resolution((8, 8))
    full = block.attn.position_bias()  # [heads, 64, 64]
    block.set_resolution((16, 4))  # window 8 x 4
    rect = block.attn.position_bias()  # [heads, 32, 32]
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(4), indexing="ij")
    at = (rows * 8 + cols).flatten()  # each 8 x 4 window token's position inside an 8 x 8 window
    assert torch.equal(rect, full[:, at][:, :, at])
    index = relative_position_index((8, 8), 8)  # the original Swin index for the full window
    assert index.max() == 224 and torch.equal(index + index.T, torch.full_like(index, 2 * 112))
    assert relative_position_index((1, 1), 8).item() == 112  # offset (0, 0)


def test_shift_mask_regions_do_not_attend():
    mask = shift_attention_mask((16, 16), window_plan((16, 16), 8, shifted=True))
    assert mask.shape == (4, 64, 64)
    assert not mask[0].any() and set(mask.unique().tolist()) == {0.0, MASK_VALUE}
    torch.manual_seed(0)
    block = SwinBlock(8, 2, 8, True, 4.0, True, 0.0, 0.0, 0.0, 1e-5).eval()
    block.set_resolution((16, 16))
    x = torch.randn(1, 16, 16, 8)

    def out_at_origin(y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return block(y.reshape(1, 256, 8)).reshape(16, 16, 8)[0, 0]

    base = out_at_origin(x)
    kick = torch.randn(8) * 3  # not a constant: LayerNorm would remove that
    # (0, 0) and (15, 15) share the wrapped bottom-right shifted window but come from other regions.
    far = x.clone()
    far[0, 15, 15] += kick
    assert torch.allclose(out_at_origin(far), base, atol=1e-6)
    near = x.clone()  # (3, 3) is in (0, 0)'s region: it is attended
    near[0, 3, 3] += kick
    assert not torch.allclose(out_at_origin(near), base, atol=1e-3)


def test_weights_carry_over_bit_identically():
    model = _model()
    _randomise(model)
    x = _x()
    before = model(x)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    objects = list(model.parameters())
    model.set_geometry(GEOMETRIES["R4"])
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    assert all(a is b for a, b in zip(objects, model.parameters()))  # same Parameter objects
    model.set_geometry(GEOMETRIES["R2"])
    model.set_geometry(GEOMETRIES["R1"])
    assert all(torch.equal(params[k], p) for k, p in model.named_parameters())
    assert torch.equal(model(x), before)
    model.set_geometry(GEOMETRIES["patch4"])
    assert {k: v.shape for k, v in model.state_dict().items()} == {**shapes, "patch_embed.proj.weight": (8, 1, 4, 16)}


def test_bad_geometry_is_a_clear_error():
    with pytest.raises(ValueError, match=r"frame count divisible by .* = 128, got 1000 frames"):
        htsat_config("micro", target_length=1000)
    with pytest.raises(ValueError, match=r"mel bins divisible by .* = 32, got 48"):
        htsat_config("micro", num_mel_bins=48)
    with pytest.raises(ValueError, match="stage 2 at 384 frames.*multiple"):
        htsat_config("micro", target_length=384)  # stage 2 is 32 x 12 tokens: not windows of 8
    with pytest.raises(ValueError, match=r"frame count divisible by .* = 512"):
        htsat_config("micro", target_length=256, time_patch_factor=4)
    model = _model()
    with pytest.raises(ValueError, match="64 mel bins"):
        model.set_geometry(InputGeometry(FRAMES, 128))
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        htsat_config("micro", num_heads=(3, 2, 4, 4))
    with pytest.raises(ValueError, match=r"\[B, 1024, 64\]"):
        model(_x(512))
    assert model.geometry == GEOMETRIES["R1"]  # failed changes left the model as it was


# --- FLOPs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_analytic_flops_equal_flop_counter_mode_exactly(name):
    model = _model()
    model.set_geometry(GEOMETRIES[name])
    x = _x(model.geometry.frames, batch=3)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    assert counter.get_total_flops() == model.forward_flops(3) == htsat_forward_flops(model.config, 3)
    model.train()
    y = torch.rand(3, CLASSES)
    bce = lambda out: nn.functional.binary_cross_entropy_with_logits(out, y)  # noqa: E731
    assert measured_training_flops(model, x, bce) == model.training_flops(3) == 3 * model.forward_flops(3)


# --- training -------------------------------------------------------------------------------

def test_training_step_reaches_every_parameter_at_r4():
    model = _model(drop_path_rate=0.1).train()
    model.set_geometry(GEOMETRIES["R4"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = _x(256, batch=4), torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    opt.step()


def test_framewise_is_sigmoid_of_tscam_and_clip_logits_their_mean():
    model = _model()
    x = _x()
    logits = model.tscam_logits(x)
    assert torch.allclose(model(x), logits.mean(-1))
    framewise = model.forward_framewise(x)
    assert torch.allclose(framewise[:, 32 * 5], torch.sigmoid(logits[:, :, 5]), atol=1e-6)  # 32 frames per step


# --- official checkpoints and registry --------------------------------------------------------

def _official_layout(model: HTSAT) -> dict[str, torch.Tensor]:
    """What an official Lightning checkpoint of ``model`` holds: ``sed_model.`` keys, the geometry
    buffers, the feature extractor's fixed weights and the unused head."""
    sd = {f"sed_model.{k}": v.clone() for k, v in model.state_dict().items()}
    for i, stage in enumerate(model.layers):
        for j, block in enumerate(stage.blocks):
            sd[f"sed_model.layers.{i}.blocks.{j}.attn.relative_position_index"] = block.attn.relative_position_index
            if block.attn_mask is not None:
                sd[f"sed_model.layers.{i}.blocks.{j}.attn_mask"] = block.attn_mask
    sd["sed_model.spectrogram_extractor.stft.conv_real.weight"] = torch.zeros(513, 1, 1024)
    sd["sed_model.logmel_extractor.melW"] = torch.zeros(513, MEL)
    sd["sed_model.head.weight"], sd["sed_model.head.bias"] = torch.zeros(CLASSES, CLASSES), torch.zeros(CLASSES)
    return {"state_dict": sd}


def test_official_layout_round_trip(tmp_path):
    model = _model()
    _randomise(model)
    ckpt = _official_layout(model)
    assert any(k.endswith("attn_mask") for k in ckpt["state_dict"])
    other = HTSAT(htsat_config("micro", num_classes=CLASSES)).eval()
    other.load_state_dict(convert_official_state_dict(ckpt))  # strict: nothing missing, nothing extra
    x = _x()
    assert torch.equal(other(x), model(x))

    path = tmp_path / "HTSAT_official.ckpt"
    torch.save(ckpt, path)
    target = HTSAT(htsat_config("micro", num_classes=7, target_length=256)).eval()  # other classes, R = 4
    tscam = target.tscam_conv.weight.detach().clone()
    assert htsat_load_pretrained(target, str(path))
    assert torch.equal(target.layers[2].blocks[1].attn.qkv.weight, model.layers[2].blocks[1].attn.qkv.weight)
    assert torch.equal(target.bn0.running_var, model.bn0.running_var)
    assert torch.equal(target.tscam_conv.weight, tscam)  # classifier dropped: classes differ
    model.set_geometry(GEOMETRIES["R4"])
    assert torch.equal(target.forward_features(_x(256)), model.forward_features(_x(256)))
    assert not htsat_load_pretrained(target, str(tmp_path / "missing.ckpt"))


def test_make_config_and_registry_entry():
    settings = SimpleNamespace(preset="tiny", patch_size=None, stride=None, drop_path_rate=0.2, overrides={"mlp_ratio": 2.0})
    cfg = htsat_make_config(settings, 10, GEOMETRIES["patch4"])
    got = (cfg.num_classes, cfg.target_length, cfg.time_patch, cfg.drop_path_rate, cfg.mlp_ratio)
    assert got == (10, 1024, (4, 16), 0.2, 2.0)
    with pytest.raises(ValueError, match="non-overlapping"):
        htsat_make_config(SimpleNamespace(**{**vars(settings), "stride": [2, 2]}), 10, GEOMETRIES["R1"])
    assert HTSAT_ARCH.name == HTSAT.arch == "htsat" and HTSAT_ARCH.model_cls is HTSAT
    assert HTSAT_ARCH.config_cls.from_dict(cfg.to_dict()) == cfg
    assert HTSAT(cfg).config_dict()["arch"] == "htsat"
