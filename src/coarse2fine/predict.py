"""Inference on audio files: sliding windows, batched scoring, clip-level top-k labels.

Every model input is made as the run's training and evaluation data path makes one: a window of
audio is cut and padded like a training clip, to ``data.clip_seconds`` with ``data.pad`` (zeros,
or the clip repeated as HTS-AT does; :class:`ClipSpec`, :func:`coarse2fine.audio.fix_length`), then
its features are computed, padded or cropped to ``target_length`` frames (padding frames are
zeros) and normalised (:func:`coarse2fine.features.extract`). So a file of ``clip_seconds`` or
less gets exactly the input evaluation gave it. Without a :class:`ClipSpec` (a Hugging Face
folder, whose clip length is not known) a window is the audio that fills ``target_length`` frames
(:func:`window_samples`) and a shorter one is not padded: its features are, with zeros, as AST's
recipe and transformers' ``ASTFeatureExtractor`` do.

A window is that much audio by default (``clip_seconds``, or :func:`window_samples`); another
length may be asked for (``window_seconds``: each window is then a clip of that length, padded or
cut as above). A file longer than a window is cut into windows ``hop`` apart (half a window by
default, at most a window); the last window is aligned with the end of the file so that every
sample is seen. A shorter file is one window. Each window is scored (sigmoid for multi-label
models, softmax otherwise) and the file's score is the mean (or max) over its windows. Windows of
several files share batches. A folder stands for every audio file below it (:func:`audio_files`).

:func:`load_run_for_inference` rebuilds the model, features and labels of a finished run folder,
:func:`run_clip` its clip length and padding. :func:`model_folder_kind` tells a run folder from a
Hugging Face model folder and refuses anything else in one line (an experiment folder: naming the
runs it holds).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Sequence

import torch

from coarse2fine.audio import AudioError, fix_length, load_audio
from coarse2fine.compression import InputGeometry
from coarse2fine.config import RunConfig, config_from_dict, load_config
from coarse2fine.data.manifest import AUDIO_EXTENSIONS, audio_in_folder
from coarse2fine.data.validate import wave_problem
from coarse2fine.features import FeatureSpec, extract
from coarse2fine.model.base import C2FModel
from coarse2fine.model.transfer import load_saved_model
from coarse2fine.run_folders import CHECKPOINT, RUN_MARKERS, is_run_folder, runs_held
from coarse2fine.training.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

Reduce = Literal["mean", "max"]
LabelScore = tuple[str, str, float]  # (label id, display name, score)


class Classifier(Protocol):
    """What scoring needs of a model: its input ``geometry``, ``num_classes``, and logits of a
    batch of features. A :class:`~coarse2fine.model.base.C2FModel` is one, and so is an exported
    model run by onnxruntime (:class:`coarse2fine.onnx_model.OnnxClassifier`)."""

    geometry: InputGeometry
    num_classes: int

    def __call__(self, features: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Prediction:
    """Result for one file.

    ``top``: the ``top_k`` best (label id, display name, clip score), best first. ``windows``: one
    dict per window with ``start_s``, ``end_s`` and its own ``top``. ``scores``: the clip score of
    every class, in class order. ``error``: why the file could not be scored (only with
    ``skip_errors``; then ``top``, ``windows`` and ``scores`` are empty).
    """

    path: str
    top: list[LabelScore] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    duration_s: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))


PAD_MODES = ("zeros", "repeat")


@dataclass(frozen=True)
class ClipSpec:
    """How the training data path cuts a clip before its features: to ``num_samples`` samples
    (``data.clip_seconds`` at the front end's rate), padded with ``pad`` (``zeros``, or
    ``repeat``: the clip repeated), as :func:`coarse2fine.audio.fix_length` does it."""

    num_samples: int
    pad: str = "zeros"
    min_samples: int = 0  # the shortest file training accepts (``data.min_seconds``): predict warns of a shorter one

    def __post_init__(self) -> None:
        if int(self.num_samples) != self.num_samples or self.num_samples < 1:
            raise ValueError(f"a clip must hold at least one sample, got {self.num_samples!r}")
        if self.pad not in PAD_MODES:
            raise ValueError(f"pad must be 'zeros' or 'repeat', got {self.pad!r}")

    @classmethod
    def from_config(cls, cfg: RunConfig) -> ClipSpec:
        """The clip of a run's config, with the data path's own rounding
        (:meth:`RunConfig.clip_samples <coarse2fine.config.RunConfig.clip_samples>`)."""
        return cls(cfg.clip_samples(), cfg.data.pad, int(cfg.data.min_seconds * cfg.features.sample_rate))


def window_samples(spec: FeatureSpec) -> int:
    """The fewest samples that give ``target_length`` frames (Kaldi fbank:
    ``(target_length - 1) * shift + window``, 164,080 = 10.255 s for AST's 1024 frames at 10 ms;
    a centred STFT: ``(target_length - 1) * hop``): a window's audio when no :class:`ClipSpec`
    says how long the training clips were."""
    fe, frames = spec.frontend, spec.target_length
    n = (frames - 1) * fe.window_shift + fe.window_size
    while n > 1 and fe.num_frames(n - fe.window_shift) >= frames:  # a centred front end needs less
        n -= fe.window_shift
    return n


def model_window(spec: FeatureSpec, clip: ClipSpec | None = None) -> int:
    """Samples of audio in one model input by default: the training clip's (``data.clip_seconds``)
    or, without a clip, :func:`window_samples`."""
    return clip.num_samples if clip is not None else window_samples(spec)


def fix_window(wave: torch.Tensor, spec: FeatureSpec, clip: ClipSpec | None = None) -> torch.Tensor:
    """A window's audio [n] as the data path fixes a clip before its features: cut or padded to
    the clip (:func:`coarse2fine.audio.fix_length` with the clip's ``pad``). Without a clip: cut to
    :func:`window_samples` and not padded (its features are), except to the shortest clip the
    front end takes (``min_samples``, a centred STFT's), with zeros."""
    if clip is not None:
        return fix_length(wave, clip.num_samples, clip.pad)
    wave = wave[..., :window_samples(spec)]
    least = int(getattr(spec.frontend, "min_samples", 1))
    return fix_length(wave, least) if wave.shape[-1] < least else wave


def model_inputs(waves: Sequence[torch.Tensor], spec: FeatureSpec) -> torch.Tensor:
    """Model input ``[len(waves), frames, mel bins]`` of windows fixed by :func:`fix_window`, on
    their device: :func:`coarse2fine.features.extract`, the data path's features, pad/crop and
    normalisation; windows of one length (all of them, with a clip) share one call."""
    if not waves:
        raise ValueError("no windows to compute features of")
    groups: dict[int, list[int]] = {}
    for i, wave in enumerate(waves):
        groups.setdefault(int(wave.shape[-1]), []).append(i)
    if len(groups) == 1:
        return extract(torch.stack(list(waves)), spec)
    out: list[torch.Tensor] = [torch.empty(0)] * len(waves)
    for idx in groups.values():
        for i, feats in zip(idx, extract(torch.stack([waves[i] for i in idx]), spec)):
            out[i] = feats
    return torch.stack(out)


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of the windows over a clip: ``0, hop, 2 hop, ...`` while a window fits,
    plus one window ending at the clip's end if the last one stops short. ``[0]`` for a clip no
    longer than one window."""
    if window < 1 or hop < 1:
        raise ValueError(f"window and hop must be at least one sample, got {window} and {hop}")
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts


def _activation(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Per-class scores: sigmoid (multi-label) or softmax over classes."""
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=-1)


def top_labels(scores: torch.Tensor, labels: Sequence[str], display_names: Sequence[str], k: int) -> list[LabelScore]:
    """The ``k`` best classes of a score vector, best first (ties: lower class index first)."""
    k = min(int(k), scores.numel())
    order = sorted(range(scores.numel()), key=lambda i: (-float(scores[i]), i))[:k]
    return [(labels[i], display_names[i], float(scores[i])) for i in order]


def _check_inputs(model: Classifier, spec: FeatureSpec, labels: Sequence[str], display_names: Sequence[str]) -> None:
    """Model, features and labels must agree."""
    geo = model.geometry
    if (geo.frames, geo.mel_bins) != (spec.target_length, spec.frontend.num_mel_bins):
        raise ValueError(
            f"the model expects {geo.frames} frames x {geo.mel_bins} mel bins, the feature spec "
            f"gives {spec.target_length} x {spec.frontend.num_mel_bins}"
        )
    if len(labels) != model.num_classes:
        raise ValueError(f"{len(labels)} labels for a model with {model.num_classes} classes")
    if len(display_names) != len(labels):
        raise ValueError(f"{len(display_names)} display names for {len(labels)} labels")


@dataclass
class _Clip:
    """A decoded file waiting for its window scores."""

    index: int
    path: str
    num_samples: int
    starts: list[int]
    scores: list[torch.Tensor] = field(default_factory=list)


def check_hop(spec: FeatureSpec, hop_seconds: float | None, name: str = "hop_seconds",
              window_seconds: float | None = None, clip: ClipSpec | None = None) -> None:
    """Refuse a hop longer than the scoring window (``window_seconds``, by default the model's:
    :func:`model_window`): the audio between one window's end and the next one's start would
    never be scored."""
    if hop_seconds is None:
        return
    sr = spec.frontend.sample_rate
    window = model_window(spec, clip) / sr if window_seconds is None else window_seconds
    if not hop_seconds > 0:
        raise ValueError(f"{name}: must be more than 0 seconds, got {hop_seconds:g}")
    if hop_seconds > window:
        raise ValueError(f"{name} {hop_seconds:g} s is longer than the window of {window:.3f} s: the audio between "
                         f"windows would not be scored; give a hop of at most {window:.3f} s")


def _window_and_hop(spec: FeatureSpec, window_seconds: float | None, hop_seconds: float | None,
                    clip: ClipSpec | None = None) -> tuple[int, int]:
    """Samples per scoring window (default: the model's, :func:`model_window`) and between windows
    (default: half a window; at most a window: :func:`check_hop`). A window longer than the
    model's is allowed, with a warning: its end is cut off, as training cuts a longer clip; so is a
    shorter one, with a warning: it is padded as a short clip is."""
    if window_seconds is not None and not window_seconds > 0:
        raise ValueError(f"window_seconds: must be more than 0 seconds, got {window_seconds:g}")
    check_hop(spec, hop_seconds, window_seconds=window_seconds, clip=clip)
    sr = spec.frontend.sample_rate
    model_win = model_window(spec, clip)
    win = model_win if window_seconds is None else max(1, int(round(window_seconds * sr)))
    hop = max(1, win // 2) if hop_seconds is None else max(1, int(round(hop_seconds * sr)))
    if win > model_win:
        what = "the training clips' (data.clip_seconds)" if clip is not None else "the model's"
        log.warning("window of %.3f s is longer than %s %.3f s: its end is cut off, as training cuts a longer clip",
                    win / sr, what, model_win / sr)
    elif win < model_win:
        what = "the training clips' (data.clip_seconds)" if clip is not None else "the model's"
        pad = f"padded ({clip.pad})" if clip is not None else "its features padded"
        log.warning("window of %.3f s is shorter than %s %.3f s: each window is %s to that length, %.0f %% of it "
                    "not audio, unlike the clips the model learned from", win / sr, what, model_win / sr, pad,
                    100 * (1 - win / model_win))
    return win, hop


def _device_dtype(model: Classifier) -> tuple[torch.device, torch.dtype]:
    """Where and in which dtype the model takes its input (the CPU in float32 for ONNX)."""
    if isinstance(model, torch.nn.Module):
        param = next(model.parameters())
        return param.device, param.dtype
    return torch.device("cpu"), torch.float32


def _score_windows(model: Classifier, batch: list[tuple[_Clip, torch.Tensor]], spec: FeatureSpec,
                   multilabel: bool) -> None:
    """Features and class scores of a batch of (clip, fixed window) pairs, on the model's device
    and in its dtype; each window's scores are appended to its clip's."""
    device, dtype = _device_dtype(model)
    with torch.inference_mode():
        feats = model_inputs([w.to(device) for _, w in batch], spec)
        probs = _activation(model(feats.to(dtype)).float(), multilabel).cpu()
    for (clip, _), p in zip(batch, probs):
        clip.scores.append(p)


def audio_files(paths: Sequence[str | os.PathLike]) -> list[str]:
    """``paths`` with each folder replaced by the audio files below it, at any depth, sorted
    (extensions ``.wav``, ``.flac``, ``.ogg``, ``.mp3`` in any case, those of
    :data:`coarse2fine.data.manifest.AUDIO_EXTENSIONS`; hidden files and folders skipped, as the
    data path's folder sources do). Other paths are kept as given (the decoder judges them). A
    folder without audio is a ``ValueError`` naming it. A file given twice (by name and in a
    folder, or in two folders) is kept once, where it came first."""
    files: list[str] = []
    for raw in paths:
        folder = Path(raw)
        if not folder.is_dir():
            files.append(os.fspath(raw))
            continue
        found = audio_in_folder(folder)
        if not found:
            raise ValueError(f"{folder}: no audio files in this folder ({', '.join(AUDIO_EXTENSIONS)}, "
                             "at any depth)")
        log.info("%s: %d audio file(s)", folder, len(found))
        files.extend(os.fspath(p) for p in found)
    first: dict[str, str] = {}
    for f in files:
        first.setdefault(os.path.realpath(f), f)
    once = list(first.values())
    if len(once) < len(files):
        log.info("%d file(s) given more than once, scored once", len(files) - len(once))
    return once


def predict_files(
    model: Classifier,
    paths: Sequence[str | os.PathLike],
    feature_spec: FeatureSpec,
    labels: Sequence[str],
    display_names: Sequence[str] | None = None,
    top_k: int = 5,
    multilabel: bool = False,
    window_seconds: float | None = None,
    hop_seconds: float | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    reduce: Reduce = "mean",
    skip_errors: bool = False,
    clip: ClipSpec | None = None,
) -> list[Prediction]:
    """Score audio files with ``model``; one :class:`Prediction` per file, in order (a folder in
    ``paths`` stands for its audio files, sorted: :func:`audio_files`).

    ``clip``: how the model's training clips were cut and padded (:func:`run_clip` of a run
    folder); each window is cut and padded as such a clip, then its features are computed as
    training's (Kaldi fbank or log-mel, pad/crop to ``target_length``, normalisation): a file of
    the clip's length or shorter gets the input evaluation gave it. Without ``clip``, see the
    module docstring. ``window_seconds`` (audio per window) defaults to the clip's length
    (:func:`model_window`), ``hop_seconds`` to half the window. The file score of a class is the
    ``reduce`` ("mean" or "max") of its window scores. The model is moved to ``device`` and put in
    eval mode. A file that cannot be decoded raises :class:`~coarse2fine.audio.AudioError` naming
    it, or with ``skip_errors`` gives a :class:`Prediction` with ``error`` set.
    """
    names = list(display_names) if display_names is not None else list(labels)
    _check_inputs(model, feature_spec, labels, names)
    _check_options(reduce, batch_size, top_k)
    sr = feature_spec.frontend.sample_rate
    win, hop = _window_and_hop(feature_spec, window_seconds, hop_seconds, clip)
    files = audio_files(paths)
    if isinstance(model, torch.nn.Module):
        model = model.to(torch.device(device)).eval()

    clips, failed = _score_files(model, files, feature_spec, clip, win, hop, batch_size, multilabel, skip_errors)
    results: dict[int, Prediction] = dict(failed)
    for c in clips:
        results[c.index] = _clip_prediction(c, win, sr, labels, names, top_k, reduce)
    log.info("scored %d file(s) (%d window(s))", len(clips), sum(len(c.starts) for c in clips))
    return [results[i] for i in sorted(results)]


def _check_options(reduce: str, batch_size: int, top_k: int) -> None:
    """Scoring options a caller can get wrong."""
    if reduce not in ("mean", "max"):
        raise ValueError(f"unknown reduce {reduce!r}; choose 'mean' or 'max'")
    if batch_size < 1 or top_k < 1:
        raise ValueError(f"batch_size and top_k must be positive, got {batch_size} and {top_k}")


def _score_files(model: Classifier, paths: Sequence[str], spec: FeatureSpec, clip: ClipSpec | None, win: int,
                 hop: int, batch_size: int, multilabel: bool,
                 skip_errors: bool) -> tuple[list[_Clip], dict[int, Prediction]]:
    """Decode each file, cut it into windows (each fixed as a training clip: :func:`fix_window`)
    and score them in batches shared across files. Returns the scored clips and, with
    ``skip_errors``, a :class:`Prediction` with ``error`` set for each file (by its index in
    ``paths``) that could not be decoded."""
    clips: list[_Clip] = []
    failed: dict[int, Prediction] = {}
    pending: list[tuple[_Clip, torch.Tensor]] = []
    for i, path in enumerate(paths):
        try:
            wave = load_audio(path, spec.frontend.sample_rate)
        except AudioError as err:
            if not skip_errors:
                raise
            log.debug("skipping %s", err)  # in the Prediction; the command line lists it
            failed[i] = Prediction(path=path, error=err.problem)
            continue
        silent = wave_problem(wave, spec.frontend.sample_rate, min_seconds=0.0)  # load_audio refused empty and NaN
        if silent is not None:
            log.warning("%s: %s, which training and check refuse: scored all the same", path, silent)
        if clip is not None and wave.numel() < clip.min_samples:
            sr = spec.frontend.sample_rate
            log.warning("%s: %.3f s, shorter than the %g s that training accepts (data.min_seconds): scored, on a "
                        "window that is mostly padding", path, wave.numel() / sr, clip.min_samples / sr)
        scored = _Clip(i, path, int(wave.numel()), window_starts(int(wave.numel()), win, hop))
        clips.append(scored)
        pending.extend((scored, fix_window(wave[s:s + win], spec, clip)) for s in scored.starts)
        while len(pending) >= batch_size:
            _score_windows(model, pending[:batch_size], spec, multilabel)
            del pending[:batch_size]
    if pending:
        _score_windows(model, pending, spec, multilabel)
    return clips, failed


def window_features(paths: Sequence[str | os.PathLike], spec: FeatureSpec, clip: ClipSpec | None = None) -> torch.Tensor:
    """Model input ``[len(paths), frames, mel bins]``: the features of each file's first window,
    as :func:`predict_files` makes them (with ``clip``, those the training/evaluation data path
    makes of the file: cut and padded to the clip, features padded to ``target_length``).
    Undecodable files raise :class:`~coarse2fine.audio.AudioError`."""
    return model_inputs([fix_window(load_audio(p, spec.frontend.sample_rate), spec, clip) for p in paths], spec)


def _clip_prediction(
    clip: _Clip, win: int, sr: int, labels: Sequence[str], names: Sequence[str], top_k: int, reduce: Reduce
) -> Prediction:
    """Reduce a clip's window scores to its :class:`Prediction`."""
    per_window = torch.stack(clip.scores)
    clip_scores = per_window.mean(dim=0) if reduce == "mean" else per_window.amax(dim=0)
    windows = [
        {
            "start_s": start / sr,
            "end_s": min(start + win, clip.num_samples) / sr,
            "top": top_labels(s, labels, names, top_k),
        }
        for start, s in zip(clip.starts, per_window)
    ]
    return Prediction(
        path=clip.path,
        top=top_labels(clip_scores, labels, names, top_k),
        windows=windows,
        scores=clip_scores.tolist(),
        duration_s=clip.num_samples / sr,
    )


# ----------------------------------------------------------------------------- run folders

HF_MARKER = "config.json"  # a Hugging Face model folder's
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")


def _not_a_model_folder(path: Path, hf: bool) -> str:
    """Why ``path`` is not a model folder for predict (``hf``: a Hugging Face folder would do) or
    an export command, in one line: a path that is not there, a file (audio, ONNX, weights), an
    experiment folder (naming the runs it holds) or another folder."""
    wanted = "a run folder or a Hugging Face model folder" if hf else "a run folder"
    if not path.exists():
        return f"{path}: no such folder (give {wanted})"
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            return (f"{path}: an ONNX file, not {wanted}; give the run folder it was exported from, and the file "
                    f"as --onnx {path}")
        if suffix in _WEIGHT_SUFFIXES:
            return (f"{path}: a weights file, not {wanted}; give the run folder that holds it ({path.parent}) "
                    f"and --weights {path.name}")
        if suffix in AUDIO_EXTENSIONS:
            return f"{path}: an audio file, not {wanted}; give the model first, then the audio files"
        return f"{path}: a file, not {wanted}"
    neither = "neither a run folder nor a Hugging Face model folder" if hf else "not a run folder"
    marks = (f" (no {RUN_MARKERS[0]}, {RUN_MARKERS[1]} or {HF_MARKER} in it)" if hf
             else f" (no {RUN_MARKERS[0]} or {RUN_MARKERS[1]} in it)")
    held = runs_held(path)
    return f"{path}: {neither}; {held}" if held else f"{path}: {neither}{marks}"


def model_folder_kind(path: str | os.PathLike) -> Literal["run", "hf"]:
    """What ``predict`` was given: ``run`` (a coarse2fine run folder, finished or not) or ``hf`` (a
    Hugging Face model folder, ``config.json``). Anything else is a one-line ``ValueError``: a path
    that is not there, a file (an ONNX file, a weights file, an audio file), an experiment folder
    (naming a few of the runs it holds) or a folder of neither kind."""
    folder = Path(path)
    if folder.is_dir() and is_run_folder(folder):
        return "run"
    if folder.is_dir() and (folder / HF_MARKER).is_file():
        return "hf"
    raise ValueError(_not_a_model_folder(folder, hf=True))


def _read_run_json(path: Path) -> Any:
    """JSON from a run file; ``ValueError`` naming it."""
    if not path.is_file():
        raise ValueError(f"{path}: file not found (is this a finished coarse2fine run folder?)")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read JSON ({err})") from None


def _run_feature_spec(path: Path, model: C2FModel) -> tuple[FeatureSpec, bool]:
    """The run's full-resolution :class:`FeatureSpec` and multi-label flag from its ``config.yaml``."""
    if not path.is_file():
        raise ValueError(f"{path}: file not found (is this a finished coarse2fine run folder?)")
    cfg = load_config(path, check_runtime=False)
    if cfg.train.objective != "classification":
        raise ValueError(f"{path}: a {cfg.train.objective} run has no classifier to predict with; "
                         "fine-tune it first (model.init_from in a classification config)")
    spec = cfg.features.spec()
    geo = model.geometry
    if (spec.target_length, spec.frontend.num_mel_bins) != (geo.frames, geo.mel_bins):
        raise ValueError(
            f"{path}: features give {spec.target_length} frames x {spec.frontend.num_mel_bins} bins but the saved model "
            f"expects {geo.frames} x {geo.mel_bins} (a run whose last phase is coarse, R > 1, cannot be used for "
            "inference as is)"
        )
    return spec, cfg.train.loss == "bce"


def _run_labels(path: Path, num_classes: int | None) -> tuple[list[str], list[str]]:
    """Class ids and display names from ``labels.json``; ``class_i`` when the file is absent
    (``num_classes`` None: the file must be there, and says how many)."""
    if not path.is_file():
        if num_classes is None:
            raise ValueError(f"{path}: file not found (the run's classes)")
        log.info("%s not found; naming the classes class_0..class_%d", path, num_classes - 1)
        classes = [f"class_{i}" for i in range(num_classes)]
        return classes, list(classes)
    data = _read_run_json(path)
    classes = data.get("classes") if isinstance(data, dict) else None
    num_classes = len(classes) if num_classes is None and isinstance(classes, list) else num_classes
    if not isinstance(classes, list) or len(classes) != num_classes:
        raise ValueError(f"{path}: 'classes' must list the model's {num_classes} classes")
    names = data.get("display_names") or classes
    if len(names) != num_classes:
        raise ValueError(f"{path}: 'display_names' has {len(names)} entries for {num_classes} classes")
    return [str(c) for c in classes], [str(n) for n in names]


def checkpoint_position(path: Path) -> str:
    """Where the run that wrote checkpoint ``path`` stood, in words."""
    pr = load_checkpoint(path)["progress"]
    return f"phase {pr['model_phase'] + 1}, epoch {pr['epoch']}, step {pr['step']}"


def checkpoint_model(run: Path) -> C2FModel:
    """The model of an unfinished run from its checkpoint, moved to full resolution (the geometry
    of the run's last phase), in eval mode on the CPU."""
    ckpt = load_checkpoint(run / CHECKPOINT)
    cfg = config_from_dict(ckpt["config"])
    state, phase = ckpt["model"], ckpt["progress"]["model_phase"]
    num_classes = len(_run_labels(run / "labels.json", None)[0])
    model = cfg.phase(phase, num_classes).build_model()
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{run / CHECKPOINT}: cannot load its model section ({err})") from None
    model.set_geometry(cfg.phase(len(cfg.phases()) - 1, num_classes).geometry)
    log.info("%s: unfinished run, model from its checkpoint (%s)", run, checkpoint_position(run / CHECKPOINT))
    return model.eval()


def run_clip(run_dir: str | os.PathLike) -> ClipSpec:
    """How a run's data path cut and padded its clips (``data.clip_seconds``, ``data.pad`` of its
    ``config.yaml``), for :func:`predict_files`; ``ValueError`` naming the file."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ValueError(f"{path}: file not found (is this a finished coarse2fine run folder?)")
    return ClipSpec.from_config(load_config(path, check_runtime=False))


def load_run_for_inference(
    run_dir: str | os.PathLike, weights: str = "model.safetensors"
) -> tuple[C2FModel, FeatureSpec, list[str], list[str], bool]:
    """``(model, feature_spec, labels, display_names, multilabel)`` of a finished run folder.

    Reads ``model_config.json`` and ``weights`` (``model.safetensors``, or ``model_wa.safetensors``
    for the weight-averaged model, or ``checkpoint.safetensors`` for the last checkpoint of an
    unfinished run, moved to full resolution) of any model family, ``config.yaml`` (features;
    ``train.loss == "bce"`` means multi-label) and ``labels.json`` if present. The model is
    returned in eval mode on the CPU. Errors are ``ValueError`` naming the file. Give
    :func:`predict_files` the run's :func:`run_clip` too, so that windows are cut and padded as
    the run's clips were.
    """
    run = Path(run_dir)
    if not run.is_dir() or not is_run_folder(run):
        raise ValueError(_not_a_model_folder(run, hf=False))
    if weights == CHECKPOINT:
        model = checkpoint_model(run)
    else:
        if not (run / "model_config.json").is_file() and (run / CHECKPOINT).is_file():
            where = checkpoint_position(run / CHECKPOINT)
            raise ValueError(f"{run}: an unfinished run (no final weights yet); its checkpoint ({where}) can be "
                             f"used: --weights {CHECKPOINT}")
        model = load_saved_model(run, weights)
    spec, multilabel = _run_feature_spec(run / "config.yaml", model)
    labels, names = _run_labels(run / "labels.json", model.num_classes)
    log.info("loaded run %s (%s): %d classes, %s, %d frames", run, model.arch, len(labels),
             "each scored on its own (sigmoid: trained with loss bce)" if multilabel else "one of them (softmax)",
             spec.target_length)
    return model.eval(), spec, labels, names, multilabel
