"""Commands that use a trained model: predict, export-hf, export-onnx."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from coarse2fine.cli.options import DEVICE_HELP, add_quiet, positive_int, positive_seconds
from coarse2fine.config import load_config
from coarse2fine.data.sources import load_validation
from coarse2fine.features import FeatureSpec, extract
from coarse2fine.model.ast.hf import load_hf_checkpoint
from coarse2fine.model.registry import get_arch
from coarse2fine.model.transfer import weights_in_run
from coarse2fine.predict import (
    check_hop,
    checkpoint_position,
    load_run_for_inference,
    model_folder_kind,
    predict_files,
    run_clip,
    window_features,
)
from coarse2fine.runtime import resolve_device
from coarse2fine.training.folder import CHECKPOINT

log = logging.getLogger("coarse2fine")


def add_parsers(sub) -> None:
    """predict, export-hf, export-onnx: commands that use a trained model."""
    p = sub.add_parser("predict", help="top-k labels for audio files of any length (sliding windows)")
    p.add_argument("model", help="a finished run folder, or a Hugging Face AST model folder")
    p.add_argument("audio", nargs="+", help="audio files, or folders (every audio file below them, sorted)")
    p.add_argument("--top-k", type=positive_int, default=5, help="labels to print per file, best first")
    p.add_argument("--window", type=positive_seconds, default=None,
                   help="seconds of audio per model input, each cut and padded as a training clip (default: the "
                        "run's data.clip_seconds; a Hugging Face folder: the audio that fills the model's frames)")
    p.add_argument("--hop", type=positive_seconds, default=None,
                   help="seconds from one window's start to the next, at most a window (default: half a window)")
    p.add_argument("--reduce", choices=["mean", "max"], default="mean", help="how window scores make the clip's")
    p.add_argument("--multilabel", action="store_true",
                   help="sigmoid scores, for Hugging Face folders whose config.json has no problem_type (runs know)")
    p.add_argument("--weights", default="model.safetensors",
                   help="weights file in a run folder (default: model.safetensors, the last epoch's; "
                        "model_best.safetensors: the best epoch's; model_wa.safetensors: weight-averaged; "
                        "checkpoint.safetensors: an unfinished run's last checkpoint)")
    p.add_argument("--json", action="store_true", help="print JSON with every window's scores")
    p.add_argument("--skip-errors", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--onnx", metavar="FILE", help="score with this ONNX export of the model (onnxruntime, CPU; "
                                                  "see export-onnx) instead of PyTorch; refused unless exported from "
                                                  "the run's --weights file")
    add_quiet(p)

    p = sub.add_parser("export-hf", help="export a finished run as a Hugging Face ASTForAudioClassification folder")
    p.add_argument("run", help="run folder")
    p.add_argument("out", nargs="?", help="output folder, the same as --out (kept for older scripts)")
    p.add_argument("--out", dest="out_option", metavar="OUT", help="output folder (default: RUN/hf)")
    p.add_argument("--weights", default="model.safetensors",
                   help="weights file in the run folder (default: model.safetensors, the last epoch's; "
                        "model_best.safetensors: the best epoch's; model_wa.safetensors: the weight-averaged model)")
    add_quiet(p)

    p = sub.add_parser("export-onnx", help="export a finished run's model as ONNX (dynamic batch) and check it "
                                           "against PyTorch with onnxruntime")
    p.add_argument("run", help="run folder")
    p.add_argument("--out", help="ONNX file to write (default: named after the weights: RUN/model.onnx, "
                                 "RUN/checkpoint.onnx for --weights checkpoint.safetensors)")
    p.add_argument("--weights", default="model.safetensors",
                   help="weights file in the run folder (default: model.safetensors, the last epoch's; "
                        "model_best.safetensors: the best epoch's; model_wa.safetensors: weight-averaged; "
                        "checkpoint.safetensors: an unfinished run's last checkpoint); its name and SHA-256 go into the "
                        "ONNX file")
    p.add_argument("--audio", nargs="+", metavar="FILE", help="clips to check on (default: the run's first validation clips)")
    p.add_argument("--clips", type=int, default=4, help="validation clips to check on (default: 4)")
    add_quiet(p)


def cmd_predict(args) -> int:
    device = resolve_device(args.device, "--device")
    path = Path(args.model)
    kind = model_folder_kind(path)  # a run folder or a Hugging Face folder; anything else is one line
    if kind == "run":
        model, spec, labels, names, multilabel = load_run_for_inference(path, weights=args.weights)
        clip = run_clip(path)  # windows cut and padded as the run's training clips were
    else:
        model, info = load_hf_checkpoint(path)
        spec, labels, names = info["feature_spec"], info["labels"], info["labels"]
        multilabel = args.multilabel or info["multilabel"]  # as its config.json says, or as told
        clip = None  # clip length unknown: a window fills the model's frames, features zero-padded (as AST)
    check_hop(spec, args.hop, "--hop", args.window, clip)
    if args.onnx:
        from coarse2fine.onnx_model import OnnxClassifier, check_source

        onnx = OnnxClassifier(args.onnx)
        if kind == "run":  # the export must be of the weights the run would score with
            check_source(onnx, path / weights_in_run(path, args.weights))
        else:
            log.warning("%s: scoring with %s, whose weights cannot be checked against a Hugging Face folder's",
                        path, onnx.path)
        model, device = onnx, torch.device("cpu")
    # Every readable file is scored; each unreadable one is listed with its problem (exit 1).
    preds = predict_files(model, args.audio, spec, labels, names, top_k=args.top_k, multilabel=multilabel,
                          window_seconds=args.window, hop_seconds=args.hop, device=device, reduce=args.reduce,
                          skip_errors=True, clip=clip)
    if args.json:
        print(json.dumps([p.to_dict() for p in preds], indent=2))
    else:
        for pred in preds:
            if pred.error:
                print(f"{pred.path}: error: {pred.error}")
                continue
            print(f"{pred.path} ({pred.duration_s:.2f} s, {len(pred.windows)} window(s)):")
            for label, name, score in pred.top:
                print(f"  {score:.4f}  {name}" + (f"  [{label}]" if name != label else ""))
    failed = [p for p in preds if p.error]
    if failed:
        print(f"coarse2fine: {len(failed)} of {len(preds)} file(s) could not be scored:", file=sys.stderr)
        for p in failed:
            print(f"  {p.path}: {p.error}", file=sys.stderr)
    return 1 if failed else 0


def cmd_export_hf(args) -> int:
    if args.out and args.out_option and Path(args.out) != Path(args.out_option):
        raise ValueError(f"export-hf: two output folders given ({args.out} and --out {args.out_option}); give one")
    target = args.out or args.out_option or Path(args.run) / "hf"
    model, spec, _labels, names, multilabel = load_run_for_inference(args.run, args.weights)
    export = get_arch(model.arch).export_hf
    if export is None:
        raise ValueError(f"{args.run}: {model.arch} models have no Hugging Face format to export to")
    clip = run_clip(args.run)
    out = export(model, target, id2label=names, feature_spec=spec, multilabel=multilabel,
                 clip_seconds=clip.num_samples / spec.frontend.sample_rate, pad=clip.pad)
    print(f"exported {args.run} to {out} (loads with transformers.ASTForAudioClassification.from_pretrained)")
    return 0


def check_features(run: Path, spec: FeatureSpec, audio: list[str] | None, clips: int) -> torch.Tensor:
    """Model inputs to check an export on: the first window of each ``audio`` file, or the first
    ``clips`` validation clips of the run's data (read from its config; nothing is preloaded)."""
    if audio:
        return window_features(audio, spec, run_clip(run))  # cut and padded as training clips were
    cfg = load_config(run / "config.yaml", check_runtime=False)  # its init_from or device may be elsewhere
    cfg = cfg.replace({"data.in_memory": "off", "data.preload": False, "data.cache_dir": None})
    try:
        val = load_validation(cfg, clips)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the run's validation clips to check the export on ({err}); give --audio FILES") from None
    waves, _ = val.take(torch.arange(min(clips, len(val))))
    return extract(waves, spec)


def cmd_export_onnx(args) -> int:
    from coarse2fine.onnx_model import check_onnx, export_onnx

    run = Path(args.run)
    args.weights = weights_in_run(run, args.weights)
    model, spec, _labels, _names, _ = load_run_for_inference(run, weights=args.weights)
    weights = run / args.weights
    where = f", {checkpoint_position(weights)}" if args.weights == CHECKPOINT else ""
    # Named after the weights: a checkpoint's export never takes the name of the finished model's.
    out = export_onnx(model, Path(args.out) if args.out else run / f"{Path(args.weights).stem}.onnx", weights=weights)
    check = check_onnx(model, out, check_features(run, spec, args.audio, args.clips))
    print(f"exported {weights} ({model.arch}{where}) to {out} (input features [batch, {model.geometry.frames}, "
          f"{model.geometry.mel_bins}], output logits [batch, {model.num_classes}])")
    print(check.summary())
    return 0 if check.ok else 1


COMMANDS = {"predict": cmd_predict, "export-hf": cmd_export_hf, "export-onnx": cmd_export_onnx}
