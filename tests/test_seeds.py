"""Several seeds: mean curves, the seeds table, the table over folds and the kept table, on hand-built
records with hand-computed results."""

from __future__ import annotations

import math

import pytest

from coarse2fine.report.kept import kept_rows, transfers
from coarse2fine.report.seeds import fold_table, mean_records, metric_band, seed_table, summarize
from coarse2fine.training.records import EpochRecord, cumulative_time


def make_run(values, flops, phases=None, Rs=None, step_median=None, steps=10):
    """Records in training order; 0.1 s of wall time per FLOP."""
    phases = phases or [0] * len(values)
    Rs = Rs or [1] * len(values)
    out, cum, phase_epoch = [], 0.0, 0
    for i, (v, f, p, R) in enumerate(zip(values, flops, phases, Rs)):
        phase_epoch = 1 if i == 0 or phases[i - 1] != p else phase_epoch + 1
        cum += f
        out.append(EpochRecord(epoch=i + 1, phase=p, R=R, phase_epoch=phase_epoch, cum_flops=cum, cum_time=0.1 * cum,
                               train_flops=f, train_time=0.1 * f, steps=steps, clips=8 * steps, metrics={"acc": v},
                               step_median=None if step_median is None else step_median[p]))
    return out


# Baseline, 4 epochs of 100 FLOPs: the seeds' bests are 0.40, 0.50, 0.45 (mean 0.45, sample std 0.05); the mean
# curve is 0.35, 0.40, 0.43, 0.45: its best, 0.45, at epoch 4, after 400 FLOPs and 40 s.
BASE = [make_run([0.30, 0.35, 0.38, 0.40], [100] * 4), make_run([0.40, 0.45, 0.48, 0.50], [100] * 4),
        make_run([0.35, 0.40, 0.43, 0.45], [100] * 4)]
# 4-1: one epoch at R = 4 (25 FLOPs), three at R = 1. Final-phase bests 0.44, 0.52, 0.51: mean 0.49, sample std
# sqrt(0.0019) = 0.0436; paired differences 0.04, 0.02, 0.06: mean 0.04, interval [0.02, 0.06]. Seed 0 alone beats
# 0.45 nowhere and seed 1 at epoch 3, but the mean curve (0.42, 0.4767, 0.46 in the final phase) first beats the
# baseline's mean best at epoch 3, after 225 FLOPs: 43.75 % fewer than 400, and 43.75 % less time.
C2F = [make_run(v, [25, 100, 100, 100], [0, 1, 1, 1], [4, 1, 1, 1])
       for v in ([0.10, 0.44, 0.40, 0.42], [0.10, 0.40, 0.52, 0.50], [0.10, 0.42, 0.51, 0.46])]
# Never reaches 0.45 on the mean curve (0.40, 0.41, 0.43 in its final phase).
WEAK = [make_run(v, [25, 100, 100, 100], [0, 1, 1, 1], [4, 1, 1, 1])
        for v in ([0.10, 0.40, 0.40, 0.43], [0.10, 0.38, 0.42, 0.44], [0.10, 0.42, 0.41, 0.42])]


def test_mean_records_average_every_curve():
    m = mean_records(C2F)
    assert [r.metric("acc") for r in m] == pytest.approx([0.10, 0.42, 1.43 / 3, 0.46])
    assert [r.cum_flops for r in m] == [25, 125, 225, 325] and [r.phase for r in m] == [0, 1, 1, 1]
    assert mean_records(C2F[:1]) == C2F[0]
    assert metric_band(BASE, "acc") == pytest.approx([0.05] * 4)


def test_mean_records_time_by_median_step_is_the_mean_of_the_seeds_times():
    # Seed 0: 0.1 s per step in phase 0, 0.3 s in phase 1; seed 1: 0.2 and 0.5; 10 steps per epoch.
    runs = [make_run([0.1, 0.2], [25, 100], [0, 1], [4, 1], step_median={0: 0.1, 1: 0.3}),
            make_run([0.1, 0.2], [25, 100], [0, 1], [4, 1], step_median={0: 0.2, 1: 0.5})]
    assert cumulative_time(mean_records(runs), "step") == pytest.approx([1.5, 5.5])  # (1 + 2) / 2, then + (3 + 5) / 2


def test_mean_records_refuse_seeds_of_other_lengths():
    with pytest.raises(ValueError, match="same phase lengths"):
        mean_records([C2F[0], C2F[1][:3]])


