"""Initialising a model from another one: a finished coarse2fine run, or a family's release.

``model.init_from`` in a config names the source. A coarse2fine run folder (``model_config.json``
+ ``model.safetensors``; or one of its weights files, ``runs/x/model_best.safetensors``) of the
same family works for every family (a run of another family is refused); each family may also read the checkpoints of its own public releases
(:attr:`coarse2fine.model.registry.Arch.load_pretrained`). The source model is first moved to the
target's input geometry (its own geometry change: positional embeddings interpolated, kernels
resized, windows narrowed), then every tensor with the same name and shape is copied. The
classifier head is dropped when the class count differs, and matched to the task's classes where
the source names its own (:func:`match_classes`: kept, rows reordered, or new); a token grid the
transfer changes (AST's patch stride) is warned of. Any other mismatch is an error that says first
what differs in plain words (the source's family and size against the config's), then the first
few tensors. :func:`initialise` returns a :class:`TransferSummary` (what was taken, what is new, what
was left unused) for the run's log. The log line names every source tensor not loaded as it is,
with why: a classifier head replaced (other classes), a tensor the target has no place for, a
tensor resized to the target's geometry; a long list is summarised (:func:`name_list`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors.torch import load_file

from coarse2fine.model.base import C2FModel
from coarse2fine.model.registry import get_arch, model_from_config_dict
from coarse2fine.run_folders import runs_held

log = logging.getLogger(__name__)

SHOWN_MISMATCHES = 3  # tensors named in a shape-mismatch error (then a count)
SHOWN_IN_LOG = 6  # tensors named per reason in the log line of an initialisation (then a count)
NOT_ARCHITECTURE = ("num_classes", "drop_rate", "attn_drop_rate", "drop_path_rate",  # differ freely between runs
                    "time_factor", "time_patch_factor", "patch_resize")  # a phase's geometry, which transfers move


@dataclass(frozen=True)
class TransferSummary:
    """What an initialisation did: ``source`` (``run PATH`` or a checkpoint), the target tensors
    ``taken`` from it (count), those left as initialised (``new``) and the source tensors the
    target did not take (``unused``: those it has no place for and a classifier head it replaced,
    classes differing); ``None`` where a loader does not say."""

    source: str
    taken: int | None = None
    new: tuple[str, ...] | None = None
    unused: tuple[str, ...] | None = None
    source_classes: tuple[str, ...] | None = None
    head: str | None = None
    replaced: tuple[str, ...] = ()  # the source's head tensors not taken, and why (replaced_why)
    replaced_why: str = ""
    resized: str = ""  # the tensors resized to the target's geometry, as the log line names them

    def line(self) -> str | None:
        """The one log line of an initialisation (None where a loader does not say what it took):
        what was taken, resized, left new, and every source tensor not taken, with why."""
        if self.taken is None or self.new is None or self.unused is None:
            return None
        absent = sorted(set(self.unused) - set(self.replaced))
        unused = [f"{name_list(sorted(self.replaced))} ({self.replaced_why})" if self.replaced else "",
                  f"not in this model: {name_list(absent)}" if absent else ""]
        resized = f"; resized to this model's geometry: {self.resized}" if self.resized else ""
        return (f"initialised from {self.source}: {self.taken} tensors taken{resized}; new: {name_list(list(self.new))}; "
                f"unused: {'; '.join(u for u in unused if u) or 'none'}")

    def to_dict(self) -> dict[str, Any]:
        """Counts and the source, as a run's ``log.json`` records them (``new_tensors``,
        ``unused_tensors``: the names; ``head``: what became of the source's classifier head where
        its classes are known)."""
        return {"source": self.source, "taken": self.taken, "new": _count(self.new), "unused": _count(self.unused),
                "new_tensors": list(self.new or ()), "unused_tensors": list(self.unused or ()), "head": self.head}


def _count(names: tuple[str, ...] | None) -> int | None:
    """How many names (None: not known)."""
    return None if names is None else len(names)


class ShapeMismatch(ValueError):
    """Tensors of the same name but another shape in the source and the target (``mismatches``:
    ``name [source shape] vs [target shape]``); the message names the first few and the count."""

    def __init__(self, what: str, mismatches: list[str], detail: str = ""):
        self.mismatches = mismatches
        super().__init__(f"{what}: weights do not fit the model{': ' + detail if detail else ''} "
                         f"({shape_list(mismatches)})")


def shape_list(mismatches: list[str]) -> str:
    """The first :data:`SHOWN_MISMATCHES` mismatches and how many there are in all."""
    shown = "; ".join(mismatches[:SHOWN_MISMATCHES])
    more = f"; ... {len(mismatches) - SHOWN_MISMATCHES} more" if len(mismatches) > SHOWN_MISMATCHES else ""
    return f"{len(mismatches)} tensor(s) differ in shape: {shown}{more}"


def _plain(value: Any) -> Any:
    """Tuples as lists, as ``model_config.json`` holds them."""
    return list(value) if isinstance(value, tuple) else value


def _size_words(key: str, value: Any) -> str:
    """One size setting in words: ``embed dim 64``, ``4 layers``, ``3 heads``, ``depths 2-2-6-2``."""
    if isinstance(value, (list, tuple)):
        return f"{key.replace('_', ' ')} {'-'.join(map(str, value))}"
    if key == "depth":
        return f"{value} layers"
    if key == "num_heads":
        return f"{value} heads"
    return f"{key.replace('_', ' ')} {value}"


def preset_of(config: Mapping[str, Any]) -> str | None:
    """The size preset of its family whose settings a ``model_config.json`` dict has (None: a
    custom size, or a family not registered here); the last that fits, as shared names (``base``)
    are added after a family's own."""
    try:
        presets = get_arch(config.get("arch", "ast")).presets
    except ValueError:
        return None
    fits = [p for p, values in presets.items() if all(_plain(v) == _plain(config.get(k)) for k, v in values.items())]
    return fits[-1] if fits else None


