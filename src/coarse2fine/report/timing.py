"""Timing the real training step outside a run: ``bench``, its breakdown, and calibration.

Wall time of one run against another run made minutes later mostly measures what else the machine
was doing. What survives is a *ratio measured in one process, interleaved*: each round times a
short block of consecutive steps of every case in turn (the order rotated from round to round), so
a burst of other load hits every case alike, and each timed step follows a step of its own phase,
as in the loop (:data:`BLOCK`); medians over the rounds, and the spread of the per-round ratios.

Every case here is the loop's own :class:`~coarse2fine.training.step.TrainStep` (autocast,
mixup, augmentation, micro-batches, clipping, scaler, update, LR schedule), built by the same
:func:`~coarse2fine.training.step.build_step` for the same phase setup, fed batches the run's data
source serves through the loop's own batch path (:func:`~coarse2fine.data.loading.iterate_batches`);
without the data (``--classes N``), random audio of the config's clip length.

* :func:`bench` (``coarse2fine bench``): each phase's FLOPs ratio, time ratio and their quotient
  against R = 1, the data time per batch, and MFU where the device's peak is known; with
  ``breakdown``, where a step's time goes (data, features and augmentation, forward and
  backward, optimizer; on a GPU also the device's busy time and the host's share).
* :func:`calibrate` times every phase a set of runs used; :func:`calibrated_records` gives the
  records their ``cal_time`` (the steps each epoch took times the phase's step time).
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
from coarse2fine.data.datasets import ClipDataset, WaveformDataset
from coarse2fine.data.loading import iterate_batches, resolve_workers
from coarse2fine.data.memory import FeatureStore
from coarse2fine.model.phase_change import carry, step_flops
from coarse2fine.objectives import build_objective
from coarse2fine.runtime import load_average, peak_tflops, resolve_device
from coarse2fine.training.records import EpochRecord, as_records
from coarse2fine.training.step import STAGES, StepProfile, TrainStep, build_step, compile_net, synchronize

BLOCK = 4
"""Consecutive steps of a case per interleaved round in ``bench`` and calibration: one untimed, then
three timed (see :func:`interleaved`)."""


def step_signature(cfg: RunConfig) -> str:
    """A short digest of every setting besides the schedule that changes what one training step
    costs (model family, size and options such as patchout, features, batch, augmentation,
    objective and its masking, loss, optimizer, precision, compilation, clip length): runs that
    share it share their calibrated step times."""
    model = dataclasses.replace(cfg.model, init_from=None)
    t = cfg.train
    parts = (model, cfg.features, cfg.augment, cfg.pretrain, t.batch_size, t.grad_accum, t.amp, t.compile,
             t.objective, t.loss, t.optim, cfg.data.clip_seconds, cfg.c2f.coarse_batch, cfg.c2f.lr_scaling)
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:8]


def phase_key(cfg: RunConfig, index: int) -> str:
    """The name of phase ``index``'s step for calibration: its R, and the method below full
    resolution (runs of one R and method share the name whatever their schedule); the
    :func:`step_signature` tells apart runs whose steps differ otherwise (e.g. with patchout). A
    config that gives its phases' batch factors (``c2f.batch_scales``, a restart control's under
    ``c2f.coarse_batch: scale``) names the phase's batch factor too."""
    c = cfg.c2f
    R = cfg.phases()[index].R
    batch = f" batch x{cfg.batch_scale(index)}" if c.coarse_batch == "scale" and c.batch_scales is not None else ""
    if R == 1:
        base = "R=1"
    else:
        method = f"patch-{'pi' if c.patch_resize == 'pi' else 'bl'}" if c.method == "patch" else c.method
        base = f"{method} R={R}" + (" wide window" if c.scale_window and c.method == "fshift" else "")
    return f"{base}{batch} [{step_signature(cfg)}]"


