"""Configs as files: shipped presets, YAML files that ``extends:`` others, ``--set`` overrides.

``load_config`` reads a preset by name (``presets/NAME.yaml`` inside the package) or a YAML file,
applies ``section.key=value`` overrides and checks the result, including that the device it asks
for exists here. Paths in a config file (data, cache, ``model.init_from``) are taken from that
file's folder and stored absolute, so a config runs the same from any folder; paths in a shipped
preset and on the command line are taken from the current folder, as typed.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import yaml

from coarse2fine.config.checks import ConfigError, ConfigErrors, collected_warnings, warn
from coarse2fine.config.checks import log as checks_log
from coarse2fine.config.run import (
    RunConfig,
    check_flat_feature_keys,
    config_from_dict,
    fbank_key,
    flat_feature_keys,
    merge,
    move_legacy_feature_keys,
)
from coarse2fine.config.sections import DataConfig, ModelConfig
from coarse2fine.runtime import check_device, resolve_device

PATH_SECTIONS = {"data": DataConfig, "model": ModelConfig}

# How the clips are read, not which clips nor what values the model sees: decoded once or at each
# step, the feature cache, held in memory (and where, and up to what size), loader processes,
# where remote shards are kept and how many stay open. (``data.in_memory_dtype`` is not one:
# float16 storage changes the numbers the model sees. With ``augment.mixup``, what the source
# serves (waveforms, features, model input) is what mixup mixes; the library picks it itself,
# ``in_memory: auto``, as an implementation detail, so it is no part of what a run is.)
LOADING_KEYS = frozenset({
    "data.preload", "data.cache_dir", "data.in_memory", "data.in_memory_device", "data.memory_limit_gb",
    "data.num_workers", "data.shard_cache", "data.open_shards",
})
# The keys that say how a run is executed, not what it learns (batch order and every draw depend
# on the seed and the epoch only): how clips are read (LOADING_KEYS); where and how the same steps
# run (the device, threads, torch.compile: other kernels, the same computation); what is logged
# or saved on the way (loss reads, TensorBoard, the peak for MFU, mid-epoch checkpoints, the
# planner's prediction, which a second plan of the same epochs measures anew). A run
# folder's run whose config differs from another only in these is the same run: it resumes, or is
# reused, with them changed (:mod:`coarse2fine.training.folder`). ``train.amp``,
# ``train.grad_accum`` (BatchNorm statistics per micro-batch) and ``data.in_memory_dtype`` change
# the numbers and are not runtime keys.
RUNTIME_KEYS = LOADING_KEYS | frozenset({
    "train.device", "train.threads", "train.compile", "train.compile_mode",
    "train.log_every", "train.tensorboard", "train.peak_tflops", "train.checkpoint_every", "train.save_best",
    "c2f.planned_flops", "c2f.planned_seconds",
})


def preset_names() -> list[str]:
    """Names of the YAML presets shipped with the package."""
    return sorted(p.name[: -len(".yaml")] for p in resources.files("coarse2fine.presets").iterdir() if p.name.endswith(".yaml"))


def placeholder_of(dotted: str, value: str, folder: Path | None = None) -> str | None:
    """The shipped preset whose own value of key ``dotted`` (``data.train``) is ``value`` as a
    config loaded in ``folder`` (the current folder) holds it, or None: a path the user left at a
    preset's placeholder."""
    section, _, name = dotted.partition(".")
    for preset in preset_names():
        given = read_yaml(preset)[0].get(section, {}).get(name)
        if isinstance(given, str) and _absolute(given, folder or Path.cwd()) == value:
            return preset
    return None


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
    it) when the file exists there, else from the current directory. Path values inside a file
    are made absolute from its folder (:func:`resolve_paths`). Every problem is a ``ValueError``
    naming the file.
    """
    name = str(name_or_path)
    res = None if isinstance(name_or_path, Path) else _preset(name)
    if res is not None:
        return _parse_yaml(res.read_text(), f"preset {name}"), None
    path = Path(name)
    if base_dir is not None and not path.is_absolute() and (base_dir / path).is_file():
        path = base_dir / path
    if not _looks_like_file(name) and not path.is_file():
        close = difflib.get_close_matches(name, preset_names(), n=1, cutoff=0.75)
        guess = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"unknown preset {name!r}{guess} (and no file of that name); available: {', '.join(preset_names())}")
    values = _parse_yaml(_read_file(path), str(path))
    return resolve_paths(values, path.parent, str(path)), path.parent


def _absolute(value: str, folder: Path) -> str:
    """``value`` taken from ``folder`` unless it is absolute or a URL; ``imagenet:PATH`` and
    ``PATH?filter`` keep their prefix / filter."""
    if "://" in value:
        return value
    prefix = "imagenet:" if value.startswith("imagenet:") else ""
    body, query = value[len(prefix):], ""
    if "?" in body:
        body, query = body.split("?", 1)
        query = "?" + query
    body = os.path.expanduser(body)
    if not os.path.isabs(body):
        body = os.path.normpath(os.path.join(os.path.abspath(folder), body))
    return prefix + body + query


def resolve_paths(values: dict[str, Any], folder: Path, source: str) -> dict[str, Any]:
    """``values`` with every path key (fields marked ``path`` in their section) taken from ``folder``."""
    out = dict(values)
    for section, cls in PATH_SECTIONS.items():
        given = out.get(section)
        if not isinstance(given, dict):
            continue
        given = dict(given)
        for f in dataclasses.fields(cls):
            value = given.get(f.name)
            if not f.metadata.get("path") or value is None:
                continue
            if isinstance(value, str):
                given[f.name] = _absolute(value, folder)
            elif isinstance(value, list):
                given[f.name] = [_absolute(v, folder) if isinstance(v, str) else v for v in value]
        out[section] = given
    return out


def resolve_extends(values: dict[str, Any], base_dir: Path | None = None, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Apply ``extends: PRESET_OR_PATH`` (a config building on another), recursively."""
    return merge_layers(extends_chain(values, base_dir, seen=seen))


