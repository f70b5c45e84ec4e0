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

A family outside this package reaches every process (the ``coarse2fine`` command, ``predict``
reading a run's ``model_config.json``, loader workers) as a plug-in: an installed distribution
declares a Python entry point in the group ``coarse2fine.models`` (:data:`ENTRY_POINT_GROUP`)::

    [project.entry-points."coarse2fine.models"]
    mynet = "my_package.mynet"

naming a module whose import registers one or more families (or a callable, called once, that
does; an :class:`Arch` or a list of them that it returns is registered too). The entry points are
loaded once, lazily, the first time a name is not among the registered families or the names are
listed (:func:`load_plugins`); a plug-in that fails to load is a :class:`PluginError` naming the
entry point and the exception.
"""

from __future__ import annotations

import importlib.metadata
import logging
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from coarse2fine.compression import InputGeometry
from coarse2fine.model.base import C2FModel

MakeConfig = Callable[[Any, int, InputGeometry], Any]
LoadPretrained = Callable[[C2FModel, str], Any]  # False, True, or a transfer.TransferSummary
ExportHF = Callable[..., Any]

ENTRY_POINT_GROUP = "coarse2fine.models"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arch:
    """A registered model family.

    ``make_config(settings, num_classes, geometry)`` returns the family's config for a phase (it
    raises ``ValueError`` for settings the family cannot take); ``config_cls.from_dict`` reads a
    saved one. ``load_pretrained(model, source)`` initialises ``model`` from a release checkpoint
    of the family and returns what :func:`~coarse2fine.model.transfer.transfer_weights` returned
    (or True), or returns False when ``source`` is not one it knows.
    ``export_hf(model, directory, id2label=..., feature_spec=..., multilabel=..., clip_seconds=...,
    pad=...)`` writes a
    Hugging Face folder (None: the family has no Hugging Face format).
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


@dataclass
class _Plugins:
    """Whether the entry points were loaded, and the error of those that failed (None: all loaded)."""

    loaded: bool = False
    error: PluginError | None = None


class PluginError(ValueError):
    """A ``coarse2fine.models`` entry point that could not be loaded (its name, value and error)."""


_PLUGINS = _Plugins()


def register(arch: Arch) -> Arch:
    """Make ``arch`` available as ``model.arch: <arch.name>``."""
    _ARCHS[arch.name] = arch
    return arch


def _register_returned(value: Any) -> None:
    """Register what a plug-in callable returned: an :class:`Arch`, several, or nothing."""
    if value is None:
        return
    archs: Iterable[Any] = [value] if isinstance(value, Arch) else value
    for arch in archs:
        if not isinstance(arch, Arch):
            raise TypeError(f"returned {type(arch).__name__}, not an Arch (or a list of them, or None)")
        register(arch)


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> None:
    """Import one plug-in: a module registers its families on import; a callable is called."""
    before = set(_ARCHS)
    try:
        loaded = ep.load()
        if callable(loaded) and not isinstance(loaded, types.ModuleType):
            _register_returned(loaded())
    except Exception as err:  # any failure of foreign code is reported, not skipped
        raise PluginError(f"model family plug-in {ep.name} = {ep.value!r} (entry point group {ENTRY_POINT_GROUP}) "
                          f"failed to load: {type(err).__name__}: {err}") from err
    added = sorted(set(_ARCHS) - before)
    log.debug("plug-in %s = %s registered %s", ep.name, ep.value, ", ".join(added) or "no new family")


def load_plugins() -> None:
    """Load the ``coarse2fine.models`` entry points of the installed distributions, once. The
    failures (every plug-in is tried) are one :class:`PluginError`, raised now and again at every
    later call: a broken plug-in is never skipped silently."""
    if not _PLUGINS.loaded:
        _PLUGINS.loaded = True
        failed = []
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            try:
                _load_entry_point(ep)
            except PluginError as err:
                failed.append(err)
        if failed:
            _PLUGINS.error = failed[0] if len(failed) == 1 else PluginError("; ".join(map(str, failed)))
    if _PLUGINS.error is not None:
        raise _PLUGINS.error


def arch_names() -> list[str]:
    """Names of the registered model families, plug-ins included."""
    load_plugins()
    return sorted(_ARCHS)


def get_arch(name: str) -> Arch:
    """The family registered as ``name`` (the plug-ins are loaded first when it is not yet
    registered); ``ValueError`` naming the known ones otherwise."""
    if name not in _ARCHS:
        load_plugins()
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
