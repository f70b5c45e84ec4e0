"""Time that other load hardly moves: interleaved step timing, calibrated time, and bench."""

import json

import pytest

from coarse2fine.cli import main
from coarse2fine.cli.reports import print_step_cost
from coarse2fine.config import load_config
from coarse2fine.report.savings import savings_table
from coarse2fine.report.timing import (
    Calibration,
    StepCost,
    StepTiming,
    calibrate,
    calibrated_records,
    fit_line,
    interleaved,
    phase_key,
)


def test_interleaved_ratio_survives_a_burst_of_load():
    # Case b costs 4x case a; during rounds 4-7 "other load" makes every step 3x slower. A
    # simulated clock that the cases advance keeps this test about the arithmetic, not the machine.
    clock = {"now": 0.0, "round": 0}
    calls = []

    def step(name, cost):
        def run():
            slow = 3.0 if 4 <= clock["round"] < 8 else 1.0
            clock["now"] += cost * slow
            calls.append(name)
            if len(calls) % 2 == 0:
                clock["round"] += 1
        return run

    times = interleaved({"a": step("a", 0.001), "b": step("b", 0.004)}, rounds=20, warmup=1, clock=lambda: clock["now"])
    ratios = sorted(tb / ta for ta, tb in zip(times["a"], times["b"]))
    assert len(times["a"]) == len(times["b"]) == 20 and all(r == pytest.approx(4.0) for r in ratios)
    assert max(times["a"]) == pytest.approx(0.003) and sorted(times["a"])[10] == pytest.approx(0.001)
    assert calls[:6] == ["a", "b", "b", "a", "a", "b"]  # the order rotates every round


def test_blocks_time_the_step_as_the_loop_runs_it_back_to_back():
    # A step right after another case's step refills the caches (an extra 0.002 s, simulated);
    # the loop runs a phase's steps back to back and never pays it. One step a round times the
    # refill; a block's first step takes it untimed.
    clock = {"now": 0.0, "last": None}
    calls = []

    def step(name, cost):
        def run():
            clock["now"] += cost + (0.002 if clock["last"] not in (None, name) else 0.0)
            clock["last"] = name
            calls.append(name)
        return run

    cases = {"a": step("a", 0.001), "b": step("b", 0.004)}
    one = interleaved(cases, rounds=6, warmup=1, clock=lambda: clock["now"])
    assert sorted(one["a"])[-3:] == pytest.approx([0.003] * 3) and sorted(one["b"])[-3:] == pytest.approx([0.006] * 3)
    calls.clear()
    blocks = interleaved(cases, rounds=6, warmup=1, clock=lambda: clock["now"], block=4)
    assert all(t == pytest.approx(0.001) for t in blocks["a"]) and all(t == pytest.approx(0.004) for t in blocks["b"])
    assert len(blocks["a"]) == 6 and calls[:8] == ["a"] * 4 + ["b"] * 4 and calls[8:12] == ["b"] * 4
    with pytest.raises(ValueError, match="block"):
        interleaved(cases, rounds=1, block=0)


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
    k4, k1 = phase_key(cfg, 0), phase_key(cfg, 1)
    cal = Calibration({k1: StepTiming(k1, 1, 0.16, 0.15, 0.17, 16, 100),
                       k4: StepTiming(k4, 4, 0.04, 0.035, 0.045, 16, 24)}, 10, "cpu", 2, None)
    base = _with_cum([{**_run(320, 100, 1, 0, 3.2), "acc": a} for a in (0.5, 0.6, 0.7, 0.8)])
    quiet = _with_cum([{**_run(320, 24, 4, 0, 0.8), "acc": 0.4}] + [{**_run(320, 100, 1, 1, 3.2), "acc": a} for a in (0.7, 0.85)])
    # The same run with a competing load from its second epoch on: wall time doubles there.
    loaded = _with_cum([{**_run(320, 24, 4, 0, 0.8), "acc": 0.4}] + [{**_run(320, 100, 1, 1, 6.4), "acc": a} for a in (0.7, 0.85)])
    b = calibrated_records(base, cfg.baseline(), cal)
    q, ld = calibrated_records(quiet, cfg, cal), calibrated_records(loaded, cfg, cal)
    assert b[0].cal_time == pytest.approx(320 * 0.16 / 16) and q[0].cal_time == pytest.approx(320 * 0.04 / 16)
    rows_q = savings_table("Baseline", b, {"c2f": q}, "acc")[1]
    rows_l = savings_table("Baseline", b, {"c2f": ld}, "acc")[1]
    # Baseline best at epoch 4: 4 x 320 clips x 10 ms = 12.8 s; the c2f run beats it at epoch 3:
    # 320 x 2.5 ms + 2 x 320 x 10 ms = 7.2 s, a 43.75 % save, loaded or not.
    assert rows_q["Calibrated time save (%)"] == rows_l["Calibrated time save (%)"] == "43.75"
    assert float(rows_q["Wall time save (%)"]) - float(rows_l["Wall time save (%)"]) > 40
    assert k1.startswith("R=1 [") and k4.startswith("fshift R=4 [")


