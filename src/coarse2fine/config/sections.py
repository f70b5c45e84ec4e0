"""The sections of a run config, one frozen dataclass each, every key with its type and limits.

``data`` (where clips come from), ``features`` (front end and normalisation), ``model`` (family,
size, patches, pretrained weights), ``train`` (objective, optimizer in ``train.optim``, loop),
``augment``, ``c2f`` (schedule, compression, switching) and ``pretrain`` (masked patch
pretraining). Sections are frozen: a changed config is made with
:meth:`coarse2fine.config.RunConfig.replace`, which checks it again, so a config is valid for as
long as it exists. Types and limits are checked by :func:`~coarse2fine.config.checks.check_fields`
(see there); what depends on several keys, by each section's ``check``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

from coarse2fine.compression import METHODS, PATCH_RESIZES, VARIANTS
from coarse2fine.config.checks import (
    ConfigError,
    ConfigErrors,
    Problems,
    at_least,
    check_fields,
    checks_apart_from,
    choice,
    every_problem,
    key,
    keys_of,
    raise_all,
)
from coarse2fine.features import FbankConfig, FeatureSpec, LogMelConfig
from coarse2fine.model.registry import get_arch
from coarse2fine.objectives import LOSSES, objective_metrics, objective_names
from coarse2fine.objectives.masked_patch import MASKINGS
from coarse2fine.phases import parse_schedule
from coarse2fine.run_folders import is_run_folder, runs_held

DATA_KINDS = ("synthetic", "manifest", "fsdd", "esc50", "unlabeled", "shards")
FRONTENDS: dict[str, type] = {"fbank": FbankConfig, "logmel": LogMelConfig}
OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("step", "epochs")
SWITCHES = ("fixed", "plateau", "budget")
FINAL_STOPS = ("epochs", "plateau", "budget")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


class Section:
    """A config section: checks every field (types, limits) and then itself when made or replaced."""

    prefix: ClassVar[str] = ""
    # Keys the section also takes, each for another key it sets (moved there before the section is
    # built: ``features.num_mel_bins`` for ``features.fbank.num_mel_bins``), named with the known keys.
    aliases: ClassVar[Mapping[str, str]] = {}

    def __post_init__(self) -> None:
        try:
            check_fields(self, self.prefix)
        except ValueError as err:  # with what the section's own checks find of its other keys
            failed = err.errors if isinstance(err, ConfigErrors) else [err]
            raise_all([*failed, *checks_apart_from(self.check, {k for e in failed for k in keys_of(e)}, self.prefix)])
        self.check()

    def check(self) -> None:
        """Checks across this section's keys (raise ``ValueError`` naming them)."""


