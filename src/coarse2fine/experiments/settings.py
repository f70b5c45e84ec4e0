"""What an experiment trains, as configs: the baseline, the coarse-to-fine variants, the controls,
and every seed of each (nothing is trained here; :mod:`coarse2fine.experiments.grid` trains them).

* A **variant** is a method string (``fshift``, ``avgpool``, ``maxpool``, ``patch-bl``,
  ``patch-pi``) with a schedule (``4-1``...): run ``fshift_41``, row ``Fshift 41``.
* The **controls** (``experiment.controls`` / ``--controls``) ask where a variant's gain comes
  from, the coarse input or what comes with it:

  - ``restart``: the variants' phases, epochs and resets (a fresh optimizer and LR schedule at
    every phase change), all at R = 1: schedule ``1-1`` for ``4-1`` and ``2-1``, ``1-1-1`` for
    ``4-2-1``. The default phase split depends only on the number of phases, and
    ``c2f.phase_epochs`` / ``c2f.phase_steps`` are shared by every variant, so all variants with
    as many phases have one restart control: run ``restart_11``, row ``Restart 11 (control)``.
    (At R = 1 every method is the identity, and a phase trains at ``train.batch_size``.)
  - ``equal-epochs``: the baseline trained for as many epochs as the longest variant in total
    (``4-1`` with 10 + 40 epochs: 50): run ``equal_epochs_50``, row ``Equal epochs 50 (control)``.

  Both need phase lengths fixed in advance (``c2f.switch: fixed``, ``c2f.final_stop: epochs``).
* **Seeds** (``experiment.seeds`` / ``--seeds N``): seed k of a setting trains with
  ``train.seed + SEED_STRIDE * k`` (data order, initialisation, augmentation and dropout all
  derive from ``train.seed``; the stride keeps the generators of different seeds apart: the
  augmentation generator of seed s is seeded with s + 1 + rank) into ``<run>`` for k = 0 (the
  config's own seed, so the runs of a one-seed experiment are seed 0 of a larger one and are
  reused) and ``<run>_s<k>`` otherwise.

Every run's config holds ``experiment`` at its defaults (:meth:`RunConfig.run_only`): a run does
not depend on the experiment that trains it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from coarse2fine.compression import VARIANTS, Compression
from coarse2fine.config import RunConfig
from coarse2fine.config.sections import CONTROLS
from coarse2fine.phases import restart_schedule, schedule_name

ROLES = ("baseline", "control", "coarse-to-fine")
SEED_STRIDE = 1000


@dataclass(frozen=True)
class Variant:
    """One coarse-to-fine setting: method string and schedule."""

    method: str
    schedule: str

    @property
    def name(self) -> str:
        return f"{self.method}_{self.schedule.replace('-', '')}"

    @property
    def label(self) -> str:
        """Paper-style label, e.g. ``Fshift 41``."""
        method, resize = VARIANTS[self.method]
        return f"{Compression(method, patch_resize=resize).label} {self.schedule.replace('-', '')}"


@dataclass(frozen=True)
class Setting:
    """One row of an experiment: its run folder ``name``, table ``label``, ``role`` (baseline,
    control or coarse-to-fine), the run's ``config`` (seed 0) and, for a control, what it is
    (``about``, for the table's note)."""

    name: str
    label: str
    role: str
    config: RunConfig
    about: str = ""


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``"fshift,patch-pi"`` -> validated list of method strings (``all`` = every method)."""
    items = [m.strip() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    if items == ["all"]:
        return list(VARIANTS)
    unknown = [m for m in items if m not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)} or 'all'")
    return items


def parse_controls(text: str | Sequence[str]) -> list[str]:
    """``"restart,equal-epochs"`` -> validated list of controls (``all`` = both, ``none`` = none)."""
    items = [c.strip() for c in (text.split(",") if isinstance(text, str) else text) if c.strip()]
    if items == ["all"]:
        return list(CONTROLS)
    if items == ["none"]:
        return []
    unknown = [c for c in items if c not in CONTROLS]
    if unknown:
        raise ValueError(f"unknown control(s) {', '.join(unknown)}; choose from {', '.join(CONTROLS)}, 'all' or 'none'")
    return list(dict.fromkeys(items))


def variant_config(base: RunConfig, variant: Variant | None) -> RunConfig:
    """The config of the baseline (``variant=None``) or of one coarse-to-fine variant."""
    if variant is None:
        return base.baseline()
    method, resize = VARIANTS[variant.method]
    return base.replace({"name": variant.name, "c2f.schedule": variant.schedule, "c2f.method": method,
                         "c2f.patch_resize": resize, "c2f.batch_scales": None})


def _total_epochs(cfg: RunConfig) -> int:
    return sum(p.epochs for p in cfg.phases())


def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _check_fixed_phases(base: RunConfig) -> None:
    c = base.c2f
    if c.switch != "fixed" or c.final_stop != "epochs":
        raise ValueError(f"controls mirror phase lengths fixed in advance; c2f.switch is {c.switch!r} and "
                         f"c2f.final_stop {c.final_stop!r} (use fixed / epochs, or leave the controls out)")


def control_settings(base: RunConfig, variants: Sequence[RunConfig], controls: Sequence[str]) -> list[Setting]:
    """The controls of ``variants`` (their configs) on ``base`` (a run-only config): the
    equal-epochs baseline, then one restart control per number of phases among the variants."""
    controls = parse_controls(controls)
    if not controls:
        return []
    if not variants:
        raise ValueError(f"controls ({', '.join(controls)}) control coarse-to-fine variants; give some methods")
    _check_fixed_phases(base)
    out = []
    if "equal-epochs" in controls:
        epochs = max(_total_epochs(v) for v in variants)
        longest = [v.name for v in variants if _total_epochs(v) == epochs]
        if epochs <= base.train.epochs:
            raise ValueError(f"the longest coarse-to-fine run ({longest[0]}) trains {epochs} epochs, no more than the "
                             f"baseline's {base.train.epochs}: the baseline is its own equal-epochs control; leave "
                             "equal-epochs out")
        name = f"equal_epochs_{epochs}"  # by its epochs: another variant set trains another control beside it
        cfg = base.baseline(name).replace({"train.epochs": epochs})
        out.append(Setting(name, f"Equal epochs {epochs} (control)", "control", cfg,
                           f"the baseline trained {epochs} epochs, as many as {_names(longest)} in total"))
    if "restart" in controls:
        out += _restart_controls(base, variants)
    return out


def _restart_controls(base: RunConfig, variants: Sequence[RunConfig]) -> list[Setting]:
    """One restart control per shape of the variants' phases: their epochs and, with
    ``c2f.coarse_batch: scale``, their batch factors (the control's full-resolution phases train at
    the variant's batches, learning rates and warm-ups, so that only the input differs)."""
    scaled = base.c2f.coarse_batch == "scale"
    shapes: dict[tuple[tuple[int, ...], tuple[int, ...]], list[RunConfig]] = {}
    for v in variants:
        if len(v.phases()) > 1:
            factors = tuple(v.batch_scale(i) for i in range(len(v.phases()))) if scaled else ()
            shapes.setdefault((tuple(p.epochs for p in v.phases()), factors), []).append(v)
    out = []
    for (epochs, factors), same in shapes.items():
        schedule = schedule_name(restart_schedule([p.R for p in same[0].phases()]))
        name = f"restart_{schedule.replace('-', '')}"
        label = f"Restart {schedule.replace('-', '')}"
        changes: dict[str, object] = {"c2f.schedule": schedule}
        batches = ""
        if scaled:
            name += f"_batch{'x'.join(map(str, factors))}"
            label += f" batch x{'-'.join(map(str, factors))}"
            changes["c2f.batch_scales"] = list(factors)
            batches = (f", each phase at the batch ({'/'.join(str(base.train.batch_size * f) for f in factors)} clips), "
                       "learning rate and warm-up of the variant's")
        cfg = base.replace({"name": name, **changes})
        if tuple(p.epochs for p in cfg.phases()) != epochs:
            raise ValueError(f"{name}: its phases {[p.epochs for p in cfg.phases()]} differ from {same[0].name}'s "
                             f"{list(epochs)}")
        out.append(Setting(name, f"{label} (control)", "control", cfg,
                           f"{' + '.join(map(str, epochs))} epochs, all at R = 1{batches}, with the optimizer and LR "
                           f"schedule reset at each phase change: the phases of {_names([v.name for v in same])} "
                           "without the coarse input"))
    return out


def experiment_settings(base: RunConfig, variants: Sequence[Variant], controls: Sequence[str] = ()) -> list[Setting]:
    """Every setting of an experiment on ``base``: the baseline, the ``controls`` of the variants,
    then the ``variants`` (in that order: the rows of its tables)."""
    plain = base.run_only()
    variants = list(dict.fromkeys(variants))
    runs = [Setting(v.name, v.label, "coarse-to-fine", variant_config(plain, v)) for v in variants]
    return [Setting("baseline", "Baseline", "baseline", variant_config(plain, None)),
            *control_settings(plain, [s.config for s in runs], controls), *runs]


def seed_config(cfg: RunConfig, k: int) -> RunConfig:
    """``cfg`` for seed ``k`` (0: ``cfg`` itself; else ``train.seed + SEED_STRIDE * k``)."""
    if k < 0:
        raise ValueError(f"seed index must be >= 0, got {k}")
    return cfg if k == 0 else cfg.replace({"train.seed": cfg.train.seed + SEED_STRIDE * k})


def seed_folder(root: str | Path, name: str, k: int) -> Path:
    """Where seed ``k`` of run ``name`` lives: ``root/name`` for seed 0, ``root/name_s<k>`` otherwise."""
    return Path(root) / (name if k == 0 else f"{name}_s{k}")
