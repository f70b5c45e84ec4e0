"""Checkpoint interop: Hugging Face export/import, the original AST release, ImageNet init."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from coarse2fine.features import FbankConfig, FeatureSpec
from coarse2fine.model.ast import AST, ASTConfig
from coarse2fine.model.ast.hf import AUDIOSET_MEAN, export_hf_checkpoint, load_hf_checkpoint
from coarse2fine.model.ast.pretrained import (
    _default_target_length,
    convert_original_ast_state_dict,
    imagenet_pos_embed,
    init_from_imagenet,
    load_original_ast_checkpoint,
)
from coarse2fine.model.patch_embed import resize_patch_kernel

transformers = pytest.importorskip("transformers")

TOL = dict(rtol=1e-5, atol=1e-5)
TINY = dict(embed_dim=32, depth=2, num_heads=2, num_mel_bins=32, target_length=64, patch_size=(8, 8))


def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Random values everywhere (tokens and pos-embed are zero- or tiny-initialised otherwise)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def _x(cfg: ASTConfig, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, cfg.target_length, cfg.num_mel_bins, generator=torch.Generator().manual_seed(1))


def _hf_model(stride: int, eps: float = 1e-12, num_labels: int = 5) -> torch.nn.Module:
    hf_cfg = transformers.ASTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        patch_size=8, frequency_stride=stride, time_stride=stride, max_length=64, num_mel_bins=32,
        num_labels=num_labels, layer_norm_eps=eps,
    )
    hf = transformers.ASTForAudioClassification(hf_cfg).eval()
    _randomize(hf)
    return hf


# --- export to Hugging Face -----------------------------------------------------------------

@pytest.mark.parametrize("stride", [8, 6])  # non-overlapping and overlapping patches
def test_export_round_trip_through_transformers(tmp_path, stride):
    cfg = ASTConfig(**TINY, num_classes=4, stride=(stride, stride))
    model = AST(cfg).eval()
    _randomize(model)
    names = ["Speech", "Music", "Dog", "Rain"]
    out = export_hf_checkpoint(model, tmp_path / "hf", id2label=names, feature_mean=-6.5, feature_std=5.25)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]

    keys = set(load_file(str(out / "model.safetensors")))  # the Hub / transformers 4.x layout
    assert "audio_spectrogram_transformer.encoder.layer.1.attention.attention.query.weight" in keys
    assert "audio_spectrogram_transformer.encoder.layer.0.intermediate.dense.bias" in keys
    assert "classifier.dense.weight" in keys and not any("q_proj" in k for k in keys)

    x = _x(cfg)
    hf = transformers.ASTForAudioClassification.from_pretrained(out).eval()
    assert hf.config.id2label == dict(enumerate(names))
    with torch.no_grad():
        ours = model(x)
        torch.testing.assert_close(hf(input_values=x).logits, ours, **TOL)
        back, info = load_hf_checkpoint(out)
        torch.testing.assert_close(back(x), ours, **TOL)
    assert back.config == cfg
    assert info["labels"] == names and info["id2label"][2] == "Dog"
    assert (info["mean"], info["std"], info["max_length"], info["num_mel_bins"]) == (-6.5, 5.25, 64, 32)
    assert info["feature_spec"] == FeatureSpec(FbankConfig(num_mel_bins=32), 64, -6.5, 5.25)

    extractor = transformers.ASTFeatureExtractor.from_pretrained(out)
    assert (extractor.mean, extractor.std, extractor.max_length, extractor.num_mel_bins) == (-6.5, 5.25, 64, 32)


@pytest.mark.parametrize("multilabel", [False, True])
def test_export_says_whether_scores_are_sigmoids_or_a_softmax(tmp_path, multilabel):
    """A multi-label (bce) model exported for transformers: its pipeline must apply sigmoids."""
    cfg = ASTConfig(**{**TINY, "num_mel_bins": 128, "target_length": 100}, num_classes=3)
    model = AST(cfg).eval()
    _randomize(model)
    out = export_hf_checkpoint(model, tmp_path / "hf", id2label=["a", "b", "c"], multilabel=multilabel)
    assert json.loads((out / "config.json").read_text())["problem_type"] == (
        "multi_label_classification" if multilabel else "single_label_classification")
    classify = transformers.pipeline("audio-classification", model=str(out), device="cpu")
    wave = torch.randn(16000, generator=torch.Generator().manual_seed(3)).numpy() * 0.1
    scores = {r["label"]: r["score"] for r in classify(wave, top_k=3)}
    extractor = transformers.ASTFeatureExtractor.from_pretrained(out)
    with torch.no_grad():
        logits = model(extractor(wave, sampling_rate=16000, return_tensors="pt")["input_values"])[0]
    expected = logits.sigmoid() if multilabel else logits.softmax(-1)
    assert [scores[k] for k in "abc"] == pytest.approx(expected.tolist(), abs=1e-5)
    assert load_hf_checkpoint(out)[1]["multilabel"] is multilabel  # so predict on the folder scores the same way


def test_export_refuses_what_hugging_face_cannot_express(tmp_path):
    model = AST(ASTConfig(**{**TINY, "patch_size": (8, 16)}, stride=(8, 16), num_classes=2))
    with pytest.raises(ValueError, match="square patches"):
        export_hf_checkpoint(model, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="id2label"):
        export_hf_checkpoint(AST(ASTConfig(**TINY, num_classes=3)), tmp_path / "y", id2label=["a", "b"])
    spec = FeatureSpec(FbankConfig(num_mel_bins=32), 32, 0.0, 1.0)
    with pytest.raises(ValueError, match="does not match the model"):
        export_hf_checkpoint(AST(ASTConfig(**TINY, num_classes=3)), tmp_path / "z", feature_spec=spec)


# --- Hugging Face folders -> ours -------------------------------------------------------------

def test_load_hf_checkpoint_from_transformers_save_pretrained(tmp_path):
    hf = _hf_model(6)
    hf.save_pretrained(tmp_path / "st")  # transformers 5.x layout, safetensors
    x = _x(ASTConfig(**TINY))
    with torch.no_grad():
        ref = hf(input_values=x).logits
        model, info = load_hf_checkpoint(tmp_path / "st")
        torch.testing.assert_close(model(x), ref, **TOL)
    assert info["labels"] == [f"LABEL_{i}" for i in range(5)]
    assert info["mean"] == AUDIOSET_MEAN  # no preprocessor_config.json: AudioSet statistics

    legacy = tmp_path / "bin"  # pytorch_model.bin, read with weights_only=True
    legacy.mkdir()
    (legacy / "config.json").write_text((tmp_path / "st" / "config.json").read_text())
    torch.save(hf.state_dict(), legacy / "pytorch_model.bin")
    with torch.no_grad():
        torch.testing.assert_close(load_hf_checkpoint(legacy)[0](x), ref, **TOL)


class _NotATensor:  # pickled into a .bin to check that arbitrary objects are refused
    pass


def test_load_hf_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="config.json: file not found"):
        load_hf_checkpoint(tmp_path)
    hf = _hf_model(8)
    folder = tmp_path / "m"
    hf.save_pretrained(folder)
    weights = folder / "model.safetensors"
    sd = load_file(str(weights))

    save_file({**sd, "extra.weight": torch.zeros(2)}, str(weights))
    with pytest.raises(ValueError, match=r"model\.safetensors: unrecognised .*extra\.weight"):
        load_hf_checkpoint(folder)

    config = json.loads((folder / "config.json").read_text())
    save_file(sd, str(weights))
    (folder / "config.json").write_text(json.dumps({**config, "max_length": 32}))
    with pytest.raises(ValueError, match=r"model\.safetensors: shape mismatch .*pos_embed"):
        load_hf_checkpoint(folder)

    (folder / "config.json").write_text(json.dumps(config))
    weights.unlink()
    with pytest.raises(ValueError, match="no weights"):
        load_hf_checkpoint(folder)
    torch.save({"w": _NotATensor()}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: not a file of tensors that loads without running code "
                                         r"from it \(Unsupported global: GLOBAL test_hf_interop._NotATensor was not an "
                                         r"allowed global by default\)"):
        load_hf_checkpoint(folder)

    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json: cannot read JSON"):
        load_hf_checkpoint(folder)


# --- original AST release -----------------------------------------------------------------------

def _original_from_hf(hf: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The original AST release's format (DataParallel ``module.`` + timm DeiT names + mlp_head),
    written out independently of the code under test from a transformers 5.x model."""
    sd = hf.state_dict()
    p = "audio_spectrogram_transformer."
    out = {
        "module.v.cls_token": sd[p + "embeddings.cls_token"],
        "module.v.dist_token": sd[p + "embeddings.distillation_token"],
        "module.v.pos_embed": sd[p + "embeddings.position_embeddings"],
        "module.v.patch_embed.proj.weight": sd[p + "embeddings.patch_embeddings.projection.weight"],
        "module.v.patch_embed.proj.bias": sd[p + "embeddings.patch_embeddings.projection.bias"],
        "module.v.norm.weight": sd[p + "layernorm.weight"],
        "module.v.norm.bias": sd[p + "layernorm.bias"],
        "module.v.head.weight": torch.zeros(1000, 32),  # timm's unused ImageNet heads
        "module.v.head.bias": torch.zeros(1000),
        "module.v.head_dist.weight": torch.zeros(1000, 32),
        "module.v.head_dist.bias": torch.zeros(1000),
        "module.mlp_head.0.weight": sd["classifier.layernorm.weight"],
        "module.mlp_head.0.bias": sd["classifier.layernorm.bias"],
        "module.mlp_head.1.weight": sd["classifier.dense.weight"],
        "module.mlp_head.1.bias": sd["classifier.dense.bias"],
    }
    for i in range(2):
        h, o = f"{p}layers.{i}.", f"module.v.blocks.{i}."
        for kind in ("weight", "bias"):
            out[o + f"attn.qkv.{kind}"] = torch.cat([sd[h + f"attention.{n}_proj.{kind}"] for n in "qkv"])
            for theirs, ours in [("layernorm_before", "norm1"), ("attention.o_proj", "attn.proj"),
                                 ("layernorm_after", "norm2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")]:
                out[o + f"{ours}.{kind}"] = sd[h + f"{theirs}.{kind}"]
    return out