def describe_size(config: Mapping[str, Any]) -> str:
    """A model's family and size in plain words from its ``model_config.json`` dict, e.g.
    ``ssast micro (embed dim 64, 4 layers, 4 heads)``: its preset (:func:`preset_of`; ``custom
    size`` when none fits), then the settings the family's presets set."""
    name = config.get("arch", "ast")
    try:
        presets = get_arch(name).presets
    except ValueError:
        return str(name)
    keys = dict.fromkeys(k for preset in presets.values() for k in preset)
    words = ", ".join(_size_words(k, config[k]) for k in keys if k in config)
    size = f"{name} {preset_of(config) or 'custom size'}"
    return f"{size} ({words})" if words else size


def _weights_held(run: Path) -> str:
    """What a run folder without the weights asked for holds instead, in words."""
    held = sorted(p.name for p in run.glob("*.safetensors"))
    if not held:
        return "is this a finished coarse2fine run folder?"
    note = ("; model_wa.safetensors is written only by a run that averages weights (augment.wa_start)"
            if "model_wa.safetensors" not in held else "")
    if "model_best.safetensors" not in held:
        note += ("; model_best.safetensors only by a run with train.save_best: true (the default) whose best epoch "
                 "was trained by a version that keeps it")
    return f"the run folder holds {', '.join(held)}{note}"


def weights_in_run(run: str | os.PathLike, weights: str) -> str:
    """The name of a weights file of the run folder ``run``, given by its name or by a path to it
    (``runs/x/model_best.safetensors`` as typed from the current folder); a path to a file of
    another folder is refused."""
    given, run = Path(weights), Path(run)
    if given.name == weights or (not given.is_absolute() and (run / given).is_file()):
        return weights  # a name, or a path below the run folder
    if given.resolve().parent == run.resolve():
        return given.name  # a path to a file of the folder, there or not (said when it is read)
    if not given.is_file():
        return weights  # nothing there: said when it is read
    raise ValueError(f"{given}: the weights must be a file of the run folder {run} (give its name, {given.name}, "
                     "or copy it there)")


