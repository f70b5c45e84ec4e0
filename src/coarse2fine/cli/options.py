"""Option groups and helpers the commands share."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from coarse2fine import atomic
from coarse2fine.data.sources import count_classes
from coarse2fine.experiments.grid import calibrate_runs


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=10 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")


def add_grid_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that train several runs and compare them."""
    p.add_argument("--fresh", action="store_true", help="retrain runs even when finished results exist")
    p.add_argument("--calibrate-rounds", type=int, default=10,
                   help="interleaved rounds timing each phase's step for the calibrated time saves (0: wall time only)")


def add_run_options(p: argparse.ArgumentParser, methods: Sequence[str], out_help: str) -> None:
    """Options of the commands that train one run."""
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("--schedule", help="override c2f.schedule (1 = full resolution only)")
    p.add_argument("--method", choices=list(methods), help="override c2f.method")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint an interrupted run left in --out")
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


def calibrated(configs: list, records: list, classes: int, rounds: int, out_root: Path | None,
                serves: str | None = None) -> list:
    """Records with calibrated time (``rounds`` 0: as they are); the calibration goes to
    ``out_root/calibration.json``."""
    if rounds <= 0:
        return records
    cal, records = calibrate_runs(configs, records, classes, rounds, serves=serves)
    if out_root is not None:
        atomic.write_json(out_root / "calibration.json", cal.to_dict())
    return records
