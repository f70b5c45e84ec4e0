"""Option groups and helpers the commands share."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from coarse2fine.data.sources import count_classes
from coarse2fine.experiments.grid import calibrate_runs
from coarse2fine.experiments.settings import parse_controls


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=10 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")


def add_grid_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that train several runs and compare them."""
    p.add_argument("--fresh", action="store_true", help="retrain runs even when finished results exist")
    p.add_argument("--calibrate-rounds", type=int, default=0,
                   help="also time each phase's real step in N interleaved rounds for a calibrated time save "
                        "(0, the default: wall and step time, both measured in the runs)")
    p.add_argument("--recalibrate", action="store_true", help="calibrate again even when calibration.json covers the runs")


def add_report_only(p: argparse.ArgumentParser) -> None:
    """``--report-only`` of the commands that train an experiment."""
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write and print the tables of the runs finished in --out so far (every seed "
                        "in which all settings have finished; the rest are named), e.g. while the experiment runs")


def add_evidence_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that compare settings: controls and seeds (they override the
    config's ``experiment.controls`` and ``experiment.seeds``)."""
    p.add_argument("--controls", default=None,
                   help="comma-separated controls to train beside the variants: restart (the variants' phases, epochs "
                        "and resets, all at R = 1), equal-epochs (the baseline trained as many epochs as the longest "
                        "variant), all or none (default: experiment.controls of the config, none)")
    p.add_argument("--seeds", type=int, default=None,
                   help="train every setting with N seeds (train.seed varied) and report mean ± std, the paired gain "
                        "with a bootstrap interval and mean curves (default: experiment.seeds of the config, 1)")


def evidence(cfg, args) -> tuple[list[str], int]:
    """The controls and the number of seeds: ``--controls`` / ``--seeds``, else the config's."""
    controls = parse_controls(args.controls) if args.controls is not None else list(cfg.experiment.controls)
    seeds = args.seeds if args.seeds is not None else cfg.experiment.seeds
    if seeds < 1:
        raise ValueError(f"--seeds: at least 1, got {seeds}")
    return controls, seeds


def add_run_options(p: argparse.ArgumentParser, methods: Sequence[str], out_help: str) -> None:
    """Options of the commands that train one run."""
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("--schedule", help="override c2f.schedule (1 = full resolution only)")
    p.add_argument("--method", choices=list(methods), help="override c2f.method")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of this config in --out (the default when one is there)")
    p.add_argument("--fresh", action="store_true", help="discard what --out holds (checkpoint, logs, weights) and start over")
    add_common(p)


def run_overrides(args) -> list[str]:
    """``--set`` values plus the ``--schedule`` / ``--method`` shortcuts of train and crossval."""
    extra = [f"c2f.schedule={args.schedule}"] if getattr(args, "schedule", None) else []
    extra += [f"c2f.method={args.method}"] if getattr(args, "method", None) else []
    return [*args.overrides, *extra]


def classes_from_data(cfg) -> int:
    """The config's number of classes, read from its data; the error says how to do without."""
    try:
        return count_classes(cfg)
    except (OSError, ValueError) as err:
        raise ValueError(f"{err} (or give --classes N: only the classifier's size needs the data)") from err


def log_path(path: str) -> Path:
    p = Path(path)
    return p / "log.json" if p.is_dir() else p


def calibrated(configs: list, records: list, classes: int, rounds: int, saved: Path | None, source=None,
               fresh: bool = False) -> list:
    """Records with calibrated time (``rounds`` 0: as they are); the calibration is kept in
    ``saved`` (``calibration.json``) and used again while it covers the runs' phases."""
    if rounds <= 0:
        return records
    _, records = calibrate_runs(configs, records, classes, rounds, source, saved, fresh)
    return records