def test_original_ast_checkpoint_matches_transformers(tmp_path):
    hf = _hf_model(6, eps=1e-6)  # timm's LayerNorm eps, what the original release used
    path = tmp_path / "audioset_fake.pth"
    torch.save(_original_from_hf(hf), path)
    model = load_original_ast_checkpoint(path, num_heads=2, stride=6, num_mel_bins=32)
    cfg = model.config
    assert (cfg.embed_dim, cfg.depth, cfg.num_classes, cfg.patch_size, cfg.stride) == (32, 2, 5, (8, 8), (6, 6))
    assert cfg.target_length == 64 and cfg.grid == (5, 10) and cfg.layer_norm_eps == 1e-6
    x = _x(cfg)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(input_values=x).logits, **TOL)


def test_original_ast_inference_rules_and_errors(tmp_path):
    assert _default_target_length(101, 16, 10) == 1024  # AudioSet: 12 x 101 tokens
    assert _default_target_length(50, 16, 10) == 512  # ESC-50
    assert _default_target_length(12, 16, 10) == 128  # Speech Commands
    sd = _original_from_hf(_hf_model(6, eps=1e-6))
    with pytest.raises(ValueError, match="not in the original AST layout \\(module.v.\\*\\): 1 key"):
        convert_original_ast_state_dict({**sd, "module.v.something": torch.zeros(1)})
    path = tmp_path / "orig.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"orig\.pth: cannot infer num_heads for embed dim 32"):
        load_original_ast_checkpoint(path, stride=6, num_mel_bins=32)
    # init_from gives the config's heads for a width the DeiT table lacks (it was an error there)
    assert load_original_ast_checkpoint(path, heads_if_unknown=2, stride=6, num_mel_bins=32).config.num_heads == 2
    with pytest.raises(ValueError, match=r"orig\.pth: pos_embed has 50 patch tokens"):
        load_original_ast_checkpoint(path, num_heads=2, stride=6, num_mel_bins=128)
    # No "module." prefix and no mlp_head: loads the encoder, keeps the head as initialised.
    bare = {k[len("module."):]: v for k, v in sd.items() if "mlp_head" not in k}
    torch.save(bare, path)
    model = load_original_ast_checkpoint(path, num_heads=2, stride=6, num_mel_bins=32, num_classes=7)
    assert model.config.num_classes == 7
    torch.testing.assert_close(model.cls_token, sd["module.v.cls_token"])


