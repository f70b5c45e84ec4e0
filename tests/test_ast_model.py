"""The AST model: configs, shapes, geometry changes between phases, Hugging Face parity."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from coarse2fine.model import AST, PRESETS, ASTConfig, adapt_state_dict, ast_config
from coarse2fine.model.ast.hf import ast_config_from_hf, convert_hf_state_dict, load_hf_state_dict

P = 8  # tiny: 32 dim, 2 layers, 2 heads, 32 mel bins x 64 frames, 8x8 patches -> 4 x 8 tokens
TINY = dict(num_classes=5, embed_dim=32, depth=2, num_heads=2, num_mel_bins=32, target_length=64,
            patch_size=(P, P), stride=(P, P))


def _model(**overrides) -> AST:
    torch.manual_seed(0)
    return AST(ASTConfig(**{**TINY, **overrides})).eval()


def _x(frames: int = 64, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, frames, 32, generator=torch.Generator().manual_seed(5))


def test_config_grid_tokens_and_json_round_trip():
    cfg = ASTConfig(**TINY)
    assert cfg.grid == (4, 8) and cfg.num_tokens == 32
    official = ASTConfig(stride=(10, 10))  # AST's overlapping AudioSet geometry
    assert official.grid == (12, 101) and official.num_tokens == 1212
    assert ASTConfig().grid == (8, 64)
    back = ASTConfig.from_dict(json.loads(json.dumps(official.to_dict())))
    assert back == official and back.patch_size == (16, 16)
    with pytest.raises(ValueError, match="unknown ASTConfig key"):
        ASTConfig.from_dict({"dim": 3})


def test_presets_and_unknown_preset():
    assert set(PRESETS) >= {"base", "small", "tiny", "micro"}
    base = ast_config("base")
    assert (base.embed_dim, base.depth, base.num_heads) == (768, 12, 12)
    micro = ast_config("micro", num_classes=10, target_length=256)
    assert (micro.embed_dim, micro.depth, micro.num_heads, micro.num_classes) == (64, 4, 4, 10)
    with pytest.raises(ValueError, match="base, small, tiny, micro"):
        ast_config("huge")


def test_invalid_geometry_rejected():
    with pytest.raises(ValueError, match="divisible"):
        ASTConfig(**{**TINY, "num_heads": 3})
    with pytest.raises(ValueError, match="does not fit"):
        ASTConfig(**{**TINY, "target_length": 4})


def test_parameter_names_are_timm_like():
    names = set(dict(_model().named_parameters()))
    expected = {
        "patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "dist_token", "pos_embed",
        "blocks.1.norm1.weight", "blocks.1.attn.qkv.weight", "blocks.1.attn.qkv.bias",
        "blocks.1.attn.proj.weight", "blocks.1.norm2.bias", "blocks.1.mlp.fc1.weight",
        "blocks.1.mlp.fc2.bias", "norm.weight", "head.norm.weight", "head.fc.weight", "head.fc.bias",
    }
    assert expected <= names
    assert _model().pos_embed.shape == (1, 2 + 32, 32)


def test_forward_shapes_and_backward():
    model = _model().train()
    x = _x()
    logits = model(x)
    assert logits.shape == (3, 5)
    assert model.forward_features(x).shape == (3, 32)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_wrong_input_shape_is_a_clear_error():
    model = _model()
    with pytest.raises(ValueError, match=r"\[B, 64, 32\].*got \[3, 32, 32\]"):
        model(_x(frames=32))
    with pytest.raises(ValueError, match="frames, mel bins"):
        model(torch.randn(3, 32, 64))  # frequency-major by mistake


@pytest.mark.parametrize("r", [1, 2, 4])
def test_time_compressed_input_after_set_geometry(r):
    model = _model()
    model.set_patch_geometry(64 // r)
    assert model.config.grid == (4, 8 // r) and model.config.num_tokens == 32 // r
    assert model.pos_embed.shape == (1, 2 + 32 // r, 32)
    assert model(_x(frames=64 // r)).shape == (3, 5)


@pytest.mark.parametrize("method", ["pi", "bilinear"])
@pytest.mark.parametrize("r", [1, 2, 4])
def test_patch_method_after_set_geometry(r, method):
    model = _model()
    model.set_patch_geometry(64, patch_size=(P, P * r), stride=(P, P * r), patch_resize=method)
    assert model.config.num_tokens == 32 // r
    assert model.patch_embed.proj.weight.shape == (32, 1, P, P * r)
    assert model.patch_embed.proj.kernel_size == (P, P * r) and model.patch_embed.proj.stride == (P, P * r)
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())
    assert model(_x()).shape == (3, 5)


def test_set_geometry_keeps_bias_and_grads_flow_to_new_parameters():
    model = _model().train()
    bias = model.patch_embed.proj.bias.detach().clone()
    model.set_patch_geometry(64, patch_size=(P, 4 * P), stride=(P, 4 * P))
    assert torch.equal(model.patch_embed.proj.bias, bias)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # rebuilt after the phase change
    model(_x()).sum().backward()
    assert model.patch_embed.proj.weight.grad is not None and model.pos_embed.grad is not None
    opt.step()


def test_set_geometry_same_geometry_is_exact_no_op():
    model = _model()
    x = _x()
    before = model(x)
    params = list(model.parameters())
    model.set_patch_geometry(64, patch_size=(P, P), stride=(P, P))
    assert torch.equal(model(x), before)
    assert all(a is b for a, b in zip(params, model.parameters()))


def test_coarse_to_fine_round_trip_carries_weights():
    """Patch method 4 -> 1 with PI-resize: the fine model sees the coarse model's tokens (upsampled)."""
    model = _model()
    model.set_patch_geometry(64, patch_size=(P, 4 * P), stride=(P, 4 * P))
    model.set_patch_geometry(64, patch_size=(P, P), stride=(P, P))
    assert model.config == ASTConfig(**TINY)
    assert model(_x()).shape == (3, 5)


