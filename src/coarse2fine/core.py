"""The functional core of coarse-to-fine training: what any training loop needs, as plain functions.

Coarse-to-fine training trains the first phases on spectrograms compressed in time by a factor R
and the last phase at full resolution, carrying the weights across. A training loop that already
exists needs five things for it, and this module gives each as a typed function of plain values:

* **where it stands**: :class:`Schedule` (phases, compression method, full-resolution input) and
  :meth:`Schedule.at_epoch` / :meth:`Schedule.at_step`, or :func:`phase_at` on a list of phases:
  the phase of a 0-based epoch or step and its R;
* **what the model sees**: :func:`compress` turns a batch of waveforms, full-resolution features
  or an already compressed model input into the phase's model input (every method: Fshift
  computes features with an R times longer frame shift, Avg/Max pooling pools frames, Patch
  leaves the frames and widens the model's patches);
* **the model across a phase change**: :func:`carry` moves a coarse2fine model
  (:class:`~coarse2fine.model.base.C2FModel`: AST, HTS-AT with its Swin windows, SSAST) or a
  transformers ``ASTForAudioClassification`` to a phase's input geometry, interpolating the
  positional embedding and resizing the patch kernel (bilinear or PI-resize); the optimizer and LR
  schedule are then built anew, as the paper does;
* **what a step costs**: :func:`step_flops` at the model's current geometry, and
  :func:`schedule_flops` for every phase of a schedule;
* **what it saved**: :func:`epoch_records` turns ``(epoch, R, metric, FLOPs, seconds)`` rows into
  records and :func:`savings` prints the paper's savings table against a baseline.

coarse2fine's own training loop calls the same functions (:mod:`coarse2fine.training`), as do the
Lightning callback and the Hugging Face trainer (:mod:`coarse2fine.integrations`). Nothing here
imports an optional dependency.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence, Union

import torch

from coarse2fine.compression import METHODS, Compression, InputGeometry, PatchResize
from coarse2fine.features import FeatureSpec, extract
from coarse2fine.model.base import C2FModel
from coarse2fine.model.hf import hf_geometry, hf_set_geometry, hf_training_flops, is_hf_ast
from coarse2fine.phases import Phase, build_phases
from coarse2fine.report.savings import format_table, savings_table
from coarse2fine.training.records import EpochRecord

InputKind = Literal["waveforms", "features", "model_input"]
INPUT_KINDS: tuple[str, ...] = ("waveforms", "features", "model_input")
RecordRow = Union[EpochRecord, Mapping[str, Any], Sequence[float]]

__all__ = [
    "INPUT_KINDS", "InputKind", "PhaseAt", "RecordRow", "Schedule", "carry", "compress", "epoch_records", "geometry_of",
    "phase_at", "phase_input", "savings", "schedule_flops", "step_flops",
]


# ----------------------------------------------------------------------------- where training stands

@dataclass(frozen=True)
class PhaseAt:
    """A position in a schedule: phase ``index`` (0-based) with factor ``R``, ``phase_epoch``
    (0-based epoch within the phase) and whether it is the ``last`` (full-resolution) phase."""

    index: int
    R: int
    phase_epoch: int
    last: bool


def phase_at(phases: Sequence[Phase], epoch: int) -> PhaseAt:
    """The phase that trains 0-based ``epoch`` of ``phases`` (an epoch past the end belongs to the
    last phase, so a loop that trains on stays at full resolution)."""
    if not phases:
        raise ValueError("the schedule has no phases")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0 (0-based), got {epoch}")
    start = 0
    for i, ph in enumerate(phases):
        if epoch < start + ph.epochs or i == len(phases) - 1:
            return PhaseAt(i, ph.R, epoch - start, i == len(phases) - 1)
        start += ph.epochs
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Schedule:
    """A coarse-to-fine schedule for a model input of ``frames`` x ``mel_bins`` at full resolution:
    the ``phases`` (factor R and epochs each, coarsest first, the last at R = 1) and how the input
    is compressed (``method``: fshift, avgpool, maxpool or patch; ``patch_resize`` of the Patch
    method's kernel; ``scale_window``: Fshift also widens the analysis window)."""

    phases: tuple[Phase, ...]
    frames: int
    mel_bins: int
    method: str = "fshift"
    patch_resize: PatchResize = "pi"
    scale_window: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "phases", tuple(self.phases))
        if not self.phases or not all(isinstance(p, Phase) for p in self.phases):
            raise ValueError(f"phases must be a non-empty sequence of Phase, got {self.phases!r}")
        if self.phases[-1].R != 1:
            raise ValueError(f"the last phase must be full resolution (R=1), got R={self.phases[-1].R}")
        if self.method not in METHODS:
            raise ValueError(f"unknown compression method {self.method!r}; choose one of {', '.join(METHODS)}")
        if min(self.frames, self.mel_bins) < 1:
            raise ValueError(f"frames and mel_bins must be positive, got {self.frames} x {self.mel_bins}")
        for i in range(len(self.phases)):
            self.compression(i)  # checks R and patch_resize

    @classmethod
    def build(cls, schedule: str | Sequence[int], epochs: int, *, frames: int, mel_bins: int, method: str = "fshift",
              phase_epochs: Sequence[int] | None = None, initial_fraction: float | None = None,
              patch_resize: PatchResize = "pi", scale_window: bool = False) -> Schedule:
        """A schedule from its text (``"4-1"``, ``"4-2-1"``) and the baseline's ``epochs``: each
        phase's epochs are ``phase_epochs``, or the paper's split (the initial phases share about
        25 % of ``epochs``, 30 % for three phases or more; the last phase gets ``epochs``)."""
        phases = build_phases(schedule, epochs, phase_epochs, initial_fraction)
        return cls(tuple(phases), frames, mel_bins, method, patch_resize, scale_window)

    @property
    def epochs(self) -> int:
        """Epochs of the whole schedule."""
        return sum(p.epochs for p in self.phases)

    def start_epoch(self, index: int) -> int:
        """0-based first epoch of phase ``index``."""
        return sum(p.epochs for p in self.phases[:index])

    def at_epoch(self, epoch: int) -> PhaseAt:
        """The phase of 0-based ``epoch`` (see :func:`phase_at`)."""
        return phase_at(self.phases, epoch)

    def at_step(self, step: int, steps_per_epoch: int) -> PhaseAt:
        """The phase of 0-based optimizer ``step`` when phases are counted in steps: phase ``i``
        starts after ``start_epoch(i) * steps_per_epoch`` steps."""
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        return phase_at(self.phases, step // steps_per_epoch)

    def compression(self, index: int) -> Compression:
        """How phase ``index`` compresses the input."""
        return Compression(self.method, self.phases[index].R, self.patch_resize, self.scale_window)

    def geometry(self, index: int) -> InputGeometry:
        """The model input of phase ``index``."""
        return self.compression(index).input_geometry(self.frames, self.mel_bins)


# ----------------------------------------------------------------------------- what the model sees

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


# ----------------------------------------------------------------------------- the model across phases

def carry(model: torch.nn.Module, geometry: InputGeometry) -> None:
    """Move ``model`` to ``geometry`` in place, carrying every learned weight over: the positional
    embedding is interpolated to the new token grid, a wider patch's kernel is resized (bilinear or
    PI-resize, ``geometry.patch_resize``), HTS-AT's Swin windows follow the new token grid. Works
    for coarse2fine's models and transformers' ``ASTForAudioClassification`` / ``ASTModel``.

    Parameters that change become new ``nn.Parameter`` objects: build the optimizer (and LR
    schedule) afterwards, as the paper does at every phase change. The same geometry is a no-op.
    """
    if isinstance(model, C2FModel):
        model.set_geometry(geometry)
    elif is_hf_ast(model):
        hf_set_geometry(model, geometry)
    else:
        raise TypeError(f"cannot move a {type(model).__name__} to another input geometry: carry() knows coarse2fine's "
                        "models (AST, HTS-AT, SSAST) and transformers' ASTForAudioClassification / ASTModel")


def geometry_of(model: torch.nn.Module) -> InputGeometry:
    """The input geometry ``model`` is set to now (what :func:`carry` moved it to last)."""
    if isinstance(model, C2FModel):
        return model.geometry
    if is_hf_ast(model):
        return hf_geometry(model)
    raise TypeError(f"{type(model).__name__} is neither a coarse2fine model nor a transformers AST")


# ----------------------------------------------------------------------------- FLOPs

def step_flops(model: torch.nn.Module, batch_size: int = 1, objective: Any = None) -> int:
    """Analytic FLOPs of one training step (forward and backward) on ``batch_size`` clips at the
    model's current geometry, counted as ``torch.utils.flop_counter.FlopCounterMode`` counts them.
    ``objective`` (a coarse2fine objective) counts its whole step, e.g. SSAST's two masked passes;
    without it, a classifier's step."""
    if objective is not None:
        return int(objective.training_flops(model, batch_size))
    if isinstance(model, C2FModel):
        return int(model.training_flops(batch_size))
    if is_hf_ast(model):
        return hf_training_flops(model, batch_size)
    raise TypeError(f"no analytic FLOPs for {type(model).__name__}: step_flops() knows coarse2fine's models and "
                    "transformers' AST")


def schedule_flops(model: torch.nn.Module, schedule: Schedule, batch_size: int = 1, objective: Any = None) -> list[int]:
    """The FLOPs of a training step in each phase of ``schedule`` (see :func:`step_flops`),
    counted on a copy of ``model`` on the meta device (no memory, ``model`` untouched)."""
    out = []
    for i in range(len(schedule.phases)):
        shadow = _meta_copy(model)
        carry(shadow, schedule.geometry(i))
        out.append(step_flops(shadow, batch_size, objective))
    return out


def _meta_copy(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` copied with its parameters and buffers on the meta device (shapes only)."""
    memo: dict[int, Any] = {}
    for t in [*model.parameters(), *model.buffers()]:
        memo[id(t)] = torch.nn.Parameter(t.detach().to("meta"), t.requires_grad) if isinstance(t, torch.nn.Parameter) \
            else t.detach().to("meta")
    return copy.deepcopy(model, memo)


# ----------------------------------------------------------------------------- savings

def epoch_records(rows: Iterable[RecordRow], metric: str = "acc") -> list[EpochRecord]:
    """Records of one run, in training order, from any of:

    * ``(epoch, R, metric value, FLOPs, seconds)`` tuples: the epoch's own training FLOPs and
      seconds (the cumulative sums are added up here; a new phase starts where R changes);
    * dicts with ``epoch``, ``R``, ``metric``'s value and ``train_flops`` / ``train_time`` (or
      ``flops`` / ``time``), and optionally ``phase`` (0-based; needed where a phase change keeps
      R, as in the restart control ``1-1``), or a run log's full records (with ``cum_flops`` /
      ``cum_time``);
    * :class:`~coarse2fine.training.records.EpochRecord` (kept as they are).
    """
    out: list[EpochRecord] = []
    cum_flops, cum_time, phase, last_R, phase_epoch = 0.0, 0.0, -1, None, 0
    for i, row in enumerate(rows):
        if isinstance(row, EpochRecord):
            out.append(row)
            continue
        if isinstance(row, Mapping) and "cum_flops" in row and "cum_time" in row:
            out.append(EpochRecord.from_dict(row))
            continue
        epoch, R, value, flops, seconds = _row_values(row, metric, i)
        given = int(row["phase"]) if isinstance(row, Mapping) and "phase" in row else None
        if (R != last_R) if given is None else (given != phase):
            phase, last_R, phase_epoch = (phase + 1 if given is None else given), R, 0
        phase_epoch += 1
        cum_flops += flops
        cum_time += seconds
        out.append(EpochRecord(epoch=epoch, phase=phase, R=R, phase_epoch=phase_epoch, cum_flops=cum_flops,
                               cum_time=cum_time, train_flops=flops, train_time=seconds, metrics={metric: value}))
    return out


def _row_values(row: Mapping[str, Any] | Sequence[float], metric: str, i: int) -> tuple[int, int, float, float, float]:
    if isinstance(row, Mapping):
        try:
            flops = row["train_flops"] if "train_flops" in row else row["flops"]
            seconds = row["train_time"] if "train_time" in row else row["time"]
            return int(row["epoch"]), int(row["R"]), float(row[metric]), float(flops), float(seconds)
        except KeyError as err:
            raise ValueError(f"record {i} lacks {err.args[0]!r} (needs epoch, R, {metric!r}, train_flops, "
                             "train_time)") from None
    if len(row) != 5:
        raise ValueError(f"record {i}: expected (epoch, R, {metric}, FLOPs, seconds), got {tuple(row)!r}")
    epoch, R, value, flops, seconds = row
    return int(epoch), int(R), float(value), float(flops), float(seconds)


def savings(baseline: Iterable[RecordRow], runs: Mapping[str, Iterable[RecordRow]], metric: str = "acc", *,
            baseline_name: str = "Baseline", fmt: str | None = "markdown", higher: bool | None = None) -> Any:
    """The paper's savings table of ``runs`` against ``baseline`` (records as
    :func:`epoch_records` takes them): the metric at the first final-phase epoch that reaches the
    baseline's best, the FLOPs and time saved up to there, the best metric and its gain.
    Returns the table as text in ``fmt`` (markdown, csv or text), or its rows (dicts) with
    ``fmt=None``. ``higher``: the metric's direction (default: known metrics' own; else higher)."""
    base = epoch_records(baseline, metric)
    named = {name: epoch_records(rows, metric) for name, rows in runs.items()}
    rows = savings_table(baseline_name, base, named, metric, higher=higher)
    return rows if fmt is None else format_table(rows, fmt)