def load_saved_model(run_dir: str | os.PathLike, weights: str = "model.safetensors") -> C2FModel:
    """The model a finished run folder holds (``model_config.json`` + ``weights``), in eval mode on
    the CPU. Errors are ``ValueError`` naming the file."""
    run = Path(run_dir)
    config_path = run / "model_config.json"
    if not config_path.is_file():
        raise ValueError(f"{config_path}: file not found (is this a finished coarse2fine run folder?)")
    try:
        model = model_from_config_dict(json.loads(config_path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError, ValueError) as err:
        raise ValueError(f"{config_path}: {err}") from None
    weights_path = run / weights_in_run(run, weights)
    if not weights_path.is_file():
        raise ValueError(f"{weights_path}: file not found ({_weights_held(run)})")
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except Exception as err:  # noqa: BLE001 - safetensors and load_state_dict raise various types
        raise ValueError(f"{weights_path}: cannot load weights into the model of {config_path} ({err})") from None
    return model.eval()


def _groups(items: list[str], depth: int) -> dict[str, list[str]]:
    """``items`` by their first ``depth`` name parts (``blocks.2.*``); a shorter name is its own group."""
    groups: dict[str, list[str]] = {}
    for name in items:
        parts = name.split(".")
        groups.setdefault(".".join(parts[:depth]) + ".*" if len(parts) > depth else name, []).append(name)
    return groups


def name_list(items: list[str], shown: int = SHOWN_IN_LOG) -> str:
    """Tensor names joined for one log line (``none`` when empty): all of them when there are at
    most ``shown``, else grouped by module (``blocks.2.* (12 tensors)``: the finest grouping with
    at most ``shown`` groups), the groups past ``shown`` counted."""
    if not items:
        return "none"
    if len(items) <= shown:
        return ", ".join(items)
    candidates = [_groups(items, depth) for depth in range(1, max(name.count(".") for name in items) + 1)]
    fitting = [g for g in candidates if len(g) <= shown]
    groups = fitting[-1] if fitting else candidates[0] if candidates else {name: [name] for name in items}
    words = [names[0] if len(names) == 1 else f"{prefix} ({len(names)} tensors)" for prefix, names in groups.items()]
    if len(words) <= shown:
        return ", ".join(words)
    return f"{', '.join(words[:shown])}, ... {len(words) - shown} more ({len(items)} tensors in all)"


def transfer_weights(source: C2FModel, target: C2FModel, what: str) -> TransferSummary:
    """Copy ``source``'s weights into ``target`` after moving ``source`` to ``target``'s geometry;
    returns what was taken, left as initialised and left unused. ``what`` names the source in
    messages; tensors of another shape (except the classifier head's) raise :class:`ShapeMismatch`.
    The summary's :meth:`~TransferSummary.line` names every source tensor not loaded as it is: the
    classifier head replaced (classes differ), those the target has no place for, those resized to
    the target's geometry (:func:`initialise` logs it); a source of another size, or whose token
    grid the transfer changes, is warned of here."""
    before = {key: list(value.shape) for key, value in source.state_dict().items()}
    source_size, target_size = describe_size(source.config_dict()), describe_size(target.config_dict())
    grid = _grid_note(source, target)
    source.match_geometry(target)
    own, theirs = target.state_dict(), source.state_dict()
    heads = set(target.head_keys(own))
    taken, bad, replaced = {}, [], []
    for key, value in theirs.items():
        if key not in own:
            continue
        if value.shape != own[key].shape:
            if key not in heads:
                bad.append(f"{key} {list(value.shape)} vs {list(own[key].shape)}")
            else:
                replaced.append(key)
            continue
        taken[key] = value
    if bad:
        others = _other_settings(source, target) if source_size == target_size else ""
        raise ShapeMismatch(what, bad, f"it is {source_size}; this config builds {target_size}{others}")
    with torch.no_grad():
        for key, value in taken.items():
            own[key].copy_(value.to(own[key].dtype))
    new = sorted(set(own) - set(taken))
    absent = sorted(set(theirs) - set(own))
    resized = [key for key in sorted(taken) if key in before and before[key] != list(theirs[key].shape)]
    shapes = [f"{key} {before[key]} -> {list(theirs[key].shape)}" for key in resized]
    if source.num_classes != target.num_classes:
        why = f"{source.num_classes} classes, task has {target.num_classes}: new head"
    else:
        why = "another shape: new head"
    if source_size != target_size:
        log.warning("initialised from %s: it is %s; this config builds %s: %d of its tensors taken, %d left as "
                    "initialised", what, source_size, target_size, len(taken), len(new))
    if grid:
        log.warning("initialised from %s: %s", what, grid)
    return TransferSummary(what, len(taken), tuple(new), tuple(sorted({*replaced, *absent})),
                           replaced=tuple(sorted(replaced)),
                           replaced_why=why if replaced else "",
                           resized=", ".join(shapes) if len(shapes) <= SHOWN_MISMATCHES else name_list(resized))


def _grid_note(source: C2FModel, target: C2FModel) -> str:
    """What a transfer changes of the source's token grid without a word (e.g. an AST checkpoint
    at AST's stride 10 moved to the config's 16), and how to keep it; empty when nothing."""
    theirs, ours = source.grid_settings(), target.grid_settings()
    keys = [k for k in theirs if k in ours and tuple(theirs[k]) != tuple(ours[k])]
    if not keys:
        return ""
    was = ", ".join(f"{k} {list(theirs[k])}" for k in keys)
    now = ", ".join(f"{k} {list(ours[k])}" for k in keys)
    keep = " ".join(f"model.{k}: {list(theirs[k])}" for k in keys)
    return (f"it was trained with {was}, this config builds {now}: its weights were moved to this model's grid "
            f"(positional embeddings interpolated, patch kernels resized where the patch differs); set {keep} to "
            "keep the checkpoint's")


def match_classes(model: C2FModel, summary: TransferSummary, namings: Sequence[Sequence[str] | None],
                  fresh_head: Mapping[str, torch.Tensor]) -> TransferSummary:
    """Make the classifier head taken from a source fit the task's classes, where the source names
    its own (``summary.source_classes``): kept when they are the task's (as ids or display names,
    one per entry of ``namings``) in its order, its rows reordered when they are the task's in
    another order, else replaced by ``fresh_head`` (the model's own initial head). A head not
    taken (another class count) or a source without class names is left as it is; a naming that is
    None (a task without display names) is skipped."""
    namings = [list(names) for names in namings if names]
    source, heads = summary.source_classes, model.head_keys()
    if not heads or summary.new is None:
        return summary
    if set(heads) & set(summary.new):
        return dataclasses.replace(summary, head=f"new ({summary.replaced_why.removesuffix(': new head')})"
                                   if summary.replaced_why else "new")
    if source is None:
        return dataclasses.replace(summary, head="taken by position (the source does not name its classes)")
    source = list(source)
    if any(names == source for names in namings):
        return dataclasses.replace(summary, head="kept (the same classes)")
    state, n = model.state_dict(), model.num_classes
    for names in namings:
        if len(set(source)) == len(source) == len(names) and set(names) == set(source):
            row = {name: i for i, name in enumerate(source)}
            order = torch.tensor([row[name] for name in names])
            with torch.no_grad():
                for key in heads:
                    if state[key].shape[:1] == (n,):
                        state[key].copy_(state[key][order.to(state[key].device)])
            return dataclasses.replace(summary, head="reordered (the same classes in another order)")
    with torch.no_grad():
        for key in heads:
            state[key].copy_(fresh_head[key])
    ours = namings[0] if namings else []
    why = f"its {len(source)} classes ({_few(source)}) are not this task's ({_few(ours)}): new head"
    return dataclasses.replace(summary, taken=(summary.taken or 0) - len(heads), new=tuple(sorted({*summary.new, *heads})),
                               unused=tuple(sorted({*(summary.unused or ()), *heads})), head="new (other classes)",
                               replaced=tuple(sorted(heads)), replaced_why=why)


def _few(names: Sequence[str], shown: int = SHOWN_IN_LOG) -> str:
    return ", ".join(names[:shown]) + (f", ... {len(names) - shown} more" if len(names) > shown else "")


PLACEHOLDER_CLASS = re.compile(r"(LABEL|class)_\d+")


def named_classes(names: Sequence[str] | None) -> tuple[str, ...] | None:
    """``names`` as a checkpoint's class names, or None where they name nothing (absent, or the
    placeholders that transformers (``LABEL_i``) and an export without names (``class_i``) write)."""
    if not names or all(PLACEHOLDER_CLASS.fullmatch(str(name)) for name in names):
        return None
    return tuple(str(name) for name in names)


def _family_hint(source: C2FModel, target: C2FModel, path: Path) -> str:
    """How to do what a cross-family ``init_from`` may have meant."""
    preset = preset_of(source.config_dict())
    size = f"model.preset={preset}" if preset else "the run's size"
    hint = f"to fine-tune this run, set model.arch={source.arch} and {size}"
    if source.arch == "ssast" and target.arch == "ast":
        hint += (f"; to start an AST from its encoder, write it as a Hugging Face AST folder "
                 f"(coarse2fine export-hf {path} --out DIR) and set model.init_from=DIR")
    return hint


def _other_settings(source: C2FModel, target: C2FModel) -> str:
    """The architecture settings that differ besides the size (after the geometry match)."""
    a, b = source.config_dict(), target.config_dict()
    diffs = [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b))
             if k not in NOT_ARCHITECTURE and a.get(k) != b.get(k)]
    return f"; they differ in {', '.join(diffs[:SHOWN_MISMATCHES])}" if diffs else ""