@dataclass(frozen=True)
class DataConfig(Section):
    """Where the clips come from.

    ``kind``: ``synthetic`` (the embedded demo set: ``train_clips``/``val_clips``), ``manifest``
    (``train``/``val`` are AST JSON manifests with ``label_csv``, CSV files, or class folders),
    ``fsdd`` (the Free Spoken Digit Dataset at ``root``; ``task``: digits or speakers),
    ``esc50`` (ESC-50 at ``root``, with ``esc50.csv``; ``fold`` is the validation fold) or
    ``unlabeled`` (audio without labels for self-supervised pretraining: ``sources`` lists
    folders, CSV files and AST JSON manifests; recordings are cut into windows of
    ``clip_seconds``; ``val_fraction`` of the files is held out to score the pretext task) or
    ``shards`` (``train``/``val`` are split folders, or http(s) URLs of them, written by
    ``coarse2fine pack``: WebDataset shards read by index; remote shards are downloaded once
    per machine into ``shard_cache``, default ``~/.cache/coarse2fine/shards``; ``open_shards``
    caps the shards each loader process keeps open, 0: all of them, which a shuffle over the
    whole set needs; held in memory only with ``in_memory: on``).
    Clips are cut to ``clip_seconds`` and padded with zeros (``pad: zeros``) or by repeating
    them (``pad: repeat``, as HTS-AT does for ESC-50). Every file is checked before training;
    ``on_error: skip`` drops bad files and lists them in the run's report instead of stopping.
    ``{fold}`` in ``train`` / ``val`` is replaced by ``fold`` (:meth:`split_path`).
    ``cache_dir`` turns on the on-disk feature cache and ``preload`` decodes all clips into memory
    (both for kinds that read audio files);
    ``in_memory`` (auto: when the features of every clip take at most ``memory_limit_gb``) holds
    each phase's model input in memory, computed once per phase (``in_memory_dtype``), on the
    training device when it fits there (``in_memory_device: auto``). ``num_workers``: loader
    processes for sources read clip by clip (``auto``: one per spare core, at most 8; none for
    sources served from memory, whose batches are one indexed read). Relative paths in a config
    file are taken from that file's folder.
    """

    prefix: ClassVar[str] = "data"
    kind: str = key("synthetic", choices=DATA_KINDS)
    sources: list[str] = key(factory=list, path=True)
    val_fraction: float = 0.05
    fold: int = key(1, minimum=1)
    pad: str = key("zeros", choices=("zeros", "repeat"))
    train_clips: int = key(800, minimum=1)
    val_clips: int = key(240, minimum=1)
    clip_seconds: float = key(1.28, minimum=1e-3)
    seed: int = 0
    train: str | None = key(None, path=True)
    val: str | None = key(None, path=True)
    label_csv: str | None = key(None, path=True)
    multilabel: bool = False
    root: str | None = key(None, path=True)
    task: str = key("digits", choices=("digits", "speakers"))
    on_error: str = key("raise", choices=("raise", "skip"))
    min_seconds: float = key(0.1, minimum=0)
    preload: bool = True
    cache_dir: str | None = key(None, path=True)
    in_memory: str | bool = key("auto", choices=("auto", "on", "off"))  # YAML true / false: on / off
    in_memory_dtype: str = key("float32", choices=("float32", "float16"))
    in_memory_device: str = key("auto", choices=("auto", "cpu"))
    memory_limit_gb: float = key(2.0, minimum=0)
    num_workers: int | str = "auto"
    shard_cache: str | None = key(None, path=True)
    open_shards: int = key(0, minimum=0)

    def __post_init__(self) -> None:
        if isinstance(self.in_memory, bool):  # YAML's true / false
            object.__setattr__(self, "in_memory", "on" if self.in_memory else "off")
        super().__post_init__()

    def split_path(self, split: str) -> str | None:
        """``data.train`` or ``data.val`` (``split``) with ``{fold}`` filled in from ``data.fold``, so
        one config names every fold's manifests (``crossval`` sets the fold)."""
        value = getattr(self, split)
        return value.replace("{fold}", str(self.fold)) if isinstance(value, str) else value

    def check(self) -> None:
        with every_problem() as each:
            with each:
                if not 0 < self.val_fraction < 1:
                    raise ValueError(f"data.val_fraction: must be in (0, 1), got {self.val_fraction}")
            with each:
                if isinstance(self.num_workers, str):
                    choice("data.num_workers", self.num_workers, ("auto",))
                else:
                    at_least("data.num_workers", self.num_workers, 0)
            with each:
                if self.kind == "shards" and importlib.util.find_spec("wids") is None:
                    raise ValueError("data.kind: shards needs the wids package (pip install 'coarse2fine[shards]')")
            self.check_kind(each)

    # The keys only some kinds read, by kind. A key the config's kind does not read (an FSDD
    # ``root`` inherited by a manifest config, resolved from whichever folder the command ran in)
    # is no part of what a run is (:meth:`unread_keys`).
    READS: ClassVar[dict[str, frozenset[str]]] = {
        "synthetic": frozenset({"train_clips", "val_clips"}),
        "manifest": frozenset({"train", "val", "label_csv", "fold"}),  # fold fills {fold} in train / val
        "fsdd": frozenset({"root", "task"}),
        "esc50": frozenset({"root", "fold"}),
        "unlabeled": frozenset({"sources", "val_fraction"}),
        "shards": frozenset({"train", "val", "fold"}),
    }

    @classmethod
    def unread_keys(cls, kind: str) -> frozenset[str]:
        """The dotted kind-specific keys (:data:`READS`) that data of ``kind`` does not read."""
        unread = frozenset().union(*cls.READS.values()) - cls.READS.get(kind, frozenset())
        return frozenset(f"{cls.prefix}.{name}" for name in unread)

    # What each kind needs (of what it reads: :data:`READS`), checked when the config is loaded
    # (not when its data is first read), and the settings it cannot use.
    NEEDS: ClassVar[dict[str, tuple[tuple[str, ...], str]]] = {
        "manifest": (("train", "val"), "(AST JSON, CSV or a class folder)"),
        "fsdd": (("root",), ": the FSDD folder (with recordings/)"),
        "esc50": (("root",), ": the ESC-50 folder (with esc50.csv and audio/)"),
        "unlabeled": (("sources",), ": folders, CSV files or AST JSON manifests"),
        "shards": (("train", "val"), ": split folders (or http(s) URLs) written by `coarse2fine pack`, "
                                     "e.g. packed/train and packed/val"),
    }

    def check_kind(self, each: Problems) -> None:
        """The keys ``kind`` needs (``manifest``: ``train`` and ``val``; ``fsdd`` / ``esc50``:
        ``root``; ``unlabeled``: ``sources``; ``shards``: ``train`` and ``val``), ESC-50's folds,
        and no feature cache for packed shards (their features are packed); each problem kept in ``each``."""
        needs, what = self.NEEDS.get(self.kind, ((), ""))
        missing = [n for n in needs if not getattr(self, n)]
        with each:
            if missing:
                names = " and ".join(f"data.{n}" for n in needs)
                raise ConfigError(f"data.kind {self.kind!r} needs {names}{' ' if what.startswith('(') else ''}{what}",
                                  ("data.kind", *(f"data.{n}" for n in missing)))
        with each:
            if self.kind == "esc50" and not 1 <= self.fold <= 5:
                raise ConfigError(f"data.fold: ESC-50 has folds 1-5, got {self.fold}", ("data.fold", "data.kind"))
        with each:
            if self.kind == "shards" and self.cache_dir:
                raise ConfigError("data.cache_dir: the feature cache reads audio files; with data.kind shards, pack "
                                  "the features instead (coarse2fine pack --features)", ("data.kind",),
                                  subject="data.cache_dir")


