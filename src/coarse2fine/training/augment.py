"""Training-time augmentation: SpecAugment masks, waveform mixup, AST's noise-and-roll.

Every random draw takes an explicit ``torch.Generator`` (``None`` means torch's global
generator), so a run seeded once is reproducible. Random numbers are drawn on the
generator's device (CPU unless you pass a CUDA generator) and then moved to the data's
device, so a CPU generator works for CUDA tensors too.

Behaviour follows AST's data loader (reference.md section 2):

* SpecAugment: frequency and time masks with torchaudio's ``FrequencyMasking`` /
  ``TimeMasking`` sampling: width ``w ~ U[0, param)``, start uniform over the placements
  that fit. AST masks every example independently (it augments one clip at a time); so
  do we, vectorised over the batch.
* Coarse phases: a spectrogram compressed in time by ``R`` has ``R`` times fewer frames,
  so the time-mask parameter becomes ``timem // R`` (e.g. 192 -> 48 at R=4); when that is
  0 no time mask is applied. The frequency axis is untouched by compression, so ``freqm``
  is not scaled.
* Mask value: AST masks the *raw* log-mel fbank with 0 and normalises afterwards, so in
  normalised units its masked cells equal ``-mean / (2 * std)`` (about +0.467 for
  AudioSet). Our features arrive normalised; the default fill 0 is the dataset mean.
  Pass ``fill=-mean / (2 * std)`` (``AugmentConfig.mask_value``) to reproduce AST exactly.
* Mixup: per example with probability ``prob``; lambda ~ Beta(alpha, alpha) (AST: 10, 10);
  waveform ``lam * x + (1 - lam) * x_partner``, targets mixed by the same lambda.
* Noise (AST ``noise=True``, applied after the masks and the normalisation):
  ``fbank + rand(T, F) * rand() / 10``, then ``torch.roll`` along time by
  ``randint(-10, 10)`` frames (numpy/torch ``randint``: the upper end is exclusive).
"""

from __future__ import annotations

import math

import torch

from coarse2fine.config import AugmentConfig

__all__ = [
    "add_noise_and_roll",
    "augment_features",
    "coarse_time_mask_param",
    "mixup",
    "sample_beta",
    "spec_augment",
]


def _draw_device(generator: torch.Generator | None) -> torch.device:
    """Device the random numbers are drawn on: the generator's, else the CPU."""
    return generator.device if generator is not None else torch.device("cpu")


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``U[0, 1)`` float32 draws from ``generator``, moved to ``device``."""
    return torch.rand(shape, generator=generator, device=_draw_device(generator)).to(device)


def coarse_time_mask_param(timem: int, R: int) -> int:
    """Time-mask parameter for features compressed in time by ``R``: ``timem // R``.

    A mask of up to ``timem`` full-resolution frames covers up to ``timem / R`` compressed
    frames; without the division a coarse phase would blank most of its (shorter) input.
    """
    if R < 1:
        raise ValueError(f"compression factor R must be >= 1, got {R}")
    return timem // R


def _band_masks(
    batch: int, size: int, param: int, num_masks: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Boolean [batch, size]: the union of ``num_masks`` random bands per row.

    Width ``w = floor(U * param)`` lies in ``[0, param - 1]`` (capped at ``size``); the start
    is uniform over the ``size - w + 1`` placements that keep the band inside the axis.
    """
    if param <= 0 or num_masks <= 0 or size == 0 or batch == 0:
        return torch.zeros(batch, size, dtype=torch.bool, device=device)
    shape = (batch, num_masks)
    width = torch.clamp((_rand(shape, generator, device) * param).long(), max=size)
    start = (_rand(shape, generator, device) * (size - width + 1)).long()
    start = torch.minimum(start, size - width)  # guard the (float rounding) edge u -> 1
    idx = torch.arange(size, device=device)
    inside = (idx >= start.unsqueeze(-1)) & (idx < (start + width).unsqueeze(-1))  # [B, K, size]
    return inside.any(dim=1)


