"""A trained model as ONNX: export with a dynamic batch, a check against PyTorch, and inference.

:func:`export_onnx` writes a model at its current geometry (a finished run's model: full
resolution) as one ``.onnx`` file with input ``features`` ``[batch, frames, mel bins]`` (batch
dynamic, geometry fixed) and output ``logits`` ``[batch, classes]``, through ``torch.onnx.export``'s
dynamo exporter; the geometry, classes and architecture go into the file's metadata, and so do
the name and SHA-256 of the weights file it was exported from (``weights=``).
:func:`check_onnx` runs it with onnxruntime on real inputs and compares with PyTorch.
:class:`OnnxClassifier` scores features with onnxruntime wherever ``predict`` takes a model;
:func:`check_source` refuses an export of other weights than those a run's ``predict`` would use.

Requires ``pip install "coarse2fine[onnx]"`` (onnx, onnxruntime, onnxscript); imported lazily.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from coarse2fine.compression import InputGeometry
from coarse2fine.data.shard_store import file_sha256
from coarse2fine.extras import require
from coarse2fine.logs import quiet_loggers
from coarse2fine.model.base import C2FModel

ATOL, RTOL = 1e-4, 1e-3
INPUT, OUTPUT = "features", "logits"
WEIGHTS_KEY, DIGEST_KEY = "coarse2fine.weights", "coarse2fine.weights_sha256"  # where the export came from
SHOWN_DIGEST = 12  # hex digits of a SHA-256 shown in messages
log = logging.getLogger(__name__)
# The exporter logs an INFO line per optimised initializer, and a warning per torchvision operator
# it cannot register (torchvision is no dependency here: no model of ours uses its operators).
_EXPORTER_LOGGERS = {"onnx_ir": logging.WARNING, "onnxscript": logging.WARNING, "torch.onnx": logging.WARNING,
                     "torch.onnx._internal.exporter._registration": logging.ERROR}


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    with quiet_loggers(_EXPORTER_LOGGERS), warnings.catch_warnings():
        # torch's own tree utilities, deprecated inside torch.export: nothing a user can act on
        warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec", category=FutureWarning)
        yield


def _require(module: str) -> Any:
    return require(module, "onnx", "ONNX export and inference")


def export_onnx(model: C2FModel, path: str | os.PathLike, example_batch: int = 2,
                weights: str | os.PathLike | None = None) -> Path:
    """Write ``model`` (eval mode, at its current geometry) to ``path`` as ONNX: dynamic batch,
    fixed ``frames`` x ``mel bins``, the weights inside the file. ``weights``: the file the model
    was loaded from; its name and SHA-256 go into the metadata (``coarse2fine.weights``,
    ``coarse2fine.weights_sha256``), so that :func:`check_source` can tell an export of other
    weights. Returns the path."""
    _require("onnx")
    _require("onnxscript")
    import onnx

    path = Path(path)
    geo = model.geometry
    model = model.eval()
    x = torch.zeros(example_batch, geo.frames, geo.mel_bins)
    arg = next(iter(inspect.signature(model.forward).parameters))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / "model.onnx"
        with _quiet_exporter():
            torch.onnx.export(model, (x,), str(raw), dynamo=True, external_data=False, verbose=False,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_shapes={arg: {0: torch.export.Dim("batch")}})
        proto = onnx.load(str(raw))
        meta = {"coarse2fine.arch": model.arch, "coarse2fine.frames": geo.frames, "coarse2fine.mel_bins": geo.mel_bins,
                "coarse2fine.num_classes": model.num_classes}
        if weights is not None:
            meta[WEIGHTS_KEY], meta[DIGEST_KEY] = Path(weights).name, file_sha256(weights)
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, str(value)
        onnx.checker.check_model(proto)
        tmp_out = Path(tmp) / "final.onnx"
        onnx.save(proto, str(tmp_out))
        os.replace(tmp_out, path)
    return path


class OnnxClassifier:
    """An exported model run by onnxruntime (CPU): ``classifier(features [B, frames, mel bins])``
    returns logits ``[B, classes]`` as a tensor; ``geometry`` and ``num_classes`` come from the
    file, as ``predict`` needs them; ``weights`` and ``weights_sha256``: the weights file it was
    exported from and its SHA-256 (None for a file exported without them)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        ort = _require("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"{self.path}: no such ONNX file")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 3:
            raise ValueError(f"{self.path}: expected one input [batch, frames, mel bins], got {[i.shape for i in inputs]}")
        _, frames, mel = inputs[0].shape
        if not isinstance(frames, int) or not isinstance(mel, int):
            raise ValueError(f"{self.path}: the input's frames and mel bins must be fixed, got {inputs[0].shape}")
        self.input_name = inputs[0].name
        self.geometry = InputGeometry(frames, mel)
        self.num_classes = int(meta.get("coarse2fine.num_classes", outputs[0].shape[-1]))
        self.arch = meta.get("coarse2fine.arch", "onnx")
        self.weights, self.weights_sha256 = meta.get(WEIGHTS_KEY), meta.get(DIGEST_KEY)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        x = features.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run(None, {self.input_name: x})
        return torch.from_numpy(np.asarray(logits))


def check_source(onnx: OnnxClassifier, weights: str | os.PathLike) -> None:
    """Refuse ``onnx`` unless it was exported from ``weights`` (the weights file a run's
    ``predict`` would use otherwise), compared by content (SHA-256): a one-line ``ValueError``
    naming both files and how to get a matching export. A file that records no weights (exported
    by an older coarse2fine or another tool) cannot be checked: a warning says so."""
    weights = Path(weights)
    if onnx.weights_sha256 is None:
        log.warning("%s records no weights file it was exported from (exported by an older coarse2fine or another "
                    "tool): cannot check that it is the model of %s", onnx.path, weights)
        return
    if not weights.is_file():
        raise ValueError(f"{weights}: file not found, so {onnx.path} (exported from {onnx.weights}) cannot be checked "
                         f"against it")
    now = file_sha256(weights)
    if now == onnx.weights_sha256:
        return
    was, run = onnx.weights_sha256[:SHOWN_DIGEST], weights.parent
    home = onnx.path.parent  # where the export was written: its own run's folder, unless moved
    if home.resolve() != run.resolve():
        what = (f"{onnx.path} was exported from other weights than {weights}, the weights predict uses here: "
                f"from a {onnx.weights} with sha256 {was}; this one's is {now[:SHOWN_DIGEST]}")
        came = home / onnx.weights if onnx.weights else None
        if came is not None and came.is_file() and file_sha256(came) == onnx.weights_sha256:
            what += f" (the export is {came}'s: predict with {home})"
    elif onnx.weights == weights.name:
        what = (f"{onnx.path} was exported from an earlier {weights} (sha256 {was}; the file now: "
                f"{now[:SHOWN_DIGEST]})")
    else:
        what = (f"{onnx.path} was exported from {onnx.weights} (sha256 {was}), not from {weights} "
                f"(sha256 {now[:SHOWN_DIGEST]}), the weights predict uses here")
    option = "" if weights.name == "model.safetensors" else f" --weights {weights.name}"
    fix = f"export it again (coarse2fine export-onnx {run}{option}: writes {run / (weights.stem + '.onnx')})"
    source = run / onnx.weights if onnx.weights else None
    if source is not None and source != weights and source.is_file() and file_sha256(source) == onnx.weights_sha256:
        fix += f", or give --weights {onnx.weights}, the weights it came from"
    raise ValueError(f"{what}: {fix}")


@dataclass(frozen=True)
class OnnxCheck:
    """ONNX against PyTorch on ``clips`` inputs: the largest absolute difference of the logits and
    whether every logit is within ``atol + rtol * |PyTorch's|``."""

    clips: int
    max_abs_diff: float
    atol: float
    rtol: float
    ok: bool

    def summary(self) -> str:
        verdict = "OK" if self.ok else "MISMATCH"
        return (f"onnxruntime vs PyTorch on {self.clips} clip(s): max |diff| of the logits {self.max_abs_diff:.2e} "
                f"(tolerance {self.atol:g} + {self.rtol:g} x |logit|): {verdict}")


def check_onnx(model: torch.nn.Module, onnx_path: str | os.PathLike, features: torch.Tensor, atol: float = ATOL,
               rtol: float = RTOL) -> OnnxCheck:
    """Run the exported file and ``model`` on ``features`` ``[B, frames, mel bins]`` and compare."""
    model = model.eval()
    with torch.inference_mode():
        ref = model(features.float()).float()
    got = OnnxClassifier(onnx_path)(features)
    diff = (got - ref).abs()
    ok = bool((diff <= atol + rtol * ref.abs()).all())
    return OnnxCheck(len(features), float(diff.max()), atol, rtol, ok)
