"""Run configuration: typed dataclasses, read from YAML presets, overridable from the command line.

A config has six sections: ``data``, ``features``, ``model``, ``train`` (objective, optimizer and
loop), ``augment`` and ``c2f`` (schedule and compression). ``load_config`` reads a preset by name
(``presets/NAME.yaml`` inside the package) or a YAML file, applies ``section.key=value`` overrides,
and checks everything a run would otherwise trip over later: unknown keys, wrong types, every
enumerated value (naming the key and the allowed values), and the model geometry of every phase.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from coarse2fine.augment import AugmentConfig
from coarse2fine.compression import METHODS, PATCH_RESIZES, Compression
from coarse2fine.features import FbankConfig, FeatureSpec, LogMelConfig
from coarse2fine.objectives import (
    LOSSES,
    objective_entry,
    objective_metrics,
    objective_names,
)
from coarse2fine.optim import OptimConfig
from coarse2fine.phases import Phase, build_phases, parse_schedule
from coarse2fine.ssl import PretrainConfig
from coarse2fine.switching import FINAL_STOPS, SWITCHES


def choice(key: str, value: Any, allowed: Sequence[Any]) -> None:
    """``ValueError`` naming ``key`` and the allowed values unless ``value`` is one of them."""
    if value not in allowed:
        raise ValueError(f"{key}: {value!r} is not one of {', '.join(map(str, allowed))}")


def positive(key: str, value: int | float, minimum: int | float = 1) -> None:
    if value < minimum:
        raise ValueError(f"{key}: must be >= {minimum}, got {value}")


@dataclass
class DataConfig:
    """Where the clips come from.

    ``kind``: ``synthetic`` (the embedded demo set: ``train_clips``/``val_clips``), ``manifest``
    (``train``/``val`` are AST JSON manifests with ``label_csv``, CSV files, or class folders),
    ``fsdd`` (the Free Spoken Digit Dataset at ``root``; ``task``: digits or speakers) or
    ``esc50`` (ESC-50 at ``root``, with ``esc50.csv``; ``fold`` is the validation fold) or
    ``unlabeled`` (audio without labels for self-supervised pretraining: ``sources`` lists
    folders, CSV files and AST JSON manifests; recordings are cut into windows of
    ``clip_seconds``; ``val_fraction`` of the files is held out to score the pretext task).
    Clips are cut to ``clip_seconds`` and padded with zeros (``pad: zeros``) or by repeating
    them (``pad: repeat``, as HTS-AT does for ESC-50). Every file is checked before training;
    ``on_error: skip`` drops bad files and lists them in the run's report instead of stopping.
    ``cache_dir`` turns on the on-disk feature cache; ``preload`` decodes all clips into memory;
    ``in_memory`` (auto: when the features of every clip take at most ``memory_limit_gb``) holds
    each phase's model input in memory, computed once per phase (``in_memory_dtype``).
    """

    kind: str = "synthetic"
    sources: list[str] = field(default_factory=list)
    val_fraction: float = 0.05
    fold: int = 1
    pad: str = "zeros"
    train_clips: int = 800
    val_clips: int = 240
    clip_seconds: float = 1.28
    seed: int = 0
    train: str | None = None
    val: str | None = None
    label_csv: str | None = None
    multilabel: bool = False
    root: str | None = None
    task: str = "digits"
    on_error: str = "raise"
    min_seconds: float = 0.1
    preload: bool = True
    cache_dir: str | None = None
    in_memory: str = "auto"
    in_memory_dtype: str = "float32"
    memory_limit_gb: float = 2.0
    num_workers: int = 0

    def __post_init__(self) -> None:
        choice("data.kind", self.kind, ("synthetic", "manifest", "fsdd", "esc50", "unlabeled"))
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"data.val_fraction: must be in (0, 1), got {self.val_fraction}")
        choice("data.pad", self.pad, ("zeros", "repeat"))
        choice("data.task", self.task, ("digits", "speakers"))
        choice("data.on_error", self.on_error, ("raise", "skip"))
        if isinstance(self.in_memory, bool):  # YAML's true / false
            self.in_memory = "on" if self.in_memory else "off"
        choice("data.in_memory", self.in_memory, ("auto", "on", "off"))
        choice("data.in_memory_dtype", self.in_memory_dtype, ("float32", "float16"))
        positive("data.clip_seconds", self.clip_seconds, 1e-3)
        positive("data.num_workers", self.num_workers, 0)


FRONTENDS: dict[str, type] = {"fbank": FbankConfig, "logmel": LogMelConfig}
# Keys of the flat features section of earlier versions, now under features.fbank.
LEGACY_FEATURE_KEYS = ("sample_rate", "num_mel_bins", "frame_length_ms", "frame_shift_ms")


@dataclass
class FeatureConfig:
    """The front end and what follows it: ``frontend`` names the front end whose settings section
    is used (``fbank``: Kaldi fbank, AST/SSAST; ``logmel``: HTS-AT's STFT log-mel);
    ``target_length`` is the frame count at R = 1 after pad/crop; ``mean``/``std`` the
    normalisation ``(x - mean) / (2 std)`` (``normalize: false`` for models that normalise their
    input themselves, such as HTS-AT's learned BatchNorm)."""

    frontend: str = "fbank"
    fbank: FbankConfig = field(default_factory=FbankConfig)
    logmel: LogMelConfig = field(default_factory=LogMelConfig)
    target_length: int = 128
    mean: float = -4.2677393
    std: float = 4.5689974
    normalize: bool = True

    def __post_init__(self) -> None:
        choice("features.frontend", self.frontend, tuple(FRONTENDS))
        positive("features.target_length", self.target_length)
        positive("features.std", self.std, 1e-12)

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


@dataclass
class ModelConfig:
    """Which model: a family (``arch``, see ``coarse2fine.model.registry``) and one of its size
    presets, the full-resolution patch size and stride (freq, time; the family's default when
    unset), stochastic depth, any other field of the family's config (``overrides``), and
    pretrained weights to start from (``init_from``: a coarse2fine run folder, or a release
    checkpoint of the family: Hugging Face AST folder, original AST .pth, imagenet:PATH, ...)."""

    arch: str = "ast"
    preset: str = "tiny"
    patch_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    drop_path_rate: float = 0.0
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None

    def __post_init__(self) -> None:
        from coarse2fine.model.registry import get_arch

        arch = get_arch(self.arch)
        choice("model.preset", self.preset, tuple(arch.presets))
        for key in ("patch_size", "stride"):
            value = getattr(self, key)
            if value is not None:
                if len(value) != 2 or min(value) < 1:
                    raise ValueError(f"model.{key}: expected a positive (freq, time) pair, got {value!r}")
                setattr(self, key, (int(value[0]), int(value[1])))
        if not isinstance(self.overrides, dict):
            raise ValueError(f"model.overrides: expected a mapping of {arch.name} config fields, got {self.overrides!r}")


@dataclass
class TrainConfig:
    """Loop settings; ``epochs`` is the baseline budget, from which phase lengths are derived.
    ``objective`` says what is optimised (``classification`` with ``loss`` ce or bce) and which
    metrics exist; ``metric`` picks the one that decides the best epoch and the savings."""

    epochs: int = 20
    batch_size: int = 32
    objective: str = "classification"
    loss: str = "ce"  # ce (single-label) | bce (multi-label)
    metric: str = "acc"  # acc | mAP | mAUC | d_prime | val_loss, or the objective's own
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    grad_accum: int = 1  # micro-batches per optimizer step (batch_size is the global batch)
    epoch_steps: int = 0  # optimizer steps per epoch (0: one pass over the training set)
    amp: str = "none"  # none | bf16 | fp16 (CUDA only)
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch (0: at epoch ends only)
    tensorboard: bool = False  # also write TensorBoard scalars to <run>/tensorboard (pip install tensorboard)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        choice("train.objective", self.objective, objective_names())
        choice("train.loss", self.loss, LOSSES)
        choice("train.metric", self.metric, tuple(objective_metrics(self.objective)))
        choice("train.amp", self.amp, ("none", "bf16", "fp16"))
        if not (self.device in ("auto", "cpu", "mps") or self.device.startswith("cuda")):
            raise ValueError(f"train.device: {self.device!r} is not one of auto, cpu, cuda, cuda:N, mps")
        positive("train.epochs", self.epochs)
        positive("train.batch_size", self.batch_size)
        positive("train.grad_accum", self.grad_accum)
        positive("train.epoch_steps", self.epoch_steps, 0)
        positive("train.threads", self.threads, 0)
        positive("train.checkpoint_every", self.checkpoint_every, 0)
        if self.tensorboard:
            from coarse2fine.tensorboard import available

            if not available():
                raise ValueError("train.tensorboard: the tensorboard package is not installed "
                                 "(pip install 'coarse2fine[tensorboard]' or pip install tensorboard)")


@dataclass
class C2FConfig:
    """Coarse-to-fine settings: schedule (``1`` = baseline), method and phase lengths."""

    schedule: str = "4-1"
    method: str = "fshift"  # fshift | avgpool | maxpool | patch
    patch_resize: str = "pi"  # bilinear | pi (Patch method)
    scale_window: bool = False  # Fshift: also scale the analysis window by R
    phase_epochs: list[int] | None = None
    phase_steps: list[int] | None = None  # phase lengths in optimizer steps (needs train.epoch_steps)
    initial_fraction: float | None = None  # default: 0.25 (two phases) / 0.30 (three or more)
    switch: str = "fixed"  # when to leave a phase: fixed | plateau | budget (see coarse2fine.switching)
    final_stop: str = "epochs"  # when the final phase stops: epochs | plateau | budget
    patience: int = 3  # plateau: evaluations without improvement of train.metric
    min_delta: float = 0.0  # plateau: the smallest change that counts as an improvement
    loss_window: int = 0  # plateau: also leave when the training loss fell less than loss_tolerance over N epochs
    loss_tolerance: float = 0.01
    min_phase_epochs: int = 1  # plateau: epochs a phase runs at least
    budget_flops: float = 0.0  # budget: total training FLOPs
    budget_hours: float = 0.0  # budget: total training wall time in hours
    budget_shares: list[float] | None = None  # budget: share of each phase (default: the paper's initial fraction)
    planned_flops: float = 0.0  # what `coarse2fine plan` predicted for this run (compare shows it beside the measured)
    planned_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.schedule = str(self.schedule)
        choice("c2f.method", self.method, METHODS)
        choice("c2f.patch_resize", self.patch_resize, PATCH_RESIZES)
        try:
            parse_schedule(self.schedule)
        except ValueError as err:
            raise ValueError(f"c2f.schedule: {err}") from None
        if self.phase_epochs is not None and self.phase_steps is not None:
            raise ValueError("c2f: give phase_epochs or phase_steps, not both")
        choice("c2f.switch", self.switch, SWITCHES)
        choice("c2f.final_stop", self.final_stop, FINAL_STOPS)
        budget = "budget" in (self.switch, self.final_stop)
        if budget and (self.budget_flops > 0) == (self.budget_hours > 0):
            raise ValueError("c2f: switch or final_stop 'budget' needs one of budget_flops or budget_hours (> 0)")
        positive("c2f.patience", self.patience)
        positive("c2f.min_phase_epochs", self.min_phase_epochs)
        positive("c2f.loss_window", self.loss_window, 0)
        if self.budget_shares is not None and (len(self.budget_shares) != len(parse_schedule(self.schedule))
                                               or abs(sum(self.budget_shares) - 1) > 1e-6):
            raise ValueError(f"c2f.budget_shares: {self.budget_shares} needs one share per phase of schedule "
                             f"{self.schedule}, summing to 1")
        if self.initial_fraction is not None and not 0 < self.initial_fraction < 1:
            raise ValueError(f"c2f.initial_fraction: must be in (0, 1), got {self.initial_fraction}")


@dataclass
class RunConfig:
    """Everything that defines a run."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    c2f: C2FConfig = field(default_factory=C2FConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def __post_init__(self) -> None:
        self.check()

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def check(self) -> None:
        """Cross-section checks: the objective against the model family, phase lengths against the
        schedule, and the model geometry of every phase (built as configs only, no weights).
        Raises ``ValueError`` naming the setting."""
        archs = objective_entry(self.train.objective).archs
        if archs and self.model.arch not in archs:
            raise ValueError(f"train.objective: {self.train.objective} trains model.arch {' or '.join(archs)}, "
                             f"not {self.model.arch}")
        if self.data.kind == "unlabeled" and self.train.objective == "classification":
            raise ValueError("data.kind: unlabeled audio has nothing to classify; pretrain on it "
                             "(train.objective: masked_patch, `coarse2fine pretrain`) or give labeled data")
        for phase in self.phases():
            phase_model_config(self, phase.R, num_classes=2)

    def phases(self) -> list[Phase]:
        """The schedule's phases: ``c2f.phase_epochs``, or ``c2f.phase_steps`` in epochs of
        ``train.epoch_steps`` steps, or the paper's default split of ``train.epochs``."""
        c = self.c2f
        epochs = c.phase_epochs
        if c.phase_steps is not None:
            steps = self.train.epoch_steps
            if not steps or any(s % steps for s in c.phase_steps):
                raise ValueError(f"c2f.phase_steps: {list(c.phase_steps)} must be whole multiples of train.epoch_steps "
                                 f"({steps or 'unset'}), the steps between two evaluations")
            epochs = [s // steps for s in c.phase_steps]
        if epochs is None and "budget" in (c.switch, c.final_stop):  # every phase runs until its budget share
            epochs = [self.train.epochs] * len(parse_schedule(c.schedule))
        try:
            return build_phases(c.schedule, self.train.epochs, epochs, c.initial_fraction)
        except ValueError as err:
            raise ValueError(f"c2f: {err}") from None


def phase_model_config(cfg: RunConfig, R: int, num_classes: int) -> Any:
    """The architecture config of ``cfg``'s model at compression factor ``R``."""
    from coarse2fine.model.registry import model_config

    comp = Compression(cfg.c2f.method, R, cfg.c2f.patch_resize, cfg.c2f.scale_window)
    geo = comp.input_geometry(cfg.features.target_length, cfg.features.num_mel_bins)
    needs = objective_entry(cfg.train.objective).model_overrides
    settings = dataclasses.replace(cfg.model, overrides={**cfg.model.overrides, **needs}) if needs else cfg.model
    try:
        return model_config(settings, num_classes, geo)
    except (TypeError, ValueError) as err:
        raise ValueError(f"model {cfg.model.arch}/{cfg.model.preset} with c2f.method {cfg.c2f.method} at R={R} "
                         f"(schedule {cfg.c2f.schedule}): {err}") from None


def _plain(x: Any) -> Any:
    """Tuples to lists, recursively, so the dict is YAML/JSON friendly."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Convert ``value`` to the type of ``default`` where YAML leaves it ambiguous (``3e-4`` is a string)."""
    if value is None or isinstance(default, bool) or default is None:
        return value
    try:
        if isinstance(default, float) and isinstance(value, (int, float, str)):
            return float(value)
        if isinstance(default, int) and isinstance(value, (int, str)):
            return int(value)
        if isinstance(default, tuple):
            return tuple(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected {type(default).__name__}, got {value!r}") from None
    return value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate dataclass ``cls`` from ``values``, recursing into nested dataclasses; errors
    name the key (``features.fbank: ...``)."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    kwargs = {}
    for name, value in values.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else fields[name].default
        key = f"{where}.{name}"
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, key)
        else:
            kwargs[name] = _coerce(value, default, key)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # the section's own checks; make sure the key is named
        msg, short = str(err), where.removeprefix("config.")
        named = where == "config" or msg.startswith((where, short))  # RunConfig's checks name their keys
        raise ValueError(msg if named else f"{short}: {msg}") from None


def _move_legacy_feature_keys(values: dict[str, Any]) -> dict[str, Any]:
    """Earlier configs set the Kaldi settings directly under ``features:``; they now live under
    ``features.fbank``. Move them there (an explicit ``features.fbank`` value wins)."""
    feats = values.get("features")
    if isinstance(feats, dict) and any(k in feats for k in LEGACY_FEATURE_KEYS):
        feats = dict(feats)
        moved = {k: feats.pop(k) for k in LEGACY_FEATURE_KEYS if k in feats}
        feats["fbank"] = {**moved, **(feats.get("fbank") or {})}
        values = {**values, "features": feats}
    return values


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """A checked :class:`RunConfig` from a nested dict (errors name the key and the problem)."""
    return _build(RunConfig, _move_legacy_feature_keys(values), "config")


def preset_names() -> list[str]:
    """Names of the YAML presets shipped with the package."""
    return sorted(p.name[: -len(".yaml")] for p in resources.files("coarse2fine.presets").iterdir() if p.name.endswith(".yaml"))


def _looks_like_file(name: str) -> bool:
    """A config name is a file when it ends in .yaml/.yml or contains a path separator."""
    return name.endswith((".yaml", ".yml")) or "/" in name or os.sep in name


def _preset(name: str) -> Any:
    """The shipped preset file a config name refers to, or None: a name that is clearly a file
    (:func:`_looks_like_file`) or names no preset refers to none."""
    res = resources.files("coarse2fine.presets") / f"{name}.yaml"
    return res if not _looks_like_file(name) and res.is_file() else None


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: invalid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a mapping at the top level")
    return values


def _read_file(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"config file {path} is a directory, not a YAML file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"config file {path} cannot be read ({err})") from None


def read_yaml(name_or_path: str | Path, base_dir: Path | None = None) -> tuple[dict[str, Any], Path | None]:
    """A config as a dict and the folder it came from (``None`` for a shipped preset).

    A name resolves to a shipped preset unless it is clearly a file (ends in .yaml/.yml or
    contains a path separator); a name that is no preset but an existing file is read as a file.
    Relative file paths are taken from ``base_dir`` (the folder of the config that ``extends``
    it) when the file exists there, else from the current directory. Every problem is a
    ``ValueError`` naming the file.
    """
    name = str(name_or_path)
    res = None if isinstance(name_or_path, Path) else _preset(name)
    if res is not None:
        return _parse_yaml(res.read_text(), f"preset {name}"), None
    path = Path(name)
    if base_dir is not None and not path.is_absolute() and (base_dir / path).is_file():
        path = base_dir / path
    if not _looks_like_file(name) and not path.is_file():
        raise ValueError(f"unknown preset {name!r} (and no file of that name); available: {', '.join(preset_names())}")
    return _parse_yaml(_read_file(path), str(path)), path.parent


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: ``over``'s values win; nested mappings merge key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_extends(values: dict[str, Any], base_dir: Path | None = None, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Apply ``extends: PRESET_OR_PATH`` (a config building on another), recursively."""
    parent = values.pop("extends", None)
    if parent is None:
        return values
    if parent in seen:
        raise ValueError(f"config 'extends' loop: {' -> '.join((*seen, parent))}")
    parent_values, parent_dir = read_yaml(parent, base_dir)
    return _merge(resolve_extends(parent_values, parent_dir, (*seen, parent)), values)


def apply_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected section.key=value, e.g. train.epochs=10")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = values
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {key} is not a section")
        node[keys[-1]] = yaml.safe_load(raw)
    return values


def load_config(name_or_path: str | Path = "demo", overrides: Sequence[str] = ()) -> RunConfig:
    """Read a preset or YAML file, apply overrides, and check the result (see the module docstring).
    A file that sets no ``name`` is named after itself, not after the preset it extends."""
    values, base_dir = read_yaml(name_or_path)
    if base_dir is not None and "name" not in values:
        values["name"] = Path(name_or_path).stem
    return config_from_dict(apply_overrides(resolve_extends(values, base_dir), overrides))


def config_reference(name_or_path: str) -> str:
    """How another config file refers to this one in ``extends``: a shipped preset by its name,
    a file by its absolute path (the other file may live elsewhere)."""
    if _preset(name_or_path) is not None:
        return name_or_path
    return str(Path(name_or_path).resolve())


def config_delta(base: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``new`` that differ from ``base``, nested as in a config file."""
    out: dict[str, Any] = {}
    for key, value in new.items():
        if key not in base:
            out[key] = value
            continue
        old = base[key]
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            if sub := config_delta(old, value):
                out[key] = sub
        elif value != old:
            out[key] = value
    return out


def save_config(cfg: RunConfig, path: Path, extends: str | None = None) -> None:
    """Write ``cfg`` as YAML: every value, or, given the preset or config file it was made from
    (``extends``), ``extends:`` and only what differs from it, when that reads back as ``cfg``."""
    values = cfg.to_dict()
    if extends is not None:
        short = {"extends": extends, **config_delta(load_config(extends).to_dict(), values)}
        if config_from_dict(resolve_extends(copy.deepcopy(short))).to_dict() == values:
            values = short
    path.write_text(yaml.safe_dump(values, sort_keys=False))