def merge_layers(layers: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The values of ``(source, values)`` layers merged in order, the later ones winning."""
    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged = merge(merged, layer)
    return merged


def extends_chain(values: dict[str, Any], base_dir: Path | None = None, label: str = "config",
                  seen: tuple[str, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    """The configs that ``values`` builds on through ``extends:``, the farthest first, each as
    ``(where it came from, its values without extends)``; ``values`` itself comes last, as ``label``."""
    values = dict(values)
    parent = values.pop("extends", None)
    if parent is None:
        return [(label, values)]
    if parent in seen:
        raise ValueError(f"config 'extends' loop: {' -> '.join((*seen, parent))}")
    _check_parent_exists(str(parent), base_dir, label)
    parent_values, parent_dir = read_yaml(parent, base_dir)
    parent_label = f"preset {parent}" if parent_dir is None else os.path.normpath(Path(parent_dir) / Path(str(parent)).name)
    return [*extends_chain(parent_values, parent_dir, parent_label, (*seen, parent)), (label, values)]


def _check_parent_exists(parent: str, base_dir: Path | None, label: str) -> None:
    """``FileNotFoundError`` naming the config whose ``extends: parent`` names nothing, and where
    :func:`read_yaml` looked: a preset of that name (unless the name is clearly a file), the file
    next to the extending config, the file from the current folder."""
    if _preset(parent) is not None:
        return
    path = Path(parent)
    places: dict[str, list[str]] = {}  # where it looked: why
    if path.is_absolute():
        places[str(path)] = []
    else:
        if base_dir is not None:
            places.setdefault(os.path.abspath(base_dir / path), []).append(f"next to {label}")
        places.setdefault(os.path.abspath(path), []).append("from the current folder")
    if any(Path(p).exists() if _looks_like_file(parent) else Path(p).is_file() for p in places):
        return  # read_yaml reads it, or says what it is instead (a folder, say)
    looked = " nor ".join(p + (f" ({', '.join(why)})" if why else "") for p, why in places.items())
    close = difflib.get_close_matches(parent, preset_names(), n=1, cutoff=0.75)
    guess = f"; did you mean the preset {close[0]}?" if close and not _looks_like_file(parent) else ""
    preset = ("; a name ending in .yaml / .yml or with a / is a file, never a preset" if _looks_like_file(parent)
              else f"; no preset is named {parent!r} either{guess} (presets: {', '.join(preset_names())})")
    raise FileNotFoundError(f"{label}: extends: {parent}: no such config file: not at {looked}{preset}")


def _source_label(name_or_path: str | Path, base_dir: Path | None) -> str:
    """How an error names a config: ``preset NAME`` or the file's path."""
    return f"preset {name_or_path}" if base_dir is None else str(name_or_path)


def _key_of(message: str) -> list[str]:
    """The key path an error message starts with (``train.optim.lr: ...``,
    ``train.batch_size 30 must ...``; for unknown keys ``train: unknown key(s) epoch`` the first
    unknown one), as its parts; [] when there is none."""
    top = re.match(r"unknown top-level key\(s\) (\w+)", message)
    if top:
        return [top.group(1)]
    m = re.match(r"([A-Za-z_][\w.\[\]]*): unknown key\(s\) (\w+)", message) or re.match(r"([A-Za-z_][\w.\[\]]*)[: ]", message)
    if not m:
        return []
    dotted = ".".join(g for g in m.groups() if g)
    return [re.sub(r"\[\d+\]$", "", part) for part in dotted.split(".")]


def _sets(values: Mapping[str, Any], parts: Sequence[str]) -> bool:
    """Whether the nested ``values`` hold the key path ``parts`` (a section counts for its keys)."""
    node: Any = values
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _set_by(layers: Sequence[tuple[str, dict[str, Any]]], parts: Sequence[str]) -> int | None:
    """The index of the last of ``layers`` that sets the key path ``parts``, or None."""
    return next((i for i in reversed(range(len(layers))) if _sets(layers[i][1], parts)), None)


def _from_set(source: str | None) -> bool:
    return source is not None and source.startswith("--set")


def _named_text(msg: str, keys: Sequence[str], subject: str | None, layers: Sequence[tuple[str, dict[str, Any]]],
                fallback: str | None) -> str:
    """``msg`` with where its keys came from named first, as :func:`_named` says."""
    def parts(dotted: str) -> list[str]:  # c2f.phase_epochs[0] -> [c2f, phase_epochs]
        return [re.sub(r"\[\d+\]$", "", part) for part in dotted.split(".")]

    lead = parts(subject) if subject else ([] if keys else _key_of(msg))
    involved = [parts(k) for k in keys if k != subject]
    at = _set_by(layers, lead) if lead else None
    if at is None:  # no subject, or one that no config sets (its default): the key set last
        at = max((i for i in (_set_by(layers, k) for k in involved) if i is not None), default=None)
    source = layers[at][0] if at is not None else fallback
    if lead and at is not None and at == _set_by(layers, lead):  # the others set later, elsewhere
        later: dict[str, list[str]] = {}
        for key in involved:
            i = _set_by(layers, key)
            if i is not None and i > at and layers[i][0] != source and not (_from_set(source) and _from_set(layers[i][0])):
                later.setdefault(layers[i][0], []).append(".".join(key))
        if later:
            msg += " (" + "; ".join(f"{', '.join(names)} from {where}" for where, names in later.items()) + ")"
    if source is None or (_from_set(source) and msg.startswith(source.removeprefix("--set ").partition("=")[0])):
        return msg  # a --set is named as typed when the message starts with its key
    return f"{source}: {msg}"


def _named(err: ValueError, layers: Sequence[tuple[str, dict[str, Any]]], fallback: str | None) -> ValueError:
    """``err`` with the config that set its key named first: the last of ``layers`` that sets it,
    so an ``extends`` chain points at the right file. The key is the one the message starts with,
    or a :class:`~coarse2fine.config.checks.ConfigError`'s ``subject`` (with where its other keys
    were set, when that was later and elsewhere); an error about a combination of keys names
    where the last of them was set. A ``--set`` is named as typed: by the message itself when it
    starts with the key, else first (``--set train.loss=ce: data.multilabel: true ...``); a message
    without a key names ``fallback``."""
    every = err.errors if isinstance(err, ConfigErrors) else [err]
    texts = [_named_text(str(e), getattr(e, "keys", ()), getattr(e, "subject", None), layers, fallback) for e in every]
    return ValueError(texts[0] + (f" (also: {'; '.join(texts[1:])})" if texts[1:] else ""))


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
        try:
            node[keys[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ValueError(f"override {item!r}: the value is not valid YAML ({err})") from None
    return values


def load_config(name_or_path: str | Path = "demo", overrides: Sequence[str] = (), check_runtime: bool = True) -> RunConfig:
    """Read a preset or YAML file, apply overrides, and check the result (see the module
    docstring); with ``check_runtime`` also that ``train.device`` exists on this machine and
    ``model.init_from`` on this disk (not for reading the config of a run made elsewhere). A file that sets no ``name`` is named after
    itself, not after the preset it extends. An error in a value names the file (or preset) that
    set it, the last of an ``extends`` chain that does, unless ``--set`` gave it; an error about a
    combination of keys, the one that set one of them last (:func:`_named`); a warning (``3.0``
    taken as ``3``) is named the same way."""
    values, base_dir = read_yaml(name_or_path)
    if base_dir is not None and "name" not in values:
        values["name"] = Path(name_or_path).stem
    label = _source_label(name_or_path, base_dir)
    layers = [*extends_chain(values, base_dir, label), *((f"--set {item}", apply_overrides({}, [item])) for item in overrides)]
    try:
        with collected_warnings() as warnings:
            try:
                features = merge_layers(layers).get("features")
                frontend = features.get("frontend", "fbank") if isinstance(features, dict) else "fbank"
                check_flat_feature_keys([key for _, layer in layers for key in flat_feature_keys(layer)], str(frontend))
                # each file's flat Kaldi keys (features.num_mel_bins) moved to features.fbank before the merge,
                # so that they win over what an earlier file set there, as any key does
                layers = [(source, move_legacy_feature_keys(layer)) for source, layer in layers]
                files = merge_layers(layers[:len(layers) - len(overrides)])
                values = apply_overrides(files, [fbank_key(k) + sep + v for k, sep, v in (o.partition("=") for o in overrides)])
                cfg = config_from_dict(resolve_paths(values, Path.cwd(), "current folder"))
                cfg.warn_averaged_epochs()
                cfg.warn_fixed_phases()
                cfg.warn_unused_settings()
                if check_runtime:  # a config to run here, not a run's saved config (all of its keys)
                    _warn_unread_data_keys(cfg.data, layers)
                    _warn_unread_keys_you_set(cfg, layers)
            finally:
                for key, text, keys in warnings:
                    checks_log.warning("%s", _named_text(text, keys, None if keys else key, layers, label))
        if check_runtime:
            check_device(cfg.train.device)
            _check_amp(cfg)
            cfg.model.check_init_from()
    except ValueError as err:
        raise _named(err, layers, label) from None
    return cfg


def _warn_unread_data_keys(data: DataConfig, layers: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """A warning for each kind-specific data key (``DataConfig.READS``) that your own config file
    or a ``--set`` gives last, not at its default, with or after ``data.kind``, but that kind
    does not read (``--set data.train_clips=100`` on ESC-50 data changes nothing). A key set
    before the kind changed (a shipped preset's, or a file of your own for the data it extends)
    was set for that other data, and says nothing."""
    default = DataConfig()
    for key in sorted(DataConfig.unread_keys(data.kind)):
        name = key.split(".")[1]
        if not _set_by_you_since(layers, key, "data.kind") or getattr(data, name) == getattr(default, name):
            continue
        readers = [k for k, names in DataConfig.READS.items() if name in names]
        kinds = " and ".join([", ".join(readers[:-1]), readers[-1]] if len(readers) > 1 else readers)
        warn(key, f"{key}: data.kind {data.kind} does not read it (only {kinds} data does): it changes nothing in "
                  "this run")


def _warn_unread_keys_you_set(cfg: RunConfig, layers: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """A warning for each key of the other LR schedule (``train.optim.decay_start`` under
    ``schedule: epochs``, ``epoch_factors`` under ``step``) that your own config file or a
    ``--set`` gives last, with or after ``train.optim.schedule``, and for ``features.mean`` /
    ``std`` under ``features.normalize: false``. A shipped preset's are not warned of: HTS-AT's
    presets extend AST's with its step-decay keys and its dataset statistics."""
    schedule = cfg.train.optim.schedule
    for key in sorted(k for k in cfg.unread_settings() if k.startswith("train.optim.")):
        if _set_by_you_since(layers, key, "train.optim.schedule"):
            other = "step" if schedule == "epochs" else "epochs"
            warn(key, f"{key}: train.optim.schedule {schedule} does not read it (only schedule {other} does): it "
                      "changes nothing in this run")
    if not cfg.features.normalize:  # HTS-AT's presets inherit AST's mean and std, and normalise in the model
        for key in ("features.mean", "features.std"):
            if _set_by_you_since(layers, key, "features.normalize"):
                warn(key, f"{key}: features.normalize is false (the model normalises its input itself): it changes "
                          "nothing in this run")


def _set_by_you_since(layers: Sequence[tuple[str, dict[str, Any]]], key: str, selector: str) -> bool:
    """Whether ``key`` is given last by a file of your own or a ``--set`` (not a shipped preset),
    no earlier than the last layer that sets ``selector``, the key that decides whether it is read
    (one set before the selector changed was set for the other choice)."""
    at = _set_by(layers, key.split("."))
    return at is not None and at >= (_set_by(layers, selector.split(".")) or 0) and not layers[at][0].startswith("preset ")


def _check_amp(cfg: RunConfig) -> None:
    """That ``train.amp`` (mixed precision, CUDA only) has a CUDA device here: ``train.device``
    as this machine resolves it (``auto`` on a machine without CUDA is the CPU)."""
    amp, device = cfg.train.amp, cfg.train.device
    if amp != "none" and (kind := resolve_device(device).type) != "cuda":
        raise ConfigError(f"train.amp: {amp} needs a CUDA device; train.device {device} is {kind} on this machine; "
                          "use amp: none here", ("train.device",), subject="train.amp")


def config_reference(name_or_path: str) -> str:
    """How another config file refers to this one in ``extends``: a shipped preset by its name,
    a file by its absolute path (the other file may live elsewhere)."""
    if _preset(name_or_path) is not None:
        return name_or_path
    return str(Path(name_or_path).resolve())


def differing_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Every dotted key whose value differs between two nested dicts, with both values, in key order."""
    found: list[tuple[str, Any, Any]] = []
    for key in sorted(set(a) | set(b)):
        u, v = a.get(key), b.get(key)
        if isinstance(u, Mapping) and isinstance(v, Mapping):
            found += differing_keys(u, v, f"{prefix}{key}.")
        elif u != v:
            found.append((f"{prefix}{key}", u, v))
    return found


def path_keys() -> set[str]:
    """The dotted config keys that hold paths (resolved from the config's folder when loaded)."""
    return {f"{section}.{f.name}" for section, cls in PATH_SECTIONS.items()
            for f in dataclasses.fields(cls) if f.metadata.get("path")}


def config_difference(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "", limit: int = 3,
                      ignore: Collection[str] = ()) -> str:
    """The first ``limit`` keys whose values differ between two nested dicts, as ``key: a vs b``
    (long values shortened), for messages that say why two configs or settings do not match;
    keys in ``ignore`` (dotted) do not count. Empty when nothing else differs."""

    def short(value: Any) -> str:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."

    diffs = [f"{where}: {short(x)} vs {short(y)}" for key, u, v in differing_keys(a, b, prefix) if key not in ignore
             for where, x, y in _first_difference(key, u, v)]
    return "; ".join(diffs[:limit]) + ("; ..." if len(diffs) > limit else "")


def _first_difference(key: str, u: Any, v: Any) -> list[tuple[str, Any, Any]]:
    """Where two differing values differ: for values too long to show whole, inside lists of the
    same length and their dicts (``feature_sets[1].R``), so that the shortened text shows it."""
    if len(repr(u)) <= 60 and len(repr(v)) <= 60:
        return [(key, u, v)]
    if isinstance(u, list) and isinstance(v, list) and len(u) == len(v):
        i = next(i for i, (x, y) in enumerate(zip(u, v)) if x != y)
        return _first_difference(f"{key}[{i}]", u[i], v[i])
    if isinstance(u, Mapping) and isinstance(v, Mapping):
        inner = differing_keys(u, v, f"{key}.")
        if inner:
            return _first_difference(*inner[0])
    return [(key, u, v)]


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


def config_yaml(cfg: RunConfig, extends: str | None = None) -> str:
    """``cfg`` as YAML: every value, or, given the preset or config file it was made from
    (``extends``), ``extends:`` and only what differs from it, when that reads back as ``cfg``."""
    values = cfg.to_dict()
    if extends is not None:
        delta = config_delta(load_config(extends, check_runtime=False).to_dict(), values)
        short = {"extends": extends, "name": cfg.name, **delta}  # a file without a name is named after itself
        merged = resolve_paths(resolve_extends(copy.deepcopy(short)), Path.cwd(), "current folder")  # as loaded
        if config_from_dict(merged).to_dict() == values:
            values = short
    return yaml.safe_dump(values, sort_keys=False)


def save_config(cfg: RunConfig, path: Path, extends: str | None = None) -> None:
    """Write :func:`config_yaml` to ``path``."""
    Path(path).write_text(config_yaml(cfg, extends))
