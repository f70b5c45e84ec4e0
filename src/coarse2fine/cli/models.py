"""Commands that use a trained model: predict, export-hf."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from coarse2fine.model.hf import load_hf_checkpoint
from coarse2fine.model.registry import get_arch
from coarse2fine.predict import load_run_for_inference, predict_files
from coarse2fine.runtime import resolve_device

log = logging.getLogger("coarse2fine")


def add_parsers(sub) -> None:
    """predict, export-hf: commands that use a trained model."""
    p = sub.add_parser("predict", help="top-k labels for audio files of any length (sliding windows)")
    p.add_argument("model", help="a finished run folder, or a Hugging Face AST model folder")
    p.add_argument("audio", nargs="+", help="audio files")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--hop", type=float, default=None, help="window hop in seconds (default: half a window)")
    p.add_argument("--reduce", choices=["mean", "max"], default="mean", help="how window scores make the clip's")
    p.add_argument("--multilabel", action="store_true", help="sigmoid scores (Hugging Face models; runs know)")
    p.add_argument("--weights", default="model.safetensors",
                   help="weights file in a run folder (model_wa.safetensors: weight-averaged; checkpoint.safetensors: "
                        "an unfinished run's last checkpoint)")
    p.add_argument("--json", action="store_true", help="print JSON with every window's scores")
    p.add_argument("--skip-errors", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    p.add_argument("--device", default="auto")

    p = sub.add_parser("export-hf", help="export a finished run as a Hugging Face ASTForAudioClassification folder")
    p.add_argument("run", help="run folder")
    p.add_argument("out", help="output folder")


def cmd_predict(args) -> int:
    device = resolve_device(args.device, "--device")
    path = Path(args.model)
    if any((path / name).exists() for name in ("model_config.json", "config.yaml", "checkpoint.safetensors")):
        model, spec, labels, names, multilabel = load_run_for_inference(path, weights=args.weights)
    else:
        model, info = load_hf_checkpoint(path)
        spec, labels, names, multilabel = info["feature_spec"], info["labels"], info["labels"], args.multilabel
    # Every readable file is scored; each unreadable one is listed with its problem (exit 1).
    preds = predict_files(model.to(device), args.audio, spec, labels, names, top_k=args.top_k, multilabel=multilabel,
                          hop_seconds=args.hop, device=device, reduce=args.reduce, skip_errors=True)
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
    model, spec, _labels, names, _ = load_run_for_inference(args.run)
    export = get_arch(model.arch).export_hf
    if export is None:
        raise ValueError(f"{args.run}: {model.arch} models have no Hugging Face format to export to")
    out = export(model, args.out, id2label=names, feature_spec=spec)
    print(f"exported {args.run} to {out} (loads with transformers.ASTForAudioClassification.from_pretrained)")
    return 0


COMMANDS = {"predict": cmd_predict, "export-hf": cmd_export_hf}