def initialise_from_run(model: C2FModel, path: Path, weights: str = "model.safetensors") -> TransferSummary:
    """Start ``model`` from the finished run folder ``path`` (its ``weights`` file): refused when the
    run is of another family; a run whose weights do not fit is an error that says so in plain
    words (both sizes) before any tensor, one of another size whose tensors fit (fewer layers) is
    warned of."""
    source = load_saved_model(path, weights)
    run, config = describe_size(source.config_dict()), describe_size(model.config_dict())
    where = f"model.init_from {path}: the run is {run}; this config builds {config}"
    if source.arch != model.arch:
        raise ValueError(f"{where}: init_from takes a run of the same family; {_family_hint(source, model, path)}")
    try:
        summary = transfer_weights(source, model, f"run {path}" + (f" ({weights})" if weights != "model.safetensors" else ""))
    except ShapeMismatch as err:
        others = _other_settings(source, model) if run == config else ""
        raise ValueError(f"{where}{others} ({shape_list(err.mismatches)})") from None
    return dataclasses.replace(summary, source_classes=_run_classes(path))


def _run_classes(path: Path) -> tuple[str, ...] | None:
    """The class ids a run folder trained on (its ``labels.json``), None when it does not say."""
    try:
        return named_classes(json.loads((path / "labels.json").read_text()).get("classes"))
    except (OSError, ValueError, AttributeError):
        return None


