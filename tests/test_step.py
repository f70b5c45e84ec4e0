"""One training step for the loop, bench and calibration; time measured in the loop; batches
that do not wait on the host; coarse phases that fill the device."""

import json
import logging
import math
import time

import pytest
import torch

from coarse2fine.cli import main
from coarse2fine.config import load_config, preset_names
from coarse2fine.data.datasets import WaveformDataset
from coarse2fine.data.loading import iterate_batches, resolve_workers, workers_reason
from coarse2fine.data.sources import load_splits
from coarse2fine.report.timing import BLOCK, bench, calibrate
from coarse2fine.training import step as step_module
from coarse2fine.training.loop import train_run
from coarse2fine.training.records import cumulative_time, phase_step_cost
from coarse2fine.training.sampling import micro_batch_sizes

TINY = ["data.train_clips=32", "data.val_clips=16", "train.batch_size=8", "train.threads=1", "model.preset=micro",
        "train.optim.warmup_steps=2", "train.epochs=1"]


@pytest.fixture
def counted_update(monkeypatch):
    """Every optimizer update of a TrainStep counted, and made 30 ms slower."""
    calls = {"n": 0}
    real = step_module.TrainStep.update

    def slow_update(self):
        calls["n"] += 1
        time.sleep(0.03)
        real(self)

    monkeypatch.setattr(step_module.TrainStep, "update", slow_update)
    return calls


def test_training_bench_and_calibration_run_the_same_step(counted_update, tmp_path):
    cfg = load_config("demo", TINY)
    splits = load_splits(cfg)
    result = train_run(cfg, splits, tmp_path / "run", progress=False)
    assert counted_update["n"] == sum(r.steps for r in result.records) == 8
    # The 30 ms added to the loop's step is in what the loop, bench and calibration measure.
    assert all(r.step_median >= 0.03 for r in result.records)
    before = counted_update["n"]
    rows = bench(cfg, 8, splits.train, rounds=2, warmup=0)
    assert counted_update["n"] - before == 2 * BLOCK * len(rows) and all(r.step_ms >= 30 for r in rows)
    cal = calibrate([cfg], 8, splits.train, rounds=2, warmup=0)
    assert all(s.median >= 0.03 for s in cal.steps.values())


def test_in_loop_time_fields_add_up(tmp_path):
    cfg = load_config("demo", [*TINY, "train.epochs=2", "c2f.phase_epochs=[1, 2]"])
    start = time.perf_counter()
    recs = train_run(cfg, load_splits(cfg), tmp_path, progress=False).records
    elapsed = time.perf_counter() - start
    for r in recs:
        assert 0 <= r.data_time and 0 < r.step_time and r.data_time + r.step_time <= r.train_time * 1.001
        assert 0 < r.step_median <= r.train_time
    assert recs[-1].cum_time < elapsed  # the epochs' training time is part of the run's wall time
    costs = phase_step_cost(recs)
    fine = sorted(d for r in recs if r.phase == 1 for d in r.step_deciles)  # 2 epochs of 4 steps: equal weights
    assert costs[1] == fine[math.ceil(len(fine) / 4) - 1] and all(len(r.step_deciles) == 9 for r in recs)
    robust = cumulative_time(recs, "step")
    assert robust[-1] == pytest.approx(sum(r.steps * costs[r.phase] for r in recs))
    log = json.loads((tmp_path / "log.json").read_text())
    assert [p["R"] for p in log["phases"]] == [4, 1] and all(p["warmup_seconds"] > 0 for p in log["phases"])


def test_the_step_time_measure_ignores_a_slow_stretch():
    from coarse2fine.training.records import as_records

    def epoch(i, phase, median, wall):
        return {"epoch": i, "phase": phase, "steps": 10, "step_median": median, "train_time": wall, "cum_flops": i,
                "cum_time": 0.0, "acc": 0.1}

    quiet = as_records([epoch(1, 0, 0.01, 0.1), epoch(2, 1, 0.04, 0.4), epoch(3, 1, 0.04, 0.4), epoch(4, 1, 0.04, 0.4)])
    # The same run with other load on the machine for most of its final phase.
    loaded = as_records([epoch(1, 0, 0.01, 0.1), epoch(2, 1, 0.04, 0.4), epoch(3, 1, 0.11, 1.1), epoch(4, 1, 0.12, 1.2)])
    assert cumulative_time(quiet, "step") == pytest.approx(cumulative_time(loaded, "step")) == [0.1, 0.5, 0.9, 1.3]


def test_the_step_cost_is_the_lower_quartile_of_the_phases_steps():
    from coarse2fine.training.records import as_records

    def epoch(i, steps, deciles):
        return {"epoch": i, "phase": 0, "steps": steps, "step_deciles": deciles, "cum_flops": i, "cum_time": 0.0,
                "acc": 0.1}

    # 30 steps at 10-18 ms, then 10 steps at 50-90 ms (a busy stretch): a quarter of the 40 steps is
    # reached inside the quiet epoch's deciles, at its 4th (weight 30/9 each: 13.3 >= 10).
    recs = as_records([epoch(1, 30, [0.010 + 0.001 * k for k in range(9)]),
                       epoch(2, 10, [0.050 + 0.005 * k for k in range(9)])])
    assert phase_step_cost(recs) == {0: pytest.approx(0.012)}


