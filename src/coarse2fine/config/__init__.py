"""Run configuration: typed, frozen sections read from YAML presets and files, overridable from the
command line, checked when loaded.

A config has the sections ``data``, ``features``, ``model``, ``train`` (with ``train.optim``),
``augment``, ``c2f``, ``pretrain`` and ``experiment`` (an experiment's controls and seeds)
(:mod:`.sections`, every key with its type and limits);
:class:`RunConfig` holds them and says what each phase is (:meth:`RunConfig.phase`, :mod:`.run`);
:func:`load_config` reads presets and files (:mod:`.files`). Everything a run would otherwise trip
over later is checked at load: unknown keys, types (an integer key takes no ``2.5``, a list key
no bare string), limits, every enumerated value (naming the key and the allowed values), what
each data kind needs, the device, schedules, and the model geometry of every phase; an error about
several keys is a :class:`ConfigError` naming them, so a loaded config names the file that set them.
"""

from coarse2fine.config.checks import ConfigError, choice
from coarse2fine.config.files import (
    apply_overrides,
    config_delta,
    config_reference,
    config_yaml,
    load_config,
    preset_names,
    read_yaml,
    resolve_extends,
    save_config,
)
from coarse2fine.config.run import PhaseSetup, RunConfig, config_from_dict
from coarse2fine.config.sections import (
    FRONTENDS,
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

__all__ = [
    "FRONTENDS", "AugmentConfig", "C2FConfig", "ConfigError", "DataConfig", "ExperimentConfig", "FeatureConfig", "ModelConfig",
    "OptimConfig", "PhaseSetup", "PretrainConfig", "RunConfig", "TrainConfig", "apply_overrides", "choice",
    "config_delta", "config_from_dict", "config_reference", "config_yaml", "load_config", "preset_names", "read_yaml",
    "resolve_extends", "save_config",
]