def initialise(model: C2FModel, source: str, classes: Sequence[Sequence[str] | None] = ()) -> TransferSummary:
    """Start ``model`` from ``source``: a coarse2fine run folder of its family, or a checkpoint of
    the model's family that its registry entry can read (e.g. AST: a Hugging Face folder, an
    original AST ``.pth``, ``imagenet:PATH``). Returns what was taken (counts unknown when a
    family's loader says only that it read the checkpoint). ``classes``: the task's class names,
    one list per naming (ids, display names); a head taken from a source that names other classes
    is replaced, one that names them in another order reordered (:func:`match_classes`)."""
    heads = set(model.head_keys()) if classes else set()  # the initial head, for a source of other classes
    fresh_head = {k: v.detach().clone() for k, v in model.state_dict().items() if k in heads}
    summary = _load_weights(model, source)
    if classes:
        summary = match_classes(model, summary, classes, fresh_head)
    line = summary.line()
    if line:
        log.info("%s%s", line, f"; classifier head: {summary.head}" if summary.head else "")
    return summary


def _load_weights(model: C2FModel, source: str) -> TransferSummary:
    """The weights of ``source`` in ``model`` (see :func:`initialise`)."""
    path = Path(source)
    if (path / "model_config.json").is_file():
        return initialise_from_run(model, path)
    if path.suffix == ".safetensors" and (path.parent / "model_config.json").is_file():  # runs/x/model_best.safetensors
        return initialise_from_run(model, path.parent, path.name)
    arch = get_arch(model.arch)
    loaded = arch.load_pretrained(model, source) if arch.load_pretrained is not None else False
    if isinstance(loaded, TransferSummary):
        return loaded
    if loaded:
        return TransferSummary(source)
    if not path.exists() and not source.startswith("imagenet:"):
        raise ValueError(f"model.init_from: {source} does not exist")
    held = runs_held(path) if path.is_dir() else ""
    raise ValueError(f"model.init_from: {source} is neither a coarse2fine run folder nor a checkpoint the {arch.name} "
                     f"family reads" + (f"; {held}" if held else ""))
