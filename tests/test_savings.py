"""Savings rules (a) and (b) on hand-built records, and the paper-style table."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from coarse2fine.report.plots import phase_change_xs
from coarse2fine.report.savings import (
    BaselineRef,
    Savings,
    baseline_reference,
    check_metric,
    compare,
    csv_rows,
    format_table,
    load_records,
    savings_table,
)
from coarse2fine.training.records import as_records


def make_run(values, flops, phases=None, Rs=None, metric="acc", seconds_per_flop=0.1):
    """Records in training order; time per epoch is proportional to FLOPs unless told otherwise."""
    phases = phases or [0] * len(values)
    Rs = Rs or [1] * len(values)
    records, cum_flops, cum_time, phase_epoch = [], 0, 0.0, 0
    for i, (v, f, p, R) in enumerate(zip(values, flops, phases, Rs)):
        phase_epoch = 1 if i == 0 or phases[i - 1] != p else phase_epoch + 1
        cum_flops += f
        cum_time += f * seconds_per_flop
        records.append({"phase": p, "R": R, "epoch": i + 1, "phase_epoch": phase_epoch,
                        "train_flops": f, "train_time": f * seconds_per_flop,
                        "cum_flops": cum_flops, "cum_time": cum_time, metric: v})
    return records


# What EpochRecord.to_dict adds to a hand-made record: the defaults of the fields it leaves out.
ALL_DEFAULTS = {"tokens": 0, "train_tokens": 0, "batch_size": 0, "lr": 0.0, "clips": 0, "steps": 0, "data_time": 0.0, "step_time": 0.0,
                "eval_time": 0.0}

# Baseline: best 0.494 at epoch 4, cum_flops 400, cum_time 40.
BASE = make_run([0.30, 0.40, 0.45, 0.494, 0.49], [100] * 5)
# Two-phase R=4 then R=1: reaches 0.499 at epoch 3 with cum_flops 25 + 25 + 100 = 150.
C2F = make_run([0.20, 0.30, 0.499, 0.5143, 0.51], [25, 25, 100, 100, 100], [0, 0, 1, 1, 1], [4, 4, 1, 1, 1])
# Never reaches 0.494 in its final phase.
WEAK = make_run([0.20, 0.30, 0.40], [25, 25, 100], [0, 0, 1], [4, 4, 1])


def test_baseline_reference():
    ref = baseline_reference(BASE, "acc")
    assert ref == BaselineRef("acc", 0.494, 4, 400.0, pytest.approx(40.0), times={"wall": pytest.approx(40.0)})


def test_baseline_reference_first_on_ties_and_nan_ignored():
    recs = make_run([0.3, math.nan, 0.5, 0.5, 0.4], [10] * 5)
    ref = baseline_reference(recs, "acc")
    assert (ref.best, ref.epoch, ref.cum_flops) == (0.5, 3, 30.0)


def test_compare_reached_two_phase():
    ref = baseline_reference(BASE, "acc")
    s = compare("Fshift 41", C2F, ref)
    assert isinstance(s, Savings)
    assert s.reached and s.epoch == 3 and s.metric_at_reach == 0.499
    assert s.flops_save_pct == pytest.approx(62.5)
    assert s.time_save_pct == pytest.approx(62.5)
    assert s.best_metric == 0.5143 and s.best_epoch == 4
    assert s.gain == pytest.approx(0.0203)
    assert (s.total_flops, s.total_time) == (350.0, pytest.approx(35.0))


def test_time_saving_uses_cum_time_independently():
    base = make_run([0.1, 0.2], [100, 100], seconds_per_flop=1.0)  # ref cum_time 200
    run = make_run([0.3], [100], seconds_per_flop=0.5)  # reaches at cum_time 50
    s = compare("r", run, baseline_reference(base, "acc"))
    assert s.flops_save_pct == pytest.approx(50.0) and s.time_save_pct == pytest.approx(75.0)


def test_not_reached():
    s = compare("weak", WEAK, baseline_reference(BASE, "acc"))
    assert not s.reached
    assert s.epoch is None and s.metric_at_reach is None and s.flops_save_pct is None and s.time_save_pct is None
    assert s.best_metric == 0.40 and s.best_epoch == 3
    assert s.gain == pytest.approx(-0.094)


def test_equal_to_baseline_best_counts_as_reached():
    run = make_run([0.1, 0.494, 0.6], [50, 50, 50], [0, 1, 1])
    s = compare("tie", run, baseline_reference(BASE, "acc"))
    assert s.reached and s.epoch == 2 and s.flops_save_pct == pytest.approx(75.0)


def test_best_epoch_first_on_ties():
    run = make_run([0.1, 0.6, 0.6, 0.5], [50] * 4, [0, 1, 1, 1])
    assert compare("r", run, baseline_reference(BASE, "acc")).best_epoch == 2


def test_only_final_phase_counts_unless_any_phase():
    # The coarse phase beats the baseline at epoch 2; the final phase only at epoch 5.
    run = make_run([0.3, 0.55, 0.40, 0.45, 0.50], [25, 25, 100, 100, 100], [0, 0, 1, 1, 1])
    ref = baseline_reference(BASE, "acc")
    final = compare("r", run, ref)
    assert final.epoch == 5 and final.flops_save_pct == pytest.approx(100 * (1 - 350 / 400))
    assert final.best_metric == 0.50 and final.best_epoch == 5
    anywhere = compare("r", run, ref, any_phase=True)
    assert anywhere.epoch == 2 and anywhere.flops_save_pct == pytest.approx(100 * (1 - 50 / 400))
    assert anywhere.best_metric == 0.55 and anywhere.best_epoch == 2


def test_three_phase_run():
    # R = 4, 2, 1; phases 0 and 1 beat the baseline but only phase 2 (the final one) counts.
    run = make_run([0.2, 0.5, 0.3, 0.6, 0.45, 0.494, 0.52, 0.51],
                   [25, 25, 50, 50, 100, 100, 100, 100],
                   [0, 0, 1, 1, 2, 2, 2, 2], [4, 4, 2, 2, 1, 1, 1, 1])
    s = compare("Fshift 421", run, baseline_reference(BASE, "acc"))
    assert s.reached and s.epoch == 6
    assert s.flops_save_pct == pytest.approx(100 * (1 - 350 / 400))
    assert s.best_metric == 0.52 and s.best_epoch == 7
    assert s.total_flops == 550.0


def test_tolerance():
    ref = baseline_reference(BASE, "acc")
    assert not compare("weak", WEAK, ref).reached
    s = compare("weak", WEAK, ref, tolerance=0.1)  # 0.40 >= 0.494 - 0.1
    assert s.reached and s.epoch == 3 and s.flops_save_pct == pytest.approx(100 * (1 - 150 / 400))
    assert s.gain == pytest.approx(-0.094)  # rule (b) is not affected by the tolerance


def test_baseline_against_itself_saves_nothing():
    ref = baseline_reference(BASE, "acc")
    s = compare("Baseline", BASE, ref)
    assert s.epoch == 4 and s.flops_save_pct == 0.0 and s.time_save_pct == 0.0 and s.gain == 0.0


def test_other_metric_key():
    base = make_run([0.40, 0.443], [100, 100], metric="mAP")
    run = make_run([0.30, 0.4382], [30, 100], [0, 1], metric="mAP")
    ref = baseline_reference(base, "mAP")
    s = compare("r", run, ref)
    assert ref.metric == "mAP" and s.metric == "mAP" and not s.reached
    assert s.gain == pytest.approx(-0.0048)


def test_errors():
    with pytest.raises(ValueError, match="no records"):
        baseline_reference([], "acc")
    with pytest.raises(ValueError, match="mAP"):
        baseline_reference(BASE, "mAP")
    with pytest.raises(ValueError, match="NaN"):
        baseline_reference(make_run([math.nan], [1]), "acc")
    bad = [dict(r) for r in C2F]
    del bad[1]["cum_flops"]
    with pytest.raises(ValueError, match="cum_flops"):
        compare("bad", bad, baseline_reference(BASE, "acc"))


def test_zero_reference_cost_gives_nan_savings():
    base = make_run([0.5], [0], seconds_per_flop=0.0)
    s = compare("r", make_run([0.6], [10]), baseline_reference(base, "acc"))
    assert s.reached and math.isnan(s.flops_save_pct) and math.isnan(s.time_save_pct)


# --- log.json --------------------------------------------------------------------------------

def test_load_records_roundtrip(tmp_path):
    (tmp_path / "log.json").write_text(json.dumps({"name": "x", "done": True, "records": C2F}))
    assert load_records(tmp_path / "log.json") == as_records(C2F)
    assert load_records(tmp_path) == as_records(C2F)  # run folder
    assert [r.to_dict() for r in load_records(tmp_path)] == [{**ALL_DEFAULTS, **r} for r in C2F]


def test_load_records_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_records(tmp_path / "missing.json")
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        load_records(tmp_path / "a.json")
    for payload in ({"records": []}, {"name": "x"}, [1, 2]):
        (tmp_path / "b.json").write_text(json.dumps(payload))
        with pytest.raises(ValueError, match="records"):
            load_records(tmp_path / "b.json")


# --- the table -------------------------------------------------------------------------------

def _rows():
    return savings_table("Baseline", BASE, {"Fshift 41": C2F, "Weak": WEAK}, "acc")


def test_savings_table_rows():
    rows = _rows()
    assert rows[0] == {"Setting": "Baseline", "Acc at first beat (delta)": "49.40", "Beat epoch": "4",
                       "FLOPs save (%)": "-", "Wall time save (%)": "-", "Best Acc (gain)": "49.40", "Best epoch": "4"}
    assert rows[1] == {"Setting": "Fshift 41", "Acc at first beat (delta)": "49.90 (+0.50)", "Beat epoch": "3",
                       "FLOPs save (%)": "62.50", "Wall time save (%)": "62.50", "Best Acc (gain)": "51.43 (+2.03)",
                       "Best epoch": "4"}
    assert rows[2] == {"Setting": "Weak", "Acc at first beat (delta)": "not reached", "Beat epoch": "-",
                       "FLOPs save (%)": "-", "Wall time save (%)": "-", "Best Acc (gain)": "40.00 (-9.40)",
                       "Best epoch": "3"}


def test_savings_table_equal_gain_and_rounding():
    # AudioSet-like: best 0.44304 prints 44.30; a run at 0.44296 also prints 44.30 -> "(=)".
    base = make_run([0.40, 0.44304], [100, 100], metric="mAP")
    run = make_run([0.30, 0.44296], [30, 100], [0, 1], metric="mAP")
    rows = savings_table("Baseline", base, {"r": run}, "mAP")
    assert rows[1]["mAP at first beat (delta)"] == "not reached"
    assert rows[1]["Best mAP (gain)"] == "44.30 (=)"
    rows = savings_table("Baseline", base, {"r": run}, "mAP", tolerance=0.001)
    assert rows[1]["mAP at first beat (delta)"] == "44.30 (=)"
    assert rows[1]["FLOPs save (%)"] == "35.00"


def test_savings_table_non_fraction_metric_is_not_scaled():
    base = make_run([2.1, 2.5], [1, 1], metric="d_prime")
    run = make_run([2.6], [1], metric="d_prime")
    rows = savings_table("B", base, {"r": run}, "d_prime")
    assert rows[1]["d-prime at first beat (delta)"] == "2.600 (+0.100)"


GOLDEN_MARKDOWN = """\
| Setting   | Acc at first beat (delta) | Beat epoch | FLOPs save (%) | Wall time save (%) | Best Acc (gain) | Best epoch |
| --------- | ------------------------: | ---------: | -------------: | -----------------: | --------------: | ---------: |
| Baseline  |                     49.40 |          4 |              - |                  - |           49.40 |          4 |
| Fshift 41 |             49.90 (+0.50) |          3 |          62.50 |              62.50 |   51.43 (+2.03) |          4 |
| Weak      |               not reached |          - |              - |                  - |   40.00 (-9.40) |          3 |
"""

GOLDEN_CSV = """\
Setting,Acc at first beat,Acc at first beat delta,Beat epoch,FLOPs save (%),Wall time save (%),Wall time save (%) marks,\
Best Acc,Best Acc gain,Best epoch
Baseline,49.40,,4,,,,49.40,,4
Fshift 41,49.90,+0.50,3,62.50,62.50,,51.43,+2.03,4
Weak,not reached,,,,,,40.00,-9.40,3
"""

GOLDEN_TEXT = """\
Setting    Acc at first beat (delta)  Beat epoch  FLOPs save (%)  Wall time save (%)  Best Acc (gain)  Best epoch
---------  -------------------------  ----------  --------------  ------------------  ---------------  ----------
Baseline                       49.40           4               -                   -            49.40           4
Fshift 41              49.90 (+0.50)           3           62.50               62.50    51.43 (+2.03)           4
Weak                     not reached           -               -                   -    40.00 (-9.40)           3
"""


@pytest.mark.parametrize("fmt, golden", [("markdown", GOLDEN_MARKDOWN), ("csv", GOLDEN_CSV), ("text", GOLDEN_TEXT)])
def test_format_table_golden(fmt, golden):
    assert format_table(_rows(), fmt) == golden


def test_format_table_default_empty_and_unknown():
    assert format_table(_rows()) == GOLDEN_MARKDOWN
    assert format_table([], "text") == ""
    with pytest.raises(ValueError, match="format"):
        format_table(_rows(), "html")


def test_csv_quotes_commas_in_names():
    rows = savings_table("Baseline", BASE, {"Fshift 4,1": C2F}, "acc")
    assert format_table(rows, "csv").splitlines()[2].startswith('"Fshift 4,1",49.90,+0.50')


def test_csv_gives_value_and_difference_their_own_columns_text_keeps_them_together():
    base = make_run([0.40, 0.44304], [100, 100], metric="mAP")
    run = make_run([0.30, 0.44296], [30, 100], [0, 1], metric="mAP")
    rows = savings_table("Baseline", base, {"r": run}, "mAP")
    table = list(csv.DictReader(io.StringIO(format_table(rows, "csv"))))
    assert table[1]["Best mAP"] == "44.30" and table[1]["Best mAP gain"] == "+0.00"  # "(=)": printed the same
    assert table[1]["mAP at first beat"] == "not reached" and table[1]["mAP at first beat delta"] == ""
    assert table[0]["Best mAP gain"] == "" and "Best mAP (gain)" not in table[0]
    assert "44.30 (=)" in format_table(rows, "text") and "44.30 (=)" in format_table(rows, "markdown")
    assert csv_rows([{"Setting": "x", "Paired gain (95 % CI)": "+1.00 [+0.50, +1.50]", "Best (mean ± std)": "2.0 ± 0.5"},
                     {"Setting": "y", "Paired gain (95 % CI)": "-", "Best (mean ± std)": "2.0"}]) == [
        {"Setting": "x", "Paired gain": "+1.00", "Paired gain CI low": "+0.50", "Paired gain CI high": "+1.50",
         "Best": "2.0", "Best std": "0.5"},
        {"Setting": "y", "Paired gain": "", "Paired gain CI low": "", "Paired gain CI high": "", "Best": "2.0",
         "Best std": ""}]  # a gain with its interval, a mean with its std: one number per cell ("-": none)


def test_csv_and_json_give_a_time_save_and_its_marks_their_own_columns():
    rows = [{"Setting": "Baseline", "Beat epoch": "4", "Wall time save (%)": "-", "R": "1"},
            {"Setting": "slow", "Beat epoch": "3", "Wall time save (%)": "-21.46*‡", "R": "4"},
            {"Setting": "fine", "Beat epoch": "3", "Wall time save (%)": "12.50", "R": "2"}]
    table = list(csv.DictReader(io.StringIO(format_table(rows, "csv"))))
    assert [(r["Wall time save (%)"], r["Wall time save (%) marks"]) for r in table] == [("", ""), ("-21.46", "*‡"),
                                                                                          ("12.50", "")]
    data = json.loads(format_table(rows, "json"))
    assert data[1] == {"Setting": "slow", "Beat epoch": 3, "Wall time save (%)": -21.46, "Wall time save (%) marks": "*‡",
                       "R": 4}
    assert data[0]["Wall time save (%)"] is None and list(data[0]) == list(table[0])  # the CSV's names
    assert format_table([], "json") == "[]\n"
    # the columns follow the table's kind, not its cells: a table without marks has the marks column too
    unmarked = [{k: v.rstrip("*‡") for k, v in r.items()} for r in rows]
    assert next(csv.reader(io.StringIO(format_table(unmarked, "csv")))) == list(table[0])
    # a one-character column still gets a delimiter cell with a '-' (GFM renders no table without one)
    rule = format_table(rows, "markdown").splitlines()[1]
    assert rule.split("|")[-2].strip() == "--:"


def test_an_unknown_metric_is_named_with_the_metrics_the_records_have():
    with pytest.raises(ValueError, match=r"unknown metric 'accuracy'; its records have acc"):
        baseline_reference(BASE, "accuracy")
    with pytest.raises(ValueError, match=r"unknown metric 'accuracy': the runs' records have acc$"):
        check_metric("accuracy", {"base": BASE, "c2f": C2F})
    with pytest.raises(ValueError, match=r"^c2f: the records lack 'mAP'"):
        check_metric("mAP", {"base": make_run([0.3], [1], metric="mAP"), "c2f": C2F})
    check_metric("acc", {"base": BASE, "c2f": C2F})


def test_lower_is_better_metric_takes_the_minimum_and_reaches_from_below():
    # A loss-like metric (validation loss, a reconstruction error): the best is the smallest value.
    base = make_run([0.9, 0.5, 0.42, 0.45], [100] * 4, metric="val_loss")
    ref = baseline_reference(base, "val_loss")
    assert not ref.higher and ref.best == 0.42 and ref.epoch == 3 and ref.cum_flops == 300
    run = make_run([1.0, 0.6, 0.44, 0.41, 0.39], [25, 25, 100, 100, 100], [0, 0, 1, 1, 1], [4, 4, 1, 1, 1],
                   metric="val_loss")
    s = compare("c2f", run, ref)
    assert s.reached and s.epoch == 4 and s.flops_save_pct == pytest.approx(100 * (1 - 250 / 300))
    assert s.best_metric == 0.39 and s.gain == pytest.approx(0.39 - 0.42)
    rows = savings_table("Baseline", base, {"c2f": run}, "val_loss")
    assert rows[0]["Best val_loss (gain)"] == "0.420" and rows[1]["Beat epoch"] == "4"
    # The direction can also be given explicitly (a metric the objectives do not declare).
    assert baseline_reference(base, "val_loss", higher=True).best == 0.9


def test_phase_changes_are_drawn_where_the_coarse_phase_ends():
    recs = as_records([{"epoch": 1, "phase": 0, "cum_flops": 1.0, "cum_time": 1.0},
                       {"epoch": 2, "phase": 0, "cum_flops": 2.0, "cum_time": 2.0},
                       {"epoch": 3, "phase": 1, "cum_flops": 6.0, "cum_time": 6.0},
                       {"epoch": 4, "phase": 2, "cum_flops": 22.0, "cum_time": 22.0}])
    # after epoch 2 (2 units spent at R = 4), not after the first full-resolution epoch (6)
    assert phase_change_xs(recs, [r.cum_flops for r in recs]) == [2.0, 6.0]


def test_a_setting_keeps_its_colour_from_one_plot_to_the_next():
    # Restart was orange in one report and blue in another (its place among the settings decided it).
    from coarse2fine.report.plots import PALETTE, label_colours

    one = label_colours(["Restart 11 (control)", "Fshift 41", "Patch PI 41"])
    two = label_colours(["Fshift 41", "Restart 11 (control)"])
    assert one["Restart 11 (control)"] == two["Restart 11 (control)"] and one["Fshift 41"] == two["Fshift 41"]
    many = label_colours([f"setting {i}" for i in range(len(PALETTE))])
    assert sorted(many.values()) == sorted(PALETTE)  # distinct within a plot while the palette lasts


def test_time_notes_name_only_the_runs_whose_row_shows_a_time():
    # A note named a run as busy (*) whose time cells were all "-": it never reached the baseline's best.
    from coarse2fine.report.savings import table_note

    def busy(values):
        recs = make_run(values, [100] * len(values))
        for i, r in enumerate(recs):  # one epoch 3x slower per clip than the others
            r["clips"], r["train_time"] = 10, 30.0 if i == 1 else 10.0
        return recs

    runs = {"reaches": busy([0.3, 0.5, 0.5, 0.5, 0.5]), "never": busy([0.1, 0.2, 0.2, 0.2, 0.2])}
    rows = savings_table("Baseline", BASE, runs, "acc")
    assert [r["Wall time save (%)"].rstrip("*†‡") != "-" for r in rows[1:]] == [True, False]
    assert "* reaches, never: epochs of one phase" in table_note(BASE, runs)
    assert "* reaches: epochs of one phase" in table_note(BASE, runs, rows=rows)
