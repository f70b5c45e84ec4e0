"""Shared helpers of the benchmark scripts: machine description, timing, tables, JSON output.

Not a benchmark itself. The scripts ``import _common``: run as scripts, their folder is on the path.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def add_common_args(parser: argparse.ArgumentParser, name: str) -> None:
    """Options every benchmark has. Defaults of ``None`` are filled in by the script (``--quick``)."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's default)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps before timing")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (the median is reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a ~20 s smoke run with small shapes and few steps")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{name}.json",
                        help=f"JSON output (default: benchmarks/results/{name}.json)")


def setup(args: argparse.Namespace) -> torch.device:
    """Threads, seed and device from the common options."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch.cuda.is_available() is False")
    return device


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: torch.device, packages: Sequence[str] = ()) -> dict[str, Any]:
    """What the numbers were measured on (plus the versions of ``packages``)."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    for name in packages:
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info[name] = None
    try:
        load1, load5, _ = os.getloadavg()
        info["load_avg_1m_5m"] = [round(load1, 2), round(load5, 2)]
    except OSError:
        pass
    return info


def format_machine(info: dict[str, Any]) -> str:
    gpu = f", GPU {info['gpu']} (CUDA {info['cuda']})" if "gpu" in info else ""
    load = f", load avg {info['load_avg_1m_5m'][0]}/{info['load_avg_1m_5m'][1]} (1/5 min)" if "load_avg_1m_5m" in info else ""
    hf = f", transformers {info['transformers']}" if info.get("transformers") else ""
    return (f"machine: {info['cpu']}, {info['cpu_cores']} cores, torch {info['torch']} "
            f"({info['torch_threads']} threads){hf}, device {info['device']}{gpu}{load}")


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU) so that perf_counter measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Accumulates named phase durations of one step: ``with t("fwd"): ...`` (synchronised)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: dict[str, float] = {}

    def __call__(self, name: str) -> "Timer._Phase":
        return Timer._Phase(self, name)

    class _Phase:
        def __init__(self, timer: "Timer", name: str):
            self.timer, self.name = timer, name

        def __enter__(self) -> None:
            sync(self.timer.device)
            self.t0 = time.perf_counter()

        def __exit__(self, *exc: object) -> None:
            sync(self.timer.device)
            dt = time.perf_counter() - self.t0
            self.timer.times[self.name] = self.timer.times.get(self.name, 0.0) + dt


def time_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall time of one synchronised call of ``fn``."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table, columns right-aligned (first column left-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON, creating the folder (a temp file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path
