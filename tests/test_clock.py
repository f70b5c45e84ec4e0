"""EpochClock: the in-loop epoch timer that the CLI loop and the Lightning callback share."""

import torch

from coarse2fine.training import clock as clock_module
from coarse2fine.training.clock import EpochClock, step_summary


def test_elapsed_leaves_pauses_out_and_counts_the_open_segment(monkeypatch):
    now = {"t": 100.0}
    monkeypatch.setattr(clock_module.time, "perf_counter", lambda: now["t"])
    c = EpochClock(torch.device("cpu"))
    c.start()
    now["t"] += 1.0            # waiting for the first batch
    c.batch_ready()
    now["t"] += 2.0            # the step
    c.step_done()
    assert c.elapsed() == 3.0  # the segment still open counts
    c.pause()
    now["t"] += 50.0           # a checkpoint or validation: not training time
    assert c.elapsed() == 3.0 and c.wall == 3.0
    c.resume()
    now["t"] += 0.5
    c.batch_ready()
    now["t"] += 1.5
    c.step_done()
    assert c.elapsed() == 5.0
    c.pause()
    assert c.wall == 5.0 and c.data == 1.5
    assert c.step_times() == [3.0, 2.0]  # each step with its wait for data
    summary = step_summary(c.step_times(), c.data)
    assert summary["step_time"] == 3.5 and summary["step_median"] == 2.5


def test_carry_continues_an_epoch_resumed_in_its_middle(monkeypatch):
    now = {"t": 0.0}
    monkeypatch.setattr(clock_module.time, "perf_counter", lambda: now["t"])
    c = EpochClock(torch.device("cpu"))
    c.start()
    c.carry(wall=7.0, data=0.5, step_times=[3.0, 4.0])  # the part trained before the resume
    now["t"] += 0.25
    c.batch_ready()
    now["t"] += 1.75
    c.step_done()
    assert c.elapsed() == 9.0 and c.data == 0.75
    assert c.step_times() == [3.0, 4.0, 2.0]