def spec_augment(
    feats: torch.Tensor,
    freqm: int,
    timem: int,
    R: int = 1,
    generator: torch.Generator | None = None,
    num_masks: int = 1,
    fill: float | str = 0.0,
) -> torch.Tensor:
    """SpecAugment frequency and time masks on features ``[B, T, F]`` (or one clip ``[T, F]``).

    Each example gets its own ``num_masks`` frequency masks (parameter ``freqm`` mel bins)
    and ``num_masks`` time masks (parameter ``timem // R`` frames, see
    :func:`coarse_time_mask_param`); masked cells are set to ``fill``, or with ``fill="mean"`` to
    each mel bin's mean over the batch (the value a per-mel BatchNorm in training mode maps to its
    bias: HTS-AT masks after such a norm, ``bn0``, with 0, and features that are not normalised
    are masked before the model's own norm). Widths are drawn in
    ``[0, param)``, as torchaudio does. Returns a new tensor; ``feats`` is not modified.
    Draw order (for reproducibility): frequency widths, frequency starts, time widths,
    time starts.
    """
    if freqm < 0 or timem < 0:
        raise ValueError(f"freqm and timem must be >= 0, got {freqm} and {timem}")
    single = feats.dim() == 2
    x = feats.unsqueeze(0) if single else feats
    if x.dim() != 3:
        raise ValueError(f"expected features [B, T, F] or [T, F], got shape {tuple(feats.shape)}")
    B, T, F = x.shape
    time_param = coarse_time_mask_param(timem, R)
    fmask = _band_masks(B, F, freqm, num_masks, generator, x.device)
    tmask = _band_masks(B, T, time_param, num_masks, generator, x.device)
    mask = fmask.unsqueeze(1) | tmask.unsqueeze(2)
    if isinstance(fill, str):
        if fill != "mean":
            raise ValueError(f"fill: a number or 'mean', got {fill!r}")
        out = torch.where(mask, x.mean(dim=(0, 1), keepdim=True), x)
    else:
        out = x.masked_fill(mask, fill)
    return out.squeeze(0) if single else out


def add_noise_and_roll(
    feats: torch.Tensor, generator: torch.Generator | None = None, max_shift: int = 10
) -> torch.Tensor:
    """AST's noise augmentation on features ``[B, T, F]`` (or ``[T, F]``), per example.

    Adds ``U(0,1)[T, F] * U(0,1) / 10`` (one scale per example), then rolls along time by
    ``s ~ randint(-max_shift, max_shift)``, i.e. ``s`` in ``[-max_shift, max_shift - 1]``
    as in AST (``np.random.randint(-10, 10)``). Rolling is circular: ``out[t] = x[(t - s) % T]``,
    exactly ``torch.roll(x, s, dims=time)``. Returns a new tensor.
    """
    single = feats.dim() == 2
    x = feats.unsqueeze(0) if single else feats
    if x.dim() != 3:
        raise ValueError(f"expected features [B, T, F] or [T, F], got shape {tuple(feats.shape)}")
    B, T, F = x.shape
    scale = _rand((B,), generator, x.device)
    noise = _rand((B, T, F), generator, x.device)
    shift = torch.randint(-max_shift, max_shift, (B,), generator=generator, device=_draw_device(generator)).to(x.device)
    y = x + (noise * (scale / 10).view(B, 1, 1)).to(x.dtype)
    if T == 0:
        return y.squeeze(0) if single else y
    src = torch.remainder(torch.arange(T, device=x.device).unsqueeze(0) - shift.unsqueeze(1), T)  # [B, T]
    out = torch.gather(y, 1, src.unsqueeze(-1).expand(B, T, F))
    return out.squeeze(0) if single else out


