"""What a run optimises and how it is scored: the objective seam and registry (:mod:`.base`), and
the objectives, each registering itself from its own module when this package is imported:
supervised classification (:mod:`.classification`) and SSAST's masked patch pretraining
(:mod:`.masked_patch`). Metrics live in :mod:`.metrics`."""

from coarse2fine.objectives import masked_patch  # noqa: F401  (registers masked_patch)
from coarse2fine.objectives.base import (
    Batches,
    Gather,
    Objective,
    ObjectiveEntry,
    build_objective,
    objective_entry,
    objective_metrics,
    objective_names,
    register_objective,
)
from coarse2fine.objectives.classification import LOSSES, Classification, classification_loss

__all__ = [
    "LOSSES", "Batches", "Classification", "Gather", "Objective", "ObjectiveEntry", "build_objective",
    "classification_loss", "objective_entry", "objective_metrics", "objective_names", "register_objective",
]
