"""Step time that other load on the machine does not move much: interleaved timing in one process.

Wall time of one run against another run made minutes later mostly measures what else the machine
was doing. What survives is a *ratio measured in one process, interleaved*: each round times one
training step of every case in turn (the order rotated from round to round), so a burst of other
load hits every case alike; medians over the rounds, and the spread of the per-round ratios.

* :class:`StepCase` is one phase's real training step on inputs of a config's shape: features
  from waveforms (or the served features), compression, augmentation, forward, backward and the
  optimizer update of the run's objective and model (``part="model"``: features precomputed).
* :func:`interleaved` times any step functions that way (CUDA events on a GPU).
* :func:`calibrate` measures every phase a set of runs used; :func:`calibrated_records` turns
  the clips each epoch actually trained on into *calibrated time* (``cal_time``,
  ``cum_cal_time``), which the savings tables use by default beside the measured wall time.
* ``coarse2fine bench`` (:func:`bench`) prints each phase's FLOPs ratio, time ratio and their
  quotient against R = 1, for the whole step and for the model alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from coarse2fine.config import RunConfig
from coarse2fine.features import extract
from coarse2fine.objectives import build_objective
from coarse2fine.runtime import load_average, resolve_device
from coarse2fine.training.augment import augment_features
from coarse2fine.training.optim import build_optimizer


def step_signature(cfg: RunConfig) -> str:
    """A short digest of every setting besides the schedule that changes what one training step
    costs (model family, size and options such as patchout, features, batch, augmentation,
    objective and its masking, loss, optimizer, precision, clip length): runs that share it share
    their calibrated step times."""
    model = dataclasses.replace(cfg.model, init_from=None)
    t = cfg.train
    parts = (model, cfg.features, cfg.augment, cfg.pretrain, t.batch_size, t.amp, t.objective, t.loss, t.optim,
             cfg.data.clip_seconds)
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:8]


def phase_key(cfg: RunConfig, R: int) -> str:
    """The name of a phase's step for calibration: the method matters only below full resolution;
    the :func:`step_signature` tells apart runs whose steps differ otherwise (e.g. with patchout)."""
    c = cfg.c2f
    if R == 1:
        base = "R=1"
    else:
        method = f"patch-{'pi' if c.patch_resize == 'pi' else 'bl'}" if c.method == "patch" else c.method
        base = f"{method} R={R}" + (" wide window" if c.scale_window and c.method == "fshift" else "")
    return f"{base} [{step_signature(cfg)}]"


class StepCase:
    """One training step of ``cfg``'s model at compression factor ``R`` on a batch of random audio
    of the config's clip length (``batch`` clips; default the run's batch size)."""

    def __init__(self, cfg: RunConfig, R: int, num_classes: int, device: torch.device, batch: int | None = None,
                 part: str = "step", serves: str = "waveforms"):
        self.cfg, self.R, self.device, self.part = cfg, R, device, part
        setup = next(cfg.phase(i, num_classes) for i, p in enumerate(cfg.phases()) if p.R == R)
        self.comp, self.spec = setup.compression, setup.features
        torch.manual_seed(cfg.train.seed)
        self.model = setup.build_model().to(device).train()
        self.objective = build_objective(cfg.train.objective, cfg)
        self.optimizer = build_optimizer(self.model.parameters(), cfg.train.optim)
        self.batch = batch or cfg.train.batch_size
        gen = torch.Generator().manual_seed(cfg.train.seed)
        samples = int(round(cfg.data.clip_seconds * cfg.features.sample_rate))
        self.waves = (0.1 * torch.randn(self.batch, samples, generator=gen)).to(device)
        self.targets = torch.eye(max(num_classes, 1))[torch.randint(0, max(num_classes, 1), (self.batch,), generator=gen)]
        self.targets = self.targets[:, :num_classes].to(device)
        self.serves = serves
        served = {"waveforms": self.waves, "features": extract(self.waves, self.spec)}
        served["model_input"] = self.comp.transform(served["features"])
        self.model_input = served["model_input"] if part == "model" else None
        self.items = [row.to("cpu").clone() for row in served[serves]]  # what a data source hands the loader
        self.aug_gen = torch.Generator(device=device).manual_seed(0)
        self.flops_per_clip = self.objective.training_flops(self.model, 1)

    def inputs(self) -> torch.Tensor:
        """The model input of one batch, as the training loop makes it: the clips the data source
        serves collated into a batch and moved to the device, then features (from waveforms) and
        compression as far as the source has not done them, then augmentation."""
        if self.part == "model":
            return self.model_input
        x = torch.stack([item.float() for item in self.items]).to(self.device)
        if self.serves == "waveforms":
            x = extract(x, self.spec)
        if self.serves != "model_input":
            x = self.comp.transform(x)
        return augment_features(x, self.cfg.augment, self.comp.time_factor, self.aug_gen)

    def __call__(self) -> None:
        x = self.inputs()
        loss = self.objective.training_loss(self.model, x, self.targets, self.aug_gen)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss.item()


def _timer(device: torch.device, clock: Callable[[], float] = time.perf_counter) -> Callable[[Callable[[], None]], float]:
    """Seconds one call takes: CUDA events on a GPU, ``clock`` (``perf_counter``) otherwise."""
    if device.type == "cuda":
        def cuda_time(fn: Callable[[], None]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end) / 1000.0
        return cuda_time

    def cpu_time(fn: Callable[[], None]) -> float:
        t0 = clock()
        fn()
        return clock() - t0
    return cpu_time


def interleaved(cases: Mapping[str, Callable[[], None]], rounds: int, warmup: int = 2,
                device: torch.device = torch.device("cpu"),
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Per case, the seconds of each timed round: every round runs one step of every case, the
    order rotated by one each round; ``warmup`` untimed rounds first. ``clock`` times CPU steps."""
    keys, timer = list(cases), _timer(device, clock)
    times: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(warmup + rounds):
        shift = r % len(keys)
        for key in keys[shift:] + keys[:shift]:
            seconds = timer(cases[key])
            if r >= warmup:
                times[key].append(seconds)
    return times