def synthetic_source(cfg: RunConfig, num_classes: int, clips: int, serves: str = "waveforms", seed: int = 0) -> ClipDataset:
    """Random audio of the config's clip length with random labels, for timing without the data,
    served as the run's source would (``model_input``: held in memory as each phase's features)."""
    gen = torch.Generator().manual_seed(seed)
    samples = cfg.clip_samples()
    waves = 0.1 * torch.randn(clips, samples, generator=gen)
    labels = torch.randint(0, max(num_classes, 1), (clips,), generator=gen)
    targets = torch.nn.functional.one_hot(labels, max(num_classes, 1)).float()[:, :num_classes]
    source = WaveformDataset(waves, targets, [str(i) for i in range(num_classes)])
    if serves == "model_input":
        device = resolve_device(cfg.train.device)
        return FeatureStore(source, device, getattr(torch, cfg.data.in_memory_dtype), store_device=device)
    return source


@dataclass
class PhaseCase:
    """One phase's real training step and a few real batches to feed it, in turn."""

    R: int
    key: str
    step: TrainStep
    tokens: int
    batch_size: int
    flops_per_clip: float
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    data_seconds: float
    _next: int = 0

    def __call__(self) -> None:
        x, y = self.batches[self._next % len(self.batches)]
        self._next += 1
        self.step(x, y)


