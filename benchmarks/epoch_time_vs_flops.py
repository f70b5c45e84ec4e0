"""Does training time shrink like training FLOPs when the input is compressed R times in time?

For each model shape and compression (Fshift: target_length/R frames computed with an R times
longer frame shift; Patch: full-length input cut into 16 x 16R patches), one training step is
timed as the training loop does it (``coarse2fine.training.loop.train_one_epoch``): features from
waveforms (fbank, pad/crop, normalise, compression transform), forward, cross-entropy, backward,
Adam step, LR-scheduler step, ``loss.item()``. ``--model-only`` leaves feature extraction out
(features are computed once, before timing).

Reported per configuration: median seconds of each part of the step, samples/s, and next to each
other the time ratio t(R) / t(1) and the FLOPs ratio ast_training_flops(R) / ast_training_flops(1)
with their quotient (target: time ratio <= 1.10 x FLOPs ratio). Epoch time is steps x step time,
so the step ratios are the epoch-time ratios. All configurations of a shape are timed in
interleaved rounds (one step of each per round), so that load changes on the machine hit them
alike; ``--sequential`` times them one after another instead (less memory).

    python benchmarks/epoch_time_vs_flops.py                      # tiny + base, 1024 frames
    python benchmarks/epoch_time_vs_flops.py --target-length 512  # cheaper
    python benchmarks/epoch_time_vs_flops.py --quick              # ~20 s smoke run
    python benchmarks/epoch_time_vs_flops.py --device cuda --batch-size 12 --steps 20
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Sequence

import torch
import torch.nn.functional as F

import _common
from coarse2fine.compression import Compression
from coarse2fine.core import phase_input
from coarse2fine.features import FbankConfig, FeatureSpec
from coarse2fine.model import AST, ast_config, ast_training_flops
from coarse2fine.training.optim import OptimConfig, build_optimizer, build_scheduler

NAME = "epoch_time_vs_flops"
TARGET = 1.10  # time ratio may exceed the FLOPs ratio by at most this factor
NUM_MEL_BINS = 128
PATCH = (16, 16)
NUM_CLASSES = 527
SAMPLE_RATE = 16000
# AudioSet statistics used by AST (and coarse2fine.config.FeatureConfig).
FEAT_MEAN, FEAT_STD = -4.2677393, 4.5689974
DEFAULT_BATCH = {"micro": 8, "tiny": 8, "small": 4, "base": 2}
PARTS = ("features", "fwd_bwd", "optimizer")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=None, help="comma-separated AST presets (default: tiny,base; --quick: tiny)")
    p.add_argument("--R", default="1,2,4", help="compression factors (1 is always added: it is the reference)")
    p.add_argument("--methods", default="fshift,patch", help="compression methods: fshift, patch, avgpool, maxpool")
    p.add_argument("--target-length", type=int, default=None,
                   help="input frames at R=1 (default: 1024, AST's base geometry; --quick: 256)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"clips per step for every shape (default per shape: {DEFAULT_BATCH}; --quick: 2)")
    p.add_argument("--model-only", action="store_true", help="exclude feature extraction from the timed step")
    p.add_argument("--sequential", action="store_true",
                   help="time configurations one after another instead of in interleaved rounds (less memory)")
    _common.add_common_args(p, NAME)
    args = p.parse_args(argv)
    quick = args.quick
    if args.shapes is None:
        args.shapes = "tiny" if quick else "tiny,base"
    if args.target_length is None:
        args.target_length = 256 if quick else 1024
    if args.warmup is None:
        args.warmup = 1
    if args.steps is None:
        args.steps = 2 if quick else 5
    if args.batch_size is None and quick:
        args.batch_size = 2
    return args


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def num_samples_for(target_length: int, fb: FbankConfig) -> int:
    """Waveform length that gives exactly ``target_length`` frames at the full-resolution shift."""
    return (target_length - 1) * fb.window_shift + fb.window_size


class Case:
    """One (shape, method, R) configuration: model, optimizer, inputs and its step function."""

    def __init__(self, shape: str, method: str, R: int, args: argparse.Namespace, device: torch.device):
        self.shape, self.method, self.R = shape, method, R
        self.device = device
        self.model_only = args.model_only
        self.batch = args.batch_size or DEFAULT_BATCH.get(shape, 2)
        full = FeatureSpec(FbankConfig(num_mel_bins=NUM_MEL_BINS), args.target_length, FEAT_MEAN, FEAT_STD)
        self.comp = Compression(method=method, R=R)
        self.spec = self.comp.feature_spec(full)
        geo = self.comp.input_geometry(args.target_length, NUM_MEL_BINS)
        torch.manual_seed(args.seed)
        k = geo.time_patch_factor
        self.model = AST(ast_config(
            shape, num_classes=NUM_CLASSES, num_mel_bins=NUM_MEL_BINS, target_length=geo.frames,
            patch_size=(PATCH[0], PATCH[1] * k), stride=(PATCH[0], PATCH[1] * k), time_patch_factor=k,
        )).to(device).train()
        self.optimizer = build_optimizer(self.model.parameters(), OptimConfig())
        self.scheduler = build_scheduler(self.optimizer, 1000, OptimConfig())
        gen = torch.Generator().manual_seed(args.seed)
        n = num_samples_for(args.target_length, full.frontend)
        self.waves = (0.1 * torch.randn(self.batch, n, generator=gen)).to(device)
        self.targets = torch.randint(0, NUM_CLASSES, (self.batch,), generator=gen).to(device)
        self.feats = self.features() if self.model_only else None
        self.cfg = self.model.config
        self.flops_per_sample = ast_training_flops(self.cfg, 1)
        self.times: dict[str, list[float]] = {k: [] for k in (*PARTS, "step")}

    def features(self) -> torch.Tensor:
        return phase_input(self.waves, "waveforms", self.spec, self.comp)  # the training step's own function

    def step(self, record: bool) -> None:
        timer = _common.Timer(self.device)
        _common.sync(self.device)
        t0 = time.perf_counter()
        if self.model_only:
            feats = self.feats
        else:
            with timer("features"):
                feats = self.features()
        with timer("fwd_bwd"):
            loss = F.cross_entropy(self.model(feats), self.targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with timer("optimizer"):
            self.optimizer.step()
            self.scheduler.step()
            loss.item()
        _common.sync(self.device)
        total = time.perf_counter() - t0
        if record:
            for k in PARTS:
                self.times[k].append(timer.times.get(k, 0.0))
            self.times["step"].append(total)

    def release(self) -> None:
        del self.model, self.optimizer, self.scheduler, self.waves, self.feats

    def row(self, ref: "Case") -> dict[str, Any]:
        med = {k: _common.median(v) for k, v in self.times.items()}
        if self.model_only:
            med["features"] = None
        cfg = self.cfg
        flops_ratio = self.flops_per_sample / ref.flops_per_sample
        ref_med = {k: _common.median(v) for k, v in ref.times.items()}
        time_ratio = med["step"] / ref_med["step"]
        best, ref_best = min(self.times["step"]), min(ref.times["step"])
        compute_ratio = med["fwd_bwd"] / ref_med["fwd_bwd"]
        return {
            "shape": self.shape,
            "method": self.method if self.R > 1 else "none",
            "R": self.R,
            "input_frames": cfg.target_length,
            "patch_size": list(cfg.patch_size),
            "tokens": cfg.num_tokens,
            "batch_size": self.batch,
            "features_s": med["features"],
            "fwd_bwd_s": med["fwd_bwd"],
            "optimizer_s": med["optimizer"],
            "step_s": med["step"],
            "step_min_s": best,
            "samples_per_s": self.batch / med["step"],
            "train_gflops_per_sample": self.flops_per_sample / 1e9,
            "achieved_gflops_per_s": self.flops_per_sample * self.batch / med["fwd_bwd"] / 1e9,
            "flops_ratio": flops_ratio,
            "time_ratio": time_ratio,
            "time_over_flops": time_ratio / flops_ratio,
            "time_ratio_best": best / ref_best,
            "time_over_flops_best": best / ref_best / flops_ratio,
            "compute_ratio": compute_ratio,
            "compute_over_flops": compute_ratio / flops_ratio,
            "meets_target": bool(time_ratio / flops_ratio <= TARGET) if self.R > 1 else None,
            "step_times_s": self.times["step"],
        }


def run_shape(shape: str, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    Rs = sorted(set(_ints(args.R)) | {1})
    methods = _names(args.methods)
    specs = [(methods[0], 1)] + [(m, R) for m in methods for R in Rs if R > 1]
    rounds = args.warmup + args.steps
    cases: list[Case] = []
    if args.sequential:
        for method, R in specs:
            case = Case(shape, method, R, args, device)
            for i in range(rounds):
                case.step(record=i >= args.warmup)
            case.release()
            cases.append(case)
    else:
        cases = [Case(shape, method, R, args, device) for method, R in specs]
        for i in range(rounds):
            for case in cases:
                case.step(record=i >= args.warmup)
        for case in cases:
            case.release()
    return [c.row(cases[0]) for c in cases]


def print_report(rows: list[dict[str, Any]], info: dict[str, Any], args: argparse.Namespace) -> str:
    headers = ["shape", "method", "R", "frames", "patch", "tokens", "batch", "feat ms", "fwd+bwd ms", "adam ms",
               "step ms", "samples/s", "GFLOP/s", "FLOPs ratio", "time ratio", "time/FLOPs", "best t/FLOPs", "fwd+bwd ratio",
               "fwd+bwd/FLOPs", f"<= {TARGET}"]
    table = []
    for r in rows:
        ms = lambda v: "-" if v is None else f"{1000 * v:.1f}"  # noqa: E731
        table.append([
            r["shape"], r["method"], r["R"], r["input_frames"], "x".join(map(str, r["patch_size"])), r["tokens"],
            r["batch_size"], ms(r["features_s"]), ms(r["fwd_bwd_s"]), ms(r["optimizer_s"]), ms(r["step_s"]),
            f"{r['samples_per_s']:.2f}", f"{r['achieved_gflops_per_s']:.1f}", f"{r['flops_ratio']:.3f}",
            f"{r['time_ratio']:.3f}", f"{r['time_over_flops']:.2f}", f"{r['time_over_flops_best']:.2f}",
            f"{r['compute_ratio']:.3f}",
            f"{r['compute_over_flops']:.2f}",
            "ref" if r["meets_target"] is None else ("yes" if r["meets_target"] else "NO"),
        ])
    what = "model only (features precomputed)" if args.model_only else "features + forward + backward + Adam"
    mode = "sequential" if args.sequential else "interleaved rounds"
    lines = [
        f"{NAME}: training-step time vs training FLOPs, ratios against R=1 of the same shape",
        _common.format_machine(info),
        f"step = {what}; median of {args.steps} timed steps after {args.warmup} warm-up ({mode}); "
        f"{args.target_length} frames x {NUM_MEL_BINS} mel bins at R=1, {PATCH[0]}x{PATCH[1]} patches",
        "",
        _common.format_table(headers, table),
        "",
        f"time/FLOPs = time ratio / FLOPs ratio (target <= {TARGET}, judged on medians); best t/FLOPs uses each",
        "configuration's fastest step instead (less sensitive to other load on the machine). The fwd+bwd columns leave",
        "out features and Adam, whose cost per step does not shrink with R: Adam's is per parameter, and Patch computes",
        "full-length features.",
    ]
    text = "\n".join(lines)
    print(text)
    return text


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = _common.setup(args)
    info = _common.machine_info(device)
    rows: list[dict[str, Any]] = []
    for shape in _names(args.shapes):
        rows.extend(run_shape(shape, args, device))
    print_report(rows, info, args)
    result = {
        "benchmark": NAME,
        "machine": info,
        "settings": {
            "shapes": _names(args.shapes), "R": sorted(set(_ints(args.R)) | {1}), "methods": _names(args.methods),
            "target_length": args.target_length, "num_mel_bins": NUM_MEL_BINS, "patch": list(PATCH),
            "batch_size": args.batch_size, "default_batch": DEFAULT_BATCH, "model_only": args.model_only,
            "warmup": args.warmup, "steps": args.steps, "sequential": args.sequential, "quick": args.quick,
            "device": args.device, "threads": torch.get_num_threads(), "seed": args.seed,
        },
        "target_time_over_flops": TARGET,
        "results": rows,
    }
    path = _common.write_json(args.out, result)
    print(f"\nwrote {path}")
    return result


if __name__ == "__main__":
    main()
