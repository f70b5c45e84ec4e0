"""The same config trained by ``coarse2fine train`` and by Lightning with the CoarseToFine callback.

Each side trains the config's baseline (schedule ``1``) and its coarse-to-fine schedule (default:
``esc50-cpu``, ESC-50 fold 1, Fshift 4-1, micro AST), in this one process, one run after another:
the CLI through :func:`coarse2fine.training.loop.train_run`, Lightning through
:class:`~coarse2fine.integrations.lightning.ConfigModule` (the config's model, objective,
augmentation, optimizer and LR schedule as a ``LightningModule``), :func:`config_loaders` (the
CLI's batch order) and the :class:`~coarse2fine.integrations.lightning.CoarseToFine` callback.
Both read waveforms and compute each phase's features at every step (``data.in_memory=off``; the
CLI otherwise holds each phase's features in memory, which Lightning's loader does not), so both
do the same work.

Reported, side by side: each side's savings table against its own baseline (best accuracy of the
final phase, the first epoch that beats the baseline's best, FLOPs, wall time and step time saved up to
there), whether the two agree epoch by epoch (phases, R, FLOPs, accuracy) and how far their final
weights are apart. ``--shared-baseline`` trains the baseline with the CLI only and measures both
coarse-to-fine runs against it (time saves then compare Lightning's 4-1 with the CLI's baseline).

    python benchmarks/lightning_vs_cli.py --out runs/lightning_vs_cli          # ESC-50 fold 1, esc50-cpu
    python benchmarks/lightning_vs_cli.py --quick --out /tmp/lvc               # a ~1 min smoke run (synthetic data)

Run it alone on the machine: the time saves are wall time.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

import _common
from coarse2fine.config import RunConfig, load_config
from coarse2fine.data.datasets import DataSplits
from coarse2fine.data.sources import load_splits
from coarse2fine.report.savings import baseline_reference, best_value, compare, format_table, savings_table
from coarse2fine.training.loop import train_run
from coarse2fine.training.records import EpochRecord

QUICK = ["data.kind=synthetic", "data.train_clips=32", "data.val_clips=16", "train.batch_size=8",
         "features.target_length=128", "features.mean=-2.3", "features.std=3.85", "train.epochs=2",
         "train.optim.warmup_steps=2", "c2f.phase_epochs=[1, 2]", "model.overrides.depth=1"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="esc50-cpu", help="preset or YAML (default: esc50-cpu)")
    p.add_argument("--fold", type=int, default=1, help="ESC-50 validation fold (data.fold; default 1)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--shared-baseline", action="store_true", help="one baseline, trained by the CLI, for both sides")
    p.add_argument("--threads", type=int, default=None, help="train.threads (torch threads) for every run")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run on synthetic data")
    p.add_argument("--out", type=Path, default=Path("runs/lightning_vs_cli"), help="output folder (runs, results.json)")
    return p.parse_args()


def build_config(args: argparse.Namespace) -> RunConfig:
    overrides = ["data.in_memory=off", *(QUICK if args.quick else [f"data.fold={args.fold}"]), *args.overrides]
    if args.threads:
        overrides.append(f"train.threads={args.threads}")
    return load_config(args.config, overrides)


def cli_run(cfg: RunConfig, splits: DataSplits, out: Path) -> list[EpochRecord]:
    return train_run(cfg, splits, out, progress=False, fresh=True).records


def lightning_run(cfg: RunConfig, splits: DataSplits, out: Path) -> tuple[list[EpochRecord], dict[str, torch.Tensor]]:
    import lightning.pytorch as pl

    from coarse2fine.integrations.lightning import CoarseToFine, ConfigModule, config_loaders

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # after the import, which sets INFO
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    module = ConfigModule(cfg, splits.train.num_classes, len(splits.train),
                          classes=(splits.train.class_names, splits.display_names))
    c2f = CoarseToFine.from_config(cfg, log_path=out / "log.json")
    train, val = config_loaders(cfg, splits)
    trainer = pl.Trainer(max_epochs=cfg.schedule().epochs, callbacks=[c2f], accelerator="cpu", devices=1,
                         default_root_dir=out, logger=pl.loggers.CSVLogger(out, name="lightning"),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    trainer.fit(module, train, val)
    return c2f.records, {k: v.detach().clone() for k, v in module.model.state_dict().items()}


def summary(name: str, records: list[EpochRecord], baseline: list[EpochRecord], metric: str) -> dict[str, Any]:
    """One side's row: best metric (final phase), its gain, and the rule (a) savings."""
    ref = baseline_reference(baseline, metric)
    s = compare(name, records, ref)
    return {"side": name, "best": best_value(records, metric), "baseline_best": ref.best, "gain": s.gain,
            "beat_epoch": s.epoch, "flops_save_pct": s.flops_save_pct, "time_save_pct": s.time_save_pct,
            "step_time_save_pct": s.time_saves.get("step"),
            "total_flops": s.total_flops, "total_time_s": s.total_time, "baseline_time_s": baseline[-1].cum_time}


