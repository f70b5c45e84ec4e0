"""Self-supervised pretraining: SSAST's joint masked patch modelling, as an :class:`~coarse2fine.objectives.base.Objective`;
registers itself as ``train.objective: masked_patch``.

A training step runs **two separate masked passes**, as SSAST's ``pretrain_joint`` does
(``pretrain_mpc`` then ``pretrain_mpg``, each with its own random mask), and one backward through
their summed loss ``nce_weight * NCE + mse_weight * MSE`` (SSAST: 1 and 10). Both passes go through
a single ``model(feats, mpc_mask=..., mpg_mask=...)`` call, so DistributedDataParallel sees one
forward and one backward. A pass whose weight is 0 is not run (and not counted).

* **Masking**: masked patch embeddings (after the patch conv, before the positional embedding)
  are replaced by the learnable ``mask_embed``. Patch-based models use SSAST's cluster masking
  (:func:`cluster_mask`), frame-based ones uniform random masking (:func:`random_masks`);
  ``masking: auto`` picks cluster iff a patch does not span every mel bin (SSAST's
  ``num_mel_bins != fshape``). Every draw comes from the ``torch.Generator`` passed in.
* **Discriminative (NCE)**, per clip with M masked patches: ``total = targets [M, P] @
  predictions [M, P]^T``; the loss is ``-mean(diag(log_softmax(total, dim=-1)))``, i.e. for each
  true patch the softmax runs over the M predictions of that clip (SSAST's code; its paper's
  eq. (1) normalises the other way, see SSAST issue #13). The negatives are the clip's other M - 1
  masked patches. Accuracy follows SSAST too: prediction b is correct when ``argmax`` over the
  true patches (dim 0 of ``total``) is b.
* **Generative (MSE)**: mean squared error between ``gpredlayer``'s predictions and the masked
  patches, over every value.
* **Coarse-to-fine**: the objective is built with the full-resolution token count
  (``full_tokens``, a constructor argument; :func:`masked_patch_objective` takes it from
  ``pretrain.full_tokens`` or computes it from the run config at R = 1) and masks
  ``round(mask_patch * N / full_tokens)`` of a phase's N tokens (:func:`scaled_mask_count`), so the
  masked fraction stays the same across phases (400 of 512, 100 of 128, 50 of 64). NCE's M - 1
  negatives change with M, so its loss and accuracy are comparable only within a phase.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Mapping, Sequence

import torch

from coarse2fine.model.ssast import PRETRAIN_TASKS, SSAST, ssast_pretrain_flops
from coarse2fine.objectives.base import ObjectiveEntry, register_objective

log = logging.getLogger(__name__)

MASKINGS = ("auto", "cluster", "random")
MASKED_PATCH_METRICS: Mapping[str, bool] = {"masked_acc": True, "recon_mse": False, "val_loss": False}
CLUSTER_FACTORS = (3, 4, 5)  # SSAST: randrange(3) + 3
_MAX_MISSES = 32  # draws of a start that adds nothing before choosing among the useful starts directly


# ----------------------------------------------------------------------------- masking

def max_masked(num_patches: int, cluster: bool) -> int:
    """The most patches a phase masks: N - 2 with cluster masking (index 0 is never masked and one
    more patch stays visible, as SSAST's loop requires), N - 1 with random masking."""
    return num_patches - (2 if cluster else 1)


def scaled_mask_count(mask_patch: int, full_tokens: int, tokens: int, cluster: bool) -> int:
    """Masked patches at a phase with ``tokens`` tokens: ``mask_patch * tokens / full_tokens``
    rounded half up (integer arithmetic, so 400 of 512 gives exactly 100 of 128 and 50 of 64),
    clipped to [1, :func:`max_masked`]. ``ValueError`` when the phase has too few tokens."""
    high = max_masked(tokens, cluster)
    if high < 1:
        raise ValueError(f"{tokens} token(s) are too few to mask with {'cluster' if cluster else 'random'} masking")
    count = (2 * mask_patch * tokens + full_tokens) // (2 * full_tokens)
    return min(max(count, 1), high)


def _clip_rng(generator: torch.Generator | None) -> random.Random:
    """A Python RNG seeded by one draw from ``generator`` (the torch generator holds all the state)."""
    seed = torch.randint(0, 2**62, (1,), generator=generator, device=_device_of(generator))
    return random.Random(int(seed.item()))


def _device_of(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _block(start: int, offsets: Sequence[int], num_patches: int) -> list[int]:
    """SSAST's cluster around ``start``: ``start + time_tokens * i + j`` (rows wrap), kept in (0, N)."""
    return [s for s in (start + o for o in offsets) if 0 < s < num_patches]


def cluster_mask(num_patches: int, time_tokens: int, count: int, generator: torch.Generator | None) -> torch.Tensor:
    """SSAST's ``gen_maskid_patch`` for one clip: ``count`` distinct indices in [1, N) [count].

    A cluster factor c in {3, 4, 5} is drawn per clip; then square c x c blocks around uniformly
    drawn starts (``start + time_tokens * i + j``, wrapping across rows; index 0 excluded) are
    added until ``count`` indices are masked, kept in the order drawn (SSAST truncates its set
    instead). A start that would add nothing is redrawn; after a run of such draws the start is
    chosen uniformly among the useful ones, which is the same distribution and always terminates
    (SSAST's loop hangs when ``count >= N - 1``). ``ValueError`` unless 1 <= count <= N - 1.
    """
    if not 1 <= count <= num_patches - 1:
        raise ValueError(f"cannot draw {count} cluster-masked patches from {num_patches} tokens "
                         f"(index 0 is never masked: at most {num_patches - 1})")
    rng = _clip_rng(generator)
    c = CLUSTER_FACTORS[rng.randrange(len(CLUSTER_FACTORS))]
    offsets = [time_tokens * i + j for i in range(c) for j in range(c)]
    chosen: dict[int, None] = {}
    misses = 0
    while len(chosen) < count:
        if misses < _MAX_MISSES:
            start = rng.randrange(num_patches)
        else:
            useful = [s for s in range(num_patches) if any(i not in chosen for i in _block(s, offsets, num_patches))]
            start = useful[rng.randrange(len(useful))]
        new = [i for i in _block(start, offsets, num_patches) if i not in chosen]
        misses = 0 if new else misses + 1
        chosen.update(dict.fromkeys(new))
    return torch.tensor(list(chosen)[:count], dtype=torch.long)


def random_masks(batch: int, num_patches: int, count: int, generator: torch.Generator | None) -> torch.Tensor:
    """SSAST's ``gen_maskid_frame`` for a batch: ``count`` distinct uniform indices in [0, N) per
    clip [batch, count]. ``ValueError`` unless 1 <= count <= N."""
    if not 1 <= count <= num_patches:
        raise ValueError(f"cannot draw {count} randomly masked patches from {num_patches} tokens")
    noise = torch.rand(batch, num_patches, generator=generator, device=_device_of(generator))
    return noise.argsort(dim=1)[:, :count].cpu()


def draw_masks(
    batch: int, grid: tuple[int, int], count: int, cluster: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """Mask indices [batch, count] (CPU, long) for a (freq, time) token ``grid``."""
    n = grid[0] * grid[1]
    if cluster:
        return torch.stack([cluster_mask(n, grid[1], count, generator) for _ in range(batch)])
    return random_masks(batch, n, count, generator)


# ----------------------------------------------------------------------------- losses

def nce_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SSAST's discriminative loss and its correct count for ``pred`` / ``target`` [B, M, P].

    ``total[b] = target[b] @ pred[b]^T`` [M true, M predicted]; loss = mean over clips and masks
    of ``-diag(log_softmax(total, dim=-1))`` (softmax over the clip's predictions for each true
    patch). Correct: predictions whose argmax over the true patches (dim 1 here, SSAST's dim 0) is
    their own. Computed in float32, outside autocast.
    """
    with torch.autocast(device_type=pred.device.type, enabled=False):
        total = torch.bmm(target.float(), pred.float().transpose(1, 2))
        loss = -torch.diagonal(total.log_softmax(dim=-1), dim1=1, dim2=2).mean()
    with torch.no_grad():
        own = torch.arange(total.shape[1], device=total.device)
        correct = (total.argmax(dim=1) == own).sum()
    return loss, correct


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSAST's generative loss: mean of ``(pred - target) ** 2`` over every value (float32)."""
    return (pred.float() - target.float()).pow(2).mean()


# ----------------------------------------------------------------------------- the objective

def _unwrap(model: torch.nn.Module) -> SSAST:
    """The SSAST inside a DDP / DataParallel wrapper (for its config only; calls go through the wrapper)."""
    inner = getattr(model, "module", model)
    if not isinstance(inner, SSAST):
        raise ValueError(f"masked patch pretraining needs an SSAST model (model.arch: ssast), got {type(inner).__name__}")
    return inner


class MaskedPatchObjective:
    """SSAST's joint discriminative + generative masked patch modelling (see the module docstring).

    ``full_tokens``: the model's token count at full resolution (R = 1), to which ``mask_patch``
    refers. ``eval_seed`` seeds a fresh generator at every :meth:`evaluate`, so the validation
    masks are the same every epoch.
    """

    name = "masked_patch"
    metrics: Mapping[str, bool] = MASKED_PATCH_METRICS

    def __init__(self, full_tokens: int, mask_patch: int = 400, nce_weight: float = 1.0, mse_weight: float = 10.0,
                 masking: str = "auto", eval_seed: int = 0):
        if masking not in MASKINGS:
            raise ValueError(f"pretrain.masking: {masking!r} is not one of {', '.join(MASKINGS)}")
        if min(int(mask_patch), int(full_tokens)) < 1 or min(nce_weight, mse_weight) < 0 or nce_weight + mse_weight <= 0:
            raise ValueError(f"masked patch objective: need mask_patch and full_tokens >= 1 and loss weights >= 0, not both 0; "
                             f"got {mask_patch}, {full_tokens}, {nce_weight}, {mse_weight}")
        self.full_tokens, self.mask_patch = int(full_tokens), int(mask_patch)
        self.nce_weight, self.mse_weight = float(nce_weight), float(mse_weight)
        self.masking, self.eval_seed = masking, int(eval_seed)
        self.last_terms: dict[str, torch.Tensor] = {}

    @property
    def tasks(self) -> tuple[str, ...]:
        """The passes a training step runs: ``mpc`` (NCE) and ``mpg`` (MSE), each unless its weight is 0."""
        weights = {"mpc": self.nce_weight, "mpg": self.mse_weight}
        return tuple(t for t in PRETRAIN_TASKS if weights[t] > 0)

    def uses_cluster(self, model: SSAST) -> bool:
        """Cluster masking for this model? ``auto``: iff a patch does not span every mel bin."""
        return self._cluster(model.config)

    def _cluster(self, config: Any) -> bool:
        if self.masking == "auto":
            return config.grid[0] > 1
        return self.masking == "cluster"

    def num_masked(self, model: SSAST) -> int:
        """Masked patches per clip at the model's current token count (:func:`scaled_mask_count`)."""
        return self.masked_for(model.config)

    def masked_for(self, config: Any) -> int:
        """Masked patches per clip of a model of SSAST config ``config``."""
        return scaled_mask_count(self.mask_patch, self.full_tokens, config.num_tokens, self._cluster(config))

    def _masks(self, model: SSAST, batch: int, tasks: Sequence[str], generator) -> dict[str, torch.Tensor]:
        """One mask [batch, M] per task, drawn in task order (mpc first, as SSAST)."""
        count, cluster = self.num_masked(model), self.uses_cluster(model)
        return {f"{t}_mask": draw_masks(batch, model.config.grid, count, cluster, generator) for t in tasks}

    def _run(self, model, feats: torch.Tensor, tasks: Sequence[str], generator) -> dict[str, Any]:
        """The masked passes of ``tasks`` through ``model(...)`` (the DDP wrapper, if any)."""
        inner = _unwrap(model)
        inner.require_pretrain_heads()
        masks = {k: m.to(feats.device) for k, m in self._masks(inner, feats.shape[0], tasks, generator).items()}
        return model(feats, **masks)

    def training_loss(self, model, feats: torch.Tensor, targets: Any = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """``nce_weight * NCE + mse_weight * MSE`` of one batch (``targets`` are ignored); the terms
        and the masked accuracy are kept, detached, in ``last_terms``."""
        out = self._run(model, feats, self.tasks, generator)
        loss = feats.new_zeros((), dtype=torch.float32)
        terms: dict[str, torch.Tensor] = {}
        if "mpc" in out:
            nce, correct = nce_loss(*out["mpc"])
            loss = loss + self.nce_weight * nce
            terms.update(nce=nce.detach(), masked_acc=correct / out["mpc"][0].shape[:2].numel())
        if "mpg" in out:
            mse = mse_loss(*out["mpg"])
            loss = loss + self.mse_weight * mse
            terms["mse"] = mse.detach()
        self.last_terms = terms
        return loss

    @torch.no_grad()
    def evaluate(self, model, batches, gather) -> dict[str, float]:
        """Masked accuracy, reconstruction MSE and ``val_loss`` (the weighted sum) over the batches,
        both passes always run, with masks from a generator seeded by ``eval_seed``."""
        generator = torch.Generator().manual_seed(self.eval_seed)
        sums = {"clips": 0, "masked": 0, "correct": 0, "nce": 0.0, "mse": 0.0}
        for feats, _ in batches:
            out = self._run(model, feats, PRETRAIN_TASKS, generator)
            nce, correct = nce_loss(*out["mpc"])
            b = feats.shape[0]
            sums["clips"] += b
            sums["masked"] += out["mpc"][0].shape[:2].numel()
            sums["correct"] += int(correct)
            sums["nce"] += float(nce) * b
            sums["mse"] += float(mse_loss(*out["mpg"])) * b
        return self._metrics([sums] if gather is None else gather(sums))

    def _metrics(self, parts: Sequence[Mapping[str, float]]) -> dict[str, float]:
        """Metrics from every process's sums."""
        total = {k: sum(p[k] for p in parts) for k in parts[0]}
        clips = max(1, total["clips"])
        nce, mse = total["nce"] / clips, total["mse"] / clips
        return {
            "masked_acc": total["correct"] / max(1, total["masked"]),
            "recon_mse": mse,
            "val_loss": self.nce_weight * nce + self.mse_weight * mse,
        }

    def training_flops(self, model, batch_size: int = 1) -> int:
        """FLOPs of one training step on ``batch_size`` clips at the model's geometry: every pass run
        (:func:`~coarse2fine.model.ssast.ssast_pretrain_flops`), as FlopCounterMode counts them."""
        inner = _unwrap(model)
        return ssast_pretrain_flops(inner.config, batch_size, self.num_masked(inner), self.tasks)


# ----------------------------------------------------------------------------- factory

def full_resolution_tokens(cfg: Any) -> int:
    """SSAST's token count at R = 1 for a run config (``features.target_length`` x
    ``features.num_mel_bins``, the model settings' patch and stride)."""
    from coarse2fine.compression import InputGeometry
    from coarse2fine.model.ssast import ssast_make_config

    try:
        geo = InputGeometry(int(cfg.features.target_length), int(cfg.features.num_mel_bins))
    except AttributeError:
        raise ValueError("set pretrain.full_tokens: the run config has no features.target_length / num_mel_bins") from None
    return ssast_make_config(cfg.model, 2, geo).num_tokens


def masked_patch_objective(cfg: Any) -> MaskedPatchObjective:
    """The objective for run config ``cfg`` (``cfg.pretrain``: a :class:`~coarse2fine.config.PretrainConfig`);
    ``full_tokens`` from ``pretrain.full_tokens``, else :func:`full_resolution_tokens`."""
    objective = _objective(cfg)
    pre = cfg.pretrain
    log.info("masked patch pretraining: %d of %d tokens masked at full resolution (scaled per phase), "
             "loss %g x NCE + %g x MSE, masking %s", pre.mask_patch, objective.full_tokens, pre.nce_weight,
             pre.mse_weight, pre.masking)
    return objective


def _objective(cfg: Any) -> MaskedPatchObjective:
    pre = cfg.pretrain
    full = pre.full_tokens if pre.full_tokens is not None else full_resolution_tokens(cfg)
    return MaskedPatchObjective(full, pre.mask_patch, pre.nce_weight, pre.mse_weight, pre.masking)


def masked_per_phase(cfg: Any) -> list[tuple[int, int]]:
    """``(R, masked patches per clip)`` of each phase of run config ``cfg``: ``masked_acc``'s
    chance level in a phase is 1 / its count."""
    objective = _objective(cfg)
    return [(setup.R, objective.masked_for(setup.model_config))
            for setup in (cfg.phase(i) for i in range(len(cfg.phases())))]


register_objective("masked_patch", ObjectiveEntry(
    masked_patch_objective, MASKED_PATCH_METRICS,
    archs=("ssast",), model_overrides={"pretrain_heads": True},
))
