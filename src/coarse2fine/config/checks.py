"""The checks every config value goes through, whichever way it arrives (YAML, ``--set``, code).

A config section is a frozen dataclass whose fields say their type in the annotation and their
limits in :func:`key` metadata (``minimum``, ``choices``, ``path``). :func:`check_fields` runs
when a section is made or replaced (``__post_init__``): it converts what YAML leaves ambiguous
(``3e-4`` is a string to YAML) and refuses what is wrong, naming the key:

* an integer key takes integers, or a float with no fraction (``3.0``, said in a warning), never
  ``2.5`` or ``true``;
* a float key takes numbers and numeric strings, never ``true``;
* a list key takes a list, never a bare string (``sources: /data`` would otherwise be read one
  character at a time); the message shows the list form;
* ``minimum`` (``>=``) and ``choices`` are checked after the conversion.

An error about several keys at once is a :class:`ConfigError` that lists them, so that a loaded
config's error can name the file (or ``--set``) each of them came from; a warning said while a
config is read (:func:`collected_warnings`) is named the same way.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import logging
import re
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Union, get_args, get_origin

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config error that involves several keys (dotted, ``c2f.method``; a section name stands
    for all its keys). :func:`coarse2fine.config.load_config` names where they came from: the
    file (or ``--set``) that set ``subject``, the key the error is about (``data.cache_dir: ...``),
    adding where another of ``keys`` was set later; without a subject (a combination, none of
    them wrong alone), the file that set one of ``keys`` last."""

    def __init__(self, message: str, keys: typing.Sequence[str] = (), subject: str | None = None) -> None:
        super().__init__(message)
        self.keys = tuple(keys)
        self.subject = subject


class ConfigErrors(ConfigError):
    """Several config errors found in one pass (values of different keys), so that a file with
    three mistakes takes one try, not three: the first one's message, keys and subject, and every
    one in ``errors`` (:func:`coarse2fine.config.load_config` names each one's source)."""

    def __init__(self, errors: typing.Sequence[ValueError]) -> None:
        flat = [e for err in errors for e in (err.errors if isinstance(err, ConfigErrors) else (err,))]
        first = flat[0]
        rest = "; ".join(str(e) for e in flat[1:])
        super().__init__(f"{first} (also: {rest})", getattr(first, "keys", ()), getattr(first, "subject", None))
        self.errors = flat


def raise_all(errors: typing.Sequence[ValueError]) -> None:
    """Raise ``errors``: nothing if none, the one as it is, several as :class:`ConfigErrors`."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


class Problems:
    """The ``ValueError`` of each ``with`` block it guards, kept instead of raised (see :func:`every_problem`)."""

    def __init__(self) -> None:
        self.errors: list[ValueError] = []

    def __enter__(self) -> Problems:
        return self

    def __exit__(self, kind: Any, err: BaseException | None, tb: Any) -> bool:
        if isinstance(err, ValueError):
            self.errors.append(err)
            return True
        return False


@contextlib.contextmanager
def every_problem() -> Iterator[Problems]:
    """Checks that report every problem in one pass: each ``with each:`` block inside ``with
    every_problem() as each:`` that raises a ``ValueError`` adds it, and all are raised together
    at the end (:func:`raise_all`), so that a config with two mistakes takes one try, not two. A
    check that needs another to have passed goes in the same block."""
    problems = Problems()
    yield problems
    raise_all(problems.errors)


_WARNINGS: contextvars.ContextVar[list[tuple[str, str, tuple[str, ...]]] | None] = contextvars.ContextVar(
    "config_warnings", default=None)


def warn(name: str, message: str, keys: typing.Sequence[str] = ()) -> None:
    """Log ``message`` about key ``name``, or, inside :func:`collected_warnings`, keep it for the
    caller to say (naming the file that set the key; for a combination of ``keys``, none of them
    wrong alone, the file that set one of them last)."""
    kept = _WARNINGS.get()
    if kept is None:
        log.warning("%s", message)
    else:
        kept.append((name, message, tuple(keys)))


@contextlib.contextmanager
def collected_warnings() -> Iterator[list[tuple[str, str, tuple[str, ...]]]]:
    """The warnings of the checks run inside the block, as ``(key, message, keys)``, instead of logged."""
    kept: list[tuple[str, str, tuple[str, ...]]] = []
    token = _WARNINGS.set(kept)
    try:
        yield kept
    finally:
        _WARNINGS.reset(token)


def key(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, minimum: float | None = None,
        choices: tuple[Any, ...] | None = None, path: bool = False, pair: bool = False) -> Any:
    """A section field with its limits: ``minimum`` (inclusive), ``choices`` (the allowed values),
    ``path`` (a file or folder: relative paths in a config file are taken from its folder) and
    ``pair`` (a pair of values, one per axis, where a single number stands for both: ``10`` is ``[10, 10]``)."""
    meta = {"minimum": minimum, "choices": choices, "path": path, "pair": pair}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def choice(name: str, value: Any, allowed: typing.Iterable[Any]) -> None:
    """``ValueError`` naming ``name`` and the allowed values unless ``value`` is one of them."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(map(str, allowed))}")