def phase_case(cfg: RunConfig, p: int, num_classes: int, source: ClipDataset, device: torch.device,
               num_batches: int = 4) -> PhaseCase:
    """Phase ``p``'s step as the loop builds it, with ``num_batches`` batches fetched from ``source``
    through the loop's batch path (the time that took, per batch: ``data_seconds``)."""
    setup = cfg.phase(p, num_classes)
    torch.manual_seed(cfg.train.seed)
    model = setup.build_model().to(device).train()
    carry(model, setup.geometry)
    source.set_phase(setup.features, setup.compression)
    net: torch.nn.Module = model
    if cfg.train.compile:
        net = compile_net(model, cfg.train.compile_mode)
    objective = build_objective(cfg.train.objective, cfg)
    step = build_step(cfg, setup, model, net, objective, steps_per_epoch=1000, serves=source.serves,
                      generator=torch.Generator(device=device).manual_seed(0), device=device, check_finite=False)
    n = len(source)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.train.seed)).tolist()
    index_batches = [[order[(i * setup.batch_size + j) % n] for j in range(setup.batch_size)] for i in range(num_batches)]
    workers = resolve_workers(cfg.data.num_workers, source, device)
    start = time.perf_counter()
    batches = [(x.to(device), y.to(device)) for x, y in iterate_batches(source, index_batches, device, workers)]
    synchronize(device)
    data = (time.perf_counter() - start) / num_batches
    return PhaseCase(setup.R, phase_key(cfg, setup.index), step, model.num_tokens, setup.batch_size,
                     step_flops(model, 1, objective), batches, data)


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
                clock: Callable[[], float] = time.perf_counter, block: int = 1) -> dict[str, list[float]]:
    """Per case, the seconds per step of each timed round: every round runs ``block`` consecutive
    steps of every case, the order rotated by one each round; ``warmup`` untimed rounds first.

    With ``block`` > 1 the first step of each case's block is untimed and the round's time is the
    mean of the other ``block - 1``: the loop runs a phase's steps back to back, so the step it
    runs finds its own weights and optimizer state in the caches, where a step right after another
    case's does not (on a CPU the micro AST's coarse step took up to 10 % longer right after a
    fine one). ``clock`` times CPU steps; a GPU block is timed with CUDA events, unsynchronised
    between its steps as in the loop."""
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    keys, timer = list(cases), _timer(device, clock)
    timed = max(1, block - 1)

    def steps(case: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(timed):
                case()
        return run

    times: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(warmup + rounds):
        shift = r % len(keys)
        for key in keys[shift:] + keys[:shift]:
            if block > 1:
                cases[key]()
            seconds = timer(steps(cases[key])) / timed
            if r >= warmup:
                times[key].append(seconds)
    return times


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


@dataclass(frozen=True)
class StepTiming:
    """A case's median seconds per step, the quartiles, its batch and FLOPs per clip."""

    key: str
    R: int
    median: float
    q25: float
    q75: float
    batch: int
    flops_per_clip: float


@dataclass
class Calibration:
    """Step costs of every phase of a set of runs, measured together (see the module docstring)."""

    steps: dict[str, StepTiming]
    rounds: int
    device: str
    threads: int
    load_avg: tuple[float, float, float] | None
    block: int = BLOCK

    def to_dict(self) -> dict[str, Any]:
        return {"method": "the loop's training step on real batches, timed in interleaved rounds in one process "
                          f"({self.block} consecutive steps of each phase a round, the first untimed when more than "
                          "one; median of rounds)", "rounds": self.rounds, "block": self.block, "device": self.device,
                "threads": self.threads, "load_avg": self.load_avg, "steps": {k: asdict(v) for k, v in self.steps.items()}}

    def summary(self) -> str:
        """One line for a report: how the calibrated column was measured, with each phase's median
        step and its quartiles over the rounds (how much the rounds disagreed)."""
        names = {k: k.rsplit(" [", 1)[0] for k in self.steps}  # without the step signature, when that is unambiguous
        if len(set(names.values())) < len(names):
            names = {k: k for k in self.steps}
        steps = "; ".join(f"{names[k]} {1e3 * v.median:.1f} ms [{1e3 * v.q25:.1f}, {1e3 * v.q75:.1f}]"
                          for k, v in self.steps.items())
        return (f"Calibrated steps ({self.rounds} interleaved round{'' if self.rounds == 1 else 's'} in one process "
                f"on {self.device}, load average {self.load_avg}), median [quartiles over the rounds]: {steps}.")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        """A saved calibration; one saved before blocks (no ``block``) timed one step a round."""
        return cls({k: StepTiming(**v) for k, v in d["steps"].items()}, d["rounds"], d["device"], d["threads"],
                   tuple(d["load_avg"]) if d.get("load_avg") else None, d.get("block", 1))


def calibrate(configs: Sequence[RunConfig], num_classes: int, source: ClipDataset | None = None, rounds: int = 10,
              warmup: int = 2, device: str = "auto", block: int = BLOCK) -> Calibration:
    """Time the real step of every phase the runs of ``configs`` use, interleaved in this process,
    on batches of ``source`` (random audio when None)."""
    dev = resolve_device(device)
    source = source if source is not None else synthetic_source(configs[0], num_classes, 4 * configs[0].train.batch_size)
    cases: dict[str, PhaseCase] = {}
    for cfg in configs:
        for p in range(len(cfg.phases())):
            key = phase_key(cfg, p)
            if key not in cases:
                cases[key] = phase_case(cfg, p, num_classes, source, dev)
    times = interleaved(cases, rounds, warmup, dev, block=block)
    steps = {}
    for key, case in cases.items():
        q25, med, q75 = _quartiles(times[key])
        steps[key] = StepTiming(key, case.R, med, q25, q75, case.batch_size, case.flops_per_clip)
    return Calibration(steps, rounds, str(dev), torch.get_num_threads(), load_average(), block)


def calibrated_records(records: Sequence[EpochRecord | Mapping[str, Any]], cfg: RunConfig,
                       cal: Calibration) -> list[EpochRecord]:
    """Copies of a run's records with ``cal_time``: the steps each epoch took times the calibrated
    step time of its phase (for records without steps, its clips at the calibrated cost per clip)."""
    out = []
    for rec in as_records(records):
        timing = cal.steps[phase_key(cfg, rec.phase)]
        seconds = rec.steps * timing.median if rec.steps else rec.clips * timing.median / timing.batch
        out.append(dataclasses.replace(rec, cal_time=seconds))
    return out


@dataclass(frozen=True)
class PhaseBench:
    """One phase against R = 1: tokens and batch, the step's median milliseconds, the data time per
    batch, the FLOPs ratio, the time ratio (median of the per-round ratios, with quartiles) and
    their quotient, MFU where the device's peak is known, and, with a breakdown, the milliseconds
    of each stage of a step (``stages``) and, on a GPU, the device's busy milliseconds per step."""

    R: int
    tokens: int
    batch: int
    step_ms: float
    data_ms: float
    flops_ratio: float
    time_ratio: float
    time_ratio_q25: float
    time_ratio_q75: float
    mfu: float | None = None
    stages: dict[str, float] | None = None
    device_busy_ms: float | None = None

    @property
    def time_over_flops(self) -> float:
        return self.time_ratio / self.flops_ratio

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "time_over_flops": self.time_over_flops}