def test_runs_whose_steps_differ_get_their_own_calibration():
    # A switching rule or schedule leaves the step as it is; patchout (fewer tokens) does not.
    plain = load_config("demo")
    switched = load_config("demo", ["c2f.switch=plateau", "c2f.schedule=2-1"])
    patchout = load_config("demo", ["model.overrides.pos_embed=disentangled", "model.overrides.patchout_time=2"])
    assert phase_key(plain, 1) == phase_key(switched, 1)
    assert phase_key(plain, 1) != phase_key(patchout, 1)
    assert phase_key(plain, 0) != phase_key(load_config("demo", ["train.batch_size=8"]), 0)
    assert phase_key(plain, 1) != phase_key(load_config("demo", ["train.optim.optimizer=adamw"]), 1)
    cal = calibrate([plain, patchout], 8, rounds=2, warmup=1)
    assert {phase_key(plain, 1), phase_key(patchout, 1), phase_key(plain, 0), phase_key(patchout, 0)} == set(cal.steps)
    assert cal.steps[phase_key(patchout, 1)].flops_per_clip < cal.steps[phase_key(plain, 1)].flops_per_clip


def test_bench_json_lists_every_phase(capsys):
    assert main(["bench", "demo", "--rounds", "2", "--warmup", "1", "--json", "--quiet", "--schedule", "4-2-1",
                 "--set", "train.batch_size=4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [p["R"] for p in out["phases"]] == [4, 2, 1]
    assert out["phases"][-1]["flops_ratio"] == 1.0 and out["phases"][0]["flops_ratio"] < 0.3
    # Each phase's own step: its tokens (a time comparison belongs in benchmarks: under the suite's load the
    # coarse step of 2 rounds has timed slower than the fine one)
    assert [p["tokens"] for p in out["phases"]] == sorted(p["tokens"] for p in out["phases"])
    assert out["phases"][0]["tokens"] < out["phases"][-1]["tokens"] and all(p["step_ms"] > 0 for p in out["phases"])


@pytest.mark.parametrize("option, value, least", [("--classes", "0", 1), ("--classes", "-3", 1), ("--rounds", "0", 1),
                                                  ("--warmup", "-1", 0)])
def test_bench_refuses_counts_out_of_range_in_one_line(option, value, least, capsys):
    assert main(["bench", "demo", option, value, "--quiet"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{option} must be >= {least}, got {value}")


def test_fit_line_recovers_a_fixed_cost_and_a_cost_per_clip():
    assert fit_line([4, 8, 16, 32], [5 + 1.5 * b for b in (4, 8, 16, 32)]) == pytest.approx((5.0, 1.5))
    with pytest.raises(ValueError, match="two different"):
        fit_line([8, 8], [1.0, 2.0])


def test_bench_batches_fits_each_phase_as_fixed_plus_per_clip(capsys):
    # Real steps of the demo's micro AST at two batch sizes, with c2f.coarse_batch: scale (the
    # coarse phase steps at 4x the batch). The fit and the ratios are what the JSON says.
    assert main(["bench", "demo", "--rounds", "2", "--warmup", "1", "--json", "--quiet", "--batches", "2,8",
                 "--set", "c2f.coarse_batch=scale", "--set", "train.batch_size=4"]) == 0
    cost = {c["R"]: c for c in json.loads(capsys.readouterr().out)["step_cost"]}
    assert cost[4]["batches"] == [8, 32] and cost[1]["batches"] == [2, 8]
    assert (cost[4]["batch"], cost[1]["batch"]) == (16, 4) and cost[1]["per_clip_quotient"] == pytest.approx(1.0)
    for c in cost.values():
        (b0, b1), (t0, t1) = c["batches"], c["step_ms"]
        assert c["clip_ms"] == pytest.approx((t1 - t0) / (b1 - b0)) and c["fixed_ms"] == pytest.approx(t0 - c["clip_ms"] * b0)
        assert c["fixed_share"] == pytest.approx(c["fixed_ms"] / (c["fixed_ms"] + c["clip_ms"] * c["batch"]))
    assert cost[4]["per_clip_quotient"] == pytest.approx(cost[4]["clip_ms"] / cost[1]["clip_ms"] / cost[4]["flops_ratio"])
    with pytest.raises(SystemExit):
        main(["bench", "demo", "--batches", "8"])
    assert "at least two different batch sizes" in capsys.readouterr().err


def test_a_fit_with_a_negative_part_is_flagged(capsys):
    # Step times measured under load can fit a negative cost per clip (a new user's 103 % fixed
    # share): the table says the fit is not to be read.
    good = StepCost(4, (4, 8), (9.0, 13.0), 5.0, 1.0, 0.2, 1.0, 16)
    bad = StepCost(1, (4, 8), (30.0, 29.0), 31.0, -0.25, 1.0, 1.0, 16)
    print_step_cost([good])
    assert "warning" not in capsys.readouterr().out
    print_step_cost([good, bad])
    assert "warning: the fit of R=1 has a negative part: its step times do not grow with the batch as a line" in \
        capsys.readouterr().out


def test_bench_names_the_phases_whose_rounds_disagree():
    # at load average 3.6 a new user's bench showed R=2 at 489 ms a step against R=1's 58.5, and a time ratio
    # of 0.849: nothing said the two columns could not both be right
    from coarse2fine.report.timing import PhaseBench, disturbed

    def phase(R, ms, ratio, q25, q75):
        return PhaseBench(R, 128 // R, 16, ms, 0.1, 1 / R, ratio, q25, q75)

    busy = [phase(2, 489.3, 0.849, 0.615, 1.030), phase(1, 58.5, 1.0, 1.0, 1.0)]
    assert disturbed(busy) == ["R=2: its median step gives 8.364 of R=1's time per clip, its rounds 0.849 "
                               "[0.615, 1.030]"]
    quiet = [phase(4, 7.8, 0.43, 0.42, 0.44), phase(2, 11.1, 0.62, 0.61, 0.63), phase(1, 18.1, 1.0, 1.0, 1.0)]
    assert disturbed(quiet) == []