LEGACY_FEATURE_KEYS = ("sample_rate", "num_mel_bins", "frame_length_ms", "frame_shift_ms")


@dataclass(frozen=True)
class FeatureConfig(Section):
    """The front end and what follows it: ``frontend`` names the front end whose settings section
    is used (``fbank``: Kaldi fbank, AST/SSAST; ``logmel``: HTS-AT's STFT log-mel);
    ``target_length`` is the frame count at R = 1 after pad/crop; ``mean``/``std`` the
    normalisation ``(x - mean) / (2 std)`` (``normalize: false`` for models that normalise their
    input themselves, such as HTS-AT's learned BatchNorm)."""

    prefix: ClassVar[str] = "features"
    aliases: ClassVar[Mapping[str, str]] = {k: f"fbank.{k}" for k in LEGACY_FEATURE_KEYS}
    frontend: str = key("fbank", choices=tuple(FRONTENDS))
    fbank: FbankConfig = key(factory=FbankConfig)
    logmel: LogMelConfig = key(factory=LogMelConfig)
    target_length: int = key(128, minimum=1)
    mean: float = -4.2677393
    std: float = key(4.5689974, minimum=1e-12)
    normalize: bool = True

    @property
    def settings(self) -> Any:
        """The selected front end's settings."""
        return getattr(self, self.frontend)

    @property
    def sample_rate(self) -> int:
        return self.settings.sample_rate

    @property
    def num_mel_bins(self) -> int:
        return self.settings.num_mel_bins

    def spec(self) -> FeatureSpec:
        """The full-resolution :class:`~coarse2fine.features.FeatureSpec` of these settings."""
        return FeatureSpec(self.settings, self.target_length, self.mean, self.std, self.normalize)


