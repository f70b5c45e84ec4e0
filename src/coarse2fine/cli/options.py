"""Option groups and helpers the commands share."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from coarse2fine.data.sources import count_classes
from coarse2fine.experiments.grid import calibrate_runs


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=10 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")


def add_grid_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that train several runs and compare them."""
    p.add_argument("--fresh", action="store_true", help="retrain runs even when finished results exist")
    p.add_argument("--calibrate-rounds", type=int, default=0,
                   help="also time each phase's real step in N interleaved rounds for a calibrated time save "
                        "(0, the default: wall and median-step time, both measured in the runs)")
    p.add_argument("--recalibrate", action="store_true", help="calibrate again even when calibration.json covers the runs")


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