def test_summary_and_seed_table_by_hand():
    s = summarize(C2F, "acc", BASE)
    assert s.bests == pytest.approx((0.44, 0.52, 0.51)) and s.mean == pytest.approx(0.49)
    assert s.std == pytest.approx(math.sqrt(0.0019)) and s.differences == pytest.approx((0.04, 0.02, 0.06))
    assert s.gain == pytest.approx(0.04) and s.interval == (pytest.approx(0.02), pytest.approx(0.06))
    rows = seed_table("Baseline", BASE, {"Fshift 41": C2F, "Weak 41": WEAK}, "acc")
    assert list(rows[0].values()) == ["Baseline", "3", "45.00 ± 5.00", "-", "45.00", "4", "-", "-", "1.00", "1.00"]
    assert list(rows[1].values()) == ["Fshift 41", "3", "49.00 ± 4.36", "+4.00 [+2.00, +6.00]", "47.67 (+2.67)", "3",
                                      "43.75", "43.75", "0.81", "0.81"]
    # WEAK's bests 0.43, 0.44, 0.42 against 0.40, 0.50, 0.45: differences +3, -6, -3 points, mean -2.
    assert list(rows[2].values())[:6] == ["Weak 41", "3", "43.00 ± 1.00", "-2.00 [-6.00, +3.00]", "not reached", "-"]
    assert list(rows[0]) == ["Setting", "Seeds", "Best Acc (mean ± std)", "Paired gain (95 % CI)",
                             "Acc at first beat on mean curve (delta)", "Beat epoch", "FLOPs save (%)",
                             "Wall time save (%)", "Run FLOPs (x baseline)", "Run wall time (x baseline)"]
    with pytest.raises(ValueError, match="paired by seed"):
        summarize(C2F[:2], "acc", BASE)


def test_fold_table_is_the_mean_over_folds_of_each_folds_seed_mean():
    # Fold 1: the seed means above (baseline 0.45, Fshift 0.49); fold 2: one seed each, 0.50 and 0.52.
    folds = {1: {"Baseline": BASE, "Fshift 41": C2F},
             2: {"Baseline": [make_run([0.5], [100])], "Fshift 41": [make_run([0.1, 0.52], [25, 100], [0, 1], [4, 1])]}}
    rows = fold_table(folds, "Baseline", "acc")
    # Means over folds 0.475 and 0.505; sample std over folds of (0.45, 0.50): 0.0354, of (0.49, 0.52): 0.0212;
    # per-fold gains 0.04 and 0.02: mean 0.03, interval [0.02, 0.04]. Run cost: 325 of 400 FLOPs in fold 1, 125 of
    # 100 in fold 2: mean over folds (0.8125 + 1.25) / 2 = 1.03; wall time is 0.1 s per FLOP, so the same.
    assert [list(r.values()) for r in rows] == [
        ["Baseline", "1/3", "45.00", "50.00", "47.50 ± 3.54", "-", "1.00", "1.00"],
        ["Fshift 41", "1/3", "49.00", "52.00", "50.50 ± 2.12", "+3.00 [+2.00, +4.00]", "1.03", "1.03"],
    ]
    assert list(rows[0])[-2:] == ["Run FLOPs (x baseline)", "Run wall time (x baseline)"]
    with pytest.raises(ValueError, match="lacks"):
        fold_table({1: folds[1], 2: {"Baseline": folds[2]["Baseline"]}}, "Baseline", "acc")


def test_kept_is_the_carried_over_score_over_the_last_coarse_one():
    records = C2F[0]  # the coarse phase ends at 0.10, the first fine epoch at 0.44
    phases = [{"phase": 0, "R": 4, "epochs": 1, "tokens": 16, "batch_size": 8, "flops_per_clip": 1.0,
               "train_time": 1.0, "step_cost": None},
              {"phase": 1, "R": 1, "epochs": 3, "tokens": 64, "batch_size": 8, "flops_per_clip": 4.0,
               "train_time": 3.0, "step_cost": None, "entry_metrics": {"acc": 0.05}}]
    [t] = transfers(records, phases, "acc")
    assert (t.phase, t.R_from, t.R_to, t.before, t.after, t.first) == (1, 4, 1, 0.10, 0.05, 0.44)
    assert t.kept == pytest.approx(0.5)
    other = [phases[0], {**phases[1], "entry_metrics": {"acc": 0.10}}]  # seed 1 keeps everything
    rows = kept_rows({"Baseline": [(BASE[0], phases[:1])], "Fshift 41": [(records, phases), (records, other)]}, "acc")
    # Only runs with a phase change have rows; kept: mean of 0.5 and 1.0, sample std 0.354.
    assert [list(r.values()) for r in rows] == [
        ["Fshift 41", "phase 1 -> 2: R=4 -> R=1", "2", "10.00", "7.50", "0.75 ± 0.35", "44.00"]]
    assert transfers(records, [{**phases[1], "entry_metrics": {}}], "acc") == []  # not evaluated on entry