def test_sources_in_memory_serve_a_batch_as_one_read_equal_to_collating_items():
    waves, targets = torch.randn(10, 100), torch.eye(5)[torch.arange(10) % 5]
    ds = WaveformDataset(waves, targets, list("abcde"))
    batches = [[3, 1, 4], [0, 9]]
    got = list(iterate_batches(ds, batches, torch.device("cpu")))
    for (x, y), b in zip(got, batches):
        assert torch.equal(x, torch.stack([waves[i] for i in b])) and torch.equal(y, torch.stack([targets[i] for i in b]))
    assert resolve_workers("auto", ds, torch.device("cpu")) == 0 and resolve_workers(3, ds, torch.device("cpu")) == 0
    # the run's log line says why (a new user's data.num_workers 1 gave 0 workers, unexplained)
    assert workers_reason(3, ds, torch.device("cpu")).endswith("(data.preload, on by default, or data.in_memory) and "
                                                               "read in the training process; data.num_workers 3 is "
                                                               "not used")
    assert workers_reason("auto", ds, torch.device("cpu")).endswith("in the training process")


def test_the_loss_is_read_on_the_device_at_logging_points():
    tally = step_module.LossTally(torch.device("cpu"))
    for i, loss in enumerate([1.0, 2.0, math.nan, 3.0]):
        tally.add(torch.tensor(loss, dtype=torch.float64), 4, i)
    total, bad = tally.read()
    assert bad == 2 and math.isnan(total)
    tally.add(torch.tensor(0.5, dtype=torch.float64), 2, 4)
    assert tally.read() == (1.0, -1)


def test_coarse_batch_scale_trains_coarse_phases_at_r_times_the_batch(tmp_path):
    cfg = load_config("demo", [*TINY, "c2f.coarse_batch=scale", "c2f.phase_epochs=[1, 1]", "train.optim.lr=0.001",
                               "train.optim.warmup_steps=8"])
    coarse, fine = cfg.phase(0, 8), cfg.phase(1, 8)
    assert (coarse.batch_size, fine.batch_size) == (32, 8)
    assert coarse.optim.lr == pytest.approx(0.002) and coarse.optim.warmup_steps == 2 and fine.optim.lr == 0.001
    linear = cfg.replace({"c2f.lr_scaling": "linear"}).phase(0, 8)
    assert linear.optim.lr == pytest.approx(0.004)
    recs = train_run(cfg, load_splits(cfg), tmp_path, progress=False).records
    assert [(r.R, r.batch_size, r.steps, r.clips) for r in recs] == [(4, 32, 1, 32), (1, 8, 4, 32)]


def test_compile_per_phase_trains_like_eager(tmp_path):
    small = [*TINY, "model.overrides.depth=1", "train.epochs=1"]
    eager = train_run(load_config("demo", small), load_splits(load_config("demo", small)), tmp_path / "eager",
                      progress=False).records
    cfg = load_config("demo", [*small, "train.compile=true"])
    compiled = train_run(cfg, load_splits(cfg), tmp_path / "compiled", progress=False).records
    assert [r.R for r in compiled] == [4, 1]
    assert [r.train_loss for r in compiled] == pytest.approx([r.train_loss for r in eager], rel=1e-3)
    phases = json.loads((tmp_path / "compiled" / "log.json").read_text())["phases"]
    assert all(p["warmup_seconds"] > 0 for p in phases)  # the compile, outside the epochs' time


def test_a_compiled_run_compiles_every_batch_shape_of_an_epoch_in_its_untimed_warm_up(tmp_path):
    # 30 clips in batches of 8: a last batch of 6, another shape for a compiled model. Its compile
    # fell inside the first timed epoch (a new user measured an epoch of 0.15 s of steps at 11.5 s).
    import torch._dynamo.callback

    events: list[str] = []

    class Lines(logging.Handler):
        def emit(self, record):
            events.append(record.getMessage())

    cfg = load_config("demo", [*TINY, "model.overrides.depth=1", "data.train_clips=30", "train.epochs=2",
                               "c2f.phase_epochs=[1, 2]", "train.compile=true"])
    handler, logger = Lines(), logging.getLogger("coarse2fine.training.loop")
    compiles = torch._dynamo.callback.callback_handler
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    torch._dynamo.reset()  # no graph left from another test: every shape compiles here
    compiles.register_start_callback(started := lambda *args: events.append("compile"))
    try:
        train_run(cfg, load_splits(cfg), tmp_path, progress=False)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        compiles.remove_start_callback(started)
    assert events.count("compile") >= 4  # two shapes in each of two phases
    after = [next(e for e in events[i:] if e != "compile") for i, e in enumerate(events) if e == "compile"]
    assert all(line.startswith("phase ") for line in after), after  # each in the warm-up its phase line reports
    assert micro_batch_sizes([8, 8, 8, 6], 1, 8) == [8, 6]
    assert micro_batch_sizes([8, 8, 7], 2, 2) == [2, 1]  # shares 4 and 4, then 4 and 3; micro-batches of 2
    assert micro_batch_sizes([16], 1, 16) == [16]


FAMILY_SMALLEST = {"ast": "micro", "htsat": "micro", "ssast": "micro"}


@pytest.mark.parametrize("preset", preset_names())
def test_bench_breakdown_works_for_every_shipped_preset(preset, capsys):
    cfg = load_config(preset)
    settings = [f"model.preset={FAMILY_SMALLEST[cfg.model.arch]}", "train.batch_size=2", "train.grad_accum=1",
                "train.threads=1"]
    assert main(["bench", preset, "--classes", "3", "--rounds", "1", "--warmup", "0", "--breakdown", "--json", "--quiet",
                 *[a for s in settings for a in ("--set", s)]]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [p["R"] for p in out["phases"]][-1] == 1
    for p in out["phases"]:
        assert set(p["stages"]) == {"data", "features", "forward_backward", "optimizer"}
        assert p["stages"]["forward_backward"] > 0 and p["step_ms"] > 0
