"""A whole run's config (:class:`RunConfig`) and what it says about each phase (:class:`PhaseSetup`).

:meth:`RunConfig.phase` is the one place where a phase is made from the config: its compression,
the features it computes, the model's input geometry and architecture config, its batch and its
optimizer settings. The training loop, the FLOPs accounting, ``bench`` and the config's own
checks all call it, so they cannot disagree about a phase.

A ``RunConfig`` is frozen and checked when made; :meth:`RunConfig.replace` makes a changed copy
and checks it again (every section and every phase), so code cannot hold an invalid config.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from coarse2fine.compression import Compression, InputGeometry
from coarse2fine.config.checks import ConfigError, build, every_problem, warn
from coarse2fine.config.sections import (
    LEGACY_FEATURE_KEYS,
    AugmentConfig,
    C2FConfig,
    DataConfig,
    ExperimentConfig,
    FeatureConfig,
    ModelConfig,
    OptimConfig,
    PretrainConfig,
    TrainConfig,
)
from coarse2fine.features import FeatureSpec
from coarse2fine.model.base import C2FModel
from coarse2fine.model.registry import get_arch, model_config
from coarse2fine.objectives import objective_entry
from coarse2fine.phases import Phase, Schedule, build_phases, parse_schedule

# The keys behind a phase's lengths, and behind its model geometry: an error about them names the
# file (or --set) that set one of them last (see coarse2fine.config.files).
PHASE_KEYS = ("c2f.schedule", "c2f.phase_epochs", "c2f.phase_steps", "c2f.initial_fraction", "c2f.switch",
              "c2f.final_stop", "train.epochs", "train.epoch_steps")
GEOMETRY_KEYS = ("model", "c2f.method", "c2f.schedule", "c2f.patch_resize", "c2f.scale_window",
                 "features.target_length", "features.frontend", "features.fbank", "features.logmel",
                 "train.objective")


@dataclass(frozen=True)
class PhaseSetup:
    """Phase ``index`` of a run as the config defines it: factor ``R`` and ``epochs``, the
    compression, the features to compute (``features``), the model's input ``geometry`` and
    architecture config (``model_config`` of family ``arch``), the global ``batch_size`` and the
    optimizer settings (``optim``; learning rate and warm-up scaled with ``c2f.coarse_batch: scale``)."""

    index: int
    R: int
    epochs: int
    compression: Compression
    features: FeatureSpec
    geometry: InputGeometry
    arch: str
    model_config: Any
    batch_size: int
    optim: OptimConfig

    def build_model(self) -> C2FModel:
        """A freshly initialised model of this phase (draws from torch's global generator)."""
        return get_arch(self.arch).model_cls(self.model_config)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run (see :mod:`coarse2fine.config`)."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    c2f: C2FConfig = field(default_factory=C2FConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "name" and not isinstance(value, f.default_factory):  # type: ignore[arg-type]
                raise ValueError(f"{f.name}: expected a {f.default_factory.__name__}, got {type(value).__name__}")  # type: ignore[union-attr]
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: expected a non-empty string, got {self.name!r}")
        self.check()

    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))

    def replace(self, changes: Mapping[str, Any] | None = None, /, **more: Any) -> RunConfig:
        """A copy with ``changes`` (keys may be dotted, ``{"c2f.schedule": "1"}``, or nested
        mappings), checked like a loaded config."""
        values = self.to_dict()
        for dotted, value in {**(changes or {}), **more}.items():
            *parents, leaf = fbank_key(dotted).split(".")
            node = values
            for k in parents:
                if not isinstance(node.get(k), dict):
                    raise ValueError(f"{dotted}: {k} is not a section")
                node = node[k]
            if not parents and isinstance(value, Mapping) and isinstance(node.get(leaf), Mapping):
                node[leaf] = merge(node[leaf], value)  # a section given as a mapping: its keys change
            else:
                node[leaf] = value
        return config_from_dict(values)

    def check(self) -> None:
        """Checks across sections: the objective against the model family, the loss against
        multi-label data, labels against the data, phase lengths against the schedule, and every phase's model geometry (configs
        only, no weights), including frames that a coarse phase's tokens would never see."""
        archs = objective_entry(self.train.objective).archs
        with every_problem() as each:
            with each:
                if archs and self.model.arch not in archs:
                    raise ConfigError(f"train.objective: {self.train.objective} trains model.arch "
                                      f"{' or '.join(archs)}, not {self.model.arch}", ("train.objective", "model.arch"))
            with each:
                if self.data.kind == "unlabeled" and self.train.objective == "classification":
                    raise ConfigError("data.kind: unlabeled audio has nothing to classify; pretrain on it "
                                      "(train.objective: masked_patch, `coarse2fine pretrain`) or give labeled data",
                                      ("data.kind", "train.objective"))
            with each:
                if self.data.multilabel and self.train.objective == "classification" and self.train.loss == "ce":
                    raise ConfigError("data.multilabel: true scores each class on its own, but train.loss: ce trains "
                                      "one class per clip (softmax); set train.loss: bce (and train.metric: mAP, as "
                                      "the audioset preset does)", ("data.multilabel", "train.loss", "train.objective"))
            with each:
                if self.train.batch_size % self.train.grad_accum:
                    raise ConfigError(f"train.batch_size {self.train.batch_size} must be a multiple of "
                                      f"train.grad_accum ({self.train.grad_accum})",
                                      ("train.batch_size", "train.grad_accum"))
            for mask_key, param, size, what, size_key in (
                    ("augment.timem", self.augment.timem, self.features.target_length,
                     "frames (features.target_length)", "features.target_length"),
                    ("augment.freqm", self.augment.freqm, self.features.num_mel_bins, "mel bins", "features")):
                with each:
                    if param > size:  # a mask as wide as the input blanks whole clips
                        raise ConfigError(
                            f"{mask_key}: {param} is more than the features' {size} {what}: a mask could blank a "
                            f"whole clip; set {mask_key} to at most {size} (AST masks up to 192 of 1024 frames and 48 "
                            f"of 128 mel bins)", (mask_key, size_key), mask_key)
        scales = self.c2f.batch_scales
        if scales is not None and len(scales) != len(self.phases()):
            raise ConfigError(f"c2f.batch_scales: {list(scales)} needs one factor per phase of schedule "
                              f"{self.c2f.schedule} ({len(self.phases())})", ("c2f.batch_scales", "c2f.schedule"))
        setups = [self.phase(i) for i in range(len(self.phases()))]
        check_frames_seen(self, setups)

    def warn_fixed_phases(self) -> None:
        """A warning when given phase lengths (``c2f.phase_epochs`` / ``phase_steps``) have the final
        phase alone train longer than ``train.epochs``, the baseline's: a preset shrunk with
        ``train.epochs`` alone keeps its phases, and its coarse-to-fine run would be compared with a
        much shorter baseline."""
        c = self.c2f
        given = "phase_steps" if c.phase_steps is not None else "phase_epochs" if c.phase_epochs is not None else None
        phases = self.phases() if given is not None else []
        if len(phases) < 2:
            return
        final = phases[-1].epochs
        if final > self.train.epochs:
            warn(f"c2f.{given}", f"c2f.{given} {list(getattr(c, given))}: the final phase alone trains {final} epochs, "
                 f"more than train.epochs {self.train.epochs} (the baseline's; the paper's final phase trains as many "
                 f"as the baseline): a comparison would set a longer run against the baseline; set c2f.{given} as "
                 "well, or null for the paper's split of train.epochs")

    def warn_averaged_epochs(self) -> None:
        """A warning when the weight-averaged epochs (of the final phase) reach past its fixed
        length (said once, when a config is loaded: not on every derived config)."""
        final, a = self.phase(len(self.phases()) - 1).epochs, self.augment
        if not a.wa_start or self.c2f.final_stop != "epochs" or max(a.wa_start, a.wa_end) <= final:
            return
        what = ("no epoch is averaged (no model_wa.safetensors)" if a.wa_start > final
                else f"epochs {a.wa_start}..{final} are averaged")
        warn("augment.wa_end" if a.wa_start <= final else "augment.wa_start",
             f"augment: weight averaging of the final phase's epochs {a.wa_start}..{a.wa_end or 'its last'}, but it "
             f"trains {final}: {what}")

    def unread_settings(self) -> frozenset[str]:
        """The keys that nothing in this config reads, because the setting that selects them is off
        (``c2f.patience`` without the plateau rule, ``pretrain.*`` without masked-patch pretraining,
        ...): whatever their values, they do not make another run."""
        return frozenset(k for keys, reads, _ in _READ_ONLY_WITH if not reads(self) for k in keys)

    def warn_unused_settings(self) -> None:
        """A warning for a setting that nothing reads in this config, or that does less than its
        name says (said once, when it is loaded)."""
        t, c = self.train, self.c2f
        if t.compile_mode != "default" and not t.compile:
            warn("train.compile_mode", f"train.compile_mode: {t.compile_mode} compiles nothing without "
                                       "train.compile: true (the model runs eagerly)")
        unread = self.unread_settings()
        for keys, _, why in _READ_ONLY_WITH:
            if why is None:
                continue
            changed = {k: value for k in keys if k in unread and (value := _setting(self, k))[0] != value[1]}
            if changed:
                values = ", ".join(f"{k}: {_shown(value)}" for k, (value, _) in changed.items())
                verb = "does" if len(changed) == 1 else "do"
                warn(next(iter(changed)), f"{values}: {verb} nothing here, read only {why}")
        self._warn_clip_frames()
        if c.switch == "budget" and c.final_stop != "budget" and len(self.phases()) > 1:
            budget = f"{c.budget_flops:g} FLOPs" if c.budget_flops else f"{c.budget_hours:g} h"
            epochs = self.phases()[-1].epochs
            warn("c2f.switch", f"c2f.switch: budget ends the coarse phases at their shares of the budget ({budget}); "
                               f"the final phase stops after its {epochs} epoch(s) (c2f.final_stop: {c.final_stop}), "
                               "whatever the budget: set c2f.final_stop: budget for the run to stop when the budget "
                               "is spent")

    def _warn_clip_frames(self) -> None:
        """A warning when ``data.clip_seconds`` and ``features.target_length`` do not fit: a clip
        longer than the frames keeps only its start (the rest is cut from its features), a clip
        that fills less than two thirds of them trains on padding (AST's Speech Commands recipe
        pads 98 frames to 128: that much says nothing)."""
        f = self.features
        frames = f.spec().frontend.num_frames(self.clip_samples())
        kept = f.target_length / frames * self.data.clip_seconds
        both = ("data.clip_seconds", "features.target_length")  # neither wrong alone: the one set last is named
        if frames > f.target_length:
            warn("data.clip_seconds", f"data.clip_seconds: {self.data.clip_seconds:g} s gives {frames} frames, but "
                 f"features.target_length is {f.target_length}: only each clip's first {kept:.2f} s reach the model "
                 f"(set features.target_length to about {frames}, or data.clip_seconds to about {kept:.2f})", both)
        elif frames < 2 * f.target_length / 3:
            warn("features.target_length", f"features.target_length: {f.target_length} frames, but clips of "
                 f"data.clip_seconds {self.data.clip_seconds:g} s give {frames}: {f.target_length - frames} frames of "
                 f"every clip are padding, trained on at full cost (set features.target_length to about {frames}, or "
                 f"data.clip_seconds to about {kept:.2f})", both)

    def phases(self) -> list[Phase]:
        """The schedule's phases: ``c2f.phase_epochs``, or ``c2f.phase_steps`` in epochs of
        ``train.epoch_steps`` steps, or the paper's default split of ``train.epochs``."""
        c = self.c2f
        epochs = c.phase_epochs
        if c.phase_steps is not None:
            steps = self.train.epoch_steps
            if not steps or any(s % steps for s in c.phase_steps):
                raise ConfigError(f"c2f.phase_steps: {list(c.phase_steps)} must be whole multiples of train.epoch_steps "
                                  f"({steps or 'unset'}), the steps between two evaluations",
                                  ("c2f.phase_steps", "train.epoch_steps"))
            epochs = [s // steps for s in c.phase_steps]
        if epochs is None and "budget" in (c.switch, c.final_stop):  # every phase runs until its budget share
            epochs = [self.train.epochs] * len(parse_schedule(c.schedule))
        try:
            return build_phases(c.schedule, self.train.epochs, epochs, c.initial_fraction)
        except ValueError as err:
            given = "phase_steps" if c.phase_steps is not None else "phase_epochs"
            fix = (f"; give one entry per phase, or c2f.{given}: null for the paper's split of train.epochs"
                   if epochs is not None and len(epochs) != len(parse_schedule(c.schedule)) else "")
            raise ConfigError(f"c2f: {err}{fix}", PHASE_KEYS) from None

    def clip_samples(self) -> int:
        """Samples of a training clip: ``data.clip_seconds`` at the front end's sample rate (what
        every clip is cut or padded to, ``data.pad``)."""
        return int(round(self.data.clip_seconds * self.features.sample_rate))

    def schedule(self) -> Schedule:
        """The schedule as the functional core takes it (:class:`coarse2fine.phases.Schedule`):
        the phases, the compression method and the full-resolution input."""
        c, f = self.c2f, self.features
        return Schedule(tuple(self.phases()), f.target_length, f.num_mel_bins, c.method, c.patch_resize,  # type: ignore[arg-type]
                        c.scale_window)

    def phase(self, index: int, num_classes: int = 2) -> PhaseSetup:
        """Phase ``index`` as this config defines it (see :class:`PhaseSetup`), for a classifier
        of ``num_classes`` classes."""
        c, f, t = self.c2f, self.features, self.train
        schedule = self.schedule()
        phase, comp, geo = schedule.phases[index], schedule.compression(index), schedule.geometry(index)
        needs = objective_entry(t.objective).model_overrides
        settings = dataclasses.replace(self.model, overrides={**self.model.overrides, **needs}) if needs else self.model
        try:
            arch_config = model_config(settings, num_classes, geo)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"model {self.model.arch}/{self.model.preset} with c2f.method {c.method} at R={phase.R} "
                              f"(schedule {c.schedule}): {err}", GEOMETRY_KEYS) from None
        built = getattr(arch_config, "geometry", None)  # a family that ignores part of the phase's input
        if isinstance(built, InputGeometry) and built.time_patch_factor != geo.time_patch_factor:
            raise ConfigError(f"model {self.model.arch}/{self.model.preset} with c2f.method {c.method} at R={phase.R} "
                              f"(schedule {c.schedule}): the family's config keeps patches {built.time_patch_factor}x "
                              f"wide in time, not {geo.time_patch_factor}x: it cannot take the Patch method; use "
                              "fshift, avgpool or maxpool", GEOMETRY_KEYS)
        scale = self.batch_scale(index)
        optim = t.optim
        if scale > 1:
            factor = math.sqrt(scale) if c.lr_scaling == "sqrt" else float(scale)
            optim = dataclasses.replace(optim, lr=optim.lr * factor, warmup_steps=optim.warmup_steps // scale)
        return PhaseSetup(index, phase.R, phase.epochs, comp, comp.feature_spec(f.spec()), geo, self.model.arch,
                          arch_config, t.batch_size * scale, optim)

    def batch_scale(self, index: int) -> int:
        """Phase ``index``'s factor of ``train.batch_size`` (and of its learning rate and warm-up):
        with ``c2f.coarse_batch: scale`` its ``c2f.batch_scales`` entry, else its R; 1 otherwise."""
        c = self.c2f
        if c.coarse_batch != "scale":
            return 1
        return c.batch_scales[index] if c.batch_scales is not None else self.phases()[index].R

    def baseline(self, name: str = "baseline") -> RunConfig:
        """This config's baseline: the full-resolution schedule ``1`` with ``train.epochs`` epochs."""
        return self.replace({"name": name, "c2f.schedule": "1", **{f"c2f.{key}": None for key in PER_PHASE_KEYS}})

    def run_only(self) -> RunConfig:
        """This config without its experiment-level settings (``experiment`` at its defaults): what
        a run trained by an experiment stores, so that the run does not depend on the experiment."""
        return self.replace({"experiment": dataclasses.asdict(ExperimentConfig())})


def _shown(value: Any) -> str:
    """A setting's value as a message shows it (``1e+12``, not ``1000000000000.0``)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _setting(cfg: RunConfig, dotted: str) -> tuple[Any, Any]:
    """The value of key ``dotted`` (``c2f.patience``) in ``cfg``, and its default."""
    section, name = dotted.split(".")
    held = getattr(cfg, section)
    return getattr(held, name), getattr(type(held)(), name)


# The c2f keys that give one value per phase: a config of another schedule (the baseline's) drops them
PER_PHASE_KEYS = ("phase_epochs", "phase_steps", "budget_shares", "batch_scales")

# Settings read only when others select them: (keys, whether this config reads them, what reads them)
_READ_ONLY_WITH: tuple[tuple[tuple[str, ...], Callable[[RunConfig], bool], str | None], ...] = (
    (("c2f.patience", "c2f.min_delta", "c2f.loss_window", "c2f.loss_tolerance", "c2f.min_phase_epochs"),
     lambda cfg: "plateau" in (cfg.c2f.switch, cfg.c2f.final_stop), "with c2f.switch: plateau or c2f.final_stop: plateau"),
    (("c2f.budget_flops", "c2f.budget_hours", "c2f.budget_shares"),
     lambda cfg: "budget" in (cfg.c2f.switch, cfg.c2f.final_stop),
     "with c2f.switch: budget or c2f.final_stop: budget (`coarse2fine plan` takes --budget-flops / --budget-hours)"),
    (("c2f.lr_scaling", "c2f.batch_scales"), lambda cfg: cfg.c2f.coarse_batch == "scale", "with c2f.coarse_batch: scale"),
    (("c2f.initial_fraction",), lambda cfg: _splits_by_fraction(cfg.c2f),
     "where it splits the epochs (no c2f.phase_epochs / phase_steps) or a budget (c2f.switch or final_stop: budget, "
     "no c2f.budget_shares)"),
    (tuple(f"pretrain.{f.name}" for f in dataclasses.fields(PretrainConfig)),
     lambda cfg: cfg.train.objective == "masked_patch", "with train.objective: masked_patch"),
    # warned of only where your own file or a --set gives them (config.files._warn_unread_keys_you_set):
    # a preset of one schedule carries its parent's keys of the other (htsat_audioset, HTS-AT's per-epoch
    # factors, extends audioset's step decay); they make no other run
    (("train.optim.decay_start", "train.optim.decay_every", "train.optim.decay_end", "train.optim.gamma"),
     lambda cfg: cfg.train.optim.schedule == "step", None),
    (("train.optim.epoch_factors",), lambda cfg: cfg.train.optim.schedule == "epochs", None),
)


def _splits_by_fraction(c: C2FConfig) -> bool:
    """Whether ``c2f.initial_fraction`` sets anything: the coarse phases' share of the epochs when
    no phase lengths are given, or of the budget when no budget shares are."""
    budget = "budget" in (c.switch, c.final_stop)
    return (budget and c.budget_shares is None) or (not budget and c.phase_epochs is None and c.phase_steps is None)


def check_frames_seen(cfg: RunConfig, setups: list[PhaseSetup]) -> None:
    """Refuse a schedule whose coarse phase leaves input frames that no token sees (``3-1`` on
    128 frames: 42 coarse frames, 16-frame patches cover 32), beyond the rounding of one coarse
    frame and what full resolution itself leaves, with the numbers."""
    full = cfg.features.target_length
    unseen_full = _unseen(full, setups[-1])  # every schedule ends at R = 1
    for s in setups:
        unseen = _unseen(full, s)
        if unseen > unseen_full + (s.R - 1):
            frames, ignored = s.geometry.frames, getattr(s.model_config, "ignored_frames", 0)
            raise ConfigError(
                f"c2f.schedule {cfg.c2f.schedule} with c2f.method {cfg.c2f.method}: at R={s.R} the model's input has "
                f"{frames} frames and its tokens see {frames - ignored} of them, so {unseen} of the {full} "
                f"full-resolution frames would never be seen (at R=1: {unseen_full}); choose factors that "
                f"divide features.target_length / the patch, or change features.target_length", GEOMETRY_KEYS)


def _unseen(full: int, s: PhaseSetup) -> int:
    """Full-resolution frames that phase ``s``'s tokens never see."""
    ignored = int(getattr(s.model_config, "ignored_frames", 0))
    factor = s.geometry.time_factor
    return full - factor * (s.geometry.frames - ignored)


def plain(x: Any) -> Any:
    """Tuples to lists, recursively, so the dict is YAML/JSON friendly."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return x


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: ``over``'s values win; nested mappings merge key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def fbank_key(dotted: str) -> str:
    """``features.num_mel_bins`` (a flat Kaldi key of earlier versions) as ``features.fbank.num_mel_bins``;
    any other dotted key as it is."""
    section, _, key = dotted.strip().partition(".")
    return f"features.fbank.{key}" if section == "features" and key in LEGACY_FEATURE_KEYS else dotted


def flat_feature_keys(values: Mapping[str, Any]) -> list[str]:
    """The flat Kaldi keys of earlier versions (``features.num_mel_bins``) that ``values`` sets."""
    feats = values.get("features")
    return [f"features.{k}" for k in LEGACY_FEATURE_KEYS if isinstance(feats, Mapping) and k in feats]


def check_flat_feature_keys(flat: Sequence[str], frontend: str) -> None:
    """Flat keys set the ``fbank`` front end: refused for a config of another front end, where they
    would be read by nothing."""
    if flat and frontend != "fbank":
        raise ConfigError(f"{', '.join(flat)}: the flat keys of earlier versions set the fbank front end, but "
                          f"features.frontend is {frontend}: set them under features.{frontend} (its own names)", ("features.frontend",), subject=flat[0])


def move_legacy_feature_keys(values: Mapping[str, Any]) -> dict[str, Any]:
    """Earlier configs set the Kaldi settings directly under ``features:``; they now live under
    ``features.fbank``: move them there. The flat key wins over a ``features.fbank`` value of the
    same mapping, as it does over one a config inherits (``load_config`` moves each file's and each
    ``--set``'s keys before merging them); one key given both ways with two values is refused."""
    if not (flat := flat_feature_keys(values)):
        return dict(values)
    feats = dict(values["features"])
    check_flat_feature_keys(flat, str(feats.get("frontend", "fbank")))
    moved = {k: feats.pop(k) for k in LEGACY_FEATURE_KEYS if k in feats}
    nested = feats.get("fbank")
    nested = dict(nested) if isinstance(nested, Mapping) else {}
    for k, v in moved.items():
        if k in nested and nested[k] != v:
            raise ConfigError(f"features.{k}: {v} and features.fbank.{k}: {nested[k]} both set it; keep "
                              f"features.fbank.{k} (features.{k} is an earlier version's name)", (f"features.{k}",),
                              subject=f"features.fbank.{k}")
    feats["fbank"] = {**nested, **moved}
    return {**values, "features": feats}


def config_from_dict(values: Mapping[str, Any]) -> RunConfig:
    """A checked :class:`RunConfig` from a nested dict (errors name the key and the problem)."""
    return build(RunConfig, move_legacy_feature_keys(values), "")