# --- ImageNet ViT / DeiT init --------------------------------------------------------------------

def _timm_vit(distilled: bool, dim: int = 32, depth: int = 2, side: int = 4) -> dict[str, torch.Tensor]:
    """A synthetic timm ViT/DeiT state dict (3-channel 16x16 patches, ``side`` x ``side`` grid)."""
    g = torch.Generator().manual_seed(3)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    prefix = 2 if distilled else 1
    sd = {
        "cls_token": r(1, 1, dim), "pos_embed": r(1, prefix + side * side, dim),
        "patch_embed.proj.weight": r(dim, 3, 16, 16), "patch_embed.proj.bias": r(dim),
        "norm.weight": r(dim), "norm.bias": r(dim), "head.weight": r(1000, dim), "head.bias": r(1000),
    }
    if distilled:
        sd.update({"dist_token": r(1, 1, dim), "head_dist.weight": r(1000, dim), "head_dist.bias": r(1000)})
    for i in range(depth):
        for name, shape in [("norm1", (dim,)), ("attn.qkv", (3 * dim, dim)), ("attn.proj", (dim, dim)),
                            ("norm2", (dim,)), ("mlp.fc1", (4 * dim, dim)), ("mlp.fc2", (dim, 4 * dim))]:
            sd[f"blocks.{i}.{name}.weight"] = r(*shape)
            sd[f"blocks.{i}.{name}.bias"] = r(shape[0])
    return sd


