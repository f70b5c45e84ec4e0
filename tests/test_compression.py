import pytest
import torch

from coarse2fine.compression import Compression, pool_time
from coarse2fine.features import FbankConfig, FeatureSpec, extract, num_frames
from coarse2fine.model import AST, ast_config

SPEC = FeatureSpec(FbankConfig(), target_length=128, mean=-4.0, std=4.0)
WAVES = torch.randn(2, 20480, generator=torch.Generator().manual_seed(0))


def tiny_model(geo):
    """A one-block micro AST (16x16 patches at full resolution) at input geometry ``geo``."""
    return AST(ast_config("micro", num_classes=5, num_mel_bins=128, target_length=128, depth=1).at_geometry(geo))


@pytest.mark.parametrize("method", ["fshift", "avgpool", "maxpool", "patch"])
def test_identity_at_R1(method):
    comp = Compression(method, R=1)
    assert comp.feature_spec(SPEC) == SPEC
    feats = extract(WAVES, SPEC)
    assert torch.equal(comp.transform(feats), feats)
    assert comp.input_geometry(128, 128).frames == 128


@pytest.mark.parametrize("method", ["fshift", "avgpool", "maxpool", "patch"])
@pytest.mark.parametrize("R", [1, 2, 4])
def test_every_method_cuts_time_tokens_by_R(method, R):
    comp = Compression(method, R=R, patch_resize="bilinear")
    geo = comp.input_geometry(128, 128)
    feats = comp.transform(extract(WAVES, comp.feature_spec(SPEC)))
    assert feats.shape == (2, geo.frames, 128)
    model = tiny_model(geo)
    assert model.config.num_tokens == 8 * (8 // R)
    assert model(feats).shape == (2, 5)


def test_fshift_frames_follow_the_shift():
    spec = Compression("fshift", R=4).feature_spec(FeatureSpec(FbankConfig(), 1024, 0.0, 1.0))
    assert spec.frontend.frame_shift_ms == 40.0 and spec.frontend.frame_length_ms == 25.0
    assert spec.target_length == 256 and num_frames(160000, spec.frontend) == 250
    wide = Compression("fshift", R=4, scale_window=True).feature_spec(SPEC)
    assert wide.frontend.frame_length_ms == 100.0


def test_pooling_values():
    x = torch.arange(16.0).view(1, 8, 2)  # [B, T, F]
    avg = pool_time(x, 4, "avg")
    mx = pool_time(x, 4, "max")
    assert avg.shape == (1, 2, 2) and torch.equal(avg[0, :, 0], torch.tensor([3.0, 11.0]))
    assert torch.equal(mx[0, :, 1], torch.tensor([7.0, 15.0]))
    assert Compression("avgpool", 4).input_geometry(1024, 128).frames == 256


def test_patch_geometry_and_errors():
    geo = Compression("patch", R=4).input_geometry(1024, 128)
    assert (geo.frames, geo.time_factor, geo.time_patch_factor) == (1024, 1, 4)
    g = ast_config("micro", stride=(10, 10), target_length=1024).at_geometry(geo)
    assert g.target_length == 1024 and g.patch_size == (16, 64) and g.stride == (10, 40)
    with pytest.raises(ValueError, match="unknown compression method"):
        Compression("blur", 2)
    with pytest.raises(ValueError, match="positive integer"):
        Compression("fshift", 0)
    assert Compression("patch", 2, patch_resize="bilinear").label == "Patch BL"
