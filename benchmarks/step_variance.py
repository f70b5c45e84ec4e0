"""Where a training step's varying time goes: the same step timed many times in one process,
each with what the process and the machine did meanwhile.

Runs one phase's real training step (the loop's ``TrainStep`` via ``phase_case``, on batches the
config's source serves through the loop's batch path; ``--classes N``: random audio of the
config's shape) ``--steps`` times and records, per step, its wall time, the process's user and
system CPU time, minor page faults and involuntary context switches (``getrusage``), and from
``/proc/stat`` the machine's CPU steal and the CPU time of other processes. It prints how each
correlates with the step's wall time and the fastest and slowest quarter side by side: slow
steps with more user CPU for the same work mean the machine ran the instructions slower (a
neighbour on the same cores); more system time, steal or other processes' time name those
instead. Linux only (``/proc/stat``). Run it alone on the machine.

    python benchmarks/step_variance.py                      # the demo's R = 1 step, 400 steps, ~30 s
    python benchmarks/step_variance.py --config esc50-cpu --classes 50 --phase 0
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import time
from typing import Any, Sequence

import _common
from coarse2fine.config import load_config
from coarse2fine.data.sources import count_classes, load_splits
from coarse2fine.report.timing import phase_case, synthetic_source
from coarse2fine.runtime import load_average

FIELDS = ("wall", "user", "sys", "minflt", "nivcsw", "steal", "other")
CLOCK_TICK = 100  # USER_HZ: /proc/stat counts in 1/100 s on Linux


def cpu_times() -> list[int]:
    """The machine's CPU time counters: user nice system idle iowait irq softirq steal (ticks)."""
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:9]]


def timed_step(step: Any) -> dict[str, float]:
    """One step with what the process and the machine did during it (seconds; faults and switches as counts)."""
    r0, s0, t0 = resource.getrusage(resource.RUSAGE_SELF), cpu_times(), time.perf_counter()
    step()
    t1, r1, s1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF), cpu_times()
    d = [(b - a) / CLOCK_TICK for a, b in zip(s0, s1)]
    user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    busy = d[0] + d[1] + d[2] + d[5] + d[6]  # every process's CPU time, this one's included
    return {"wall": t1 - t0, "user": user, "sys": sys_, "minflt": r1.ru_minflt - r0.ru_minflt,
            "nivcsw": r1.ru_nivcsw - r0.ru_nivcsw, "steal": d[7], "other": max(busy - user - sys_, 0.0)}


def correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson's correlation (nan when either is constant)."""
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    num = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    den = math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))
    return num / den if den else math.nan


def summarize(rows: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Median and range of the wall time, each field's correlation with it, and the fastest and
    slowest quarter's means of every field."""
    wall = [r["wall"] for r in rows]
    ordered = sorted(rows, key=lambda r: r["wall"])
    q = max(len(rows) // 4, 1)
    quarter = {name: {k: statistics.fmean(r[k] for r in part) for k in FIELDS}
               for name, part in (("fastest", ordered[:q]), ("slowest", ordered[-q:]))}
    return {"median_wall": statistics.median(wall), "min_wall": min(wall), "max_wall": max(wall),
            "correlation": {k: correlation(wall, [r[k] for r in rows]) for k in FIELDS[1:]},
            "quarters": quarter}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="demo", help="preset or YAML (default: demo)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--phase", type=int, default=-1, help="which phase's step, 0-based (default: the last, R = 1)")
    parser.add_argument("--classes", type=int, default=None, help="random audio with this many classes instead of the data")
    _common.add_common_args(parser, "step_variance")
    args = parser.parse_args()
    args.warmup = 5 if args.warmup is None else args.warmup
    args.steps = (40 if args.quick else 400) if args.steps is None else args.steps
    device = _common.setup(args)
    cfg = load_config(args.config, args.overrides)
    phases = len(cfg.phases())
    if not -1 <= args.phase < phases:
        parser.error(f"--phase {args.phase}: {cfg.name} has phases 0-{phases - 1} (-1: the last)")
    phase = args.phase % phases
    if args.classes:
        classes, source = args.classes, synthetic_source(cfg, args.classes, 4 * cfg.train.batch_size)
    else:
        classes, source = count_classes(cfg), load_splits(cfg).train
    case = phase_case(cfg, phase, classes, source, device)
    for _ in range(args.warmup):
        case()
    load_before = load_average()
    rows = [timed_step(case) for _ in range(args.steps)]
    result = {"config": cfg.name, "phase": phase, "R": case.R, "batch": case.batch_size, "steps": args.steps,
              "load_average": [load_before, load_average()], **summarize(rows), "rows": rows,
              "machine": _common.machine_info(device)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"{cfg.name} phase {phase} (R = {case.R}, batch {case.batch_size}), {args.steps} steps on "
          f"{_common.format_machine(result['machine'])}; load average {load_before} -> {result['load_average'][1]}")
    print(f"step wall time: median {1e3 * result['median_wall']:.1f} ms, {1e3 * result['min_wall']:.1f} to "
          f"{1e3 * result['max_wall']:.1f} ms")
    print("correlation with the step's wall time: "
          + ", ".join(f"{k} {v:.2f}" for k, v in result["correlation"].items()))
    units = {"minflt": 1.0, "nivcsw": 1.0}
    for name, means in result["quarters"].items():
        print(f"{name} quarter: " + ", ".join(
            f"{k} {means[k]:.1f}" if k in units else f"{k} {1e3 * means[k]:.1f} ms" for k in FIELDS))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
