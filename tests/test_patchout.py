"""PaSST-style patchout with disentangled positional embeddings, combined with coarse-to-fine."""

import pytest
import torch

from coarse2fine.compression import Compression
from coarse2fine.model import AST, ast_config, measured_training_flops
from coarse2fine.model.patchout import resample_1d

# A micro AST at 128 frames x 128 mel bins: a grid of 8 x 8 patches at full resolution.
PATCHOUT = dict(pos_embed="disentangled", patchout_time=4, patchout_freq=2)


def model(**over):
    torch.manual_seed(0)
    return AST(ast_config("micro", num_classes=5, target_length=128, depth=1, **{**PATCHOUT, **over}))


@pytest.mark.parametrize("method,R,grid,train_tokens", [
    ("fshift", 1, (8, 8), 6 * 4), ("fshift", 2, (8, 4), 6 * 2), ("avgpool", 4, (8, 2), 6 * 1), ("patch", 4, (8, 2), 6 * 1),
])
def test_time_patchout_scales_with_the_phase_and_flops_count_kept_tokens(method, R, grid, train_tokens):
    m = model()
    geo = Compression(method, R).input_geometry(128, 128)
    m.set_geometry(geo)
    assert m.config.grid == grid and m.train_tokens == train_tokens and m.num_tokens == grid[0] * grid[1]
    assert m.config.patchout_counts == (2, grid[1] // 2)  # half the time columns (4 of 8) at every R
    x = torch.randn(3, geo.frames, 128)
    m.train()
    assert measured_training_flops(m, x) == m.training_flops(3)
    m.eval()
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        m(x)
    assert counter.get_total_flops() == m.forward_flops(3)  # evaluation sees every patch
    assert m.forward_flops(1) > m.training_flops(1) / 3


def test_a_patchout_that_would_drop_every_time_column_is_refused_at_load():
    # PaSST's 40 columns on a short clip's 8 were clamped to 7 in silence: training saw 1 column of 8.
    with pytest.raises(ValueError, match="patchout_time 8 must leave at least one of the 8 time columns at full"):
        model(patchout_time=8)
    assert model(patchout_time=7).config.patchout_counts == (2, 7)
    from coarse2fine.config import load_config

    with pytest.raises(ValueError, match="patchout_time 40 must leave at least one of the 8 time columns"):
        load_config("demo", ["model.overrides.pos_embed=disentangled", "model.overrides.patchout_time=40"])


def test_kept_patches_keep_their_positions():
    m = model(patchout_time=0, patchout_freq=0).eval()
    x = torch.randn(2, 128, 128)
    tokens = m.patch_embed(x.transpose(1, 2).unsqueeze(1))
    grid = m.pos.add(tokens, m.config.grid)  # [B, D, F, T]
    f, t = 3, 5
    expected = tokens.reshape(2, 8, 8, -1)[:, f, t] + m.pos.freq[0, :, f, 0] + m.pos.time[0, :, 0, t]
    torch.testing.assert_close(grid[:, :, f, t], expected)
    # With patchout on, a training forward drops whole columns / rows; every kept token is one of these.
    m2 = model().train()
    torch.manual_seed(1)
    out = m2(x)
    assert out.shape == (2, 5)


def test_time_embedding_is_interpolated_not_cut_between_phases():
    m = model()
    full = m.pos.time.detach().clone()
    m.set_geometry(Compression("fshift", 4).input_geometry(128, 128))
    assert m.pos.time.shape[-1] == 2
    torch.testing.assert_close(m.pos.time.detach(), resample_1d(full, 2, dim=-1))
    assert not torch.allclose(m.pos.time.detach(), full[..., :2])  # PaSST's cut would keep the first columns
    m.set_geometry(Compression("fshift", 1).input_geometry(128, 128))
    assert m.pos.time.shape[-1] == 8 and m.pos.freq.shape == (1, 64, 8, 1)


def test_patchout_needs_disentangled_embeddings_and_cannot_export_to_hugging_face():
    with pytest.raises(ValueError, match="patchout needs pos_embed: disentangled"):
        ast_config("micro", patchout_time=4, target_length=128)
    from coarse2fine.model.ast.hf import hf_config_dict

    with pytest.raises(ValueError, match="disentangled"):
        hf_config_dict(model().config, {i: str(i) for i in range(5)})


def test_patchout_with_coarse_to_fine_trains_from_a_config(tmp_path):
    from coarse2fine.config import load_config
    from coarse2fine.data.sources import load_splits
    from coarse2fine.training.loop import train_run

    cfg = load_config("demo", ["data.train_clips=16", "data.val_clips=8", "train.batch_size=8", "train.threads=1",
                               "train.epochs=1", "c2f.phase_epochs=[1, 1]", "model.overrides.pos_embed=disentangled",
                               "model.overrides.patchout_time=4", "model.overrides.patchout_freq=2"])
    recs = train_run(cfg, load_splits(cfg), tmp_path, progress=False).records
    assert [(r.R, r.tokens, r.train_tokens) for r in recs] == [(4, 16, 6), (1, 64, 24)]