def agreement(cli: list[EpochRecord], lit: list[EpochRecord], metric: str) -> dict[str, Any]:
    """How far the two coarse-to-fine runs agree epoch by epoch."""
    return {
        "same_phases_and_R": [(r.epoch, r.phase, r.R) for r in cli] == [(r.epoch, r.phase, r.R) for r in lit],
        "same_flops_per_epoch": [r.train_flops for r in cli] == [r.train_flops for r in lit],
        "max_metric_diff": max(abs(a.metric(metric) - b.metric(metric)) for a, b in zip(cli, lit)),
        "epoch_time_ratio_lightning_over_cli": [b.train_time / a.train_time if a.train_time else None
                                               for a, b in zip(cli, lit)],
    }


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
    cfg = build_config(args)
    metric = cfg.train.metric
    base_cfg = cfg.baseline()
    started = time.time()
    splits = load_splits(cfg)
    print(f"{cfg.name}: {len(splits.train)} training / {len(splits.val)} validation clips, {cfg.model.arch} "
          f"{cfg.model.preset}, {cfg.c2f.method} {cfg.c2f.schedule} {[(p.R, p.epochs) for p in cfg.phases()]}, "
          f"baseline {cfg.train.epochs} epochs", flush=True)
    records: dict[str, list[EpochRecord]] = {}
    records["cli_baseline"] = cli_run(base_cfg, splits, args.out / "cli" / "baseline")
    records["cli_c2f"] = cli_run(cfg, splits, args.out / "cli" / "c2f")
    cli_weights = load_file(str(args.out / "cli" / "c2f" / "model.safetensors"))
    if not args.shared_baseline:
        records["lightning_baseline"], _ = lightning_run(base_cfg, splits, args.out / "lightning" / "baseline")
    records["lightning_c2f"], lit_weights = lightning_run(cfg, splits, args.out / "lightning" / "c2f")
    lit_base = records["cli_baseline"] if args.shared_baseline else records["lightning_baseline"]

    label = f"{cfg.c2f.method} {cfg.c2f.schedule}"
    sides = [summary(f"CLI {label}", records["cli_c2f"], records["cli_baseline"], metric),
             summary(f"Lightning {label}", records["lightning_c2f"], lit_base, metric)]
    agree = agreement(records["cli_c2f"], records["lightning_c2f"], metric)
    agree["final_weights_max_abs_diff"] = max((cli_weights[k].float() - lit_weights[k].float()).abs().max().item()
                                              for k in cli_weights)
    tables = {
        "cli": format_table(savings_table("CLI baseline", records["cli_baseline"], {f"CLI {label}": records["cli_c2f"]},
                                          metric)),
        "lightning": format_table(savings_table("Lightning baseline" if not args.shared_baseline else "CLI baseline",
                                                lit_base, {f"Lightning {label}": records["lightning_c2f"]}, metric)),
    }
    headers = ["side", f"best {metric}", "baseline best", "beat epoch", "FLOPs save (%)", "wall time save (%)",
               "step time save (%)", "c2f time (s)", "baseline time (s)"]
    rows = [[s["side"], _common.fmt(s["best"], ".4f"), _common.fmt(s["baseline_best"], ".4f"), _common.fmt(s["beat_epoch"]),
             _common.fmt(s["flops_save_pct"], ".2f"), _common.fmt(s["time_save_pct"], ".2f"),
             _common.fmt(s["step_time_save_pct"], ".2f"), _common.fmt(s["total_time_s"], ".1f"),
             _common.fmt(s["baseline_time_s"], ".1f")] for s in sides]
    print("\n" + tables["cli"] + "\n" + tables["lightning"])
    print(_common.format_table(headers, rows))
    print(f"agreement of the two {label} runs: phases and R {agree['same_phases_and_R']}, FLOPs per epoch "
          f"{agree['same_flops_per_epoch']}, max |{metric} diff| {agree['max_metric_diff']:.4g}, final weights max |diff| "
          f"{agree['final_weights_max_abs_diff']:.3g}")
    info = _common.machine_info(torch.device("cpu"), ["lightning"])
    print(_common.format_machine(info) + f"; {time.time() - started:.0f} s in all")
    _common.write_json(args.out / "results.json", {
        "benchmark": "lightning_vs_cli", "config": cfg.to_dict(), "shared_baseline": args.shared_baseline,
        "sides": sides, "agreement": agree, "tables": tables, "machine": info,
        "records": {k: [r.to_dict() for r in v] for k, v in records.items()}})


if __name__ == "__main__":
    main()
