"""How much a competing CPU load moves the reported time save: wall, step and calibrated time.

Trains a baseline and a coarse-to-fine run of a config (default: the demo, Fshift 4-1) on a quiet
machine, then the coarse-to-fine run again with a competing load (a process doing matrix products
on every core) started halfway through it. For both coarse-to-fine runs it reports the time save
to reach the baseline's best, by measured wall time, by step time (each phase's lower quartile
of its steps' times, measured in the run, times its steps) and by calibrated time (each
phase's real step timed interleaved in this process, times the steps each run took; see
coarse2fine.report.timing), with the load average at each measurement. Run it alone on the machine.

    python benchmarks/time_robustness.py                   # demo, about 3 minutes on 2 cores
    python benchmarks/time_robustness.py --config esc50-cpu --set data.root=../shared/data/esc50
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

import _common
from coarse2fine.config import load_config
from coarse2fine.data.sources import count_classes, load_splits
from coarse2fine.experiments.grid import Variant, variant_config
from coarse2fine.report.savings import savings_table
from coarse2fine.report.timing import calibrate, calibrated_records
from coarse2fine.training.loop import train_run

LOAD = "import torch\ntorch.set_num_threads({threads})\na = torch.randn(800, 800)\nwhile True:\n    a @ a\n"


def start_load_after(delay: float, threads: int) -> dict:
    """A matrix-product process started ``delay`` seconds from now (in a thread); returns a handle."""
    handle: dict = {}

    def go() -> None:
        time.sleep(delay)
        handle["started_at"] = time.time()
        handle["proc"] = subprocess.Popen([sys.executable, "-c", LOAD.format(threads=threads)])

    t = threading.Thread(target=go, daemon=True)
    t.start()
    handle["thread"] = t
    return handle


def saves(base, run, cfg_base, cfg_run, classes, rounds, source) -> dict:
    cal = calibrate([cfg_base, cfg_run], classes, source, rounds=rounds)
    b, r = calibrated_records(base, cfg_base, cal), calibrated_records(run, cfg_run, cal)
    row = savings_table("Baseline", b, {"run": r}, cfg_base.train.metric)[1]
    return {"time_save_step": row["Step time save (%)"], "time_save_calibrated": row["Calibrated time save (%)"],
            "time_save_wall": row["Wall time save (%)"],
            "flops_save": row["FLOPs save (%)"], "beat_epoch": row["Beat epoch"], "calibration_load_avg": cal.load_avg,
            "step_ms": {k: round(v.median * 1e3, 2) for k, v in cal.steps.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--method", default="fshift")
    parser.add_argument("--schedule", default="4-1")
    parser.add_argument("--rounds", type=int, default=15, help="calibration rounds")
    parser.add_argument("--load-threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", type=Path, default=Path("runs/time_robustness"))
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    splits, classes = load_splits(cfg), count_classes(cfg)
    base_cfg, run_cfg = variant_config(cfg, None), variant_config(cfg, Variant(args.method, args.schedule))
    base = train_run(base_cfg, splits, args.out / "baseline", progress=False, fresh=True).records
    t0 = time.time()
    quiet = train_run(run_cfg, splits, args.out / "quiet", progress=False, fresh=True).records
    quiet_wall = time.time() - t0
    quiet_saves = saves(base, quiet, base_cfg, run_cfg, classes, args.rounds, splits.train)
    handle = start_load_after(quiet_wall / 2, args.load_threads)
    loaded = train_run(run_cfg, splits, args.out / "loaded", progress=False, fresh=True).records
    load_avg_during = os.getloadavg()
    handle["thread"].join()
    handle["proc"].kill()
    handle["proc"].wait()
    time.sleep(5)
    loaded_saves = saves(base, loaded, base_cfg, run_cfg, classes, args.rounds, splits.train)
    result = {"config": cfg.name, "method": args.method, "schedule": args.schedule, "machine": _common.machine_info(torch.device("cpu")), "quiet": quiet_saves, "loaded": loaded_saves,
        "load_avg_at_end_of_loaded_run": [round(v, 2) for v in load_avg_during],
        "epoch_wall_s": {"quiet": [round(r.train_time, 2) for r in quiet], "loaded": [round(r.train_time, 2) for r in loaded]},
        "epoch_median_step_ms": {"quiet": [round(1e3 * r.step_median, 2) for r in quiet],
                                 "loaded": [round(1e3 * r.step_median, 2) for r in loaded]}}
    print(json.dumps(result, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "time_robustness.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
