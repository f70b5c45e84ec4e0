"""Model families by name: ``model.arch`` in a config (``ast`` by default).

An :class:`Arch` says how to make a family's architecture config from a run's model settings
(``model.preset``, ``model.patch_size``, ``model.stride``, ``model.drop_path_rate``,
``model.overrides``), the number of classes and a phase's
:class:`~coarse2fine.compression.InputGeometry`; how to rebuild a model from a saved config dict;
and, optionally, how to initialise from checkpoints of that family's public releases. A new
family registers itself with :func:`register`::

    register(Arch(
        name="mynet", model_cls=MyNet, config_cls=MyNetConfig, presets=MYNET_PRESETS,
        make_config=lambda settings, num_classes, geo: MyNetConfig(...),
    ))

after which ``model.arch: mynet`` trains it coarse-to-fine through the same loop, accounting,
checkpoints and commands as every other family. The shipped families register when the
``coarse2fine.model`` package is imported, each from its own module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from coarse2fine.compression import InputGeometry
from coarse2fine.model.base import C2FModel

MakeConfig = Callable[[Any, int, InputGeometry], Any]
LoadPretrained = Callable[[C2FModel, str], bool]
ExportHF = Callable[..., Any]


@dataclass(frozen=True)
class Arch:
    """A registered model family.

    ``make_config(settings, num_classes, geometry)`` returns the family's config for a phase (it
    raises ``ValueError`` for settings the family cannot take); ``config_cls.from_dict`` reads a
    saved one. ``load_pretrained(model, source)`` initialises ``model`` from a release checkpoint
    of the family and returns True, or returns False when ``source`` is not one it knows.
    ``export_hf(model, directory, id2label=..., feature_spec=...)`` writes a Hugging Face folder
    (None: the family has no Hugging Face format).
    """

    name: str
    model_cls: type[C2FModel]
    config_cls: type
    presets: Mapping[str, Mapping[str, Any]]
    make_config: MakeConfig
    load_pretrained: LoadPretrained | None = None
    export_hf: ExportHF | None = None
    description: str = ""


_ARCHS: dict[str, Arch] = {}


def register(arch: Arch) -> Arch:
    """Make ``arch`` available as ``model.arch: <arch.name>``."""
    _ARCHS[arch.name] = arch
    return arch


def arch_names() -> list[str]:
    """Names of the registered model families."""
    return sorted(_ARCHS)


def get_arch(name: str) -> Arch:
    """The family registered as ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in _ARCHS:
        raise ValueError(f"model.arch: {name!r} is not one of {', '.join(sorted(_ARCHS))}")
    return _ARCHS[name]


def model_config(settings: Any, num_classes: int, geometry: InputGeometry) -> Any:
    """The architecture config of ``settings.arch`` for a phase's geometry (validated, no weights)."""
    arch = get_arch(settings.arch)
    if settings.preset not in arch.presets:
        raise ValueError(f"model.preset: {settings.preset!r} is not a {arch.name} preset; choose one of {', '.join(arch.presets)}")
    return arch.make_config(settings, num_classes, geometry)


def build_model(settings: Any, num_classes: int, geometry: InputGeometry) -> C2FModel:
    """A freshly initialised model of ``settings.arch`` at a phase's geometry."""
    return get_arch(settings.arch).model_cls(model_config(settings, num_classes, geometry))


def model_from_config_dict(d: Mapping[str, Any]) -> C2FModel:
    """A model (fresh weights) from a saved ``model_config.json`` dict; ``arch`` defaults to ``ast``
    (run folders written before families were registered)."""
    d = dict(d)
    arch = get_arch(d.pop("arch", "ast"))
    return arch.model_cls(arch.config_cls.from_dict(d))
