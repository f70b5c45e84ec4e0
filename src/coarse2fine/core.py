"""The functional core of coarse-to-fine training: what any training loop needs, as plain functions.

Coarse-to-fine training trains the first phases on spectrograms compressed in time by a factor R
and the last phase at full resolution, carrying the weights across. A training loop that already
exists needs five things for it, and this module gives each as a typed function of plain values:

* **where it stands**: :class:`Schedule` (phases, compression method, full-resolution input; the
  method named as the config names it or as the CLI does, ``patch-bl`` / ``patch-pi`` included) and
  :meth:`Schedule.at_epoch` / :meth:`Schedule.at_step`, or :func:`phase_at` on a list of phases:
  the phase of a 0-based epoch or step and its R;
* **what the model sees**: :func:`compress` turns a batch of waveforms, full-resolution features
  or an already compressed model input into the phase's model input (every method: Fshift
  computes features with an R times longer frame shift, Avg/Max pooling pools frames, Patch
  leaves the frames and widens the model's patches);
* **the model across a phase change**: :func:`carry` moves a coarse2fine model
  (:class:`~coarse2fine.model.base.C2FModel`: AST, HTS-AT with its Swin windows, SSAST, or a
  family of your own) or a transformers ``ASTForAudioClassification`` (no other model: its
  input size cannot change) to a phase's input geometry, interpolating the
  positional embedding and resizing the patch kernel (bilinear or PI-resize); the optimizer and LR
  schedule are then built anew, as the paper does;
* **what a step costs**: :func:`step_flops` at the model's current geometry, and
  :func:`schedule_flops` for every phase of a schedule;
* **what it saved**: :func:`epoch_records` turns ``(epoch, R, metric, FLOPs, seconds)`` rows into
  records and :func:`savings` prints the paper's savings table against a baseline.

The functions live with the stage they belong to (:mod:`coarse2fine.phases`,
:mod:`coarse2fine.compression`, :mod:`coarse2fine.model.phase_change`,
:mod:`coarse2fine.report.savings`); this module gathers them. coarse2fine's own training loop
(:mod:`coarse2fine.training`), ``bench`` and the FLOPs accounting call the same functions, as do
the Lightning callback and the Hugging Face trainer (:mod:`coarse2fine.integrations`). Nothing
here imports an optional dependency.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence, Union

from coarse2fine.compression import INPUT_KINDS, InputKind, compress, phase_input, resolve_method
from coarse2fine.model.phase_change import carry, geometry_of, schedule_flops, step_flops
from coarse2fine.objectives.metrics import FRACTION_METRICS
from coarse2fine.phases import PhaseAt, Schedule, phase_at
from coarse2fine.report.savings import format_table, savings_table
from coarse2fine.training.records import EpochRecord

RecordRow = Union[EpochRecord, Mapping[str, Any], Sequence[float]]

__all__ = [
    "INPUT_KINDS", "InputKind", "PhaseAt", "RecordRow", "Schedule", "carry", "compress", "epoch_records", "geometry_of",
    "phase_at", "phase_input", "resolve_method", "savings", "schedule_flops", "step_flops",
]


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
            missing = {"flops": "'flops' or 'train_flops'", "time": "'time' or 'train_time'"}.get(err.args[0],
                                                                                                 repr(err.args[0]))
            raise ValueError(f"record {i} lacks {missing} (needs epoch, R, {metric!r}, flops or train_flops, "
                             "time or train_time)") from None
    if len(row) != 5:
        raise ValueError(f"record {i}: expected (epoch, R, {metric}, FLOPs, seconds), got {tuple(row)!r}")
    epoch, R, value, flops, seconds = row
    return int(epoch), int(R), float(value), float(flops), float(seconds)


def savings(baseline: Iterable[RecordRow], runs: Mapping[str, Iterable[RecordRow]], metric: str = "acc", *,
            baseline_name: str = "Baseline", fmt: str | None = "markdown", higher: bool | None = None) -> Any:
    """The paper's savings table of ``runs`` against ``baseline`` (records as
    :func:`epoch_records` takes them): the metric at the first final-phase epoch that reaches the
    baseline's best, the FLOPs and time saved up to there, the best metric and its gain.
    Returns the table as text in ``fmt`` (markdown, csv, text, or json: one number per cell), or
    its rows (dicts of the printed strings) with ``fmt=None``. ``higher``: the metric's direction
    (default: known metrics' own; else higher). Accuracy, mAP and mAUC are fractions (0 to 1)."""
    base = epoch_records(baseline, metric)
    named = {name: epoch_records(rows, metric) for name, rows in runs.items()}
    for name, records in {baseline_name: base, **named}.items():
        _check_fraction(records, metric, name)
    rows = savings_table(baseline_name, base, named, metric, higher=higher)
    return rows if fmt is None else format_table(rows, fmt)


def _check_fraction(records: Sequence[EpochRecord], metric: str, name: str) -> None:
    """Accuracy, mAP and mAUC are fractions (the tables print them as percentages): a value above 1
    is a percentage given where a fraction is expected."""
    if metric in FRACTION_METRICS:
        over = next((r for r in records if r.metrics.get(metric, 0.0) > 1.0), None)
        if over is not None:
            raise ValueError(f"{name}: {metric} {over.metrics[metric]:g} at epoch {over.epoch}: {metric} is a fraction "
                             "(0 to 1; the table prints it as a percentage): give 0.5 for 50 %")