@dataclass(frozen=True)
class ModelConfig(Section):
    """Which model: a family (``arch``, see ``coarse2fine.model.registry``) and one of its size
    presets, the full-resolution patch size and stride (freq, time; the family's default when
    unset; a single number is the same on both axes: ``stride: 10`` is ``[10, 10]``), stochastic
    depth, any other field of the family's config (``overrides``), and pretrained weights to start
    from (``init_from``: a coarse2fine run folder, or a release
    checkpoint of the family: Hugging Face AST folder, original AST .pth, imagenet:PATH, ...)."""

    prefix: ClassVar[str] = "model"
    arch: str = "ast"
    preset: str = "tiny"
    patch_size: tuple[int, int] | None = key(None, minimum=1, pair=True)
    stride: tuple[int, int] | None = key(None, minimum=1, pair=True)
    drop_path_rate: float = key(0.0, minimum=0)
    overrides: dict[str, Any] = key(factory=dict)
    init_from: str | None = key(None, path=True)

    def check(self) -> None:
        arch = get_arch(self.arch)
        allowed = {f.name for f in dataclasses.fields(arch.config_cls)}
        unknown = sorted(set(self.overrides) - allowed)
        with every_problem() as each:
            with each:
                choice("model.preset", self.preset, tuple(arch.presets))
            with each:
                if unknown:
                    raise ValueError(f"model.overrides: {', '.join(unknown)} is not a field of the {arch.name} config; "
                                     f"allowed: {', '.join(sorted(allowed))}")

    def check_init_from(self) -> None:
        """That ``init_from`` (absolute once loaded) exists and, when it is a run folder, that the run
        finished. A runtime check of a config about to train (:func:`coarse2fine.config.load_config`),
        not part of :meth:`check`: a config may name a run that is trained later (``pretrain-experiment``)
        or one that is gone (the saved config of a finished run)."""
        if self.init_from is None:
            return
        source = self.init_from
        path = Path(source.removeprefix("imagenet:"))
        if not path.exists():
            raise ValueError(f"model.init_from: {source} does not exist (a finished coarse2fine run folder, "
                             f"or a checkpoint of the {self.arch} family)")
        if (path / "config.yaml").is_file() and not (path / "model_config.json").is_file():
            raise ValueError(f"model.init_from: {source} is a coarse2fine run folder without model_config.json: "
                             "the run has not finished")
        if path.is_dir() and not is_run_folder(path) and (held := runs_held(path)):  # an experiment's folder
            raise ValueError(f"model.init_from: {source} is not a run folder; {held}")
        saved = path / "model_config.json"
        if saved.is_file():  # a finished run: of this family? (its size is compared when the weights load)
            try:
                arch = json.loads(saved.read_text()).get("arch")
            except (OSError, ValueError, AttributeError):
                arch = None
            if isinstance(arch, str) and arch != self.arch:
                raise ConfigError(f"model.init_from: {source} is a run of the {arch} family; this config builds "
                                  f"model.arch {self.arch}: init_from takes a run of the same family (set model.arch: "
                                  f"{arch}, or start from another run)", ("model.init_from", "model.arch"),
                                  "model.init_from")


@dataclass(frozen=True)
class OptimConfig(Section):
    """Optimizer and LR schedule, built anew at every phase (epochs count from the phase's start):
    AST's recipe (``schedule: step``: Adam, linear warmup over ``warmup_steps``, then x ``gamma``
    every ``decay_every`` epochs from ``decay_start``, the first epoch at a lower rate, to
    ``decay_end``, the last one lower than the epoch before: 0 keeps decaying) or HTS-AT's (``schedule: epochs``: AdamW
    with a factor per epoch, ``epoch_factors: [[1, 0.02], [2, 0.05], ...]``); ``clip_grad_norm``
    clips the gradient norm before each update (0: off)."""

    prefix: ClassVar[str] = "train.optim"
    optimizer: str = key("adam", choices=OPTIMIZERS)
    lr: float = 2.5e-4
    weight_decay: float = key(5e-7, minimum=0)
    betas: tuple[float, float] = (0.95, 0.999)
    warmup_steps: int = key(1000, minimum=0)
    decay_start: int = key(5, minimum=1)
    decay_every: int = key(1, minimum=1)
    decay_end: int = key(0, minimum=0)
    gamma: float = 0.85
    schedule: str = key("step", choices=LR_SCHEDULES)
    epoch_factors: tuple[tuple[int, float], ...] = ()
    clip_grad_norm: float = key(0.0, minimum=0)

    def check(self) -> None:
        factors = self.epoch_factors
        if self.schedule == "epochs" and (not factors or factors[0][0] != 1 or any(
                a[0] >= b[0] for a, b in zip(factors, factors[1:])) or any(f <= 0 for _, f in factors)):
            raise ConfigError("train.optim.epoch_factors: schedule 'epochs' needs [[1, f1], [e2, f2], ...] with "
                              f"increasing epochs from 1 and positive factors, got {[list(f) for f in factors]}",
                              ("train.optim.schedule",), subject="train.optim.epoch_factors")
        if not self.lr > 0:
            raise ValueError(f"train.optim.lr: must be > 0, got {self.lr}")
        if self.decay_end and self.decay_end < self.decay_start:
            raise ConfigError(f"train.optim.decay_end: the last decayed epoch, at least decay_start ({self.decay_start}),"
                              f" or 0 (no end), got {self.decay_end}", ("train.optim.decay_start",),
                              subject="train.optim.decay_end")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"train.optim.gamma: must be in (0, 1], got {self.gamma}")