def at_least(name: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum:g}, got {value!r}")


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _list_form(name: str, value: str) -> str:
    """The list a bare string was probably meant as, in YAML and in ``--set`` form."""
    return f"{name.rsplit('.', 1)[-1]}: [{value}]` in YAML, `--set '{name}=[{value}]'"


def coerce(value: Any, tp: Any, name: str) -> Any:
    """``value`` as type ``tp`` (an annotation: int, float, bool, str, Literal[...], list[...],
    tuple[...], dict, a dataclass, unions), or ``ValueError`` naming ``name``."""
    if tp is Any:
        return value
    if _is_union(tp):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, name)
            except ValueError as err:
                errors.append(str(err))
        if len(errors) == 1:
            raise ValueError(errors[0])
        simple = [e[len(f"{name}: expected "):-len(f", got {value!r}")] for e in errors
                  if e.startswith(f"{name}: expected ") and e.endswith(f", got {value!r}")]
        if len(simple) == len(errors):  # "expected a number or a string, got True"
            raise ValueError(f"{name}: expected {' or '.join(simple)}, got {value!r}")
        raise ValueError(f"{name}: {value!r} is none of the accepted forms ({'; '.join(errors)})")
    origin = get_origin(tp) or tp
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in get_args(tp)):
            return value
        raise ValueError(f"{name}: expected {' or '.join(repr(a) for a in get_args(tp))}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    if tp is int:
        return _as_int(value, name)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{name}: expected a string, got {value!r}")
    if origin in (list, tuple):
        return _as_sequence(value, tp, name)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ValueError(f"{name}: expected a mapping (key: value lines), got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return build(tp, value, name)
        raise ValueError(f"{name}: expected a mapping, got {type(value).__name__}")
    return value


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    number = value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{name}: expected an integer, got {value!r}") from None
    if isinstance(number, float) and number.is_integer():
        warn(name, f"{name}: {value!r} taken as the integer {int(number)}")
        return int(number)
    raise ValueError(f"{name}: expected an integer, got {value!r}")


def _as_sequence(value: Any, tp: Any, name: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if isinstance(value, str):
        raise ValueError(f"{name}: expected a list, e.g. `{_list_form(name, value)}`; got the string {value!r}")
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name}: expected a list, got {value!r}")
    if origin is list:
        item = args[0] if args else Any
        return [coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value))
    if args and len(value) != len(args):
        raise ValueError(f"{name}: expected {len(args)} values, got {list(value)!r}")
    return tuple(coerce(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))


def join(where: str, name: str) -> str:
    """``where.name``, or ``name`` at the top level (``where`` empty)."""
    return f"{where}.{name}" if where else name


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass's fields."""
    return typing.get_type_hints(cls)


def check_fields(obj: Any, where: str) -> None:
    """Convert every field of the (frozen) dataclass ``obj`` to its annotated type and check its
    ``minimum`` and ``choices``; errors name ``where.field``."""
    hints, errors = field_types(type(obj)), []
    for f in dataclasses.fields(obj):
        name = join(where, f.name)
        try:
            value = coerce_field(f, getattr(obj, f.name), hints[f.name], name)
            object.__setattr__(obj, f.name, value)
            if value is None:
                continue
            minimum, choices = f.metadata.get("minimum"), f.metadata.get("choices")
            if minimum is not None:
                for v in value if isinstance(value, (list, tuple)) else (value,):
                    at_least(name, v, minimum)
            if choices is not None:
                choice(name, value, choices)
        except ValueError as err:  # every key's problem, not the first one's only
            errors.append(err)
    raise_all(errors)


def coerce_field(f: dataclasses.Field, value: Any, tp: Any, name: str) -> Any:
    """:func:`coerce` for the field ``f``, a single number given for a pair key (``key(pair=True)``)
    taken for both axes (:func:`both_axes`)."""
    if not f.metadata.get("pair"):
        return coerce(value, tp, name)
    try:
        return coerce(both_axes(value), tp, name)
    except ValueError:
        if both_axes(value) is value:  # a list or a word: its own error
            raise
        raise ValueError(f"{name}: expected a whole number (the same on both axes) or a pair [freq, time], "
                         f"got {value!r}") from None


def both_axes(value: Any) -> Any:
    """A single number given for a pair of values (``model.stride: 10``, as AST's ``--fstride 10
    --tstride 10``) as that number on both axes; any other value as it is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value, value]
    return value


def unknown_keys(cls: type, values: Any, where: str = "") -> list[str]:
    """Every key of the nested ``values`` that dataclass ``cls`` (and the dataclasses of its
    fields, at any depth) does not define, dotted (``train.optim.warmup_step``), in file order."""
    if not isinstance(values, Mapping):
        return []
    fields, hints = {f.name for f in dataclasses.fields(cls) if f.init}, field_types(cls)
    found = [join(where, k) for k in values if k not in fields]
    for name, value in values.items():
        section = next((t for t in (hints.get(name), *get_args(hints.get(name))) if dataclasses.is_dataclass(t)), None)
        if name in fields and section is not None:
            found += unknown_keys(section, value, join(where, name))
    return found


# What other training code calls some keys (a guess for an unknown key, when the section has it)
OTHER_NAMES = {"learning_rate": "lr", "num_epochs": "epochs", "max_epochs": "epochs", "warmup": "warmup_steps",
               "bs": "batch_size", "workers": "num_workers", "mel_bins": "num_mel_bins", "n_mels": "num_mel_bins"}


def _guess(key: str, cls: type, where: str) -> str | None:
    """The known key of its section that unknown ``key`` (dotted) is closest to (``clip_seconds``
    for ``clip_second``, ``lr`` for ``learning_rate``), or None."""
    section, _, name = key.rpartition(".")
    at = _section_at(cls, section, where)
    known = [f.name for f in dataclasses.fields(at) if f.init] + list(_aliases(at))
    close = [OTHER_NAMES[name]] if OTHER_NAMES.get(name) in known else difflib.get_close_matches(name, known, n=1,
                                                                                                 cutoff=0.75)
    return close[0] if close else None


def _guessed(key: str, cls: type, where: str, dotted: bool = False) -> str:
    """Unknown ``key`` (dotted) as an error names it, with the known key it is closest to:
    ``clip_second (clip_seconds?)``, ``learning_rate (lr?)``; the last part only, unless ``dotted``."""
    guess = _guess(key, cls, where)
    return (key if dotted else key.rpartition(".")[2]) + (f" ({guess}?)" if guess else "")


def _aliases(section: type) -> Mapping[str, str]:
    """The keys ``section`` also takes, each for the key it sets (a section's ``aliases``)."""
    return getattr(section, "aliases", {})


def _section_at(cls: type, dotted: str, where: str) -> type:
    """The dataclass of section ``dotted`` (``train.optim``) inside ``cls``, which sits at ``where``."""
    rel = dotted[len(where):].lstrip(".") if where and dotted.startswith(where) else dotted
    for name in filter(None, rel.split(".")):
        tp = field_types(cls)[name]
        cls = next(t for t in (tp, *get_args(tp)) if dataclasses.is_dataclass(t))
    return cls


def _unknown_keys_error(cls: type, found: list[str], where: str) -> ValueError:
    """The error for the unknown keys ``found`` (dotted) in ``cls``'s values: those of the first
    section that has any, with the keys it knows and a guess for each, then the others."""
    section, _, _ = found[0].rpartition(".")
    at = _section_at(cls, section, where)
    known = [f.name for f in dataclasses.fields(at) if f.init]
    aliases = "; flat aliases: " + ", ".join(f"{k} ({v})" for k, v in _aliases(at).items()) if _aliases(at) else ""
    mine = sorted(_guessed(k, cls, where) for k in found if k.rpartition(".")[0] == section)
    others = [_guessed(k, cls, where, dotted=True) for k in found if k.rpartition(".")[0] != section]
    also = f" (also unknown: {', '.join(others)})" if others else ""
    if not section:
        return ValueError(f"unknown top-level key(s) {', '.join(mine)}; known sections and keys: {', '.join(known)}{also}")
    return ValueError(f"{section}: unknown key(s) {', '.join(mine)}; known: {', '.join(known)}{aliases}{also}")


def _without(values: Mapping[str, Any], dotted: list[str], where: str) -> dict[str, Any]:
    """``values`` (nested, at ``where``) without the keys ``dotted`` names."""
    out = dict(values)
    for key in dotted:
        parts, at = key[len(where):].lstrip(".").split("."), out
        for name in parts[:-1]:
            at[name] = at = dict(at[name])
        at.pop(parts[-1], None)
    return out


# While the values of a config with unknown keys are checked: the sections that hold one (and the
# sections around them), each with the keys its typos probably meant (None: a typo without a guess).
# They are not built: their own checks run apart from those keys (a check of keys together could blame
# a key that a typo left out), or, for a typo that could be any key, not at all.
_VALUES_ONLY: contextvars.ContextVar[Mapping[str, frozenset[str] | None]] = contextvars.ContextVar(
    "config_values_only", default={})


def _value_errors(cls: type, values: Mapping[str, Any], where: str, found: list[str]) -> list[ValueError]:
    """The problems of ``values`` besides the unknown keys ``found``: each value's own (types,
    choices) and the checks apart from the keys the typos meant in the sections with an unknown
    key, every check in the others."""
    meant: dict[str, frozenset[str] | None] = {}
    for key in found:
        guess = _guess(key, cls, where)
        for section in {where, *(key.rsplit(".", n)[0] for n in range(1, key.count(".") + 1))}:
            held = meant.get(section, frozenset())
            meant[section] = None if held is None or guess is None else held | {join(key.rpartition(".")[0], guess)}
    token = _VALUES_ONLY.set(meant)
    try:
        build(cls, values, where)
    except ConfigErrors as err:
        return list(err.errors)
    except ValueError as err:
        return [err]
    finally:
        _VALUES_ONLY.reset(token)
    return []


def keys_of(err: ValueError, where: str = "") -> set[str]:
    """The keys (dotted) an error involves: its own ``keys`` and ``subject``, and the key its
    message starts with (``train.metric: ...``; else the section ``where`` it was raised in)."""
    named = re.match(r"([A-Za-z_][\w.]*):", str(err))
    return {*getattr(err, "keys", ()), getattr(err, "subject", None) or "", named.group(1) if named else where} - {""}


def checks_apart_from(check: typing.Callable[[], Any], keys: set[str], where: str) -> list[ValueError]:
    """The problems ``check`` raises, but for those that involve any of ``keys`` (dotted; a section's
    name stands for its keys): a section's checks of keys together, run while some of its values
    failed on their own (or are a typo's), so that what they find of the others is said at once."""
    try:
        check()
    except ConfigErrors as err:
        found: list[ValueError] = list(err.errors)
    except ValueError as err:
        found = [err]
    except Exception:  # noqa: BLE001 - a check that needs a value that failed: nothing to say apart from it
        return []
    else:
        return []

    def near(a: str, b: str) -> bool:
        return a == b or a.startswith(b + ".") or b.startswith(a + ".")

    # an error that names no key (a top-level check's) cannot be told apart from them: left out too
    return [err for err in found if (named := keys_of(err, where)) and not any(near(a, b) for a in named for b in keys)]


def _checks_apart_from(cls: type, kwargs: Mapping[str, Any], where: str, keys: set[str]) -> list[ValueError]:
    """:func:`checks_apart_from` for ``cls`` made of ``kwargs`` (a section's values that passed on
    their own; the others at their defaults, and a section left unbuilt too)."""
    held = {k: v for k, v in kwargs.items() if v is not None}
    return checks_apart_from(lambda: cls(**held), keys | {join(where, k) for k, v in kwargs.items() if v is None}, where)


def build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Instantiate dataclass ``cls`` from ``values``, recursing into nested dataclasses; unknown
    keys and every problem name the key (``features.fbank.num_mel_bins: ...``). Unknown keys
    come first, every one at once, then the problems of the other values on their own."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    if found := unknown_keys(cls, values, where):  # every typo at once, not one per attempt
        raise_all([_unknown_keys_error(cls, found, where), *_value_errors(cls, _without(values, found, where), where, found)])
    hints, fields = field_types(cls), {f.name: f for f in dataclasses.fields(cls)}
    kwargs, errors, failed = {}, [], []
    for name, value in values.items():
        try:
            kwargs[name] = coerce_field(fields[name], value, hints[name], join(where, name))
        except ValueError as err:  # every section's and key's problem, not the first one's only
            errors.append(err)
            failed.append(join(where, name))
    values_only = where in _VALUES_ONLY.get()
    if errors or values_only:  # and the section's own checks of the values that passed
        meant = _VALUES_ONLY.get().get(where, frozenset())
        raise_all([*errors, *(_checks_apart_from(cls, kwargs, where, {*failed, *meant}) if meant is not None else [])])
        return None
    try:
        return cls(**kwargs)
    except ConfigErrors:
        raise  # each names its key
    except (TypeError, ValueError) as err:  # the class's own checks; make sure the key is named
        msg = str(err)
        raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}", getattr(err, "keys", ()),
                          getattr(err, "subject", None)) from None