DISAGREE = 1.25
"""How far a phase's two time ratios in ``bench`` (of the step medians, and the median of the
per-round ratios) or its per-round quartiles may stand apart before the rounds are called disturbed."""


def disturbed(rows: Sequence[PhaseBench]) -> list[str]:
    """The phases of a ``bench`` whose rounds disagree: the ratio of their median steps per clip
    to R = 1's and the median of the per-round ratios differ by more than :data:`DISAGREE`, or the
    per-round ratios' quartiles do (load that came and went during the bench), each as one line."""
    ref = next((r for r in rows if r.R == 1), None)
    out = []
    for r in rows:
        if ref is None or r is ref or min(r.time_ratio, r.time_ratio_q25, ref.step_ms, r.step_ms) <= 0:
            continue
        medians = (r.step_ms / r.batch) / (ref.step_ms / ref.batch)
        apart = max(medians, r.time_ratio) / min(medians, r.time_ratio)
        if apart > DISAGREE or r.time_ratio_q75 / r.time_ratio_q25 > DISAGREE:
            out.append(f"R={r.R}: its median step gives {medians:.3f} of R=1's time per clip, its rounds "
                       f"{r.time_ratio:.3f} [{r.time_ratio_q25:.3f}, {r.time_ratio_q75:.3f}]")
    return out


def breakdown(case: PhaseCase, steps: int = 5) -> tuple[dict[str, float], float | None]:
    """Milliseconds per step in each stage (with a synchronisation after each) over ``steps``
    steps, the data stage from the loop's batch path; on a GPU also the device's busy
    milliseconds per unsynchronised step (kernel time from ``torch.profiler``)."""
    profile = StepProfile(case.step.device)
    case.step.profile = profile
    try:
        for _ in range(steps):
            case()
    finally:
        case.step.profile = None
    stages = {k: 1e3 * v / steps for k, v in profile.seconds.items()}
    stages["data"] += 1e3 * case.data_seconds
    busy = None
    if case.step.device.type == "cuda":
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                case()
            synchronize(case.step.device)
        busy = sum(e.self_device_time_total for e in prof.key_averages()) / 1e3 / steps
    return {k: stages[k] for k in STAGES}, busy


def first_phases(cfg: RunConfig) -> dict[int, int]:
    """The index of each factor's first phase in ``cfg``'s schedule, by R (every schedule ends at R = 1)."""
    first: dict[int, int] = {}
    for i, p in enumerate(cfg.phases()):
        first.setdefault(p.R, i)
    return first