@dataclass(frozen=True)
class TrainConfig(Section):
    """Loop settings; ``epochs`` is the baseline budget, from which phase lengths are derived.
    ``objective`` says what is optimised (``classification`` with ``loss`` ce or bce) and which
    metrics exist; ``metric`` picks the one that decides the best epoch and the savings.

    ``device``: auto (CUDA when this torch has it, else CPU), cpu, cuda, cuda:N or mps.
    ``threads``: torch's intra-op threads (0: torch's default). ``grad_accum``: micro-batches per
    optimizer step (``batch_size`` is the global batch). ``epoch_steps``: optimizer steps between
    two evaluations (0: one pass over the training set). ``amp``: mixed precision on CUDA.
    ``checkpoint_every``: also checkpoint every N steps inside an epoch. ``log_every``: steps
    between two reads of the loss on a GPU (each read waits for the device; on a CPU every step
    is read). ``compile``: ``torch.compile`` the model once per phase (``compile_mode``).
    ``peak_tflops``: the device's peak for MFU (0: looked up for known GPUs). ``save_best``:
    keep the weights of the final phase's best epoch (``metric``) as ``model_best.safetensors``
    beside the last epoch's ``model.safetensors``.
    """

    prefix: ClassVar[str] = "train"
    epochs: int = key(20, minimum=1)
    batch_size: int = key(32, minimum=1)
    objective: str = "classification"
    loss: str = key("ce", choices=LOSSES)
    metric: str = "acc"
    seed: int = 0
    device: str = "auto"
    threads: int = key(0, minimum=0)
    grad_accum: int = key(1, minimum=1)
    epoch_steps: int = key(0, minimum=0)
    amp: str = key("none", choices=("none", "bf16", "fp16"))
    checkpoint_every: int = key(0, minimum=0)
    log_every: int = key(50, minimum=1)
    compile: bool = False
    compile_mode: str = key("default", choices=COMPILE_MODES)
    peak_tflops: float = key(0.0, minimum=0)
    tensorboard: bool = False
    save_best: bool = True
    optim: OptimConfig = key(factory=OptimConfig)

    def check(self) -> None:
        with every_problem() as each:
            with each:  # the metrics are the objective's
                choice("train.objective", self.objective, objective_names())
                choice("train.metric", self.metric, tuple(objective_metrics(self.objective)))
            with each:
                if not (self.device in ("auto", "cpu", "mps", "cuda") or _is_cuda_index(self.device)):
                    raise ValueError(f"train.device: {self.device!r} is not one of auto, cpu, cuda, cuda:N, mps")
            with each:
                if self.amp != "none" and self.device in ("cpu", "mps"):
                    raise ConfigError(f"train.amp: {self.amp} needs a CUDA device, not train.device {self.device}; "
                                      "use amp: none there", ("train.amp", "train.device"))
            with each:
                if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
                    raise ValueError("train.tensorboard: the tensorboard package is not installed "
                                     "(pip install 'coarse2fine[tensorboard]' or pip install tensorboard)")


def _is_cuda_index(name: str) -> bool:
    head, _, index = name.partition(":")
    return head == "cuda" and index.isdigit()


