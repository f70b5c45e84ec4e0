"""The objective seam: what a run optimises and how it is scored.

An :class:`Objective` turns a batch of features into a training loss, scores a validation set,
declares its metrics with their direction (higher or lower is better), and counts the training
FLOPs of one step of everything it runs. The training loop, the savings tables and "first epoch
that beats the baseline" only go through this interface, so a loss-like metric (reconstruction
error of self-supervised pretraining) works as well as accuracy.

Objectives register by name (``train.objective`` in a config), each from its own module:
:mod:`.classification` (supervised) and :mod:`.masked_patch` (SSAST's self-supervised
pretraining). This module knows no model and no objective.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping, Protocol

import torch

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