def _standard_gamma(shape: float, n: int, generator: torch.Generator | None, proposals: int = 0) -> torch.Tensor:
    """``n`` Gamma(shape, 1) draws (float64) from ``generator`` by Marsaglia & Tsang (2000).

    Squeeze-free rejection sampling, vectorised. On the CPU the rejected entries are redrawn until
    all are accepted (acceptance > 95% for shape >= 1). On a GPU (or with ``proposals`` > 0) every
    draw gets ``proposals`` (16) candidates at once and keeps the first accepted, so the count of
    rejections is never read back and the step does not wait on the device (all 16 rejected has a
    probability under 1e-20). For ``shape < 1`` the boost ``Gamma(a) = Gamma(a + 1) * U^(1/a)`` is used.
    """
    device = _draw_device(generator)
    if shape < 1.0:
        g = _standard_gamma(shape + 1.0, n, generator, proposals)
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        return g * u.clamp_min(torch.finfo(torch.float64).tiny).pow(1.0 / shape)
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)

    def propose(shape_: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(shape_, generator=generator, device=device, dtype=torch.float64)
        u = torch.rand(shape_, generator=generator, device=device, dtype=torch.float64)
        v = (1.0 + c * z) ** 3
        positive = v > 0
        log_v = torch.log(torch.where(positive, v, torch.ones_like(v)))
        return v, positive & (torch.log(u) < 0.5 * z * z + d - d * v + d * log_v)

    if proposals or device.type != "cpu":
        v, accept = propose((n, proposals or 16))
        first = accept.to(torch.int8).argmax(dim=1, keepdim=True)  # the first accepted candidate
        return torch.where(accept.any(dim=1), d * v.gather(1, first).squeeze(1), torch.full_like(v[:, 0], d))
    out = torch.empty(n, dtype=torch.float64, device=device)
    pending = torch.arange(n, device=device)
    while pending.numel() > 0:
        v, accept = propose((pending.numel(),))
        out[pending[accept]] = d * v[accept]
        pending = pending[~accept]
    return out


def sample_beta(alpha: float, beta: float, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` draws of Beta(alpha, beta) as float64, reproducible from ``generator``.

    ``torch.distributions.Beta`` cannot take a generator (its Gamma sampler uses the global
    RNG), so Beta is built from two generator-driven Gamma samples: ``X / (X + Y)`` with
    ``X ~ Gamma(alpha)``, ``Y ~ Gamma(beta)``. The result is on the generator's device.
    """
    if not (alpha > 0 and beta > 0):
        raise ValueError(f"Beta parameters must be > 0, got {alpha}, {beta}")
    x = _standard_gamma(float(alpha), n, generator)
    y = _standard_gamma(float(beta), n, generator)
    return x / (x + y)


def mixup(
    waves: torch.Tensor,
    targets: torch.Tensor,
    prob: float,
    alpha: float = 10.0,
    generator: torch.Generator | None = None,
    mix_targets: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """AST-style mixup of a batch: waveforms ``[B, n]`` (any ``[B, ...]``), targets ``[B, C]``.

    Each example is mixed with probability ``prob`` with a partner drawn uniformly from the
    *other* examples of the batch (AST draws from the whole dataset, where picking the clip
    itself is negligible; in a batch of 12 it would waste 1 mix in 12), with
    ``lam ~ Beta(alpha, alpha)``: ``x <- lam * x + (1 - lam) * x_partner`` and
    ``y <- lam * y + (1 - lam) * y_partner``. Partners are taken from the *original* batch.
    Unmixed examples are returned bit-identical; a batch of one has no partner and is
    returned unchanged. AST re-centres the mixed waveform;
    our fbank front end subtracts each clip's mean anyway, so no re-centring here.
    Returns new tensors; the inputs are not modified.

    Draws (always all of them, whatever ``prob``, unless ``prob == 0``): who is mixed
    (``B`` uniforms), partner offsets, then the Beta samples.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"mixup probability must be in [0, 1], got {prob}")
    if waves.shape[0] != targets.shape[0]:
        raise ValueError(f"waves and targets disagree on the batch size: {waves.shape[0]} vs {targets.shape[0]}")
    if not (waves.is_floating_point() and targets.is_floating_point()):
        raise ValueError(f"mixup needs floating-point waves and targets, got {waves.dtype} and {targets.dtype}")
    B = waves.shape[0]
    if prob == 0.0 or B < 2:
        return waves.clone(), targets.clone()
    device = _draw_device(generator)
    mixed = torch.rand(B, generator=generator, device=device) < prob
    offset = torch.randint(1, B, (B,), generator=generator, device=device)
    partner = torch.remainder(torch.arange(B, device=device) + offset, B)
    lam = sample_beta(alpha, alpha, B, generator)
    mixed, partner, lam = mixed.to(waves.device), partner.to(waves.device), lam.to(waves.device)

    def _mix(t: torch.Tensor) -> torch.Tensor:
        shape = (B,) + (1,) * (t.dim() - 1)
        lt = lam.view(shape).to(t.dtype)
        blended = lt * t + (1 - lt) * t.index_select(0, partner)
        return torch.where(mixed.view(shape), blended, t)

    return _mix(waves), _mix(targets) if mix_targets else targets.clone()


def augment_features(
    feats: torch.Tensor, cfg: AugmentConfig, R: int = 1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Feature-level augmentation of one training batch ``[B, T, F]`` in AST's order.

    SpecAugment first (``cfg.freqm``, ``cfg.timem // R``, ``cfg.spec_masks`` masks each,
    fill ``cfg.mask_value``), then, if ``cfg.noise``, noise-and-roll: AST applies the masks,
    normalises, then adds noise and rolls. (Mixup is waveform-level: see :func:`mixup`.)
    """
    if cfg.freqm == 0 and coarse_time_mask_param(cfg.timem, R) == 0 and not cfg.noise:
        return feats  # nothing to do: skip the mask build and copy on the training hot path
    out = spec_augment(feats, cfg.freqm, cfg.timem, R, generator, cfg.spec_masks, cfg.mask_value)
    if cfg.noise:
        out = add_noise_and_roll(out, generator)
    return out
