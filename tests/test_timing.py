"""Time that other load hardly moves: interleaved step timing, calibrated time, and bench."""

import json
import time

import pytest

from coarse2fine.cli import main
from coarse2fine.config import load_config
from coarse2fine.savings import savings_table
from coarse2fine.timing import Calibration, StepTiming, calibrated_records, interleaved, phase_key


def busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_interleaved_ratio_survives_a_burst_of_load():
    # Case b costs 4x case a; during rounds 4-7 "other load" makes every step 3 ms slower.
    state = {"round": 0}

    def a():
        busy(0.001 + (0.003 if 4 <= state["round"] < 8 else 0))

    def b():
        busy(0.004 + (0.003 if 4 <= state["round"] < 8 else 0))
        state["round"] += 1

    times = interleaved({"a": a, "b": b}, rounds=20, warmup=1)
    ratios = sorted(tb / ta for ta, tb in zip(times["a"], times["b"]))
    assert len(times["a"]) == 20 and ratios[len(ratios) // 2] == pytest.approx(4.0, rel=0.15)


def _run(clips, flops_per_clip, R, phase, wall):
    return {"R": R, "phase": phase, "clips": clips, "train_flops": clips * flops_per_clip, "train_time": wall}


def _with_cum(records):
    cf = ct = 0
    for i, r in enumerate(records, start=1):
        cf, ct = cf + r["train_flops"], ct + r["train_time"]
        r.update(epoch=i, cum_flops=cf, cum_time=ct)
    return records


def test_calibrated_time_is_clips_times_the_phase_cost_and_ignores_a_slowdown():
    cfg = load_config("demo")
    cal = Calibration({"R=1": StepTiming("R=1", 1, 0.16, 0.15, 0.17, 16, 100),
                       "fshift R=4": StepTiming("fshift R=4", 4, 0.04, 0.035, 0.045, 16, 24)}, 10, "cpu", 2, None)
    base = _with_cum([{**_run(320, 100, 1, 0, 3.2), "acc": a} for a in (0.5, 0.6, 0.7, 0.8)])
    quiet = _with_cum([{**_run(320, 24, 4, 0, 0.8), "acc": 0.4}] + [{**_run(320, 100, 1, 1, 3.2), "acc": a} for a in (0.7, 0.85)])
    # The same run with a competing load from its second epoch on: wall time doubles there.
    loaded = _with_cum([{**_run(320, 24, 4, 0, 0.8), "acc": 0.4}] + [{**_run(320, 100, 1, 1, 6.4), "acc": a} for a in (0.7, 0.85)])
    b = calibrated_records(base, cfg, cal)
    q, ld = calibrated_records(quiet, cfg, cal), calibrated_records(loaded, cfg, cal)
    assert b[0]["cal_time"] == pytest.approx(320 * 0.16 / 16) and q[0]["cal_time"] == pytest.approx(320 * 0.04 / 16)
    assert [r["cum_cal_time"] for r in q] == [r["cum_cal_time"] for r in ld]
    rows_q = savings_table("Baseline", b, {"c2f": q}, "acc")[1]
    rows_l = savings_table("Baseline", b, {"c2f": ld}, "acc")[1]
    # Baseline best at epoch 4: 4 x 320 clips x 10 ms = 12.8 s; the c2f run beats it at epoch 3:
    # 320 x 2.5 ms + 2 x 320 x 10 ms = 7.2 s, a 43.75 % save, loaded or not.
    assert rows_q["Time save (%)"] == rows_l["Time save (%)"] == "43.75"
    assert float(rows_q["Wall time save (%)"]) - float(rows_l["Wall time save (%)"]) > 40
    assert phase_key(cfg, 1) == "R=1" and phase_key(cfg, 4) == "fshift R=4"


def test_bench_json_lists_every_phase(capsys):
    assert main(["bench", "demo", "--rounds", "2", "--warmup", "1", "--json", "--quiet", "--schedule", "4-2-1",
                 "--set", "train.batch_size=4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [p["R"] for p in out["phases"]] == [4, 2, 1]
    for p in out["phases"]:
        assert p["flops_ratio"] > 0 and p["time_ratio"] > 0 and "model_time_over_flops" in p
    assert out["phases"][-1]["flops_ratio"] == 1.0 and out["phases"][0]["flops_ratio"] < 0.3
