"""The objective seam: what a run optimises and how it is scored.

An :class:`Objective` turns a batch of features into a training loss, scores a validation set,
declares its metrics with their direction (higher or lower is better), and counts the training
FLOPs of one step of everything it runs. The training loop, the savings tables and "first epoch
that beats the baseline" only go through this interface, so a loss-like metric (reconstruction
error of self-supervised pretraining) works as well as accuracy.

:class:`Classification` is the supervised objective (``train.loss``: ``ce`` single-label or
``bce`` multi-label; metrics acc, mAP, mAUC, d-prime and val_loss). Objectives register by name
(``train.objective`` in a config); self-supervised pretraining adds its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from coarse2fine.metrics import evaluate as classification_metrics
from coarse2fine.ssl import MASKED_PATCH_METRICS, masked_patch_objective

Gather = Callable[[Any], list[Any]]
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class Objective(Protocol):
    """What the training loop needs of an objective."""

    name: ClassVar[str]
    metrics: Mapping[str, bool]
    """Every metric :meth:`evaluate` returns, mapped to True when higher is better."""

    def training_loss(self, model: torch.nn.Module, feats: torch.Tensor, targets: torch.Tensor,
                      generator: torch.Generator | None) -> torch.Tensor:
        """Scalar loss of one (micro-)batch, averaged over its clips; random draws use ``generator``."""
        ...

    def evaluate(self, model: torch.nn.Module, batches: Batches, gather: Gather) -> dict[str, float]:
        """Metrics over a validation set given as (features, targets) batches; ``gather`` collects
        a picklable object from every process (a one-element list in a single process)."""
        ...

    def training_flops(self, model: Any, batch_size: int = 1) -> int:
        """Analytic FLOPs of one training step on ``batch_size`` clips at the model's geometry."""
        ...


LOSSES = ("ce", "bce")


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """``ce``: cross-entropy against (possibly soft) class distributions; ``bce``: multi-label."""
    if kind == "ce":
        return F.cross_entropy(logits, targets)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, targets)
    raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")


class Classification:
    """Supervised classification: ``ce`` (softmax scores) or ``bce`` (sigmoid scores)."""

    name = "classification"
    metrics: Mapping[str, bool] = {"acc": True, "mAP": True, "mAUC": True, "d_prime": True, "val_loss": False}

    def __init__(self, loss: str = "ce"):
        if loss not in LOSSES:
            raise ValueError(f"train.loss: {loss!r} is not one of {', '.join(LOSSES)}")
        self.loss = loss

    def training_loss(self, model, feats, targets, generator=None) -> torch.Tensor:
        return classification_loss(model(feats).float(), targets, self.loss)

    @torch.no_grad()
    def evaluate(self, model, batches: Batches, gather: Gather) -> dict[str, float]:
        scores, targets, loss_sum = [], [], 0.0
        for feats, y in batches:
            logits = model(feats).float()
            loss_sum += classification_loss(logits, y, self.loss).item() * len(feats)
            probs = logits.softmax(-1) if self.loss == "ce" else logits.sigmoid()
            scores.append(probs.cpu().numpy())
            targets.append(y.cpu().numpy())
        parts = gather((scores, targets, loss_sum))
        all_scores = np.concatenate([s for p in parts for s in p[0]])
        all_targets = np.concatenate([t for p in parts for t in p[1]])
        return {"val_loss": sum(p[2] for p in parts) / max(1, len(all_scores)), **classification_metrics(all_scores, all_targets)}

    def training_flops(self, model, batch_size: int = 1) -> int:
        return model.training_flops(batch_size)


ObjectiveFactory = Callable[[Any], Objective]


@dataclass(frozen=True)
class ObjectiveEntry:
    """A registered objective: ``factory(run_config)`` builds it; ``metrics`` (name -> higher is
    better) is what it reports, known before anything is built; ``archs`` the model families it
    trains (empty: any); ``model_overrides`` what it needs of the model's config (e.g. SSAST's
    pretraining heads)."""

    factory: ObjectiveFactory
    metrics: Mapping[str, bool]
    archs: tuple[str, ...] = ()
    model_overrides: Mapping[str, Any] = field(default_factory=dict)


_OBJECTIVES: dict[str, ObjectiveEntry] = {}


def register_objective(name: str, entry: ObjectiveEntry) -> None:
    """Make ``train.objective: <name>`` available."""
    _OBJECTIVES[name] = entry


def objective_names() -> list[str]:
    return sorted(_OBJECTIVES)


def objective_entry(name: str) -> ObjectiveEntry:
    """The registered objective ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in _OBJECTIVES:
        raise ValueError(f"train.objective: {name!r} is not one of {', '.join(objective_names())}")
    return _OBJECTIVES[name]


def objective_metrics(name: str) -> Mapping[str, bool]:
    """The metrics objective ``name`` reports, each mapped to True when higher is better."""
    return objective_entry(name).metrics


def build_objective(name: str, cfg: Any) -> Objective:
    """The objective ``name`` for run config ``cfg``."""
    return objective_entry(name).factory(cfg)


register_objective("classification", ObjectiveEntry(lambda cfg: Classification(cfg.train.loss), Classification.metrics))
register_objective("masked_patch", ObjectiveEntry(
    masked_patch_objective, MASKED_PATCH_METRICS,
    archs=("ssast",), model_overrides={"pretrain_heads": True},
))