@dataclass(frozen=True)
class AugmentConfig(Section):
    """Augmentation settings of one training run (AST's names and defaults).

    ``freqm`` / ``timem``: SpecAugment mask parameters in mel bins / full-resolution frames
    (0 disables). ``mixup``: probability that an example is mixed; ``mixup_alpha``: the Beta
    parameter of the mixing weight; ``mixup_targets``: mix the targets by the same weight (AST)
    or keep each clip's own (HTS-AT's AudioSet recipe). ``noise``: AST's optional noise-and-roll.
    ``spec_masks``: how many masks of each kind per example. ``mask_value``: the value
    written into masked cells of the features: for normalised features 0 is the dataset mean
    (AST's exact behaviour is ``-mean / (2 * std)``); ``mean`` writes each mel bin's mean over
    the batch, for features the model normalises itself (``features.normalize: false``, HTS-AT's
    learned per-mel norm, which HTS-AT masks after with 0), where a number would be a raw
    log-mel level (0 dB is far above the mean of a dB log-mel).

    Also in a run's ``augment:`` section, under AST's names, though they act on the loop rather
    than on a batch: ``balanced_sampling`` (AST's label-weighted draws, see
    :mod:`coarse2fine.training.sampling`) and weight averaging of the final phase's epochs
    ``wa_start..wa_end`` (0 = off; ``wa_end`` 0 = to the last epoch).
    """

    prefix: ClassVar[str] = "augment"
    freqm: int = key(0, minimum=0)
    timem: int = key(0, minimum=0)
    mixup: float = key(0.0, minimum=0)
    mixup_alpha: float = 10.0
    mixup_targets: bool = True
    noise: bool = False
    spec_masks: int = key(1, minimum=0)
    mask_value: float | Literal["mean"] = 0.0
    balanced_sampling: bool = False
    wa_start: int = key(0, minimum=0)
    wa_end: int = key(0, minimum=0)

    def check(self) -> None:
        with every_problem() as each:
            with each:
                if self.mixup > 1:
                    raise ValueError(f"augment.mixup: a probability in [0, 1], got {self.mixup}")
            with each:
                if not isinstance(self.mask_value, str) and not math.isfinite(self.mask_value):
                    raise ValueError(f"augment.mask_value: a finite number or 'mean', got {self.mask_value!r}")
            with each:
                if not self.mixup_alpha > 0:
                    raise ValueError(f"augment.mixup_alpha: must be > 0, got {self.mixup_alpha}")
            with each:
                if self.wa_end and self.wa_end < self.wa_start:
                    raise ConfigError(f"augment.wa_end: weight averaging needs wa_start <= wa_end (or wa_end 0), "
                                      f"got {self.wa_start}..{self.wa_end}", ("augment.wa_start", "augment.wa_end"))


@dataclass(frozen=True)
class C2FConfig(Section):
    """Coarse-to-fine settings: schedule (``1`` = baseline; a factor may repeat, ``1-1`` being the
    restart control of ``4-1``), method, phase lengths, when to switch.

    ``eval_on_entry``: at every phase change, evaluate the carried-over model once at the new
    phase's resolution before it trains (what the transfer keeps; ``entry_metrics`` of the run's
    phases in ``log.json``). It never changes training (its random draws are forked off) and its
    time counts as evaluation time, not training time.

    ``coarse_batch``: ``same`` (every phase trains at ``train.batch_size``) or ``scale`` (a phase
    at factor R trains at R x the batch, with the learning rate scaled by ``lr_scaling``: ``sqrt``
    (x sqrt(R)) or ``linear`` (x R), and its warm-up steps divided by R so that warm-up covers the
    same clips), so that a coarse step fills the device as a fine one does. ``batch_scales``: with
    ``scale``, each phase's factor of the batch (and of its learning rate and warm-up) in place of
    its R (null: R); the restart control of a variant sets the variant's factors, so that its
    full-resolution phases train at the variant's batches, learning rates and warm-ups.
    """

    prefix: ClassVar[str] = "c2f"
    schedule: str = "4-1"
    method: str = key("fshift", choices=METHODS)
    patch_resize: str = key("pi", choices=PATCH_RESIZES)
    scale_window: bool = False
    phase_epochs: list[int] | None = key(None, minimum=1)
    phase_steps: list[int] | None = key(None, minimum=1)
    initial_fraction: float | None = None
    switch: str = key("fixed", choices=SWITCHES)
    final_stop: str = key("epochs", choices=FINAL_STOPS)
    patience: int = key(3, minimum=1)
    min_delta: float = key(0.0, minimum=0)
    loss_window: int = key(0, minimum=0)
    loss_tolerance: float = key(0.01, minimum=0)
    min_phase_epochs: int = key(1, minimum=1)
    budget_flops: float = key(0.0, minimum=0)
    budget_hours: float = key(0.0, minimum=0)
    budget_shares: list[float] | None = key(None, minimum=0)
    coarse_batch: str = key("same", choices=("same", "scale"))
    lr_scaling: str = key("sqrt", choices=("sqrt", "linear"))
    batch_scales: list[int] | None = key(None, minimum=1)
    planned_flops: float = key(0.0, minimum=0)
    planned_seconds: float = key(0.0, minimum=0)
    eval_on_entry: bool = True

    def __post_init__(self) -> None:
        base, resize = VARIANTS.get(self.method, (None, None)) if isinstance(self.method, str) else (None, None)
        if base is not None and self.method not in METHODS:  # the command line's patch-bl / patch-pi
            raise ValueError(f"c2f.method: {self.method!r} is not one of {', '.join(METHODS)}: {self.method} is how the "
                             f"command line names it (--method {self.method}); in a config write `method: {base}` "
                             f"with `patch_resize: {resize}` under c2f (or --set c2f.method={base} "
                             f"--set c2f.patch_resize={resize})")
        super().__post_init__()

    def check(self) -> None:
        with every_problem() as each:
            with each:  # the shares need the schedule's phases
                try:
                    factors = parse_schedule(self.schedule)
                except ValueError as err:
                    raise ValueError(f"c2f.schedule: {err}") from None
                if self.budget_shares is not None and (len(self.budget_shares) != len(factors)
                                                       or abs(sum(self.budget_shares) - 1) > 1e-6):
                    raise ConfigError(f"c2f.budget_shares: {self.budget_shares} needs one share per phase of schedule "
                                      f"{self.schedule}, summing to 1", ("c2f.budget_shares", "c2f.schedule"))
            with each:
                if self.phase_epochs is not None and self.phase_steps is not None:
                    raise ConfigError("c2f: give phase_epochs or phase_steps, not both",
                                      ("c2f.phase_epochs", "c2f.phase_steps"))
            with each:
                if "budget" in (self.switch, self.final_stop) and (self.budget_flops > 0) == (self.budget_hours > 0):
                    raise ConfigError("c2f: switch or final_stop 'budget' needs one of budget_flops or budget_hours "
                                      "(> 0)", ("c2f.switch", "c2f.final_stop", "c2f.budget_flops", "c2f.budget_hours"))
            with each:
                if self.initial_fraction is not None and not 0 < self.initial_fraction < 1:
                    raise ValueError(f"c2f.initial_fraction: must be in (0, 1), got {self.initial_fraction}")