def bench(cfg: RunConfig, num_classes: int, source: ClipDataset | None = None, rounds: int = 10, warmup: int = 2,
          device: str = "auto", with_breakdown: bool = False, block: int = BLOCK) -> list[PhaseBench]:
    """Every factor of ``cfg``'s schedule timed interleaved (see the module docstring); the time
    ratio is per clip, so a phase with a larger batch (``c2f.coarse_batch: scale``) compares fairly."""
    dev = resolve_device(device, "--device")
    source = source if source is not None else synthetic_source(cfg, num_classes, 4 * cfg.train.batch_size)
    cases = {R: phase_case(cfg, i, num_classes, source, dev) for R, i in first_phases(cfg).items()}
    times = interleaved({str(R): c for R, c in cases.items()}, rounds, warmup, dev, block=block)
    peak = peak_tflops(dev, cfg.train.amp, cfg.train.peak_tflops)
    ref = cases[1]
    rows = []
    for R, case in cases.items():
        per_clip = case.batch_size / ref.batch_size  # batches differ with c2f.coarse_batch: scale
        q25, med, q75 = _quartiles([a / b / per_clip for a, b in zip(times[str(R)], times["1"])])
        step = statistics.median(times[str(R)])
        mfu = case.flops_per_clip * case.batch_size / step / (peak * 1e12) if peak else None
        stages, busy = breakdown(case) if with_breakdown else (None, None)
        rows.append(PhaseBench(R, case.tokens, case.batch_size, 1e3 * step, 1e3 * case.data_seconds,
                               case.flops_per_clip / ref.flops_per_clip, med, q25, q75, mfu, stages, busy))
    return rows


@dataclass(frozen=True)
class StepCost:
    """One phase's step time as a line in its batch: ``fixed_ms`` a step whatever the batch (kernel
    launches, the optimizer update, the host's share) plus ``clip_ms`` per clip, fitted by least
    squares to the median step times at ``batches``; ``per_clip_quotient``: its cost per clip
    against R = 1's over the FLOPs ratio, what the quotient tends to at large batches."""

    R: int
    batches: tuple[int, ...]
    step_ms: tuple[float, ...]
    fixed_ms: float
    clip_ms: float
    flops_ratio: float
    per_clip_quotient: float
    batch: int

    @property
    def fixed_share(self) -> float:
        """The share of a step at the config's batch (``batch``) that does not grow with the batch."""
        return self.fixed_ms / (self.fixed_ms + self.clip_ms * self.batch)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fixed_share": self.fixed_share}


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """``(intercept, slope)`` of the least-squares line through ``(xs, ys)`` (at least 2 distinct xs)."""
    if len(set(xs)) < 2:
        raise ValueError(f"a line needs at least two different x values, got {list(xs)}")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def batch_sweep(cfg: RunConfig, num_classes: int, batches: Sequence[int], source: ClipDataset | None = None,
                rounds: int = 10, warmup: int = 2, device: str = "auto", block: int = BLOCK) -> list[StepCost]:
    """Every factor's first phase at each of ``batches`` (``train.batch_size``; a phase at factor R
    with ``c2f.coarse_batch: scale`` takes R times it), all timed interleaved in this process, and
    each phase's step time fitted as fixed + per clip (:class:`StepCost`)."""
    if len(set(batches)) < 2 or min(batches) < 1:
        raise ValueError(f"--batches needs at least two different batch sizes >= 1, got {list(batches)}")
    dev = resolve_device(device, "--device")
    source = source if source is not None else synthetic_source(cfg, num_classes, 2 * max(batches))
    first = first_phases(cfg)
    cases = {(R, b): phase_case(cfg.replace({"train.batch_size": b}), i, num_classes, source, dev)
             for R, i in first.items() for b in batches}
    times = interleaved({f"{R}@{b}": c for (R, b), c in cases.items()}, rounds, warmup, dev, block=block)
    fits = {}
    for R in first:
        sizes = tuple(cases[R, b].batch_size for b in batches)
        medians = tuple(1e3 * statistics.median(times[f"{R}@{b}"]) for b in batches)
        fits[R] = (sizes, medians, *fit_line(sizes, medians))
    ref_clip, ref_flops = fits[1][3], cases[1, batches[0]].flops_per_clip
    rows = []
    for R, (sizes, medians, fixed, clip) in fits.items():
        flops = cases[R, batches[0]].flops_per_clip / ref_flops
        rows.append(StepCost(R, sizes, medians, fixed, clip, flops, clip / ref_clip / flops,
                             cfg.phase(first[R], num_classes).batch_size))
    return rows
