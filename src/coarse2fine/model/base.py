"""The model seam: what the trainer, accounting, checkpoints, predict and export need of a model.

Every model family (AST, HTS-AT, SSAST) is a :class:`C2FModel`: an ``nn.Module`` that

* takes features ``[batch, frames, mel bins]`` (``forward`` returns class logits);
* knows the :class:`~coarse2fine.compression.InputGeometry` it is set to (``geometry``) and moves
  to another one with :meth:`C2FModel.set_geometry`, carrying every learned weight over (the model
  decides what a geometry means for its tokens: AST re-grids patches and interpolates its
  positional embedding, HTS-AT narrows its windows);
* counts its tokens (``num_tokens``) and its analytic training FLOPs per clip
  (:meth:`C2FModel.training_flops`);
* serialises its architecture config (``config.to_dict()`` / the registry's ``from_dict``);
* names the parameters of its classifier head (``head_prefixes``), which are dropped when a
  checkpoint with other classes initialises it.

Families register under a name in :mod:`coarse2fine.model.registry` (``model.arch`` in a config).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping, TypeVar

import torch
import torch.nn as nn

from coarse2fine.compression import InputGeometry

C = TypeVar("C")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-friendly dict (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def config_from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
    """The config dataclass ``cls`` from :func:`config_to_dict`'s output; unknown keys are an error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s): {', '.join(sorted(unknown))}")
    return cls(**d)


class ConfigDict:
    """Mixin for a family's config dataclass: ``to_dict`` / ``from_dict`` (``model_config.json``)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples as lists)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        return config_from_dict(cls, d)


class C2FModel(nn.Module):
    """Base class of every model family; subclasses implement the methods that raise here."""

    arch: ClassVar[str] = ""
    head_prefixes: ClassVar[tuple[str, ...]] = ("head.",)
    config: Any

    @property
    def geometry(self) -> InputGeometry:
        """The input geometry the model is set to now (by default its config's ``geometry``)."""
        return self.config.geometry

    def set_geometry(self, geometry: InputGeometry) -> None:
        """Move to ``geometry`` carrying every learned weight over. Changed parameters become new
        ``nn.Parameter`` objects, so build the optimizer afterwards. The same geometry is a no-op."""
        raise NotImplementedError

    @property
    def num_tokens(self) -> int:
        """Tokens the first transformer stage sees at the current geometry (prefix tokens excluded;
        by default its config's ``num_tokens``)."""
        return self.config.num_tokens

    @property
    def train_tokens(self) -> int:
        """Tokens a training forward sees (fewer than ``num_tokens`` with patchout)."""
        return self.num_tokens

    def training_flops(self, batch_size: int = 1) -> int:
        """FLOPs of one forward + backward on ``batch_size`` clips at the current geometry, counted
        as ``torch.utils.flop_counter.FlopCounterMode`` counts them. Families override it with an
        analytic count; by default the count is measured once per geometry on a fresh model of
        this config and cached (:func:`coarse2fine.model.flops.measured_model_flops`)."""
        from coarse2fine.model.flops import measured_model_flops

        return batch_size * measured_model_flops(self, backward=True)

    def forward_flops(self, batch_size: int = 1) -> int:
        """FLOPs of one forward pass (evaluation) on ``batch_size`` clips (analytic, or measured
        and cached like :meth:`training_flops`)."""
        from coarse2fine.model.flops import measured_model_flops

        return batch_size * measured_model_flops(self, backward=False)

    @property
    def flops_source(self) -> str:
        """``analytic`` when the family counts its own training FLOPs, else ``measured``."""
        return "measured" if type(self).training_flops is C2FModel.training_flops else "analytic"

    @property
    def num_classes(self) -> int:
        return int(self.config.num_classes)

    def config_dict(self) -> dict[str, Any]:
        """The architecture config with its ``arch`` name, as written to ``model_config.json``."""
        return {"arch": self.arch, **self.config.to_dict()}

    def head_keys(self, keys: Any = None) -> list[str]:
        """State-dict keys of the classifier head (of ``keys``, default this model's)."""
        keys = self.state_dict().keys() if keys is None else keys
        return [k for k in keys if k.startswith(self.head_prefixes)]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error unless ``x`` is ``[batch, frames, mel bins]`` of the current geometry."""
        geo = self.geometry
        if x.ndim != 3 or tuple(x.shape[1:]) != (geo.frames, geo.mel_bins):
            raise ValueError(
                f"{type(self).__name__} expects input [batch, frames, mel bins] = [B, {geo.frames}, {geo.mel_bins}], "
                f"got {list(x.shape)}"
            )

    def grid_settings(self) -> dict[str, tuple[int, ...]]:
        """The config keys (``model.KEY``) of the token grid at full resolution that
        :meth:`match_geometry` adopts from another model without a word, e.g. AST's patch stride:
        a transfer between models that differ in them says so. None by default."""
        return {}

    def match_geometry(self, other: C2FModel) -> None:
        """Move to ``other``'s geometry, so that ``other`` can take this model's weights."""
        self.set_geometry(other.geometry)
