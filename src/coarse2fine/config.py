"""Run configuration: typed dataclasses, read from YAML presets, overridable from the command line.

A config has five sections: ``data``, ``features``, ``model``, ``train`` (optimizer and loop) and
``c2f`` (schedule and compression). ``load_config`` reads a preset by name (``presets/NAME.yaml``
inside the package) or a path, then applies ``section.key=value`` overrides.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml

from coarse2fine.features import FbankConfig, FeatureSpec
from coarse2fine.optim import OptimConfig


@dataclass
class DataConfig:
    """Where the clips come from.

    ``kind``: ``synthetic`` (the embedded demo set: ``train_clips``/``val_clips``), ``manifest``
    (``train``/``val`` are AST JSON manifests with ``label_csv``, CSV files, or class folders),
    or ``fsdd`` (the Free Spoken Digit Dataset at ``root``; ``task``: digits or speakers).
    Clips are padded/cut to ``clip_seconds``. Every file is checked before training;
    ``on_error: skip`` drops bad files and lists them in the run's report instead of stopping.
    ``cache_dir`` turns on the on-disk fbank cache; ``preload`` decodes all clips into memory.
    """

    kind: str = "synthetic"
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
    num_workers: int = 0


@dataclass
class FeatureConfig:
    """AST front end: Kaldi fbank settings, target length in frames (at R = 1), normalisation."""

    sample_rate: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    target_length: int = 128
    mean: float = -4.2677393
    std: float = 4.5689974

    def spec(self) -> FeatureSpec:
        """The full-resolution :class:`~coarse2fine.features.FeatureSpec` of these settings."""
        fbank = FbankConfig(
            sample_rate=self.sample_rate,
            num_mel_bins=self.num_mel_bins,
            frame_length_ms=self.frame_length_ms,
            frame_shift_ms=self.frame_shift_ms,
        )
        return FeatureSpec(fbank=fbank, target_length=self.target_length, mean=self.mean, std=self.std)


@dataclass
class ModelConfig:
    """Which AST: a preset size plus patch geometry at full resolution (freq, time)."""

    preset: str = "tiny"
    patch_size: tuple[int, int] = (16, 16)
    stride: tuple[int, int] = (16, 16)
    drop_path_rate: float = 0.0
    init_from: str | None = None  # HF AST folder, original AST .pth, or imagenet:PATH (ViT/DeiT weights)


@dataclass
class TrainConfig:
    """Loop settings; ``epochs`` is the baseline budget, from which phase lengths are derived."""

    epochs: int = 20
    batch_size: int = 32
    loss: str = "ce"  # ce (single-label) | bce (multi-label)
    metric: str = "acc"  # acc | mAP | mAUC | d_prime
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    grad_accum: int = 1  # micro-batches per optimizer step (batch_size is the global batch)
    amp: str = "none"  # none | bf16 | fp16 (CUDA only)
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch (0: at epoch ends only)
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class AugmentSection:
    """AST augmentation: SpecAugment (``timem`` in full-resolution frames, divided by R in coarse
    phases of Fshift/Pool), waveform mixup, noise, balanced sampling, and weight averaging of the
    final phase's epochs ``wa_start..wa_end`` (0 = off)."""

    freqm: int = 0
    timem: int = 0
    mixup: float = 0.0
    mixup_alpha: float = 10.0
    noise: bool = False
    balanced_sampling: bool = False
    wa_start: int = 0
    wa_end: int = 0


@dataclass
class C2FConfig:
    """Coarse-to-fine settings: schedule (``1`` = baseline), method and phase lengths."""

    schedule: str = "4-1"
    method: str = "fshift"  # fshift | avgpool | maxpool | patch
    patch_resize: str = "pi"  # bilinear | pi (Patch method)
    scale_window: bool = False  # Fshift: also scale the 25 ms window by R
    phase_epochs: list[int] | None = None
    initial_fraction: float | None = None  # default: 0.25 (two phases) / 0.30 (three or more)


@dataclass
class RunConfig:
    """Everything that defines a run."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentSection = field(default_factory=AugmentSection)
    c2f: C2FConfig = field(default_factory=C2FConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


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
    """Instantiate dataclass ``cls`` from ``values``, recursing into nested dataclasses."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    kwargs = {}
    for name, value in values.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else fields[name].default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(value, default, f"{where}.{name}")
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """A :class:`RunConfig` from a nested dict (unknown keys are errors, naming the key)."""
    return _build(RunConfig, values, "config")


def preset_names() -> list[str]:
    """Names of the YAML presets shipped with the package."""
    return sorted(p.name[: -len(".yaml")] for p in resources.files("coarse2fine.presets").iterdir() if p.name.endswith(".yaml"))


def read_yaml(name_or_path: str | Path) -> dict[str, Any]:
    """A preset by name, or a YAML file by path, as a dict."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"config file {path} does not exist")
        text = path.read_text()
        source = str(path)
    else:
        res = resources.files("coarse2fine.presets") / f"{name_or_path}.yaml"
        if not res.is_file():
            raise ValueError(f"unknown preset {name_or_path!r}; available: {', '.join(preset_names())}")
        text = res.read_text()
        source = f"preset {name_or_path}"
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: invalid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a mapping at the top level")
    return values


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: ``over``'s values win; nested mappings merge key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_extends(values: dict[str, Any], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Apply ``extends: PRESET_OR_PATH`` (a preset building on another), recursively."""
    parent = values.pop("extends", None)
    if parent is None:
        return values
    if parent in seen:
        raise ValueError(f"config 'extends' loop: {' -> '.join((*seen, parent))}")
    return _merge(resolve_extends(read_yaml(parent), (*seen, parent)), values)


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
    """Read a preset or YAML file and apply overrides."""
    return config_from_dict(apply_overrides(resolve_extends(read_yaml(name_or_path)), overrides))


def save_config(cfg: RunConfig, path: Path) -> None:
    """Write ``cfg`` as YAML."""
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