@dataclass(frozen=True)
class StepTiming:
    """A case's median seconds per step, the quartiles, and its FLOPs per clip."""

    key: str
    R: int
    median: float
    q25: float
    q75: float
    batch: int
    flops_per_clip: int

    @property
    def per_clip(self) -> float:
        return self.median / self.batch


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


@dataclass
class Calibration:
    """Step costs of every phase of a set of runs, measured together (see the module docstring)."""

    steps: dict[str, StepTiming]
    rounds: int
    device: str
    threads: int
    load_avg: tuple[float, float, float] | None

    def to_dict(self) -> dict[str, Any]:
        return {"method": "interleaved step timing in one process (median of rounds)", "rounds": self.rounds,
                "device": self.device, "threads": self.threads, "load_avg": self.load_avg,
                "steps": {k: {**asdict(v), "per_clip": v.per_clip} for k, v in self.steps.items()}}


def calibrate(configs: Sequence[RunConfig], num_classes: int, rounds: int = 10, warmup: int = 2,
              device: str = "auto", serves: str = "waveforms") -> Calibration:
    """Time one training step of every phase the runs of ``configs`` use, interleaved in this
    process, at each run's batch size, from inputs as the runs' data sources ``serves`` them."""
    dev = resolve_device(device)
    cases: dict[str, StepCase] = {}
    for cfg in configs:
        for phase in cfg.phases():
            key = phase_key(cfg, phase.R)
            if key not in cases:
                cases[key] = StepCase(cfg, phase.R, num_classes, dev, serves=serves)
    times = interleaved(cases, rounds, warmup, dev)
    steps = {}
    for key, case in cases.items():
        q25, med, q75 = _quartiles(times[key])
        steps[key] = StepTiming(key, case.R, med, q25, q75, case.batch, int(case.flops_per_clip))
    return Calibration(steps, rounds, str(dev), torch.get_num_threads(), load_average())


def calibrated_records(records: Sequence[Mapping[str, Any]], cfg: RunConfig, cal: Calibration) -> list[dict[str, Any]]:
    """Copies of a run's records with ``cal_time`` (the clips the epoch trained on times the
    calibrated cost per clip of its phase) and ``cum_cal_time``."""
    out, total = [], 0.0
    for rec in records:
        timing = cal.steps[phase_key(cfg, int(rec["R"]))]
        clips = rec["clips"] if "clips" in rec else rec["train_flops"] / timing.flops_per_clip
        seconds = clips * timing.per_clip
        total += seconds
        out.append({**rec, "cal_time": seconds, "cum_cal_time": total})
    return out


@dataclass(frozen=True)
class PhaseBench:
    """One phase against R = 1: FLOPs ratio, and the whole step's and the model's time ratios
    (medians of the per-round ratios, with their quartiles) and quotients."""

    R: int
    tokens: int
    step_ms: float
    model_ms: float
    flops_ratio: float
    time_ratio: float
    time_ratio_q25: float
    time_ratio_q75: float
    model_time_ratio: float

    @property
    def time_over_flops(self) -> float:
        return self.time_ratio / self.flops_ratio

    @property
    def model_time_over_flops(self) -> float:
        return self.model_time_ratio / self.flops_ratio

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "time_over_flops": self.time_over_flops, "model_time_over_flops": self.model_time_over_flops}


def _ratio_quartiles(times: Sequence[float], ref: Sequence[float]) -> tuple[float, float, float]:
    return _quartiles([a / b for a, b in zip(times, ref)])


def bench(cfg: RunConfig, num_classes: int, rounds: int = 10, warmup: int = 2, device: str = "auto",
          serves: str = "waveforms") -> list[PhaseBench]:
    """Every phase of ``cfg``'s schedule (and R = 1) timed interleaved, whole step and model alone."""
    dev = resolve_device(device)
    factors = sorted({p.R for p in cfg.phases()} | {1}, reverse=True)
    cases: dict[str, StepCase] = {}
    for R in factors:
        cases[f"step {R}"] = StepCase(cfg, R, num_classes, dev, serves=serves)
        cases[f"model {R}"] = StepCase(cfg, R, num_classes, dev, part="model")
    times = interleaved(cases, rounds, warmup, dev)
    ref = cases["step 1"]
    rows = []
    for R in factors:
        step = cases[f"step {R}"]
        q25, med, q75 = _ratio_quartiles(times[f"step {R}"], times["step 1"])
        model_ratio = _ratio_quartiles(times[f"model {R}"], times["model 1"])[1]
        rows.append(PhaseBench(R, step.model.num_tokens, 1e3 * statistics.median(times[f"step {R}"]),
                               1e3 * statistics.median(times[f"model {R}"]), step.flops_per_clip / ref.flops_per_clip,
                               med, q25, q75, model_ratio))
    return rows
