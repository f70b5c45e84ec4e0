from __future__ import annotations

import dataclasses

import pytest
import torch

from coarse2fine.training.augment import (
    AugmentConfig,
    add_noise_and_roll,
    augment_features,
    coarse_time_mask_param,
    mixup,
    sample_beta,
    spec_augment,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def masked_frames_and_bins(out: torch.Tensor, fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: boolean [B, T] of fully masked frames and [B, F] of fully masked bins."""
    m = out == fill
    return m.all(dim=2), m.all(dim=1)


def run_lengths(mask: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D boolean mask."""
    runs, n = [], 0
    for v in mask.tolist():
        if v:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    if n:
        runs.append(n)
    return runs


def test_frequency_mask_widths_and_positions():
    x = torch.ones(400, 50, 64)
    out = spec_augment(x, freqm=24, timem=0, generator=gen(0))
    frames, bins = masked_frames_and_bins(out)
    assert not frames.any()
    # Every masked cell belongs to a whole masked bin (frequency masks span all frames).
    assert torch.equal(out == 0, bins.unsqueeze(1).expand_as(out))
    widths = bins.sum(dim=1)
    assert int(widths.max()) < 24
    assert int(widths.max()) >= 20  # the upper range is reached over 400 examples
    for row in bins[:50]:
        assert len(run_lengths(row)) <= 1  # one contiguous band
    starts = {int(row.nonzero()[0]) for row in bins if row.any()}
    assert len(starts) > 20  # per-example positions
    assert torch.equal(x, torch.ones_like(x))  # input untouched


def test_time_mask_divided_by_R():
    assert coarse_time_mask_param(192, 4) == 48
    assert coarse_time_mask_param(48, 4) == 12
    assert coarse_time_mask_param(3, 4) == 0
    x = torch.ones(600, 256, 16)
    frames, bins = masked_frames_and_bins(spec_augment(x, freqm=0, timem=48, R=4, generator=gen(1)))
    assert not bins.any()
    widths = frames.sum(dim=1)
    assert int(widths.max()) <= 11
    assert int(widths.max()) == 11
    frames_full, _ = masked_frames_and_bins(spec_augment(x, freqm=0, timem=48, R=1, generator=gen(1)))
    assert int(frames_full.sum(dim=1).max()) > 11
    # timem // R == 0: no time mask at all.
    assert torch.equal(spec_augment(x, freqm=0, timem=3, R=4, generator=gen(1)), x)


def test_multiple_masks_fill_and_2d_input():
    x = torch.ones(200, 100, 40)
    out = spec_augment(x, freqm=10, timem=20, generator=gen(2), num_masks=2, fill=-1.5)
    frames, bins = masked_frames_and_bins(out, fill=-1.5)
    assert int(bins.sum(dim=1).max()) <= 18 and int(frames.sum(dim=1).max()) <= 38
    assert max(len(run_lengths(r)) for r in frames) == 2
    assert torch.equal(out == -1.5, frames.unsqueeze(2) | bins.unsqueeze(1))
    single = spec_augment(torch.ones(100, 40), 10, 20, generator=gen(3))
    assert single.shape == (100, 40)
    with pytest.raises(ValueError):
        spec_augment(torch.ones(100), 10, 20)


def test_mean_fill_is_each_mel_bins_batch_mean_what_a_per_mel_norm_maps_to_zero():
    # Raw dB log-mel (HTS-AT's front end, normalised inside the model): a 0 fill is a loud band,
    # the mean fill lands on the per-mel norm's mean, as HTS-AT's masks after its bn0 do.
    g = gen(4)
    levels = torch.linspace(-60.0, -10.0, 16)
    x = levels + 5.0 * torch.randn(32, 50, 16, generator=g)
    out = spec_augment(x, freqm=6, timem=12, generator=gen(5), fill="mean")
    zeros = spec_augment(x, freqm=6, timem=12, generator=gen(5), fill=0.0)
    mask = zeros == 0
    assert mask.any() and torch.equal(out[~mask], x[~mask])
    per_bin = x.mean(dim=(0, 1))
    assert torch.allclose(out[mask], per_bin.expand_as(x)[mask])
    bn = torch.nn.BatchNorm1d(16, affine=False).train()
    normed_mean = bn(out.reshape(-1, 16)).reshape_as(out)[mask]
    normed_zero = bn(zeros.reshape(-1, 16)).reshape_as(zeros)[mask]
    assert normed_mean.abs().max() < 0.2 < normed_zero.abs().min()
    with pytest.raises(ValueError, match="mean"):
        spec_augment(x, freqm=6, timem=12, fill="median")


def test_mask_value_mean_from_config_and_a_wrong_word_fails_at_load():
    from coarse2fine.config import load_config

    assert load_config("htsat_esc50").augment.mask_value == "mean"
    assert load_config("esc50", ["augment.mask_value=-0.62"]).augment.mask_value == pytest.approx(-0.62)
    with pytest.raises(ValueError, match="augment.mask_value: expected a number or 'mean', got 'avg'"):
        load_config("esc50", ["augment.mask_value=avg"])
    with pytest.raises(ValueError, match="augment.mask_value: expected a number or 'mean', got True"):
        load_config("esc50", ["augment.mask_value=true"])  # it said "expected a string"
    with pytest.raises(ValueError, match="augment.mask_value: a finite number or 'mean', got nan"):
        load_config("esc50", ["augment.mask_value=nan"])  # a new user's case: the run stopped at its first step


def test_spec_augment_reproducible():
    x = torch.randn(8, 100, 32)
    a = spec_augment(x, 16, 30, generator=gen(7))
    b = spec_augment(x, 16, 30, generator=gen(7))
    c = spec_augment(x, 16, 30, generator=gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_noise_and_roll():
    B, T, F = 64, 40, 8
    x = (torch.arange(T, dtype=torch.float32) * 10).view(1, T, 1).expand(B, T, F).contiguous()
    out = add_noise_and_roll(x, gen(4))
    shifts = []
    for b in range(B):
        found = [s for s in range(-T // 2, T // 2)
                 if bool(((out[b] - torch.roll(x[b], s, 0)) >= 0).all() and ((out[b] - torch.roll(x[b], s, 0)) < 0.1).all())]
        assert len(found) == 1
        shifts.append(found[0])
    assert min(shifts) >= -10 and max(shifts) <= 9
    assert len(set(shifts)) > 5
    assert torch.equal(out, add_noise_and_roll(x, gen(4)))
    noise_only = add_noise_and_roll(torch.zeros(B, T, F), gen(5))
    assert float(noise_only.min()) >= 0 and float(noise_only.max()) < 0.1


def test_mixup_prob_zero_is_identity():
    w, y = torch.randn(6, 100), torch.eye(6)
    w2, y2 = mixup(w, y, prob=0.0, alpha=10.0, generator=gen(0))
    assert torch.equal(w, w2) and torch.equal(y, y2)
    assert w2 is not w


def test_mixup_prob_one_mixes_every_example():
    B = 16
    w, y = torch.eye(B, dtype=torch.float64), torch.eye(B)  # waveform i = one-hot i, label i
    w2, y2 = mixup(w, y, prob=1.0, alpha=10.0, generator=gen(1))
    lam = y2.diagonal()
    assert bool(((lam > 0) & (lam < 1)).all())
    assert torch.allclose(y2.sum(dim=1), torch.ones(B))
    assert bool(((y2 > 0).sum(dim=1) == 2).all())  # own label plus the partner's
    assert torch.allclose(w2.float(), y2, atol=1e-6)  # waves and targets mixed by the same lambda
    assert torch.equal(w, torch.eye(B, dtype=torch.float64))  # input untouched


def test_mixup_rate_and_reproducibility():
    B = 2000
    w, y = torch.randn(B, 4), torch.eye(4)[torch.arange(B) % 4]
    w2, y2 = mixup(w, y, prob=0.5, alpha=10.0, generator=gen(2))
    changed = (y2 != y).any(dim=1).float().mean()
    assert abs(float(changed) - 0.5 * 3 / 4) < 0.05  # a partner of the same class leaves the label as is
    unchanged = (w2 == w).all(dim=1)
    assert abs(float(unchanged.float().mean()) - 0.5) < 0.05
    assert torch.allclose(y2.sum(dim=1), torch.ones(B))
    w3, y3 = mixup(w, y, prob=0.5, alpha=10.0, generator=gen(2))
    w4, _ = mixup(w, y, prob=0.5, alpha=10.0, generator=gen(3))
    assert torch.equal(w2, w3) and torch.equal(y2, y3)
    assert not torch.equal(w2, w4)
    with pytest.raises(ValueError):
        mixup(w, y, prob=1.5, alpha=10.0)


def test_beta_samples_moments():
    s = sample_beta(10.0, 10.0, 4000, gen(0))
    assert bool(((s > 0) & (s < 1)).all())
    assert abs(float(s.mean()) - 0.5) < 0.01
    assert float(s.var()) == pytest.approx(0.25 / 21, rel=0.12)
    a, b = 2.0, 5.0
    s = sample_beta(a, b, 4000, gen(1))
    assert abs(float(s.mean()) - a / (a + b)) < 0.01
    s = sample_beta(0.5, 0.5, 4000, gen(2))  # shape < 1 path
    assert abs(float(s.mean()) - 0.5) < 0.03
    assert float(s.var()) == pytest.approx(0.25 / 2, rel=0.12)
    assert torch.equal(sample_beta(10.0, 10.0, 50, gen(3)), sample_beta(10.0, 10.0, 50, gen(3)))
    assert not torch.equal(sample_beta(10.0, 10.0, 50, gen(3)), sample_beta(10.0, 10.0, 50, gen(4)))


def test_augment_features_config():
    x = torch.randn(4, 64, 32)
    assert torch.equal(augment_features(x, AugmentConfig(), R=1, generator=gen(0)), x)
    cfg = AugmentConfig(freqm=8, timem=32, noise=True, spec_masks=2)
    a = augment_features(x, cfg, R=2, generator=gen(1))
    assert a.shape == x.shape and not torch.equal(a, x)
    assert torch.equal(a, augment_features(x, cfg, R=2, generator=gen(1)))
    masked = augment_features(x, dataclasses.replace(cfg, noise=False, mask_value=7.0), R=2, generator=gen(1))
    assert bool((masked == 7.0).any())
    for bad in ({"freqm": -1}, {"mixup": 1.5}, {"mixup_alpha": 0.0}, {"spec_masks": -1}):
        with pytest.raises(ValueError):
            AugmentConfig(**bad)


@pytest.mark.parametrize("a,b", [(10.0, 10.0), (0.5, 0.5), (2.0, 5.0)])
def test_beta_without_waiting_on_the_device_has_the_right_moments(a, b):
    # The GPU path (a fixed number of candidates per draw, no rejection count read back), run on
    # the CPU: the same distribution as the CPU path.
    from coarse2fine.training.augment import _standard_gamma

    g = torch.Generator().manual_seed(0)
    x, y = _standard_gamma(a, 20000, g, proposals=16), _standard_gamma(b, 20000, g, proposals=16)
    s = x / (x + y)
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    assert abs(s.mean().item() - mean) < 0.01 and abs(s.var().item() - var) < 0.1 * var
    assert bool(((s > 0) & (s < 1)).all())
