"""Temporal compression of spectrograms: one interface, three methods, identity at R = 1.

A :class:`Compression` says, for one training phase, how the input is made coarser in time:

- ``fshift``: the fbank frame shift is multiplied by R (fewer frames are computed at all);
- ``avgpool`` / ``maxpool``: full-resolution frames pooled over time, kernel = stride = R;
- ``patch``: full-resolution frames, patches R times wider in time (p x pR), so R times fewer
  time tokens; the patch-embedding weights are moved by bilinear or PI-resize.

Each method touches a different stage of the pipeline, so the object answers three questions:
which features to compute (:meth:`Compression.feature_spec`), what to do to them before the model
(:meth:`Compression.transform`) and what the model's input becomes
(:meth:`Compression.input_geometry`). It says nothing about tokens: each model decides what an
:class:`InputGeometry` means for its own token grid (AST's patches, HTS-AT's windows).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from coarse2fine.features import FeatureSpec, extract, target_frames_for_shift

METHODS = ("fshift", "avgpool", "maxpool", "patch")
PATCH_RESIZES = ("bilinear", "pi")
PatchResize = Literal["bilinear", "pi"]
VARIANTS: dict[str, tuple[str, PatchResize]] = {
    "fshift": ("fshift", "pi"),
    "avgpool": ("avgpool", "pi"),
    "maxpool": ("maxpool", "pi"),
    "patch-bl": ("patch", "bilinear"),
    "patch-pi": ("patch", "pi"),
}
"""The methods as the command line and the experiment tables name them: ``patch-bl`` / ``patch-pi``
are ``patch`` with a bilinear or PI-resized kernel; each with its ``(method, patch_resize)``."""


def resolve_method(method: str, patch_resize: PatchResize | None = None) -> tuple[str, PatchResize]:
    """``(method, patch_resize)`` of a method named as a config names it (:data:`METHODS`) or as
    the command line does (:data:`VARIANTS`). ``patch_resize``: given explicitly, or None (the
    variant's, else ``pi``); one that contradicts a variant's is refused."""
    if method in METHODS:
        return method, patch_resize or "pi"
    if method not in VARIANTS:
        names = ", ".join(dict.fromkeys([*METHODS, *VARIANTS]))
        raise ValueError(f"unknown compression method {method!r}; choose one of {names}")
    base, resize = VARIANTS[method]
    if patch_resize is not None and patch_resize != resize:
        raise ValueError(f"method {method!r} is {base!r} with patch_resize={resize!r}; patch_resize={patch_resize!r} "
                         f"contradicts it (give method={base!r} with patch_resize, or {method!r} alone)")
    return base, resize


@dataclass(frozen=True)
class InputGeometry:
    """What a phase's model input is.

    ``frames`` x ``mel_bins``: the feature matrix the model receives. ``time_factor``: how many
    times fewer frames than at full resolution (R for Fshift and Pool, 1 for Patch).
    ``time_patch_factor``: how many times wider in time a patch is than at full resolution (R for
    the Patch method, else 1), with ``patch_resize`` the kernel resize to use when it changes.
    """

    frames: int
    mel_bins: int
    time_factor: int = 1
    time_patch_factor: int = 1
    patch_resize: PatchResize = "pi"

    def __post_init__(self) -> None:
        if min(self.frames, self.mel_bins, self.time_factor, self.time_patch_factor) < 1:
            raise ValueError(f"input geometry must be positive, got {self}")
        if self.patch_resize not in PATCH_RESIZES:
            raise ValueError(f"patch_resize must be one of {', '.join(PATCH_RESIZES)}, got {self.patch_resize!r}")


@dataclass(frozen=True)
class Compression:
    """Time compression by factor ``R`` with ``method`` (see module docstring).

    ``scale_window`` (Fshift only) also multiplies the 25 ms analysis window by R, so that no
    samples fall between frames; the paper keeps the window fixed, which is the default.
    """

    method: str = "fshift"
    R: int = 1
    patch_resize: PatchResize = "pi"
    scale_window: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown compression method {self.method!r}; choose one of {', '.join(METHODS)}")
        if int(self.R) != self.R or self.R < 1:
            raise ValueError(f"compression factor R must be a positive integer, got {self.R!r}")
        if self.patch_resize not in PATCH_RESIZES:
            raise ValueError(f"patch_resize must be one of {', '.join(PATCH_RESIZES)}, got {self.patch_resize!r}")

    @property
    def label(self) -> str:
        """Short human name, as in the paper's tables (e.g. ``Patch PI``, ``Avg Pool``)."""
        return {
            "fshift": "Fshift",
            "avgpool": "Avg Pool",
            "maxpool": "Max Pool",
            "patch": f"Patch {'PI' if self.patch_resize == 'pi' else 'BL'}",
        }[self.method]

    @property
    def time_factor(self) -> int:
        """How many times fewer frames the model's input has (Patch keeps every frame)."""
        return 1 if self.method == "patch" else self.R

    def feature_spec(self, base: FeatureSpec) -> FeatureSpec:
        """Features to compute for this phase; only Fshift changes them."""
        if self.method != "fshift" or self.R == 1:
            return base
        return dataclasses.replace(
            base,
            frontend=base.frontend.scaled(self.R, self.scale_window),
            target_length=target_frames_for_shift(base.target_length, self.R),
        )

    @property
    def transform_id(self) -> tuple[str, int] | None:
        """What :meth:`transform` does to features: ``(method, R)`` for pooling at R > 1, None for
        the identity (every method at R = 1, Fshift and Patch at any R). Two phases with the same
        features and the same ``transform_id`` have the same model input."""
        return (self.method, self.R) if self.R > 1 and self.method in ("avgpool", "maxpool") else None

    def transform(self, feats: torch.Tensor) -> torch.Tensor:
        """Compress ``feats`` [B, T, F] along time (pooling methods); identity otherwise."""
        if self.transform_id is None:
            return feats
        return pool_time(feats, self.R, "avg" if self.method == "avgpool" else "max")

    def input_geometry(self, frames: int, mel_bins: int) -> InputGeometry:
        """The model input of this phase, given the full-resolution ``frames`` x ``mel_bins``."""
        if self.method == "patch":
            return InputGeometry(frames, mel_bins, 1, self.R, self.patch_resize)
        return InputGeometry(target_frames_for_shift(frames, self.R), mel_bins, self.R, 1, self.patch_resize)


def pool_time(feats: torch.Tensor, R: int, mode: Literal["avg", "max"]) -> torch.Tensor:
    """Pool ``feats`` [B, T, F] over time with kernel = stride = R (trailing frames dropped)."""
    x = feats.transpose(1, 2)  # [B, F, T]
    x = F.avg_pool1d(x, R, R) if mode == "avg" else F.max_pool1d(x, R, R)
    return x.transpose(1, 2).contiguous()


# ----------------------------------------------------------------------------- a phase's model input

InputKind = Literal["waveforms", "features", "model_input"]
INPUT_KINDS: tuple[str, ...] = ("waveforms", "features", "model_input")


def phase_input(x: torch.Tensor, kind: str, phase_features: FeatureSpec | None, compression: Compression) -> torch.Tensor:
    """A phase's model input ``[B, frames, mel bins]`` from a batch of ``kind``, given the phase's
    own features (``compression.feature_spec(full)``): waveforms ``[B, samples]`` -> features
    (computed batched on ``x``'s device) -> compressed; features of the phase -> compressed;
    ``model_input`` as it is. The step of coarse2fine's training loop calls this."""
    if kind == "model_input":
        return x
    if kind == "waveforms":
        if phase_features is None:
            raise ValueError("features from waveforms need the phase's FeatureSpec")
        x = extract(x, phase_features)
    elif kind != "features":
        raise ValueError(f"unknown input kind {kind!r}; choose one of {', '.join(INPUT_KINDS)}")
    return compression.transform(x)


def compress(x: torch.Tensor, compression: Compression, kind: InputKind = "features",
             spec: FeatureSpec | None = None) -> torch.Tensor:
    """The model input of the phase that ``compression`` describes, from a batch of ``kind``:

    * ``waveforms`` ``[B, samples]``: features with the phase's settings (``spec`` is the
      full-resolution :class:`~coarse2fine.features.FeatureSpec`; Fshift multiplies its frame shift
      by R), then pooled (Avg/Max);
    * ``features`` ``[B, frames, mel bins]`` at full resolution: pooled (Avg/Max) or left as they
      are (Patch, R = 1). Fshift at R > 1 changes how features are computed, so it needs
      waveforms: an error says so;
    * ``model_input``: already the phase's input, returned as it is.
    """
    if not isinstance(compression, Compression):
        hint = " (schedule.compression(i) gives it)" if hasattr(compression, "R") or isinstance(compression, str) else ""
        raise TypeError(f"compress(x, compression, ...): compression must be a Compression, not a "
                        f"{type(compression).__name__}{hint}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"compress: x must be a torch.Tensor, not a {type(x).__name__} (torch.as_tensor(x) converts "
                        "an array)")
    if kind == "waveforms" and x.ndim != 2:
        raise ValueError(f"waveforms must be [batch, samples], got shape {list(x.shape)} (x.unsqueeze(0) for one clip)")
    if kind == "waveforms":
        if spec is None:
            raise ValueError("compressing waveforms needs the full-resolution FeatureSpec (spec=...)")
        return phase_input(x, kind, compression.feature_spec(spec), compression)
    if kind == "features" and compression.method == "fshift" and compression.R > 1:
        raise ValueError("Fshift changes the frame shift the features are computed with: give waveforms "
                         "(kind='waveforms' with the FeatureSpec), not features")
    if kind == "features" and x.ndim != 3:
        raise ValueError(f"features must be [batch, frames, mel bins], got shape {list(x.shape)}")
    return phase_input(x, kind, None, compression)
