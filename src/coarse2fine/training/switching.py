"""When to leave a phase: fixed lengths (the paper), a plateau of the validation metric or the
training loss, or a share of a compute budget; and when to stop the final phase.

Every rule is a pure function of the run's records (and its config), which a checkpoint holds, so
a run resumed across an automatic switch switches at exactly the same epoch. The loop asks
:func:`agreed_leave_phase` after each evaluation: under torchrun the main process's answer holds
for every process (their clocks differ, so a time budget could otherwise end a phase in one
process and not in another, which would wait for it forever). The reason it gives is logged and
recorded in the epoch's record (``switch``) and in the run's ``log.json`` (``switches``).

* ``c2f.switch: fixed``: each phase runs its ``c2f.phase_epochs`` (or the default split).
* ``plateau``: a phase ends when its validation metric (``train.metric``, in its direction) has
  not improved by more than ``c2f.min_delta`` for ``c2f.patience`` evaluations, or, with
  ``c2f.loss_window`` N > 0, when the training loss fell by less than ``c2f.loss_tolerance``
  (relative) over the last N epochs; never before ``c2f.min_phase_epochs``, never after the
  phase's epochs. Evaluations can be more frequent than once a pass over the data with
  ``train.epoch_steps``; their cost is the ``eval_time`` of each record, outside the training time.
* ``budget``: ``c2f.budget_flops`` (training FLOPs) or ``c2f.budget_hours`` (training wall time)
  split by ``c2f.budget_shares`` (default: the paper's initial fraction for the initial phases,
  the rest for the final one); a phase ends once the run has spent its phases' cumulative share.
* The final phase stops after its epochs (``c2f.final_stop: epochs``), on a plateau
  (``plateau``) or when the whole budget is spent (``budget``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from coarse2fine.phases import default_initial_fraction
from coarse2fine.training.distributed import Dist, broadcast
from coarse2fine.training.records import EpochRecord, as_records

SWITCHES = ("fixed", "plateau", "budget")
FINAL_STOPS = ("epochs", "plateau", "budget")


def budget_shares(c2f: Any, num_phases: int) -> list[float]:
    """Cumulative budget share at the end of each phase."""
    if c2f.budget_shares:
        shares = [float(s) for s in c2f.budget_shares]
    else:
        initial = c2f.initial_fraction or default_initial_fraction(num_phases)
        shares = [initial / (num_phases - 1)] * (num_phases - 1) + [1.0 - initial]
    total, out = 0.0, []
    for s in shares:
        total += s
        out.append(total)
    return out


def _spent(records: Sequence[EpochRecord], c2f: Any) -> tuple[float, float]:
    """(spent, budget) in FLOPs or hours, whichever budget is set."""
    last = records[-1]
    if c2f.budget_flops:
        return float(last.cum_flops), float(c2f.budget_flops)
    return float(last.cum_time) / 3600.0, float(c2f.budget_hours)


def _plateau(records: Sequence[EpochRecord], metric: str, higher: bool, c2f: Any) -> str | None:
    """Why the phase whose records these are has plateaued, or None."""
    sign = 1.0 if higher else -1.0
    best, since = records[0].metric(metric), 0
    for r in records[1:]:
        value = r.metric(metric)
        if sign * (value - best) > c2f.min_delta:
            best, since = value, 0
        else:
            since += 1
    if since >= c2f.patience:
        return f"plateau: {metric} not improved by more than {c2f.min_delta:g} for {since} evaluations (best {best:.4g})"
    n = c2f.loss_window
    if n and len(records) > n:
        before, now = records[-1 - n].train_loss, records[-1].train_loss
        if before > 0 and (before - now) / before < c2f.loss_tolerance:
            return f"plateau: training loss fell {100 * (before - now) / before:.2f} % over {n} epochs (< {100 * c2f.loss_tolerance:g} %)"
    return None


def leave_phase(cfg: Any, phase_epochs: Sequence[int], records: Sequence[EpochRecord | Mapping[str, Any]],
                higher: bool) -> str | None:
    """Why the current phase (the last record's) ends after this epoch, or None to go on."""
    records = as_records(records)
    c2f, last = cfg.c2f, records[-1]
    p, final = last.phase, last.phase == len(phase_epochs) - 1
    mine = [r for r in records if r.phase == p]
    if len(mine) >= phase_epochs[p]:
        return f"epochs: {len(mine)} of {phase_epochs[p]}"
    rule = c2f.final_stop if final else c2f.switch
    if rule == "plateau" and len(mine) >= c2f.min_phase_epochs:
        return _plateau(mine, cfg.train.metric, higher, c2f)
    if rule == "budget":
        spent, budget = _spent(records, c2f)
        share = 1.0 if final else budget_shares(c2f, len(phase_epochs))[p]
        if spent >= share * budget:
            unit = "FLOPs" if c2f.budget_flops else "h"
            return f"budget: {spent:.4g} {unit} spent of {share * budget:.4g} (share {share:.2f} of {budget:.4g})"
    return None


def agreed_leave_phase(cfg: Any, phase_epochs: Sequence[int], records: Sequence[EpochRecord | Mapping[str, Any]],
                       higher: bool, d: Dist) -> str | None:
    """:func:`leave_phase` as one decision for every process (a collective: each must call it):
    the main process's reason, or its None, in all of them."""
    return broadcast(leave_phase(cfg, phase_epochs, records, higher), d)
