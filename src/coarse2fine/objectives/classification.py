"""Supervised classification, the objective of every fine-tuning run: ``train.loss`` ``ce``
(single-label, softmax scores) or ``bce`` (multi-label, sigmoid scores); metrics acc, mAP, mAUC,
d-prime and val_loss. Registers itself as ``train.objective: classification``."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from coarse2fine.objectives.base import Batches, Gather, ObjectiveEntry, register_objective
from coarse2fine.objectives.metrics import evaluate as classification_metrics

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


register_objective("classification", ObjectiveEntry(lambda cfg: Classification(cfg.train.loss), Classification.metrics))