@pytest.mark.parametrize(
    "mel_bins, frames, crop",
    [(48, 112, ("freq", slice(1, 4))),  # grid (3, 7): freq cropped (rows 1..3), time interpolated 4 -> 7
     (96, 48, ("time", slice(1, 4)))],  # grid (6, 3): time cropped, freq interpolated 4 -> 6
)
def test_init_from_deit_the_ast_way(mel_bins, frames, crop):
    src = _timm_vit(distilled=True)
    model = AST(ASTConfig(embed_dim=32, depth=2, num_heads=2, num_classes=3, num_mel_bins=mel_bins,
                          target_length=frames, patch_size=16, stride=16))
    head_before = model.head.fc.weight.clone()
    loaded = init_from_imagenet(model, src)
    assert "head.fc.weight" not in loaded and torch.equal(model.head.fc.weight, head_before)
    assert torch.equal(model.patch_embed.proj.weight, src["patch_embed.proj.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(model.dist_token, src["dist_token"]) and torch.equal(model.blocks[1].mlp.fc2.weight,
                                                                            src["blocks.1.mlp.fc2.weight"])
    grid = src["pos_embed"][:, 2:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    grid = grid[:, :, crop[1], :] if crop[0] == "freq" else grid[:, :, :, crop[1]]
    expected = F.interpolate(grid, size=model.config.grid, mode="bilinear", align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(1, -1, 32)
    torch.testing.assert_close(model.pos_embed[:, 2:], expected)
    torch.testing.assert_close(model.pos_embed[:, :2], src["pos_embed"][:, :2])
    assert torch.isfinite(model(torch.randn(2, frames, mel_bins))).all()


def test_init_from_plain_vit_file_with_patch_resize(tmp_path):
    src = _timm_vit(distilled=False)
    path = tmp_path / "vit.safetensors"
    save_file(src, str(path))
    model = AST(ASTConfig(**TINY, num_classes=3))  # 8x8 patches: PI-resized kernel
    init_from_imagenet(model, path)
    kernel = resize_patch_kernel(src["patch_embed.proj.weight"].sum(dim=1, keepdim=True), (8, 8), "pi")
    torch.testing.assert_close(model.patch_embed.proj.weight, kernel)
    assert torch.equal(model.cls_token, src["cls_token"]) and torch.equal(model.dist_token, src["cls_token"])
    pos = model.pos_embed.detach()
    torch.testing.assert_close(pos[:, 1], pos[:, 0])  # one prefix token: cls position used twice
    torch.testing.assert_close(pos, imagenet_pos_embed(src["pos_embed"], 1, (4, 4), model.config.grid))


def test_init_from_imagenet_errors():
    model = AST(ASTConfig(**TINY, num_classes=3))
    with pytest.raises(ValueError, match="lacks weights for: blocks.1"):
        init_from_imagenet(model, _timm_vit(distilled=True, depth=1))
    with pytest.raises(ValueError, match="block weights the model lacks"):
        init_from_imagenet(model, _timm_vit(distilled=True, depth=3))
    with pytest.raises(ValueError, match="shape mismatch"):
        init_from_imagenet(AST(ASTConfig(**{**TINY, "embed_dim": 64}, num_classes=3)), _timm_vit(True))
    bad = _timm_vit(distilled=True)
    bad["pos_embed"] = bad["pos_embed"][:, :-1]
    with pytest.raises(ValueError, match="not square"):
        init_from_imagenet(model, bad)
