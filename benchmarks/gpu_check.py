"""The GPU check: does a coarse epoch cost what its FLOPs say on the card users train on?

Runs, on one GPU, in about 5 minutes, and writes one markdown table (``gpu_check.md``) and the
raw figures (``gpu_check.json``) into ``--out``:

1. the AudioSet-shaped experiment of ``docs/gpu.md``: AST-Base (1024 frames x 128 mel bins,
   512 tokens at R = 1, 128 at R = 4) in bf16 on the embedded synthetic source (1,200 training
   and 240 validation clips of 10.24 s, 8 classes, CE / acc), baseline 5 epochs, Fshift and
   Patch PI 4-1 (1 + 5 epochs): per run, the coarse epoch's FLOPs ratio and wall time ratio,
   the FLOPs, wall time and step time saves, and the fine phase's MFU;
2. ``bench`` with its breakdown at the published shapes in bf16: AST-Base at batch 12 (the
   recipe's) and 48, HTS-AT (``htsat_audioset``), SSAST-Base pretraining (``ssast_pretrain``);
3. AST-Base's step (Fshift 4-1, bf16) at batch 12, 24 and 48, fitted as fixed ms a step + ms per
   clip: how much of a coarse step the host and the launches cost, whatever the batch;
4. the demo on the GPU (micro AST: a step bound by the host, not the device).

    bash benchmarks/gpu_check.sh runs/gpu_check          # or: python benchmarks/gpu_check.py --out ...
    bash benchmarks/gpu_check.sh runs/gpu_check --parts bench   # one part again
    python benchmarks/gpu_check.py --smoke --device cpu  # the same code path on tiny settings

Each part's figures are written (``gpu_check.md``, ``gpu_check.json``) as soon as it ends; a part
that fails (out of memory, say) is reported with its error and the others still run, so one GPU
session always leaves what it measured.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import _common
from coarse2fine.config import load_config
from coarse2fine.data.sources import load_splits
from coarse2fine.experiments.grid import Variant, run_experiment
from coarse2fine.report.savings import baseline_reference, compare, format_table
from coarse2fine.report.timing import batch_sweep, bench, synthetic_source
from coarse2fine.runtime import load_average, peak_tflops
from coarse2fine.training.records import phase_records

EXPERIMENT = [
    "data.kind=synthetic", "data.train_clips=1200", "data.val_clips=240", "data.clip_seconds=10.24",
    "data.multilabel=false", "train.loss=ce", "train.metric=acc", "train.optim.lr=1e-4", "train.optim.warmup_steps=100",
    "augment.mixup=0", "augment.wa_start=0", "augment.wa_end=0", "train.amp=bf16", "train.epochs=5",
    "c2f.phase_epochs=[1, 5]",
]
BENCHES = [  # (label, preset, overrides)
    ("AST-Base, batch 12", "audioset", ["train.batch_size=12"]),
    ("AST-Base, batch 48", "audioset", ["train.batch_size=48"]),
    ("HTS-AT, batch 128", "htsat_audioset", []),
    ("SSAST-Base pretraining, batch 24", "ssast_pretrain", []),
]
PARTS = ("experiment", "bench", "sweep", "demo")
SMOKE = ["model.preset=micro", "data.train_clips=32", "data.val_clips=16", "train.batch_size=8", "data.clip_seconds=1.28",
         "features.target_length=128", "augment.timem=24", "train.epochs=1", "c2f.phase_epochs=[1, 1]", "train.amp=none"]


def experiment(device: str, out: Path, smoke: bool) -> list[dict]:
    """The AudioSet-shaped 4-1 experiment; one row per setting."""
    sets = [*EXPERIMENT, f"train.device={device}", *(SMOKE if smoke else [])]
    cfg = load_config("audioset", sets)
    base, runs = run_experiment(cfg, [Variant("fshift", "4-1"), Variant("patch-pi", "4-1")], out / "experiment",
                                load_splits(cfg), progress=False, reuse=False)
    ref = baseline_reference(base.records, "acc")
    base_phase = phase_records(base.records)[-1]
    rows = []
    for label, result in runs.items():
        s = compare(label, result.records, ref)
        coarse, fine = phase_records(result.records)
        warmups = [p["warmup_seconds"] for p in json.loads((result.out_dir / "log.json").read_text())["phases"]]
        fine_mfu = [r.mfu for r in result.records if r.phase == 1 and r.mfu is not None]
        rows.append({
            "setting": label, "FLOPs ratio (coarse epoch)": coarse.flops_per_clip / base_phase.flops_per_clip,
            "wall time ratio (coarse epoch)": (coarse.train_time / coarse.epochs) / (base_phase.train_time / base_phase.epochs),
            "step time ratio (per clip)": (coarse.step_cost / coarse.batch_size) / (base_phase.step_cost / base_phase.batch_size),
            "FLOPs save (%)": s.flops_save_pct, "wall time save (%)": s.time_saves.get("wall"),
            "step time save (%)": s.time_saves.get("step"), "best acc": s.best_metric,
            "fine-phase MFU": max(fine_mfu) if fine_mfu else None, "warm-up s (coarse, fine)": warmups,
        })
    return rows


def benches(device: str, smoke: bool, rounds: int) -> list[dict]:
    """bench with its breakdown at the published shapes."""
    rows = []
    for label, preset, sets in BENCHES:
        frames = 512 if preset.startswith("htsat") else 128  # HTS-AT's 4 chunks need 128 frames at R = 4
        tiny = ["train.amp=none", "model.preset=micro", "train.batch_size=4", f"data.clip_seconds={frames / 100}",
                "c2f.phase_epochs=null", f"features.target_length={frames}", "augment.timem=24"]
        cfg = load_config(preset, [*sets, "train.amp=bf16", f"train.device={device}", *(tiny if smoke else [])])
        source = synthetic_source(cfg, 8, 2 * cfg.train.batch_size)
        for r in bench(cfg, 8, source, rounds=rounds, warmup=0 if smoke else 2, device=device, with_breakdown=True):
            rows.append({"model": label, "R": r.R, "tokens": r.tokens, "step ms": r.step_ms, "FLOPs ratio": r.flops_ratio,
                         "time ratio": r.time_ratio, "time/FLOPs": r.time_over_flops, "MFU": r.mfu,
                         "device busy ms": r.device_busy_ms, "stages ms": r.stages})
    return rows


def sweep(device: str, smoke: bool, rounds: int) -> list[dict]:
    """AST-Base at the AudioSet shape in bf16, Fshift 4-1, at batch 12, 24 and 48: each phase's step
    as fixed ms (what the host and the launches cost whatever the batch) + ms per clip."""
    tiny = ["train.amp=none", "model.preset=micro", "data.clip_seconds=1.28", "features.target_length=128", "augment.timem=24"]
    cfg = load_config("audioset", ["train.amp=bf16", f"train.device={device}", "c2f.method=fshift",
                                   *(tiny if smoke else [])])
    batches = [2, 4] if smoke else [12, 24, 48]
    source = synthetic_source(cfg, 8, 2 * max(batches))
    return [{"model": "AST-Base, Fshift 4-1", **c.to_dict()}
            for c in batch_sweep(cfg, 8, batches, source, rounds=rounds, warmup=0 if smoke else 2, device=device)]


def demo(device: str, out: Path, smoke: bool) -> dict:
    """The demo on the device: its savings by every time measure."""
    sets = [f"train.device={device}", *(["data.train_clips=32", "data.val_clips=16", "train.epochs=1"] if smoke else [])]
    cfg = load_config("demo", sets)
    start = time.perf_counter()
    base, runs = run_experiment(cfg, [Variant("fshift", "4-1")], out / "demo", load_splits(cfg), progress=False, reuse=False)
    s = compare("Fshift 41", runs["Fshift 41"].records, baseline_reference(base.records, "acc"))
    return {"seconds": time.perf_counter() - start, "FLOPs save (%)": s.flops_save_pct, "wall time save (%)": s.time_saves.get("wall"),
            "step time save (%)": s.time_saves.get("step")}


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def report(result: dict, device: str) -> str:
    """The markdown of what ``result`` holds so far (a part that failed shows its error)."""
    machine = result["machine"]
    md = [f"# GPU check ({machine.get('device', device)}, {time.strftime('%Y-%m-%d')}, {result.get('seconds', 0):.0f} s)\n"]
    sections = [("experiment", "AST-Base at the AudioSet shape, bf16, 4-1"),
                ("bench", "bench at the published shapes, bf16 (with breakdown)"),
                ("sweep", "AST-Base's step as fixed ms + ms per clip (batch 12, 24, 48), bf16"),
                ("demo", "demo on the device")]
    if result.get("smoke"):  # the titles name what a real check runs; say what ran instead
        md.append(f"**Smoke run** (`--smoke`): every part on tiny settings ({', '.join(SMOKE)}; the sweep at batch "
                  "2 and 4), no mixed precision: a check of the script's code path, not a figure to report.\n")
        sections = [(key, f"{title} (smoke: tiny settings instead)") for key, title in sections]
    for key, title in sections:
        md.append(f"\n## {title}\n")
        part = result.get(key)
        if part is None:
            md.append("(not run)\n")
        elif isinstance(part, dict) and "error" in part:
            md.append(f"failed: {part['error']}\n")
        else:
            rows = part if isinstance(part, list) else [part]
            md.append(format_table([{k: fmt(v) for k, v in row.items() if k != "stages ms"}
                                    | ({"stages ms": ", ".join(f"{s} {v:.1f}" for s, v in (row["stages ms"] or {}).items())}
                                       if "stages ms" in row else {}) for row in rows], "markdown"))
    return "\n".join(md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="tiny settings, to check the script anywhere")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="which parts to run, comma-separated (default: all; e.g. bench to run a failed part again)")
    args = parser.parse_args()
    chosen = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown or not chosen:
        parser.error(f"--parts: unknown {', '.join(unknown) or 'nothing chosen'}; choose from {', '.join(PARTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    started = time.perf_counter()
    saved = args.out / "gpu_check.json"
    earlier = json.loads(saved.read_text()) if saved.exists() and len(chosen) < len(PARTS) else {}  # keep the rest
    result: dict = {**earlier, "machine": _common.machine_info(dev), "peak_tflops_bf16": peak_tflops(dev, "bf16"),
                    "load_avg": load_average(), "smoke": args.smoke}
    parts = {"experiment": lambda: experiment(args.device, args.out, args.smoke),
             "bench": lambda: benches(args.device, args.smoke, 1 if args.smoke else args.rounds),
             "sweep": lambda: sweep(args.device, args.smoke, 1 if args.smoke else args.rounds),
             "demo": lambda: demo(args.device, args.out, args.smoke)}
    for key, run in ((k, parts[k]) for k in chosen):  # a failed part leaves the others' figures, written as each ends
        try:
            result[key] = run()
        except Exception as err:  # noqa: BLE001 - one device session: keep what the other parts measure
            result[key] = {"error": f"{type(err).__name__}: {err}"}
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        result["seconds"] = time.perf_counter() - started
        saved.write_text(json.dumps(result, indent=2, default=str))
        (args.out / "gpu_check.md").write_text(report(result, args.device))
    print(report(result, args.device))


if __name__ == "__main__":
    main()