CONTROLS = ("restart", "equal-epochs")


@dataclass(frozen=True)
class ExperimentConfig(Section):
    """What ``experiment`` and ``crossval`` add to the baseline and the coarse-to-fine variants
    (the ``--controls``, ``--seeds`` and ``--interleave`` options set the same): ``controls``
    (``restart``: each variant's phases, epochs and resets, all at R = 1; ``equal-epochs``: the
    baseline trained for as many epochs as the longest variant), ``seeds`` (every setting trained
    with that many seeds of ``train.seed``: data order, initialisation, augmentation) and
    ``interleave`` (a seed's settings trained in turns of one epoch each in one process, so that a
    machine whose speed drifts over minutes charges them alike: :mod:`coarse2fine.training.interleave`). They
    describe the experiment, not a run: each run's own config holds the defaults, so a run is the
    same run whichever experiment trains it (and a finished one is reused)."""

    prefix: ClassVar[str] = "experiment"
    controls: list[str] = key(factory=list)
    seeds: int = key(1, minimum=1)
    interleave: bool = key(False)

    def check(self) -> None:
        for c in self.controls:
            choice("experiment.controls", c, CONTROLS)
        if len(set(self.controls)) != len(self.controls):
            raise ValueError(f"experiment.controls: each control once, got {self.controls}")


@dataclass(frozen=True)
class PretrainConfig(Section):
    """``pretrain`` settings of masked patch pretraining: masked patches at full resolution
    (``mask_patch``, scaled per phase), the loss weights, the masking kind, and the
    full-resolution token count (None: computed from the run's features and model settings)."""

    prefix: ClassVar[str] = "pretrain"
    mask_patch: int = key(400, minimum=1)
    nce_weight: float = key(1.0, minimum=0)
    mse_weight: float = key(10.0, minimum=0)
    masking: str = key("auto", choices=MASKINGS)
    full_tokens: int | None = key(None, minimum=1)

    def check(self) -> None:
        if self.nce_weight + self.mse_weight <= 0:
            raise ConfigError(f"pretrain.nce_weight / mse_weight: not both 0, got {self.nce_weight} / {self.mse_weight}",
                              ("pretrain.nce_weight", "pretrain.mse_weight"))