def test_adapt_state_dict_matches_set_geometry():
    model = _model()
    old = model.config
    new = ASTConfig(**{**TINY, "patch_size": (P, 2 * P), "stride": (P, 2 * P)})
    sd = adapt_state_dict(model.state_dict(), old, new)
    model.set_patch_geometry(64, (P, 2 * P), (P, 2 * P))
    for k, v in model.state_dict().items():
        assert torch.equal(sd[k], v), k


def test_stochastic_depth_and_dropout_only_in_training():
    model = _model(drop_path_rate=0.5, drop_rate=0.1, attn_drop_rate=0.1)
    x = _x()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    assert not torch.equal(a, model(x))


def test_meta_device_construction():
    with torch.device("meta"):
        model = AST(ast_config("base"))
    assert model.pos_embed.shape == (1, 514, 768)


# --- Hugging Face parity -------------------------------------------------------------------

transformers = pytest.importorskip("transformers")


def _hf_model(stride: int) -> nn.Module:
    hf_cfg = transformers.ASTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        patch_size=P, frequency_stride=stride, time_stride=stride, max_length=64, num_mel_bins=32,
        num_labels=5, layer_norm_eps=1e-12,
    )
    torch.manual_seed(0)
    hf = transformers.ASTForAudioClassification(hf_cfg).eval()
    with torch.no_grad():  # HF zero-initialises tokens and pos-embed: randomise everything
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return hf


def _legacy_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Hub / transformers 4.x layout of a transformers 5.x AST state dict."""
    renames = [
        ("audio_spectrogram_transformer.layers.", "audio_spectrogram_transformer.encoder.layer."),
        ("attention.q_proj", "attention.attention.query"), ("attention.k_proj", "attention.attention.key"),
        ("attention.v_proj", "attention.attention.value"), ("attention.o_proj", "attention.output.dense"),
        ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense"),
    ]
    out = {}
    for k, v in sd.items():
        for a, b in renames:
            k = k.replace(a, b)
        out[k] = v
    return out


@pytest.mark.parametrize("stride", [P, 6])  # non-overlapping and overlapping (AST's 10/16 style)
def test_logits_match_hugging_face(stride):
    hf = _hf_model(stride)
    cfg = ast_config_from_hf(hf.config)
    assert cfg.layer_norm_eps == 1e-12 and cfg.stride == (stride, stride) and cfg.mlp_ratio == 4.0
    model = AST(cfg).eval()
    load_hf_state_dict(model, hf.state_dict())
    x = _x()
    with torch.no_grad():
        ref = hf(input_values=x).logits
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)
        # The Hub checkpoints' (transformers 4.x) key layout loads to the same weights.
        legacy = AST(cfg).eval()
        load_hf_state_dict(legacy, _legacy_keys(hf.state_dict()))
        torch.testing.assert_close(legacy(x), ref, rtol=1e-5, atol=1e-5)
        # An ASTModel state dict (no prefix, no classifier) loads the encoder; the head is left alone.
        encoder = AST(cfg).eval()
        load_hf_state_dict(encoder, hf.audio_spectrogram_transformer.state_dict())
        pooled = hf.audio_spectrogram_transformer(input_values=x).pooler_output
        torch.testing.assert_close(encoder.forward_features(x), pooled, rtol=1e-5, atol=1e-5)


def test_hf_loader_errors_are_clear():
    hf = _hf_model(P)
    sd = hf.state_dict()
    with pytest.raises(ValueError, match="unrecognised"):
        convert_hf_state_dict({**sd, "something.else": torch.zeros(1)})
    partial = {k: v for k, v in sd.items() if "layers.0.attention.k_proj" not in k}
    with pytest.raises(ValueError, match="incomplete query/key/value"):
        convert_hf_state_dict(partial)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_hf_state_dict(AST(ASTConfig(**{**TINY, "target_length": 32})), sd)


@pytest.mark.parametrize("batch", [1, 3])
def test_a_prefix_tokens_gradient_has_the_parameters_strides_at_any_batch(batch):
    # Under torchrun, a process's micro-batch of 1 clip passed the cls token a view of the next layer's gradient
    # (strides [N * D, D, 1]), which DDP copied at every step with a warning (a new user's log).
    model = AST(ast_config("micro", num_classes=3, target_length=64, num_mel_bins=32))
    seen = {}
    for name in ("cls_token", "dist_token"):
        getattr(model, name).register_hook(lambda g, name=name: seen.update({name: g.stride()}))
    model(torch.randn(batch, 64, 32)).sum().backward()
    assert seen == {"cls_token": model.cls_token.stride(), "dist_token": model.dist_token.stride()}
